"""`rlhf generate`: sample completions for every prompt of a file (`candidates` rows for people to
judge), or keep the best of N by a reward (best-of-N rows for rejection-sampling fine-tuning).

    from rlhf.generate import GenerateConfig, run_generate
    summary = run_generate(GenerateConfig(data=DataConfig(path="prompts.jsonl"), samples_per_prompt=4))

The sampling itself is `rlhf.generation` (and `rlhf.engines` for vLLM).
"""

from rlhf.generate.config import DEFAULT_OUTPUT, GenerateConfig
from rlhf.generate.run import run_generate

__all__ = ["DEFAULT_OUTPUT", "GenerateConfig", "run_generate"]
