"""Generation: sample completions from a causal LM.

    from rlhf.generation import SamplingConfig, generate_completions
    texts = generate_completions(model, tokenizer, prompt_ids, SamplingConfig(num_samples=4, seed=1))

`config` (SamplingConfig, GenerateConfig), `sampling` (batched sampling, for every stage that
samples: generate, PPO rollouts, best-of-N) and `run` (`rlhf generate`: prompts file in,
`candidates` JSONL out; import it from `rlhf.generation.run`: it uses the engines of
`rlhf.engines`, which build on this package). torch and transformers are imported only when a
function runs.
"""

from rlhf.data.jsonl import prompt_to_json
from rlhf.files import write_jsonl_atomic
from rlhf.generation.config import DEFAULT_OUTPUT, GenerateConfig, SamplingConfig
from rlhf.generation.sampling import (
    Sample,
    count_repeats,
    decode_continuation,
    eos_token_ids,
    generate_completions,
    generate_samples,
    generation_kwargs,
    repeated_indices,
    sample_sequences,
)

__all__ = [
    "DEFAULT_OUTPUT",
    "GenerateConfig",
    "Sample",
    "SamplingConfig",
    "count_repeats",
    "decode_continuation",
    "eos_token_ids",
    "generate_completions",
    "generate_samples",
    "generation_kwargs",
    "prompt_to_json",
    "repeated_indices",
    "sample_sequences",
    "write_jsonl_atomic",
]
