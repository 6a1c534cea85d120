"""`rlhf sft`: supervised fine-tuning on demonstrations, in the order the run happens.

load data -> template + tokenize -> (pack) -> load model (+ adapters / freezing) -> resume?
-> train (token-weighted loss, eval and checkpoints at intervals) -> final eval -> save.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.data.examples import Row, encode_demonstrations, target_count, to_rows
from rlhf.data.split import split_eval
from rlhf.sft.config import SftConfig
from rlhf.training.heldout import collate_batch, evaluate, forward_nll


@dataclass
class SftData:
    """What training and evaluation read, built once before the model loads."""

    train_rows: list[Row]
    """(packed) training rows."""
    eval_rows: list[Row]
    """(packed) held-out rows for eval loss."""
    eval_prompts: list[tuple[list[int], str]]
    """(prompt ids as trained, reference completion) of held-out records, for sample answers."""
    summary: str
    """One line on what was loaded, held out, truncated and packed."""
    report: dict[str, Any]
    """The training data's load report (`LoadReport.as_dict`: skipped rows by problem, ...)."""


def build_data(cfg: SftConfig, tokenizer, *, packing: bool | None = None) -> SftData:
    """`packing`: whether rows are packed (default `cfg.use_packing`; never for an encoder-decoder)."""
    from rlhf.data import PromptRenderer, load_records

    packing = cfg.use_packing if packing is None else packing
    renderer = PromptRenderer(cfg.prompt, tokenizer)
    loaded = load_records(cfg.data, expect="sft")
    records, held_out = loaded.demonstrations(), []
    if cfg.eval.path:
        held_out = load_records(_eval_data_config(cfg), expect="sft").demonstrations()
    elif cfg.eval.fraction > 0:
        records, held_out = split_eval(records, cfg.eval.fraction, cfg.seed)

    def rows_of(recs):
        examples, stats = encode_demonstrations(
            recs, renderer, tokenizer, cfg.data.max_length, cfg.data.max_prompt_length, cfg.completion_only
        )
        return to_rows(examples, cfg.data.max_length, packing), examples, stats

    train_rows, train_examples, stats = rows_of(records)
    eval_rows, eval_examples, _ = rows_of(held_out) if held_out else ([], [], None)
    eval_prompts = [
        (e.input_ids[: e.prompt_len], r.completion)
        for r, e in zip(held_out, eval_examples)
        if not r.plain_text
    ]
    summary = f"{loaded.report.summary()}; format `{loaded.format}`; {stats.summary()}"
    if held_out:
        summary += f"; {len(held_out)} held out for evaluation"
    if packing:
        summary += f"; {len(train_examples)} examples packed into {len(train_rows)} rows"
    return SftData(train_rows, eval_rows, eval_prompts, summary, loaded.report.as_dict())


def _eval_data_config(cfg: SftConfig):
    import dataclasses

    return dataclasses.replace(cfg.data, path=cfg.eval.path, limit=None)


def sample_answers(model, tokenizer, prompts: list[tuple[list[int], str]], max_new_tokens: int) -> list[dict]:
    """Greedy answers to (prompt ids, reference) pairs."""
    from rlhf.generation.config import SamplingConfig
    from rlhf.generation.sampling import generate_completions

    if not prompts:
        return []
    was_training = model.training
    model.eval()
    ids = [prompt_ids for prompt_ids, _ in prompts]
    # seed None: sampling must not reseed (and so replay) the training run's random stream.
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=None)
    answers = generate_completions(model, tokenizer, ids, sampling, progress=False)
    model.train(was_training)
    return [
        {
            "prompt": tokenizer.decode(ids, skip_special_tokens=True),
            "answer": answer[0],
            "reference": reference,
        }
        for (ids, reference), answer in zip(prompts, answers)
    ]


@dataclass
class SftResult:
    """What `run_sft` hands back."""

    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    model: torch.nn.Module
    """The trained model, unwrapped from Accelerate (a PeftModel with adapters); on the other
    processes of a sharded (FSDP, ZeRO-3) run, their shard of it."""
    tokenizer: Any
    """Its tokenizer."""


def run_sft(cfg: SftConfig, *, resume: str | bool | None = None, overwrite: bool = False) -> SftResult:
    """Train; returns what the run measured (also written to `summary.json`) and the model.

    `resume`: True resumes from the newest checkpoint of `output_dir` (starting fresh when
    there is none), a path resumes from that checkpoint.
    """
    from rlhf.models import load_tokenizer
    from rlhf.training import build_optimizer, build_scheduler
    from rlhf.training.sharding import is_sharded
    from rlhf.training.stage import Stage

    stage = Stage.start("sft", cfg, resume=resume, overwrite=overwrite)
    accelerator = stage.accelerator
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    seq2seq = _check_seq2seq(cfg, stage.say)
    data = build_data(cfg, tokenizer, packing=cfg.use_packing and not seq2seq)
    stage.data_report = data.report
    stage.say(f"[data] {data.summary}")

    build_model = functools.partial(_build_model, cfg, tokenizer)
    model = build_model()
    trainable = stage.report_model(model, method=_method(cfg))
    steps = stage.plan(len(data.train_rows))
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, steps)
    model, optimizer = stage.prepare(model, optimizer, scheduler, tokenizer=tokenizer, resume=resume)

    stream = stage.stream(len(data.train_rows))
    pad_id, packed, device = tokenizer.pad_token_id, cfg.use_packing and not seq2seq, accelerator.device
    unwrapped = accelerator.unwrap_model(model)

    def batches():
        for indices in stream:
            batch = collate_batch(unwrapped, [data.train_rows[i] for i in indices], pad_id, packed)
            stage.seen += sum(len(data.train_rows[i].input_ids) for i in indices)
            yield {k: v.to(device) for k, v in batch.items()}

    def loss_fn(m, batch, num_items: int):
        nll_sum, _ = forward_nll(m, batch)
        return nll_sum / num_items, {}

    def run_eval(step: int) -> None:
        result = evaluate(accelerator, model, data.eval_rows, cfg.eval.batch_size, pad_id, packed)
        stage.record_eval(step, result, ("loss", "perplexity"), wait=False)
        # (a sharded model generates on every process: each forward gathers the layers from all)
        if cfg.eval.generations and (stage.main or is_sharded(accelerator)):
            _log_answers(stage, accelerator.unwrap_model(model), tokenizer, data.eval_prompts, step)
        accelerator.wait_for_everyone()

    result, train_seconds = stage.train(
        model=model, optimizer=optimizer, scheduler=scheduler, batches=batches(), loss_fn=loss_fn,
        count_fn=target_count,
        run_eval=run_eval if data.eval_rows else None,
    )  # fmt: skip
    tokens = stage.totals()["items"]
    summary: dict[str, Any] = {
        "steps": result.steps,
        "resumed_from_step": stage.start_step,
        "train_loss": [row["loss"] for row in stage.history],
        "eval": stage.evals,
        "train_tokens": tokens,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds > 0 else None,
        "trainable_parameters": trainable,
    }

    final = stage.final_model(model, accelerator.unwrap_model(model), build_model)

    def save() -> dict[str, Any]:
        from rlhf.models import save_model

        out_dir = stage.run_dir / "model"
        save_model(final, tokenizer, out_dir)  # the adapter only, with peft
        return {"model_dir": str(out_dir)}

    stage.finish(summary, save=save, done=_done_line)
    return SftResult(summary, final if final is not None else accelerator.unwrap_model(model), tokenizer)


def _check_seq2seq(cfg: SftConfig, say) -> bool:
    """Whether the model is an encoder-decoder: its encoder reads the prompt and its decoder learns
    the answer (no packing; the loss covers the answer tokens alone)."""
    from rlhf.config.core import ConfigError
    from rlhf.models.load import kind_of

    if kind_of(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code) != "seq2seq":
        return False
    if not cfg.completion_only:
        raise ConfigError(
            "`completion_only: false` trains on the prompt's tokens too; an encoder-decoder reads its "
            "prompt with the encoder and predicts only the answer: leave `completion_only: true`"
        )
    if cfg.use_packing:
        say("[packing] an encoder-decoder reads one prompt per row: not packed")
    return True


def _build_model(cfg: SftConfig, tokenizer) -> torch.nn.Module:
    """The model as training starts: loaded, with its adapter or its layers frozen as configured."""
    from rlhf.models import load_lm
    from rlhf.models.freeze import apply_freeze

    model = load_lm(cfg.model, cfg.peft, tokenizer=tokenizer)
    if cfg.freeze.train_last_layers is not None or cfg.freeze.train_modules:
        apply_freeze(model, cfg.freeze)
    return model


def _log_answers(stage, model, tokenizer, prompts: list[tuple[list[int], str]], step: int) -> None:
    """Greedy answers to the first `eval.generations` held-out prompts, logged as text."""
    cfg = stage.cfg
    answers = sample_answers(model, tokenizer, prompts[: cfg.eval.generations], cfg.eval.max_new_tokens)
    text = "\n\n".join(
        f"PROMPT: {a['prompt']}\nANSWER: {a['answer']}\nREFERENCE: {a['reference']}" for a in answers
    )
    assert stage.logger is not None
    stage.logger.log_text(step, "eval/samples", text)


def _done_line(summary: dict[str, Any]) -> str:
    losses = summary["train_loss"]
    return (
        f"[done] {summary['steps']} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
        f"{summary['tokens_per_second']} tokens/s; model in {summary['model_dir']}"
    )


def _method(cfg: SftConfig) -> str:
    if cfg.peft.method != "none":
        return f"peft: {cfg.peft.method}"
    if cfg.freeze.train_last_layers is not None or cfg.freeze.train_modules:
        return "selective: " + ", ".join(
            ([f"last {cfg.freeze.train_last_layers} layers"] if cfg.freeze.train_last_layers else [])
            + list(cfg.freeze.train_modules or [])
        )
    return "full fine-tuning"
