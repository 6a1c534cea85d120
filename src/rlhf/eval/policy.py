"""`rlhf eval policy`: answer held-out prompts with the policy (and a baseline), score the answers
with a reward model and/or a gold function, measure KL(policy ‖ reference) on the policy's own
samples, and compare the two policies prompt by prompt (`metrics.win_rate`).

Writes `<output_dir>/eval.json` (every metric) and `samples.jsonl` (one row per prompt: both
answers and every score), prints a summary and a side-by-side table, and returns the metrics.

With `best_of` N > 1 the policy answers with the best of N of its samples (`rlhf.generation.
best_of`); `kl` is then the analytic KL(best-of-N ‖ policy) (`"analytic": true`), samples.jsonl
also holds the N candidates and their rewards, and `compute` counts the samples drawn per prompt.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.config.core import ConfigError
from rlhf.eval.columns import columns_text, metric_columns, summarize
from rlhf.eval.config import EvalPolicyConfig
from rlhf.eval.metrics import length_stats, mean_stat, sequence_kl, win_rate
from rlhf.models.readout import completion_logprobs
from rlhf.training.overoptimization import gap_line, reward_gap


@dataclass
class EvalInputs:
    """What every policy of one evaluation is run on, loaded once (prompts before any model)."""

    cfg: EvalPolicyConfig
    prompts: list[Any]
    """The held-out prompt records."""
    texts: list[Any]
    """(P,) their prompts as in the data (what the reward model and gold function judge)."""
    prompt_ids: list[list[int]]
    """(P,) rendered prompt token ids (policy tokenizer)."""
    tokenizer: Any
    device: torch.device
    sampling: Any
    """How every policy samples its one answer (or its N candidates)."""
    gold: Any | None
    """The gold `FunctionSource`, when one is given."""
    picker: Any | None
    """The reward model that picks the best of N (best_of > 1), else None."""
    engine: str
    """What samples the answers: `hf` or `vllm` (`cfg.engine` resolved before any model loaded)."""
    references: list[list[str] | None] | None = None
    """(P,) each prompt's reference answers (None for a prompt without); None when no prompt has any."""

    @classmethod
    def load(cls, cfg: EvalPolicyConfig) -> EvalInputs:
        from rlhf.data import PromptRenderer, encode_prompt, load_records, prompts_of
        from rlhf.engines import resolve_engine
        from rlhf.models import load_tokenizer
        from rlhf.rewards.function import RawScorer
        from rlhf.rewards.sources import FunctionSource

        if not cfg.data.path:
            raise ConfigError("no prompts given: set `data.path`")
        if not cfg.model.path:
            raise ConfigError("no policy given: set `model.path`")
        data = load_records(cfg.data, expect="prompt")
        prompts = prompts_of(data)
        references = _references(cfg, data.records)
        engine = resolve_engine(cfg.engine, cfg.model)
        gold = FunctionSource(cfg.gold) if cfg.gold else None  # import errors before any model loads
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = load_tokenizer(cfg.model, padding_side="left")
        renderer = PromptRenderer(cfg.prompt, tokenizer)
        limit = cfg.data.max_prompt_length
        prompt_ids = [encode_prompt(tokenizer, renderer.render(r.prompt), limit) for r in prompts]
        picker = None
        if cfg.best_of > 1:  # loaded before any policy: a bad directory fails before sampling
            picker = RawScorer(cfg.picker, device=device)
        sampling = cfg.sampling
        texts = [r.prompt for r in prompts]
        return cls(
            cfg, prompts, texts, prompt_ids, tokenizer, device, sampling, gold, picker, engine, references
        )

    def answer(self, path: str, best_of: int = 1) -> tuple[Any, list[Any]]:
        """(the model at `path`, its answer to every prompt: the best of `best_of` samples, or one)."""
        from rlhf.engines import sampler_for
        from rlhf.generation.best_of import best_of_n
        from rlhf.generation.sampling import generate_samples
        from rlhf.models import load_lm

        model_cfg = dataclasses.replace(self.cfg.model, path=path)
        model = load_lm(model_cfg, for_training=False, tokenizer=self.tokenizer).to(self.device)
        ids, progress = self.prompt_ids, self.cfg.progress
        source = sampler_for(
            self.engine, model, self.tokenizer, self.sampling, self.cfg.vllm, progress=progress
        )
        try:
            if best_of > 1:
                assert self.picker is not None
                picks = best_of_n(source, self.tokenizer, ids, self.texts, self.sampling, best_of, self.picker,
                                  progress=progress)  # fmt: skip
                return model, picks  # each has .text and .token_ids, as a Sample does
            groups = generate_samples(source, self.tokenizer, ids, self.sampling, progress=progress)
            return model, [group[0] for group in groups]
        finally:
            if source is not model:
                source.close()


def _references(cfg: EvalPolicyConfig, records: list) -> list[list[str] | None] | None:
    """The held-out prompts' reference answers (`rlhf.eval.references`); None when none has one.
    Prompts without one while others have one are said in a line (their metrics are left out)."""
    from rlhf.eval.references import references_of

    references = references_of(records, path=cfg.references, field=cfg.reference_field)
    found = sum(r is not None for r in references)
    if found == 0:
        return None
    if found < len(references):
        missing = next(r.source for r, refs in zip(records, references) if refs is None)
        print(
            f"[eval] {len(references) - found} of {len(references)} prompts have no reference answer "
            f"(first: {missing.path}:{missing.line}); the reference metrics cover the other {found}"
        )
    return references


def run_eval_policy(cfg: EvalPolicyConfig) -> dict[str, Any]:
    """Answer the held-out prompts with the policy (and the baseline), measure KL to the reference,
    score and compare; writes eval.json and samples.jsonl, prints the summary, returns the metrics."""
    from rlhf.generation.best_of import analytic_kl

    started = time.time()
    inputs = EvalInputs.load(cfg)
    policy, mine = inputs.answer(cfg.model.path, cfg.best_of)
    answers = {"policy": mine}
    result: dict[str, Any] = {
        "prompts": len(inputs.prompts), "policy": cfg.model.path, "baseline": cfg.baseline, "best_of": cfg.best_of,
    }  # fmt: skip
    if inputs.picker is not None:
        result["best_of_reward"] = inputs.picker.label
        result["kl"] = {
            "reference": cfg.model.path, "analytic": True, "formula": "log N - (N-1)/N",
            "sequence": {"mean": analytic_kl(cfg.best_of), "stderr": None, "n": len(inputs.prompts)},
            "per_token": None, "tokens": None,
        }  # fmt: skip
    result["compute"] = {
        "samples_per_prompt": {"policy": cfg.best_of, **({"baseline": 1} if cfg.baseline else {})}
    }
    reference_path = None if inputs.picker is not None else (cfg.reference or cfg.baseline)
    if reference_path:  # the policy's log-probs, then the policy freed before the reference loads
        logp = completion_logprobs(
            policy, inputs.prompt_ids, [s.token_ids for s in mine], **_read_out(inputs)
        )
        del policy
        result["kl"] = _measured_kl(inputs, logp, mine, reference_path, answers)
    else:
        del policy
    if cfg.baseline and "baseline" not in answers:
        _, answers["baseline"] = inputs.answer(cfg.baseline)
    scores, judges = _scores(inputs, answers)
    columns = metric_columns(inputs, answers)
    result.update(summarize(columns))
    for name, samples in answers.items():
        result[name + "_scores"] = {
            judge: mean_stat(values).as_dict() for judge, values in scores[name].items()
        }
        result[name + "_length"] = length_stats([len(s.token_ids) for s in samples])
    verdicts = _win_rates(inputs, answers, scores, judges, result)
    result["seconds"] = round(time.time() - started, 1)
    rows = _write(cfg, result, inputs, answers, scores, columns, verdicts)
    print(summary_text(result))
    print(side_by_side(rows[: cfg.show]))
    out = Path(cfg.output_dir)
    print(f"[eval] wrote {out / 'eval.json'} and {out / 'samples.jsonl'} in {result['seconds']} s")
    return result


def _win_rates(
    inputs: EvalInputs, answers: dict, scores: dict, judges: list[str], result: dict
) -> list | None:
    """Into `result`: the policy's win rate over the baseline by each score judge and by the LLM
    judge (when set), and `headline`, the one that decides; returns the LLM judge's verdicts."""
    from rlhf.eval.judged import judge_answers, judge_win_rate

    cfg, verdicts = inputs.cfg, None
    if "baseline" in answers:
        result["win_rate"] = {
            judge: win_rate(
                scores["policy"][judge], scores["baseline"][judge], tie_tolerance=cfg.tie_tolerance
            ).as_dict()
            for judge in judges
        }
        if cfg.judge is not None:
            mine, theirs = ([s.text for s in answers[n]] for n in ("policy", "baseline"))
            verdicts = judge_answers(cfg.judge, inputs.texts, mine, theirs)
            result["win_rate"]["judge"] = judge_win_rate(verdicts)
            result["judge_model"] = cfg.judge.label
    order = ("gold", "judge", "reward") if cfg.headline == "auto" else (cfg.headline,)
    result["headline"] = next((j for j in order if j in result.get("win_rate", {})), None)
    gap = reward_gap(result.get("win_rate", {}), cfg.overoptimization_gap)
    if gap is not None:
        result["overoptimization"] = gap
    return verdicts


def _read_out(inputs: EvalInputs) -> dict[str, Any]:
    """How answers are read out for the KL: the sampling temperature (greedy: 1), as PPO does."""
    cfg = inputs.cfg
    return {"batch_size": cfg.batch_size, "temperature": inputs.sampling.temperature,
            "pad_id": inputs.tokenizer.pad_token_id or 0}  # fmt: skip


def _measured_kl(
    inputs: EvalInputs, logp: list[list[float]], mine: list, reference_path: str, answers: dict
) -> dict[str, Any]:
    """KL(policy ‖ reference) on the policy's own answers (`logp`: their log-probs under the
    policy). A baseline that is also the reference answers while it is loaded (into `answers`)."""
    from rlhf.models import load_lm

    cfg = inputs.cfg
    completion_ids = [s.token_ids for s in mine]
    if cfg.baseline and reference_path == cfg.baseline:
        reference, answers["baseline"] = inputs.answer(cfg.baseline)
    else:
        ref_cfg = dataclasses.replace(cfg.model, path=reference_path)
        reference = load_lm(ref_cfg, for_training=False, tokenizer=inputs.tokenizer).to(inputs.device)
    ref_logp = completion_logprobs(reference, inputs.prompt_ids, completion_ids, **_read_out(inputs))
    del reference
    return {"reference": reference_path, "analytic": False, **sequence_kl(logp, ref_logp).as_dict()}


def _scores(
    inputs: EvalInputs, answers: dict[str, list]
) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Every answer's score by each judge (reward model, gold): ({policy: {judge: (P,)}}, judges)."""
    from rlhf.rewards.function import RawScorer

    cfg, picker, texts = inputs.cfg, inputs.picker, inputs.texts
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in answers}
    judges = []
    if cfg.reward.all_sources():
        reuse = picker is not None and cfg.picker is cfg.reward
        scorer = picker if picker is not None and reuse else RawScorer(cfg.reward, device=inputs.device)
        for name, samples in answers.items():
            if reuse and name == "policy":  # the picker scored every candidate already
                scores[name]["reward"] = [pick.reward for pick in samples]
            else:
                scores[name]["reward"] = scorer(texts, [s.text for s in samples]).rewards
        judges.append("reward")
    if inputs.gold is not None:
        for name, samples in answers.items():
            scores[name]["gold"] = inputs.gold(texts, [s.text for s in samples]).rewards
        judges.append("gold")
    return scores, judges


def _write(
    cfg: EvalPolicyConfig,
    result: dict,
    inputs: EvalInputs,
    answers: dict,
    scores: dict,
    columns: dict,
    verdicts: list | None = None,
) -> list[dict]:
    """eval.json and samples.jsonl (one row per prompt: every answer, its scores and metrics, the
    references); returns the rows."""
    from rlhf.data.jsonl import prompts_to_json

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    rows = []
    for i, record in enumerate(inputs.prompts):
        row: dict[str, Any] = {"prompt": prompts_to_json([record.prompt])[0], "source": str(record.source)}
        for name, samples in answers.items():
            row[name] = samples[i].text
            row[name + "_scores"] = {judge: values[i] for judge, values in scores[name].items()}
            if columns[name]:
                row[name + "_metrics"] = {metric: values[i] for metric, values in columns[name].items()}
        if inputs.references is not None:
            row["references"] = inputs.references[i]
        if verdicts is not None:
            from rlhf.eval.judged import verdict_row

            row["judge"] = verdict_row(verdicts[i])
        if inputs.picker is not None:
            row["policy_candidates"] = answers["policy"][i].candidates
            row["policy_candidate_rewards"] = answers["policy"][i].rewards
        rows.append(row)
    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    se = f" ± {stat['stderr']:.3f}" if stat.get("stderr") is not None else ""
    return f"{stat['mean']:.3f}{se}"


def summary_text(result: dict[str, Any]) -> str:
    """The metrics as a small table: one column per policy, then the win rates and the KL."""
    names = [n for n in ("policy", "baseline") if n + "_scores" in result]
    judges = sorted({j for n in names for j in result[n + "_scores"]})
    best_of = result.get("best_of", 1)
    header = f"[eval] {result['prompts']} prompts"
    if best_of > 1:
        header += f"; the policy answers with the best of {best_of} samples by {result['best_of_reward']}"
    w = max([16, *(len(m) + 2 for m in result.get("policy_metrics") or {})])  # the label column
    lines = [header, f"{'':<{w}}" + "".join(f"{n:>22}" for n in names)]
    for judge in judges:
        lines.append(
            f"{judge + ' score':<{w}}"
            + "".join(f"{_fmt(result[n + '_scores'].get(judge)):>22}" for n in names)
        )
    lines += columns_text(result, names, w)
    lines.append(
        f"{'length (tokens)':<{w}}" + "".join(f"{result[n + '_length']['mean'] or 0:>22.1f}" for n in names)
    )
    for judge, w in result.get("win_rate", {}).items():
        interval = f" (95% CI {w['low']:.2f}-{w['high']:.2f})" if w["low"] is not None else ""
        rate = "-" if w["rate"] is None else f"{w['rate']:.3f}"
        more = ""
        if judge == "judge":  # the LLM judge: what it could not decide
            more = f" ({w['inconsistent']} inconsistent across orders); {w['abstained']} abstained"
        lines.append(
            f"win rate of the policy by {judge}: {rate}{interval}; {w['wins']} wins, {w['ties']} ties{more}, {w['losses']} losses"
        )
    line = gap_line(result.get("overoptimization"))
    if line:
        lines.append(line)
    if result.get("kl", {}).get("analytic"):
        lines.append(
            f"KL(best-of-{best_of} ‖ policy): {_fmt(result['kl']['sequence'])} nats per answer "
            f"(analytic: log N − (N−1)/N, an upper bound)"
        )
    elif "kl" in result:
        kl = result["kl"]
        lines.append(
            f"KL(policy ‖ {kl['reference']}): {_fmt(kl['sequence'])} nats per answer, {kl['per_token'] or 0:.4f} per token"
        )
    return "\n".join(lines)


def side_by_side(rows: list[dict[str, Any]], width: int = 60) -> str:
    """A few prompts with both answers and their scores, as plain text."""
    out = []
    for row in rows:
        prompt = row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][-1]["content"]
        out.append(f"--- {row['source']}: {prompt[:width]!r}")
        for name in ("policy", "baseline"):
            if name in row:
                scores = ", ".join(f"{k} {v:.3f}" for k, v in row[name + "_scores"].items())
                out.append(f"  {name:<8} {row[name][:width]!r}" + (f"  [{scores}]" if scores else ""))
    return "\n".join(out)
