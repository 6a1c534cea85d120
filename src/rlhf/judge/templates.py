"""The judge's prompt: a built-in rubric for pairwise comparison, or the user's own file."""

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

BUILT_IN = {"pairwise": PAIRWISE}
FIELDS = ("{prompt}", "{answer_a}", "{answer_b}")


def load_template(name: str) -> str:
    """The template text: a built-in by name, or a file that holds every field."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"judge template `{name}` is neither built in ({', '.join(BUILT_IN)}) nor a file")
    text = path.read_text(encoding="utf-8")
    missing = [f for f in FIELDS if f not in text]
    if missing:
        raise ConfigError(f"judge template {name} lacks {', '.join(missing)}")
    return text


def render(template: str, prompt: str, answer_a: str, answer_b: str) -> str:
    """The template with the request and the two answers in place (their braces kept as written)."""
    out = template
    for field, value in (("{prompt}", prompt), ("{answer_a}", answer_a), ("{answer_b}", answer_b)):
        out = out.replace(field, value.replace("{", "\x00").replace("}", "\x01"))
    return out.replace("\x00", "{").replace("\x01", "}")
