"""Generation: sample completions from a causal LM, the primitives every stage that samples uses.

    from rlhf.generation import SamplingConfig, generate_completions
    texts = generate_completions(model, tokenizer, prompt_ids, SamplingConfig(seed=1), per_prompt=4)

`config` (SamplingConfig: how each completion is decoded), `sampling` (batched sampling: generate,
PPO rollouts, best-of-N) and `best_of` (keep the best of N draws by a scorer). The engines of
`rlhf.engines` build on this package; the `rlhf generate` command is `rlhf.generate`. torch and
transformers are imported only when a function runs.
"""

from rlhf.generation.config import SamplingConfig, check_draws
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
    "Sample",
    "SamplingConfig",
    "check_draws",
    "count_repeats",
    "decode_continuation",
    "eos_token_ids",
    "generate_completions",
    "generate_samples",
    "generation_kwargs",
    "repeated_indices",
    "sample_sequences",
]
