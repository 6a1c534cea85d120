"""Stage 1: supervised and instruction fine-tuning (`rlhf sft`).

    from rlhf.sft import SftConfig, run_sft
    result = run_sft(SftConfig(data=DataConfig(path="demos.jsonl"), peft=PeftConfig(method="lora")))

Modules: `config` (SftConfig), `examples` (templating, completion-only labels, packing, batches),
`train` (the run: data -> model -> loop with eval and checkpoints -> saved model).
"""

from rlhf.sft.config import SftConfig, SftEvalConfig
from rlhf.sft.train import SftResult, run_sft

__all__ = ["SftConfig", "SftEvalConfig", "SftResult", "run_sft"]
