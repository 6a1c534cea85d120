"""RRHF's data: every prompt with its K scored responses, before and after tokenization.

Responses come from the data (people's rankings or comparisons, or candidates such as other models'
answers) and from the starting policy (`samples_per_prompt`); people's ranks (score = -rank) or a
reward model score them. The result is written to `<run>/responses.jsonl`, one ranking row per
prompt, so users see what the run trained on and a resumed run reads the same responses back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.data import Comparison, PromptRenderer, Ranking, TruncationStats, encode_example
from rlhf.data.records import Candidates, Prompt
from rlhf.preference.groups import Group
from rlhf.rrhf.config import RrhfConfig

RESPONSES_FILE = "responses.jsonl"


@dataclass
class Responses:
    """One prompt's responses and their scores (higher is better), before tokenization."""

    prompt: Prompt
    """The prompt as the data gives it (text or messages): what the reward model renders itself."""
    rendered: str
    """The prompt text the policy sees (its template applied)."""
    texts: list[str] = field(default_factory=list)
    """(K,) the responses: the data's first, then the samples in draw order."""
    origins: list[str] = field(default_factory=list)
    """(K,) `data` or `sample`."""
    eos: list[bool] = field(default_factory=list)
    """(K,) whether the response ends with EOS when encoded (false: a sample cut at max_new_tokens)."""
    scores: list[float] | None = None
    """(K,) people's -rank or the reward model's score; None until scored."""
    weight: float = 1.0
    """The row's weight (people's rankings with a `weight`): its loss counts this much."""
    source: str = ""
    """File and line of the (first) record of the prompt."""

    def add(self, text: str, origin: str, eos: bool = True) -> None:
        self.texts.append(text)
        self.origins.append(origin)
        self.eos.append(eos)

    def scored(self) -> list[float]:
        """The scores; a group is scored before anything reads them."""
        if self.scores is None:
            raise ValueError(f"{self.source}: responses read before they were scored")
        return self.scores

    def ranks(self) -> list[int]:
        """1 = best; equal scores share a rank (dense ranking)."""
        scores = self.scored()
        order = sorted(set(scores), reverse=True)
        return [order.index(s) + 1 for s in scores]


def collect_responses(records: list, cfg: RrhfConfig, renderer: PromptRenderer, path: str) -> list[Responses]:
    """The prompts of `records` with the data's responses. With a reward, the responses of every
    record of one prompt are pooled (its scores compare across records); with people's ranks, each
    record is a group of its own, scored -rank."""
    if not records:
        return []
    if cfg.reward.all_sources():
        pooled: dict[str, Responses] = {}
        for record in records:
            rendered = renderer.render(record.prompt)
            group = pooled.setdefault(rendered, Responses(record.prompt, rendered, source=str(record.source)))
            if cfg.include_data_responses:
                for text in _data_texts(record):
                    if text not in group.texts:
                        group.add(text, "data")
        return list(pooled.values())
    kind = records[0].kind
    if kind not in ("comparison", "ranking"):
        hint = (
            "candidates carry no ranks: set `reward` (e.g. `reward.model`) to score them"
            if kind == "candidates"
            else "rrhf needs ranked responses: use rankings or comparisons, or set `reward` "
            "and `samples_per_prompt` to score samples of the policy"
        )
        raise ConfigError(f"{path} holds {kind} data; {hint}")
    groups = []
    for record in records:
        ranks = [0.0, 1.0] if isinstance(record, Comparison) else [float(r) for r in record.ranks]
        group = Responses(record.prompt, renderer.render(record.prompt), source=str(record.source))
        for text in _data_texts(record):
            group.add(text, "data")
        group.scores, group.weight = [-r for r in ranks], record.weight
        groups.append(group)
    return groups


def _data_texts(record) -> list[str]:
    if isinstance(record, Comparison):
        return [record.chosen, record.rejected]
    if isinstance(record, (Ranking, Candidates)):
        return list(record.completions)
    return []  # prompts only


def add_samples(accelerator, groups: list[Responses], lm, tokenizer, cfg: RrhfConfig) -> None:
    """Append `samples_per_prompt` samples of `lm` to every group; each process samples its share
    of the prompts and they swap what they drew."""
    from rlhf.data import encode_prompt
    from rlhf.generation.sampling import generate_samples

    mine = list(range(accelerator.process_index, len(groups), accelerator.num_processes))
    prompt_ids = [encode_prompt(tokenizer, groups[i].rendered, cfg.data.max_prompt_length) for i in mine]
    was_training = lm.training
    lm.eval()
    drawn = generate_samples(
        lm,
        tokenizer,
        prompt_ids,
        cfg.sampling,
        per_prompt=cfg.samples_per_prompt,
        unique=cfg.unique,
        max_retries=cfg.max_retries,
        progress=cfg.logging.progress and accelerator.is_main_process,
    )
    lm.train(was_training)
    found = [(i, [(s.text, s.finish != "length") for s in samples]) for i, samples in zip(mine, drawn)]
    for i, samples in _share(accelerator, found):
        for text, eos in samples:
            groups[i].add(text, "sample", eos)


def score_responses(accelerator, groups: list[Responses], cfg: RrhfConfig) -> None:
    """Every response's score by `reward` (raw); each process scores its share of the groups."""
    import torch

    from rlhf.rewards.function import RawScorer

    scorer = RawScorer(cfg.reward, device=accelerator.device)
    mine = [i for i in range(accelerator.process_index, len(groups), accelerator.num_processes)]
    prompts = [groups[i].prompt for i in mine for _ in groups[i].texts]
    rewards = scorer(prompts, [t for i in mine for t in groups[i].texts]).rewards if prompts else []
    found, at = [], 0
    for i in mine:
        found.append((i, [float(r) for r in rewards[at : at + len(groups[i].texts)]]))
        at += len(groups[i].texts)
    del scorer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for i, scores in _share(accelerator, found):
        groups[i].scores = scores


def _share(accelerator, found: list) -> list:
    """(index, value) pairs of every process, in index order."""
    from accelerate.utils import gather_object

    everything = gather_object(found) if accelerator.num_processes > 1 else found
    return sorted(everything, key=lambda pair: pair[0])


def usable(groups: list[Responses]) -> tuple[list[Responses], int]:
    """The groups with two responses scored apart (RRHF needs a pair), and how many were left out."""
    kept = [g for g in groups if len(g.texts) >= 2 and len(set(g.scored())) > 1]
    return kept, len(groups) - len(kept)


def encode_groups(groups: list[Responses], tokenizer, cfg: RrhfConfig) -> tuple[list[Group], TruncationStats]:
    """Tokenized groups (prompt + response + EOS each) with ranks = -score, for `collate_sequences`."""
    stats = TruncationStats(cfg.data.max_length)
    out: list[Group] = []
    for g in groups:
        examples = [
            encode_example(tokenizer, g.rendered, text, cfg.data.max_length, cfg.data.max_prompt_length, eos)
            for text, eos in zip(g.texts, g.eos)
        ]
        stats.add(*examples)
        out.append(
            Group(
                g.rendered, [e.input_ids for e in examples], ranks=[-s for s in g.scored()], weight=g.weight,
                prompt_lens=[e.prompt_len for e in examples],
            )
        )  # fmt: skip
    return out, stats


def write_responses(path: Path, train: list[Responses], held_out: list[Responses], scored_by: str) -> None:
    """One `ranking` row per group (readable back as data): prompt, responses, ranks (1 = best),
    and what RRHF used: scores, origins, the split."""
    from rlhf.data.jsonl import prompt_to_json
    from rlhf.files import write_jsonl_atomic

    rows = []
    for split, groups in (("train", train), ("eval", held_out)):
        for g in groups:
            row: dict[str, Any] = {
                "prompt": prompt_to_json(g.prompt), "completions": g.texts, "ranks": g.ranks(),
                "scores": g.scores, "origins": g.origins, "scored_by": scored_by, "split": split,
                "rendered_prompt": g.rendered, "source": g.source,
            }  # fmt: skip
            if g.weight != 1.0:
                row["weight"] = g.weight
            if not all(g.eos):
                row["hit_max_new_tokens"] = [i for i, eos in enumerate(g.eos) if not eos]
            rows.append(row)
    write_jsonl_atomic(path, rows)


def read_responses(path: Path) -> tuple[list[Responses], list[Responses]]:
    """(train, held_out) as `write_responses` wrote them (the prompts stay JSON: a resumed run
    neither scores nor writes them again)."""
    train: list[Responses] = []
    held_out: list[Responses] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cut = set(row.get("hit_max_new_tokens", []))
        group = Responses(
            row["prompt"], row["rendered_prompt"], list(row["completions"]), list(row["origins"]),
            [i not in cut for i in range(len(row["completions"]))], [float(s) for s in row["scores"]],
            float(row.get("weight", 1.0)), row.get("source", ""),
        )  # fmt: skip
        (train if row["split"] == "train" else held_out).append(group)
    return train, held_out


def load_split(
    cfg: RrhfConfig, renderer: PromptRenderer
) -> tuple[list[Responses], list[Responses], str, dict[str, Any]]:
    """Training and held-out groups of the data (unsampled, unscored unless people ranked them),
    and a line on what was read."""
    from rlhf.data import load_records
    from rlhf.data.split import split_eval

    loaded = load_records(cfg.data, expect="prompt")
    records, held_out = loaded.records, []
    if cfg.eval.path:
        held = load_records(dataclasses.replace(cfg.data, path=cfg.eval.path, limit=None), expect="prompt")
        held_out = held.records
    elif cfg.eval.fraction > 0:
        records, held_out = split_eval(records, cfg.eval.fraction, cfg.seed)
    train = collect_responses(records, cfg, renderer, str(cfg.data.path))
    evals = collect_responses(held_out, cfg, renderer, str(cfg.eval.path or cfg.data.path))
    kind = f" ({loaded.kind})" if loaded.kind != loaded.format else ""
    text = f"{loaded.report.summary()}; format `{loaded.format}`{kind}; {len(train)} prompts"
    if held_out:
        text += f"; {len(evals)} held out"
    return train, evals, text, loaded.report.as_dict()
