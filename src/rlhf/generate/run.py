"""`rlhf generate`: sample K completions for every prompt of a file and write them as `candidates`.

Each output line is one prompt (in the order of the prompts file) and its K completions:

    {"prompt": "Name a fruit.",                       # as in the prompts file: text or [{role, content}]
     "completions": ["An apple.", "A pear.", ...],    # K strings, in draw order
     "rendered_prompt": "### Instruction:\\n...",      # the text the model was given (template applied)
     "source": "prompts.jsonl:3",                     # file and line of the prompt
     "prompt_tokens_cut": 12,                         # only when data.max_prompt_length cut the prompt
     "id": "q-17"}                                    # the prompt row's other fields, copied as they are

This is the `candidates` data format: the labeling app and `rlhf data inspect` read it, and every
stage that takes prompts can take it back (`load_records(path, expect="prompt")`).

With `best_of` N > 1 (best-of-N, `rlhf.generation.best_of`) each line is instead the kept
completion of N draws, scored by `reward` (a reward model's own scores, or a weighted sum of
sources' raw rewards):

    {"prompt": "Name a fruit.",                       # as above
     "completion": "An apple.",                       # the draw the reward model scored highest
     "reward": 1.7,                                   # its reward
     "best_of": 4,                                    # N
     "rewards": [0.2, 1.7, -0.4, 0.9],                # every draw's reward, in draw order
     "candidates": ["A rock.", "An apple.", ...],     # every draw's text, in draw order
     "rendered_prompt": "...", "source": "prompts.jsonl:3", ...}   # as above

This is the `prompt_completion` format: `rlhf sft` trains on it as it is (rejection-sampling
fine-tuning), and stages that take prompts read its prompts. A prompt whose N draws are all blank
has nothing to learn and is left out (counted in the summary).
"""

from __future__ import annotations

import math
import time
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.data.jsonl import prompt_to_json
from rlhf.data.records import PromptOnly
from rlhf.files import write_jsonl_atomic
from rlhf.generate.config import GenerateConfig
from rlhf.generation.best_of import BestOfN, best_of_n

OUTPUT_FIELDS = ("prompt", "completions", "rendered_prompt", "source", "prompt_tokens_cut")
"""Fields generate writes itself; a prompt row's own field of one of these names is not copied
(nor is `ranks`, which would make the row read as a ranking)."""
_NOT_COPIED = {*OUTPUT_FIELDS, "ranks"}
BEST_OF_FIELDS = ("prompt", "completion", "reward", "best_of", "rewards", "candidates", "rendered_prompt",
                  "source", "prompt_tokens_cut")  # fmt: skip
"""Fields a best-of-N row has; a prompt row's own field of one of these names is not copied, nor
is any field that would make the row read as another format (e.g. `rating`, `chosen`)."""
_BEST_OF_NOT_COPIED = {
    *BEST_OF_FIELDS, "completions", "ranks", "chosen", "rejected", "rating", "label", "correction",
    "feedback", "messages", "conversations", "text", "replies",
}  # fmt: skip


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Sample, write `cfg.output`, print a one-line summary and return it as a dict."""
    import torch

    from rlhf.data import load_records, prompts_of
    from rlhf.engines import resolve_engine, sampler_for
    from rlhf.generation.sampling import count_repeats
    from rlhf.models import load_lm, load_tokenizer

    started = time.time()
    if not cfg.data.path:
        raise ConfigError("no prompts given: set `data.path` (`rlhf generate --prompts FILE`)")
    # Prompts first: a bad prompts file fails in milliseconds, before any model loads.
    loaded = load_records(cfg.data, expect="prompt")
    prompts = prompts_of(loaded)
    engine = resolve_engine(cfg.engine, cfg.model)
    tokenizer = load_tokenizer(cfg.model, padding_side="left")
    rendered, prompt_ids, cuts = _encode_prompts(cfg, prompts, tokenizer)

    scorer = None
    if cfg.best_of > 1:
        from rlhf.rewards.function import RawScorer

        # Loaded before the policy: a bad reward model directory fails before any sampling.
        scorer = RawScorer(cfg.reward)
    model = load_lm(cfg.model, for_training=False, tokenizer=tokenizer)
    if torch.cuda.is_available() and cfg.model.quantization == "none":
        model.to("cuda")  # a quantized model was already placed on its GPU while loading
    source = sampler_for(engine, model, tokenizer, cfg.sampling, cfg.vllm, progress=cfg.progress)

    picks, groups, rows = _draw(cfg, source, tokenizer, prompts, prompt_ids, rendered, cuts, scorer)
    if source is not model:
        source.close()
    output = write_jsonl_atomic(cfg.output, rows)
    samples = [sample for group in groups for sample in group]
    summary = {
        "prompts": len(prompts),
        "samples_per_prompt": cfg.best_of if picks else cfg.samples_per_prompt,
        "completions": len(samples),
        "repeats_left": count_repeats(groups),
        "empty": sum(not sample.text.strip() for sample in samples),
        "hit_max_new_tokens": sum(sample.finish == "length" for sample in samples),
        "prompts_cut": sum(cut > 0 for cut in cuts),
        "rows_skipped": len(loaded.report.skipped),
        "seconds": round(time.time() - started, 1),
        "output": str(output),
        "engine": engine,
    }
    if picks:
        summary.update(
            best_of=cfg.best_of,
            reward=scorer.label if scorer is not None else None,
            mean_best_reward=finite_mean([pick.reward for pick in picks]),
            mean_reward=finite_mean([reward for pick in picks for reward in pick.rewards]),
            rows_written=len(rows),
            blank_prompts_left_out=len(picks) - len(rows),
        )
    print(summary_line(summary, loaded.report.summary(with_path=False)))
    return summary


def _draw(
    cfg: GenerateConfig,
    source: Any,
    tokenizer: Any,
    prompts: list[PromptOnly],
    prompt_ids: list[list[int]],
    rendered: list[str],
    cuts: list[int],
    scorer: Any,
) -> tuple[list[BestOfN], list[list[Any]], list[dict[str, Any]]]:
    """(best-of-N picks or [], every prompt's draws, the rows to write): best-of-N rows with a
    `scorer`, else `candidates` rows of `samples_per_prompt` draws."""
    from rlhf.generation.sampling import generate_samples

    if scorer is not None:
        texts = [record.prompt for record in prompts]
        picks = best_of_n(
            source,
            tokenizer,
            prompt_ids,
            texts,
            cfg.sampling,
            cfg.best_of,
            scorer,
            skip_blank=True,
            progress=cfg.progress,
        )
        rows = [
            best_of_row(record, pick, text, cut)
            for record, pick, text, cut in zip(prompts, picks, rendered, cuts)
            if pick.text.strip()
        ]
        return picks, [pick.samples for pick in picks], rows
    groups = generate_samples(
        source,
        tokenizer,
        prompt_ids,
        cfg.sampling,
        per_prompt=cfg.samples_per_prompt,
        unique=cfg.unique,
        max_retries=cfg.max_retries,
        progress=cfg.progress,
    )
    rows = [
        candidates_row(record, [sample.text for sample in group], text, cut)
        for record, group, text, cut in zip(prompts, groups, rendered, cuts)
    ]
    return [], groups, rows


def _encode_prompts(
    cfg: GenerateConfig, prompts: list[PromptOnly], tokenizer
) -> tuple[list[str], list[list[int]], list[int]]:
    """(rendered prompt texts, their token ids cut to `max_prompt_length`, tokens cut from each)."""
    from rlhf.data import PromptRenderer, encode_prompt

    renderer = PromptRenderer(cfg.prompt, tokenizer)
    rendered = [renderer.render(record.prompt) for record in prompts]
    prompt_ids, cuts = [], []
    for text in rendered:
        ids = encode_prompt(tokenizer, text)
        kept = (
            encode_prompt(tokenizer, text, cfg.data.max_prompt_length) if cfg.data.max_prompt_length else ids
        )
        prompt_ids.append(kept)
        cuts.append(len(ids) - len(kept))
    return rendered, prompt_ids, cuts


def candidates_row(record: PromptOnly, completions: list[str], rendered: str, cut: int) -> dict[str, Any]:
    """One output line: the `candidates` format (see the module docstring)."""
    row: dict[str, Any] = {
        "prompt": prompt_to_json(record.prompt),
        "completions": completions,
        "rendered_prompt": rendered,
        "source": str(record.source),
    }
    if cut:
        row["prompt_tokens_cut"] = cut
    row.update((key, value) for key, value in record.meta.items() if key not in _NOT_COPIED)
    return row


def best_of_row(record: PromptOnly, pick: BestOfN, rendered: str, cut: int) -> dict[str, Any]:
    """One best-of-N output line: `prompt_completion` data (see the module docstring)."""
    row: dict[str, Any] = {
        "prompt": prompt_to_json(record.prompt),
        "completion": pick.text,
        "reward": pick.reward,
        "best_of": len(pick.samples),
        "rewards": pick.rewards,
        "candidates": pick.candidates,
        "rendered_prompt": rendered,
        "source": str(record.source),
    }
    if cut:
        row["prompt_tokens_cut"] = cut
    row.update((key, value) for key, value in record.meta.items() if key not in _BEST_OF_NOT_COPIED)
    return row


def finite_mean(values: list[float]) -> float | None:
    """The mean of the finite values; None when there is none."""
    finite = [value for value in values if math.isfinite(value)]
    return math.fsum(finite) / len(finite) if finite else None


def summary_line(summary: dict[str, Any], load_summary: str) -> str:
    """E.g. `[generate] 3 prompts x 4 samples = 12 completions in 1.2 s -> out.jsonl (0 repeats ...)`."""
    notes = [
        f"{summary['repeats_left']} repeats left",
        f"{summary['hit_max_new_tokens']} hit max_new_tokens",
        f"{summary['empty']} empty",
    ]
    if summary["prompts_cut"]:
        notes.append(f"{summary['prompts_cut']} prompts cut to data.max_prompt_length")
    if summary["rows_skipped"]:
        notes.append(f"data: {load_summary}")
    if summary.get("engine") == "vllm":
        notes.append("sampled by vLLM")
    if "best_of" in summary:
        notes[0] = f"{summary['repeats_left']} repeats"  # best-of-N does not re-draw repeats
        if summary["blank_prompts_left_out"]:
            notes.append(f"{summary['blank_prompts_left_out']} prompts left out (every draw blank)")

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        return (
            f"[generate] {summary['prompts']} prompts x best of {summary['best_of']} = "
            f"{summary['completions']} completions in {summary['seconds']} s -> {summary['output']}; "
            f"mean reward {fmt(summary['mean_best_reward'])} of the kept vs "
            f"{fmt(summary['mean_reward'])} of all samples ({'; '.join(notes)})"
        )
    return (
        f"[generate] {summary['prompts']} prompts x {summary['samples_per_prompt']} samples = "
        f"{summary['completions']} completions in {summary['seconds']} s -> {summary['output']} "
        f"({'; '.join(notes)})"
    )
