"""What a run leaves behind: its directory (config, environment), metrics and progress bars."""

from rlhf.tracking.metrics import MetricsLogger, read_metrics
from rlhf.tracking.progress import progress_bar
from rlhf.tracking.rundir import environment_info, prepare_run_dir

__all__ = ["MetricsLogger", "environment_info", "prepare_run_dir", "progress_bar", "read_metrics"]
