"""The judge's prompt: a built-in rubric for pairwise comparison or K-way ranking, or the user's own file."""

from __future__ import annotations

from pathlib import Path

from rlhf.config.core import ConfigError

PAIRWISE = """You are comparing two answers to the same request. Judge which answer is better: more \
helpful and correct, harmless, and no longer than it needs to be. Do not let the order of the \
answers or their length alone decide.

[Request]
{prompt}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Reply with one letter: A if Answer A is better, B if Answer B is better. Reply "tie" only if \
neither is better."""
"""The built-in pairwise rubric."""

RANKING = """You are ranking several answers to the same request from best to worst. Better answers \
are more helpful and correct, harmless, and no longer than they need to be. Do not let the order of \
the answers or their length alone decide.

[Request]
{prompt}

{answers}

Reply with the answer numbers only, best first, separated by ">" (for three answers, e.g. \
"2 > 3 > 1")."""
"""The built-in K-way ranking rubric; `{answers}` is "[Answer 1]\n...\n\n[Answer 2]\n..."."""

BUILT_IN = {"pairwise": PAIRWISE, "ranking": RANKING}
FIELDS = ("{prompt}", "{answer_a}", "{answer_b}")
RANKING_FIELDS = ("{prompt}", "{answers}")


def load_template(name: str, fields: tuple[str, ...] = FIELDS) -> str:
    """The template text: a built-in by name, or a file that holds every one of `fields`."""
    if name in BUILT_IN:
        if any(f not in BUILT_IN[name] for f in fields):
            raise ConfigError(f"judge template `{name}` does not fit here: it lacks {', '.join(fields)}")
        return BUILT_IN[name]
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"judge template `{name}` is neither built in ({', '.join(BUILT_IN)}) nor a file")
    text = path.read_text(encoding="utf-8")
    missing = [f for f in fields if f not in text]
    if missing:
        raise ConfigError(f"judge template {name} lacks {', '.join(missing)}")
    return text


def render(template: str, prompt: str, answer_a: str, answer_b: str) -> str:
    """The template with the request and the two answers in place (their braces kept as written)."""
    return fill(template, {"{prompt}": prompt, "{answer_a}": answer_a, "{answer_b}": answer_b})


def render_ranking(template: str, prompt: str, answers: list[str]) -> str:
    """The ranking template with the request and the answers, numbered from 1, in place."""
    block = "\n\n".join(f"[Answer {i}]\n{text}" for i, text in enumerate(answers, 1))
    return fill(template, {"{prompt}": prompt, "{answers}": block})


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each field replaced by its value; braces inside the values are kept as written."""
    out = template
    for field, value in values.items():
        out = out.replace(field, value.replace("{", "\x00").replace("}", "\x01"))
    return out.replace("\x00", "{").replace("\x01", "}")
