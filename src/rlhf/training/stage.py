"""The skeleton every trainer stage (sft, reward, dpo, rrhf) shares, as one object a `run_*` composes.

    stage = Stage.start("dpo", cfg)                        accelerator, run directory, config written
    model, optimizer = stage.prepare(model, optimizer, scheduler, tokenizer=..., resume=...)
    stream = stage.stream(len(train))                      resumable, sharded over processes
    result, seconds = stage.train(model=..., batches=..., loss_fn=..., run_eval=...)
    stage.finish(summary, save=..., done=...)              outputs and summary.json on the main process

What stays in the stage is what is particular to it: its data, its model, its loss, its evaluation
and what it saves. Checkpoints, the resumed history, evaluation bookkeeping, the metrics logger and
the summary file are handled here the same way for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.config.core import to_dict
from rlhf.files import write_json_atomic
from rlhf.tracking import MetricsLogger
from rlhf.training.loop import (
    LoopOptions,
    LoopResult,
    LossFn,
    stage_on_step,
    stage_steps,
    start_stage,
    train_loop,
)


@dataclass
class Stage:
    """One stage run in progress (see the module docstring). `cfg` is any stage config with the
    run-control fields (`rlhf.config.parts.EpochRunControl`), `optimizer`, `logging` and `eval`."""

    name: str
    """The stage's name (`sft`, `reward`, ...): the progress bar and the first printed line."""
    cfg: Any
    """The stage's resolved config."""
    accelerator: Any
    """The run's Accelerator."""
    say: Callable[..., None]
    """`print` on the main process, nothing elsewhere."""
    run_dir: Path
    """`output_dir`, created, with the config and environment written."""
    started: float
    """time.time() when the stage started."""
    steps: int = 0
    """Optimizer steps of the run (set by `prepare`)."""
    start_step: int = 0
    """Steps already taken by the run resumed from (0: a fresh run)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One row per optimizer step (restored on resume)."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """One row per evaluation (restored on resume)."""
    logger: MetricsLogger | None = None
    """metrics.jsonl and TensorBoard (opened by `prepare`, after a resume trimmed the old rows)."""
    sharding: dict[str, Any] = field(default_factory=dict)
    """engine (`sharding_kind`), processes, and the share of the trained state each holds (`prepare`)."""
    data_report: dict[str, Any] | None = None
    """The training data's load report (`LoadReport.as_dict`), set by the stage; in summary.json."""
    seen: int = 0
    """Training items (tokens, pairs, prompts) this process counted in this part of the run; the
    stage adds to it as its batches go by."""
    before: dict[str, float] = field(default_factory=dict)
    """{items, seconds} of the run's part before the checkpoint it resumed from (empty: fresh)."""
    _checkpoint: dict[str, Any] = field(default_factory=dict)
    """prepared, model, optimizer, scheduler, tokenizer of `save_checkpoint`."""
    _train_span: list[float] = field(default_factory=list)
    """When this part's training started (and ended, once it has)."""

    @classmethod
    def start(
        cls, name: str, cfg: Any, *, resume: str | bool | None = None, overwrite: bool = False
    ) -> Stage:
        """An Accelerator seeded with `cfg.seed`, and the run directory (see `start_stage`: a run
        that does not `resume` must `overwrite` an earlier run's checkpoints)."""
        started = time.time()
        accelerator, say, run_dir = start_stage(
            name, cfg, cfg.optimizer, mixed_precision=cfg.mixed_precision, resume=resume, overwrite=overwrite
        )
        return cls(name, cfg, accelerator, say, run_dir, started)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def report_model(self, model, *, method: str | None = None, note: str = "") -> int:
        """Print the `[model]` line (parameters, trainable ones, how it trains); returns the
        number of trainable parameters."""
        from rlhf.models import trainable_parameter_summary

        trainable, total = trainable_parameter_summary(model)
        peft = self.cfg.peft.method
        method = method or ("full fine-tuning" if peft == "none" else f"peft: {peft}")
        self.say(
            f"[model] {self.cfg.model.path}: {total:,} parameters, {trainable:,} trainable ({method}{note})"
        )
        return trainable

    def plan(self, num_items: int) -> int:
        """The run's optimizer steps over `num_items` training items (`max_steps` or `epochs`)."""
        self.steps = stage_steps(self.cfg, num_items, self.accelerator.num_processes)
        return self.steps

    def prepare(
        self, model, optimizer, scheduler, *, tokenizer, resume: str | bool | None,
        checkpointed: Callable[[Any], Any] = lambda prepared: prepared,
    ) -> tuple[Any, Any]:  # fmt: skip
        """`accelerator.prepare(model, optimizer)`, then resume from the checkpoint `resume` names
        (see `resume_run`). `checkpointed(prepared model)` is the module a checkpoint holds (e.g.
        the LM inside a read-out wrapper). Returns the prepared (model, optimizer)."""
        from rlhf.training.checkpoint import resume_run
        from rlhf.training.sharding import (
            is_fsdp,
            one_embedding_module,
            prepare_engine_config,
            sharding_report,
        )

        accelerator = self.accelerator
        prepare_engine_config(
            accelerator, micro_batch_size=self.cfg.batch_size, max_grad_norm=self.cfg.optimizer.max_grad_norm
        )
        if is_fsdp(accelerator):
            one_embedding_module(model)
        model, optimizer = accelerator.prepare(model, optimizer)
        self.sharding, line = sharding_report(accelerator, model, optimizer)
        self.say(line)
        target = checkpointed(model)
        resumed = resume_run(
            accelerator, self.run_dir, resume, model=target, optimizer=optimizer, scheduler=scheduler,
            config=to_dict(self.cfg), say=self.say, prepared=model,
        )  # fmt: skip
        self.start_step, self.history, self.evals = resumed.step, resumed.history, resumed.evals
        self.before = resumed.state.get("totals", {})
        self._checkpoint = {
            "prepared": model,
            "model": target,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "tokenizer": tokenizer,
        }
        self.logger = MetricsLogger(self.run_dir, tensorboard=self.cfg.logging.tensorboard, enabled=self.main)
        return model, optimizer

    def stream(self, num_items: int):
        """This process's micro-batches of item indices, resumed where the checkpoint left off."""
        from rlhf.training.batches import BatchStream

        return BatchStream(
            num_items, self.cfg.batch_size, num_processes=self.accelerator.num_processes,
            process_index=self.accelerator.process_index, seed=self.cfg.seed,
            start=self.start_step * self.cfg.optimizer.gradient_accumulation_steps,
        )  # fmt: skip

    def pack_width(
        self, isolates: Callable[[int], bool], what: str = "sequences", *, kind: str = "causal"
    ) -> int | None:
        """`data.max_length` when `packing` is on and `isolates(width)` finds that the model keeps
        packed `what` apart; else None (said when packing was asked for). `kind`: the model's kind
        (`rlhf.models.kind`): only a decoder-only model's rows are ever packed."""
        width = self.cfg.data.max_length if self.cfg.packing else None
        if width is not None and kind != "causal":
            reads = "an encoder-decoder's encoder" if kind == "seq2seq" else "an encoder"
            self.say(
                f"[packing] {reads} attends both ways over a whole row: padding each {what[:-1]} instead"
            )
            return None
        if width is not None and not isolates(width):
            self.say(
                f"[packing] this model lets packed {what} attend to each other; padding each {what[:-1]} instead"
            )
            return None
        return width

    def save(self, step: int) -> None:
        """Checkpoint `step`: the model, optimizer, schedule, RNG, history and evaluations."""
        from rlhf.training.checkpoint import save_checkpoint

        state = {
            "history": self.history,
            "evals": self.evals,
            "config": to_dict(self.cfg),
            "totals": self.totals(),
        }
        path = save_checkpoint(
            self.accelerator,
            self.run_dir,
            step,
            **self._checkpoint,
            state=state,
            keep=self.cfg.keep_checkpoints,
        )
        self.say(f"[checkpoint] saved {path}", flush=True)

    def record_eval(
        self, step: int, result: dict[str, Any], keys: Iterable[str], *, wait: bool = True
    ) -> None:
        """Keep an evaluation's `result`, log and print its `keys` (those that are not None)."""
        assert self.logger is not None, "prepare() first"
        self.evals.append({"step": step, **result})
        shown = {k: result[k] for k in keys if result.get(k) is not None}
        self.logger.log(step, {f"eval/{k}": v for k, v in shown.items()})
        self.say(f"[eval] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if wait:
            self.accelerator.wait_for_everyone()

    def train(
        self, *, model, optimizer, scheduler, batches: Iterable[Any], loss_fn: LossFn,
        count_fn: Callable[[Any], int], run_eval: Callable[[int], None] | None,
    ) -> tuple[LoopResult, float]:  # fmt: skip
        """Evaluate at step 0 (fresh run), train to `steps` with evaluations and checkpoints at their
        intervals, evaluate at the end. Returns the loop's result and the training seconds of the
        whole run (a resumed run's earlier part included)."""
        assert self.logger is not None, "prepare() first"
        cfg = self.cfg
        on_step = stage_on_step(
            steps=self.steps, history=self.history, eval_every=cfg.eval.every, run_eval=run_eval,
            save_every=cfg.save_every, save=self.save,
        )  # fmt: skip
        if run_eval is not None and self.start_step == 0:
            run_eval(0)
        started = time.time()
        self._train_span[:] = [started]
        with self.logger:
            options = LoopOptions(
                max_steps=self.steps,
                optim_cfg=cfg.optimizer,
                logger=self.logger,
                log_every=cfg.logging.log_every,
                progress=cfg.logging.progress,
                start_step=self.start_step,
                count_fn=count_fn,
                on_step=on_step,
                max_nonfinite=cfg.max_nonfinite,
            )
            result = train_loop(self.accelerator, model, optimizer, scheduler, batches, loss_fn, options)
            if run_eval is not None:
                run_eval(result.steps)
        self._train_span.append(time.time())
        return result, self.totals()["seconds"]

    def totals(self) -> dict[str, Any]:
        """{items, seconds} of training over the whole run so far, a resumed run's earlier part
        included (items: `seen` summed over processes; every process calls this)."""
        span = self._train_span
        seconds = ((span[1] if len(span) > 1 else time.time()) - span[0]) if span else 0.0
        return {
            "items": int(self.before.get("items", 0)) + self.total(self.seen),
            "seconds": round(float(self.before.get("seconds", 0.0)) + seconds, 3),
        }

    def total(self, count: int | float) -> int:
        """`count` summed over processes."""
        tensor = torch.tensor(count, device=self.accelerator.device)
        return int(self.accelerator.reduce(tensor, reduction="sum").item())

    def finish(
        self,
        summary: dict[str, Any],
        *,
        save: Callable[[], dict[str, Any]],
        done: Callable[[dict[str, Any]], str],
    ) -> None:
        """On the main process: `save()` the outputs (its dict joins the summary), write
        `summary.json` and print `done(summary)`. Every process waits for it. Prints each process's
        peak memory first (every process takes part)."""
        from rlhf.training.sharding import memory_line, peak_memory_per_process

        peaks = peak_memory_per_process(self.accelerator)
        summary["resumed"] = self.start_step > 0
        summary["sharding"] = self.sharding
        if self.data_report is not None:
            summary["data_report"] = self.data_report
        summary["peak_memory_gib"] = [round(p, 3) for p in peaks]
        self.say(memory_line(self.accelerator, peaks))
        self.accelerator.wait_for_everyone()
        if self.main:
            summary.update(save())
            summary["seconds"] = round(time.time() - self.started, 1)
            write_json_atomic(self.run_dir / "summary.json", summary)
            resumed = (
                f" (resumed at step {self.start_step}; counts cover the whole run)" if self.start_step else ""
            )
            self.say(done(summary) + resumed)
        self.accelerator.wait_for_everyone()

    def final_model(self, prepared, part, rebuild: Callable[[], Any]):
        """The trained `part` of the `prepared` model, whole, on the main process (see
        `rlhf.training.sharding.unsharded_model`; every process calls it). On the other processes of
        a sharded run: None."""
        from rlhf.training.sharding import unsharded_model

        return unsharded_model(self.accelerator, prepared, part, rebuild)

    def finish_policy(
        self, summary: dict[str, Any], policy, tokenizer, rebuild: Callable[[], Any], *, rate: str, unit: str
    ):
        """`finish` for a stage that trains a policy from preferences (dpo, rrhf): the LM inside the
        prepared `policy` (whole: `final_model` with `rebuild`) saved to `<run_dir>/policy` (LoRA
        merged, QLoRA as its adapter), the `[done]` line with the throughput `summary[rate]` in
        `unit`. Returns the LM (merged on the main process; a shard elsewhere under sharding)."""
        from rlhf.models import save_model

        shard = self.accelerator.unwrap_model(policy).lm
        lm = self.final_model(policy, shard, rebuild)
        saved = {"lm": lm if lm is not None else shard}

        def save() -> dict[str, Any]:
            out_dir = self.run_dir / "policy"
            saved["lm"] = save_model(lm, tokenizer, out_dir, merge=self.cfg.peft.method == "lora")
            return {"policy_dir": str(out_dir)}

        self.finish(summary, save=save, done=lambda done: policy_done_line(done, rate, unit))
        return saved["lm"]


def policy_done_line(summary: dict[str, Any], rate: str, unit: str) -> str:
    """The `[done]` line of a stage that trains a policy from preferences (dpo, rrhf): its loss, the
    held-out accuracy, the throughput `summary[rate]` in `unit`, and where the policy went."""
    final = summary["final_eval"]
    acc = f", held-out accuracy {final['accuracy']:.3f}" if final else ""
    losses = summary["train_loss"]
    return (
        f"[done] {summary['steps']} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}{acc}; "
        f"{summary[rate]} {unit}; policy in {summary['policy_dir']}"
    )
