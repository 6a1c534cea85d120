"""The shared parts every stage config is composed of: model, PEFT, data, prompt, optimizer, logging.

A stage config is a dataclass whose fields are these parts plus its own settings, e.g.
`SFTConfig(model=ModelConfig(), peft=PeftConfig(), data=DataConfig(), ...)`. Each field has
its documentation as a string right under it; `rlhf <stage> --print-config` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlhf.config.core import ConfigError

BUILTIN_TINY = "builtin:tiny"


@dataclass
class ModelConfig:
    path: str = BUILTIN_TINY
    """Hub id (e.g. `Qwen/Qwen2.5-0.5B`), local Hugging Face directory, or `builtin:tiny` for the
    project's own tiny Llama (made offline, random weights) used by the demo and the tests."""
    tokenizer: str | None = None
    """Tokenizer to load when it is not stored with the model (hub id or directory); default: `path`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of `path`; ignored for local directories."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype. `auto`: bfloat16 on a GPU that supports it, else float32 (CPUs train in float32)."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the base weights quantized through bitsandbytes (frozen; train adapters on top).
    `peft.method: qlora` implies `4bit`."""
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: NF4 (normal-float, the QLoRA paper's choice) or plain FP4."""
    bnb_4bit_double_quant: bool = True
    """Quantize the quantization constants too (saves about 0.4 bits per weight, as in QLoRA)."""
    bnb_4bit_compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype the 4-bit layers compute in; `auto` follows `dtype`."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository to run (needed by some architectures; a security risk)."""
    attn_implementation: str | None = None
    """Attention kernel (`eager`, `sdpa`, `flash_attention_2`); default: what transformers picks."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory for about a third more compute."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("`model.path` must not be empty")
        for key, value in (("path", self.path), ("tokenizer", self.tokenizer)):
            if value and value.startswith("builtin:") and value != BUILTIN_TINY:
                raise ConfigError(
                    f"`model.{key}` {value} is not a built-in model: the only one is `{BUILTIN_TINY}`"
                )


@dataclass
class PeftConfig:
    method: Literal["none", "lora", "qlora", "prompt_tuning"] = "none"
    """Parameter-efficient fine-tuning: `none` trains every weight; `lora` trains low-rank adapters;
    `qlora` is LoRA on a 4-bit NF4 base; `prompt_tuning` trains only a soft prompt of virtual tokens."""
    lora_rank: int = 8
    """LoRA rank r: the width of each adapter's low-rank update."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is scaled by lora_alpha / lora_rank."""
    lora_dropout: float = 0.05
    """Dropout on the adapter input during training."""
    target_modules: list[str] | None = None
    """Module names that get adapters (e.g. [q_proj, v_proj]), or [all-linear]; default: the
    per-architecture choice of the peft library (attention projections)."""
    modules_to_save: list[str] | None = None
    """Modules trained in full next to the adapters and saved with them (e.g. a new head)."""
    num_virtual_tokens: int = 20
    """Prompt tuning: how many trainable virtual tokens are prepended to every input."""
    prompt_tuning_init_text: str | None = None
    """Prompt tuning: initialise the virtual tokens from the embeddings of this text (random if unset)."""

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(f"`peft.lora_rank` must be at least 1, got {self.lora_rank}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"`peft.lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        if self.num_virtual_tokens < 1:
            raise ConfigError(f"`peft.num_virtual_tokens` must be at least 1, got {self.num_virtual_tokens}")


@dataclass
class DataConfig:
    path: str | None = None
    """Training data: a .jsonl, .json, .csv or .parquet file (the first three also compressed:
    .gz, .bz2, .xz, .zst), a directory saved by `datasets` or holding a hub dataset's files, or a
    dataset id on the hub. Required by every stage that trains."""
    split: str = "train"
    """Split to read from a `datasets` directory or hub dataset."""
    subset: str | None = None
    """The subset (configuration) of a hub dataset, or of a local copy of its files, that has
    several (e.g. `harmless-base` of Anthropic/hh-rlhf's data directories)."""
    format: str = "auto"
    """Record format; `auto` detects it from the fields. Run `rlhf data formats` for the list."""
    on_error: Literal["raise", "skip"] = "raise"
    """A malformed record stops the load (`raise`, with file, line and field), or is skipped and
    reported with its line (`skip`). Nothing is ever dropped silently."""
    max_length: int = 512
    """Tokens per sequence (prompt plus completion). Longer records keep the completion and lose
    the start of the prompt; how many were cut is reported."""
    max_prompt_length: int | None = None
    """Tokens kept from the prompt (from its end); default: whatever `max_length` leaves."""
    rating_scale: list[float] | None = None
    """[low, high] of the scale of scalar ratings; a rating outside it is an error. Required for
    rating data."""
    allow_ties: bool = True
    """Rankings: whether two completions of one prompt may share a rank."""
    fields: dict[str, str] | None = None
    """Map the file's own fields onto a format's: `{prompt: info.post, chosen: summaries[choice].text,
    rejected: summaries[1-choice].text}` (dotted paths, `[n]`/`[field]`/`[1-field]` list positions,
    `{field}` in a name; see `rlhf.data.mapping`). The format is then detected from the mapped fields."""
    attribute: str | None = None
    """Which judgment to read from a public dataset that holds several: SHP `margin` (each pair's
    margin the log of its score ratio); PKU-SafeRLHF `better` (default) or `safer`; HelpSteer `helpfulness` (default), `correctness`, `coherence`,
    `complexity`, `verbosity`, or a weighted sum (`0.65*helpfulness + 0.8*correctness - 0.4*verbosity`);
    UltraFeedback `overall` (default), `fine-grained` or an aspect
    (`helpfulness`, `honesty`, `instruction_following`, `truthfulness`)."""
    ignore_fields: list[str] | None = None
    """Fields of the file to leave unread on purpose. A field the format does not read whose name
    looks like a judgment (score, rating, rank, label, answer, response, ...) stops every stage
    that loads the file, since its preference information would be lost; list it here to go on
    without it (or map it with `data.fields`, or name the format that reads it in `data.format`)."""
    limit: int | None = None
    """Use only the first N records (after format checks), e.g. for a quick trial run."""
    sources: dict[str, float] | None = None
    """Preference data (reward, DPO, RRHF): a weight per feedback source, read from each row's
    `feedback_source` (`people`, or an LLM judge's `judge:<name>`, as `rlhf label export` writes
    them; a row without one counts as `people`), e.g. `{people: 1.0, "judge:gpt": 0.3}`. A row's
    weight is multiplied by its source's; a source not listed, or weighted 0, is left out (and
    counted). Only comparisons and rankings carry weights: other kinds take 0 or 1. None: every row."""

    def __post_init__(self) -> None:
        if self.sources is not None and not all(
            isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w < float("inf")
            for w in self.sources.values()
        ):
            raise ConfigError(f"`data.sources` weights must be numbers >= 0, got {self.sources}")
        if self.max_length < 2:
            raise ConfigError(f"`data.max_length` must be at least 2, got {self.max_length}")
        if self.rating_scale is not None and (
            len(self.rating_scale) != 2 or self.rating_scale[0] >= self.rating_scale[1]
        ):
            raise ConfigError(
                f"`data.rating_scale` must be [low, high] with low < high, got {self.rating_scale}"
            )


@dataclass
class OptimizerConfig:
    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); not applied to biases and norm weights."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW beta1, beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    """Learning-rate shape after warm-up: constant, linear decay to 0, or cosine decay to 0."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0 to `lr` (overrides `warmup_ratio` when > 0)."""
    warmup_ratio: float = 0.0
    """Warm-up as a fraction of all optimizer steps."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value (null: no clipping)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before one optimizer step."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"`optimizer.lr` must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"`optimizer.betas` must be two values in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ConfigError(f"`optimizer.eps` must be positive, got {self.eps}")
        if self.weight_decay < 0:
            raise ConfigError(f"`optimizer.weight_decay` must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(
                f"`optimizer.max_grad_norm` must be positive (or null: no clipping), got {self.max_grad_norm}"
            )
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("`optimizer.gradient_accumulation_steps` must be at least 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"`optimizer.warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class LoggingConfig:
    RENAMED: ClassVar[dict[str, str]] = {"output_dir": "../output_dir"}

    log_every: int = 10
    """Write metrics every N optimizer steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files (view with `tensorboard --logdir <output_dir>`)."""
    progress: bool = True
    """Show a progress bar with ETA and the live loss on long loops."""


DEFAULT_INSTRUCTION_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
"""The instruction template used for text prompts unless configured: Alpaca's layout, no preamble."""


@dataclass
class PromptConfig:
    template: Literal["auto", "chat", "instruction", "raw"] = "auto"
    """How a prompt becomes the text the model sees. `auto`: chat messages through the tokenizer's
    chat template (a plain role-tag template when it has none), text prompts through
    `instruction_template`. `chat`: text prompts too become one user message. `instruction`:
    every prompt through `instruction_template` (messages joined as `role: text` lines). `raw`:
    text as it is, messages through the chat template."""
    instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE
    """Template for text prompts, with `{prompt}` where the prompt goes (and optionally `{system}`
    for `system_prompt`). The completion follows it directly."""
    system_prompt: str | None = None
    """A system message put first in chat prompts that have none; in instruction prompts it
    replaces `{system}` (or, without that placeholder, goes first followed by a blank line)."""
    few_shot_path: str | None = None
    """Demonstrations file (any demonstration format) whose first `few_shot_count` examples are
    shown before every prompt: as earlier user/assistant turns in chat prompts, as filled-in
    templates separated by blank lines otherwise. Never used to train."""
    few_shot_count: int = 3
    """How many examples `few_shot_path` contributes to each prompt."""

    def __post_init__(self) -> None:
        if "{prompt}" not in self.instruction_template:
            raise ConfigError("`prompt.instruction_template` must contain `{prompt}`")
        try:
            self.instruction_template.format(prompt="", system="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"`prompt.instruction_template` may only use {{prompt}} and {{system}} "
                f"(write braces as {{{{ and }}}}): {exc}"
            ) from exc
        if self.few_shot_count < 0:
            raise ConfigError(f"`prompt.few_shot_count` must be at least 0, got {self.few_shot_count}")


@dataclass
class FreezeConfig:
    train_last_layers: int | None = None
    """Train only the last N transformer blocks (decoder layers); every other weight is frozen.
    Null: no layer selection. Only with `peft.method: none` (adapters choose their own weights)."""
    train_modules: list[str] | None = None
    """Parameter names to train as well (alone, or next to the last N layers): fnmatch globs
    such as `*.mlp.*` or `lm_head.*`, or a module name such as `model.norm` (all its parameters).
    A tied weight (e.g. lm_head = embed_tokens) trains if any of its names is selected."""

    def __post_init__(self) -> None:
        if self.train_last_layers is not None and self.train_last_layers < 1:
            raise ConfigError(
                f"`freeze.train_last_layers` must be at least 1 (or null), got {self.train_last_layers}"
            )
        if self.train_modules is not None and (
            not self.train_modules or not all(pattern.strip() for pattern in self.train_modules)
        ):
            raise ConfigError(
                f"`freeze.train_modules` must list non-empty name patterns (or be null), got {self.train_modules}"
            )


@dataclass
class RunControl:
    """The run-control fields every training stage (sft, reward, dpo, rrhf, ppo) shares; a stage's
    config inherits them, so they sit at its top level (`--set seed=1`)."""

    output_dir: str = "runs/run"
    """Run directory: the resolved config, environment, metrics (JSONL, TensorBoard), checkpoints and
    outputs go here. A run that does not resume refuses one holding an earlier run's checkpoints
    (`--overwrite` starts afresh)."""
    seed: int = 0
    """Seed for everything random in the run: weights that start random, the held-out split, the data
    order, dropout and sampling."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Autocast for the forward pass: `auto` is bf16 on a GPU that supports it and none on CPU."""
    save_every: int = 0
    """Write a resumable checkpoint every N optimizer steps (PPO: every N PPO steps); 0: none. The
    final model (policy, critic) is always saved."""
    keep_checkpoints: int | None = 2
    """Keep only the newest N checkpoints (null: keep all)."""
    max_nonfinite: int = 3
    """Optimizer steps (PPO: updates) that may be skipped for a NaN or infinite loss, reward or
    gradient (each with a warning) before the run stops with an error; 0 stops at the first."""

    def __post_init__(self) -> None:
        if self.save_every < 0:
            raise ConfigError(f"`save_every` must be >= 0, got {self.save_every}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ConfigError("`keep_checkpoints` must be at least 1 (or null to keep all)")
        if self.max_nonfinite < 0:
            raise ConfigError(f"`max_nonfinite` must be >= 0, got {self.max_nonfinite}")
        if not self.output_dir:
            raise ConfigError("`output_dir` must not be empty")


@dataclass
class EpochRunControl(RunControl):
    """`RunControl` for stages that pass over a fixed training set (sft, reward, dpo, rrhf)."""

    epochs: float = 1.0
    """Passes over the training items (rows or groups; fractions allowed); ignored when `max_steps` is set."""
    max_steps: int | None = None
    """Optimizer steps to train; default: as many as `epochs` takes."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"`max_steps` must be at least 1, got {self.max_steps}")
        if self.epochs <= 0:
            raise ConfigError(f"`epochs` must be positive, got {self.epochs}")


@dataclass
class HeldOutConfig:
    """The held-out evaluation every trainer that passes over data shares (`eval` of sft, reward,
    dpo and rrhf): where the held-out items come from and how often they are scored. A stage adds
    its own measures (SFT's greedy answers, the reward model's calibration bins)."""

    path: str | None = None
    """Held-out data of the same kind as `data`, read (and scored) like it; overrides `fraction`."""
    fraction: float = 0.0
    """Without `path`: this share of the training records (chosen with `seed`) is held out instead."""
    every: int = 0
    """Evaluate every N optimizer steps (0: only at the start and the end). Needs `path` or `fraction`."""
    batch_size: int = 8
    """Items (rows, or a prompt with its completions) per evaluation forward pass on each process."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"`eval.fraction` must be in [0, 1), got {self.fraction}")
        if self.every < 0:
            raise ConfigError(f"`eval.every` must be >= 0, got {self.every}")
        if self.batch_size < 1:
            raise ConfigError(f"`eval.batch_size` must be at least 1, got {self.batch_size}")

    @property
    def enabled(self) -> bool:
        """Whether there is anything held out to evaluate on."""
        return bool(self.path) or self.fraction > 0
