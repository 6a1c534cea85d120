"""`rlhf demo`: the end-to-end demo, offline on a CPU.

This version runs every stage the toolkit has so far: it reads the bundled demonstrations
through the data loaders, builds the project's own tiny model, trains it through the shared
Accelerate loop (with LoRA or prompt tuning if asked), saves it in Hugging Face format, reloads
it with plain transformers, checks the reload gives the same logits, and answers the prompts.
The full SFT -> feedback -> reward -> PPO loop replaces it when those stages land.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rlhf.config.core import ConfigError
from rlhf.config.parts import DataConfig, LoggingConfig, ModelConfig, OptimizerConfig, PeftConfig


def bundled_demonstrations() -> str:
    """Path of the demonstrations file shipped inside the package."""
    return str(resources.files("rlhf") / "assets" / "demo" / "demonstrations.jsonl")


@dataclass
class DemoConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to train; the default is the built-in tiny Llama, made offline."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Parameter-efficient training (the demo trains every weight by default)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=96))
    """Demonstrations to learn; default (path null): the small set bundled with the package."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=3e-3, warmup_steps=10, scheduler="cosine")
    )
    """AdamW and its schedule (the tiny model learns fast at a high rate)."""
    logging: LoggingConfig = field(
        default_factory=lambda: LoggingConfig(output_dir="runs/demo", log_every=20)
    )
    """Where the run directory goes and how often to log."""
    seed: int = 0
    """Seed for weights, data order and sampling: the same seed gives the same run."""
    steps: int = 300
    """Optimizer steps to train."""
    batch_size: int = 8
    """Examples per micro-batch on each process."""
    show: int = 4
    """How many prompts to answer (greedy) after training."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("`steps` and `batch_size` must be at least 1")


def _examples(cfg: DemoConfig, tokenizer):
    from rlhf.data import TruncationStats, encode_example, load_records, render_prompt

    data_cfg = cfg.data if cfg.data.path else dataclasses.replace(cfg.data, path=bundled_demonstrations())
    loaded = load_records(data_cfg, expect="demonstration")
    stats = TruncationStats(data_cfg.max_length)
    examples = []
    for record in loaded.records:
        prompt = render_prompt(record.prompt, tokenizer) if record.prompt else ""
        enc = encode_example(
            tokenizer, prompt, record.completion, data_cfg.max_length, data_cfg.max_prompt_length
        )
        stats.add(enc)
        examples.append((prompt, record.completion, enc))
    return loaded, stats, examples


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo; returns (and writes to `summary.json`) what it measured."""
    import torch
    from transformers import AutoTokenizer

    from rlhf.data import pad_batch
    from rlhf.models import load_causal_lm, load_tokenizer, trainable_parameter_summary
    from rlhf.tracking import MetricsLogger
    from rlhf.training import build_optimizer, build_scheduler, train_loop
    from rlhf.training.loop import start_stage

    started = time.time()
    accelerator, say, run_dir = start_stage("demo", cfg, cfg.optimizer)
    main = accelerator.is_main_process

    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    loaded, stats, examples = _examples(cfg, tokenizer)
    say(f"[data] {loaded.report.summary()}; format `{loaded.format}`; {stats.summary()}")

    model = load_causal_lm(cfg.model, cfg.peft)
    trainable, total = trainable_parameter_summary(model)
    say(f"[model] {cfg.model.path}: {total:,} parameters, {trainable:,} trainable (peft: {cfg.peft.method})")

    pad_id = tokenizer.pad_token_id

    def collate(batch):
        return pad_batch([e.input_ids for _, _, e in batch], pad_id, "right", [e.labels for _, _, e in batch])

    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        examples, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=generator
    )
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, cfg.steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    def loss_fn(m, batch):
        return m(**batch).loss, {}

    with MetricsLogger(run_dir, tensorboard=cfg.logging.tensorboard, enabled=main) as logger:
        result = train_loop(
            accelerator=accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            batches=loader,
            loss_fn=loss_fn,
            max_steps=cfg.steps,
            optim_cfg=cfg.optimizer,
            logger=logger,
            log_every=cfg.logging.log_every,
            progress=cfg.logging.progress,
            desc="train",
        )
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    say(f"[train] {result.steps} steps: loss {first:.3f} -> {last:.3f}")

    summary: dict = {"loss_first": first, "loss_last": last, "steps": result.steps}
    accelerator.wait_for_everyone()
    if main:
        model = accelerator.unwrap_model(model).eval()
        out_dir = run_dir / "model"
        model, reloaded, how = _save_and_reload(model, tokenizer, out_dir, cfg)
        reloaded_tok = AutoTokenizer.from_pretrained(out_dir)
        probe = collate(examples[: cfg.batch_size])
        with torch.no_grad():
            ours = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
            theirs = reloaded(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
        width = probe["input_ids"].shape[1]  # prompt tuning puts its virtual tokens first
        diff = (ours[:, -width:] - theirs[:, -width:]).abs().max().item()
        say(f"[save] {out_dir} (reloaded with {how}; max logit difference {diff:.2e})")
        answers = _answer(reloaded, reloaded_tok, examples[: cfg.show])
        exact = sum(a["answer"].strip() == a["reference"].strip() for a in answers)
        for a in answers:
            say(f"  Q: {a['prompt']!r}\n     model: {a['answer']!r}\n     reference: {a['reference']!r}")
        summary.update(
            reload_max_logit_diff=diff,
            answers=answers,
            exact_answers=exact,
            model_dir=str(out_dir),
            seconds=round(time.time() - started, 1),
        )
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        say(
            f"[done] {exact}/{len(answers)} answers exact; {summary['seconds']} s; summary in {run_dir / 'summary.json'}"
        )
    return summary


def _save_and_reload(model, tokenizer, out_dir: Path, cfg: DemoConfig):
    """Save the trained model and load it back the way a user would.

    A full model or merged LoRA loads with plain transformers, no rlhf code. A QLoRA or prompt-tuning
    adapter cannot be merged exactly into its base, so it is saved as an adapter and loaded back
    onto its base with `load_causal_lm` (the same 4-bit base for QLoRA).
    """
    from transformers import AutoModelForCausalLM

    from rlhf.models import load_causal_lm, save_model

    method = cfg.peft.method
    model = save_model(model, tokenizer, out_dir, merge=method == "lora")
    if method in ("none", "lora"):
        return model, AutoModelForCausalLM.from_pretrained(out_dir).eval(), "plain transformers"
    reload_cfg = dataclasses.replace(cfg.model, path=str(out_dir))
    return model, load_causal_lm(reload_cfg, for_training=False), "rlhf's loader (adapter on its base)"


def _answer(model, tokenizer, examples) -> list[dict]:
    """Greedy answers for the examples' prompts, decoded without the prompt."""
    import torch

    answers = []
    for prompt, reference, enc in examples:
        ids = torch.tensor([enc.input_ids[: enc.prompt_len]])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=48,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(
            {
                "prompt": prompt,
                "answer": tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True),
                "reference": reference,
            }
        )
    return answers
