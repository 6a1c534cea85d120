"""The demo task: summarize a short synthetic profile; a hidden rule says which summary people prefer.

Each document states five key facts about a person (name, job, city, and the colour and kind of
their pet) and one or two sentences that do not matter. The gold score of a summary is the rule
simulated people judge by:

    +1 for each key fact the summary states (the document's own word for it),
    -2 for each fact word the summary invents (a name, job, city, colour or animal not in the document),
    -0.2 for each word past 12 (people like it short).

The best summary ("Mia is a baker in Oslo with a green cat.") scores 5. The demonstrations the SFT
model learns from are of mixed quality, as real ones are: some are that, others leave facts out,
copy the whole document, or get a fact wrong. Simulated labelers compare two summaries and prefer
the one with the higher gold score with Bradley-Terry probability sigmoid((g_a - g_b) / temperature)
(`rlhf.pipeline.feedback`), so they disagree with each other about as often as people do.

Plain Python: no torch, so the gold function can be imported anywhere (`rlhf.demo.task:gold_score`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

NAMES = ("Mia", "Tom", "Ann", "Ben", "Lily", "Sam", "Kate", "Max", "Emma", "Jack")
PRONOUN = {"Mia": "She", "Ann": "She", "Lily": "She", "Kate": "She", "Emma": "She"}
JOBS = ("baker", "farmer", "doctor", "teacher", "singer", "driver", "painter", "cook")
CITIES = ("Paris", "Rome", "Oslo", "Cairo", "Lima", "Tokyo", "Berlin", "Madrid")
COLORS = ("red", "blue", "green", "white", "black", "brown")
PETS = ("cat", "dog", "bird", "fish", "horse", "duck")
SLOTS = {"name": NAMES, "job": JOBS, "city": CITIES, "color": COLORS, "pet": PETS}
FILLERS = (
    "The weather was cold all week.",
    "On Sunday the market was closed.",
    "The bus was late again today.",
    "There was a long queue at the shop.",
    "It rained in the morning and then the sun came out.",
    "The new park opened last month.",
)
INSTRUCTION = "Summarize: "
MAX_WORDS = 12
INVENTED_PENALTY = 2.0
LENGTH_PENALTY = 0.2
STYLES = {"good": 0.25, "partial": 0.35, "verbose": 0.3, "wrong": 0.1}
"""Shares of each kind of demonstration: a quarter are what people want."""

_WORD = re.compile(r"[A-Za-z]+")
_FACT_WORDS = {word.lower(): slot for slot, words in SLOTS.items() for word in words}


def make_facts(rng: random.Random) -> dict[str, str]:
    return {slot: rng.choice(words) for slot, words in SLOTS.items()}


def document(facts: dict[str, str], rng: random.Random) -> str:
    pronoun = PRONOUN.get(facts["name"], "He")
    fillers = rng.sample(FILLERS, rng.choice((1, 2)))
    main = [
        f"{facts['name']} is a {facts['job']} in {facts['city']}.",
        f"{pronoun} has a {facts['color']} {facts['pet']}.",
    ]
    # The news of the day first, then the person: the facts end the document.
    return " ".join(fillers + main)


def good_summary(facts: dict[str, str]) -> str:
    return f"{facts['name']} is a {facts['job']} in {facts['city']} with a {facts['color']} {facts['pet']}."


def demonstration(facts: dict[str, str], doc: str, style: str, rng: random.Random) -> str:
    """A summary of the given style: `good`, `partial`, `verbose` or `wrong`."""
    if style == "good":
        return good_summary(facts)
    if style == "partial":
        return rng.choice(
            (
                f"{facts['name']} is a {facts['job']}.",
                f"{facts['name']} lives in {facts['city']}.",
                f"{facts['name']} has a {facts['color']} {facts['pet']}.",
                f"{facts['name']} is a {facts['job']} in {facts['city']}.",
            )
        )
    if style == "verbose":
        return doc
    if style == "wrong":
        slot = rng.choice(tuple(SLOTS))
        wrong = dict(facts, **{slot: rng.choice([w for w in SLOTS[slot] if w != facts[slot]])})
        return good_summary(wrong)
    raise ValueError(f"unknown style {style!r}")


def make_split(n: int, seed: int) -> list[dict[str, str]]:
    """`n` documents, each with a demonstration and its style: rows {prompt, completion, style}."""
    rng = random.Random(seed)
    styles, weights = zip(*STYLES.items())
    rows = []
    for _ in range(n):
        facts = make_facts(rng)
        doc = document(facts, rng)
        style = rng.choices(styles, weights)[0]
        rows.append(
            {"prompt": INSTRUCTION + doc, "completion": demonstration(facts, doc, style, rng), "style": style}
        )
    return rows


def tokenizer_text(n: int = 300, seed: int = 99) -> str:
    """Text to learn the demo tokenizer's merges from: documents and every kind of summary of them.

    It does not depend on `STYLES`, so changing the mix of demonstrations leaves the tokenizer alone.
    """
    rng = random.Random(seed)
    parts = []
    for _ in range(n):
        facts = make_facts(rng)
        doc = document(facts, rng)
        summaries = [demonstration(facts, doc, style, rng) for style in ("good", "partial", "wrong")]
        parts.append(f"### Instruction:\n{INSTRUCTION}{doc}\n\n### Response:\n" + "\n".join(summaries))
    parts.append(" ".join(" ".join(words) for words in SLOTS.values()))
    return "\n".join(parts)


def document_of(prompt: str) -> str:
    """The document a prompt asks to summarize (the prompt may arrive rendered through a template;
    the document follows the instruction)."""
    at = prompt.rfind(INSTRUCTION)
    return prompt[at + len(INSTRUCTION) :] if at >= 0 else prompt


def gold(document_text: str, summary: str) -> float:
    """The hidden rule: facts covered, minus invented facts, minus length past MAX_WORDS."""
    doc_words = {w.lower() for w in _WORD.findall(document_text)}
    facts_in_doc = {w for w in doc_words if w in _FACT_WORDS}
    words = [w.lower() for w in _WORD.findall(summary)]
    said = {w for w in words if w in _FACT_WORDS}
    covered = len(said & facts_in_doc)
    invented = len(said - facts_in_doc)
    return covered - INVENTED_PENALTY * invented - LENGTH_PENALTY * max(0, len(words) - MAX_WORDS)


def gold_score(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Reward-function form (`rlhf.demo.task:gold_score`) for `rlhf eval policy --gold` and PPO monitors."""
    return [gold(document_of(p), c) for p, c in zip(prompts, completions, strict=True)]
