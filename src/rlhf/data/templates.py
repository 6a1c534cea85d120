"""Prompt templates: how a record's prompt becomes the text a model sees.

    renderer = PromptRenderer(cfg.prompt, tokenizer)
    text = renderer.render(record.prompt)     # then encode_example(tokenizer, text, completion, ...)

Every stage that feeds prompts to a model (SFT, generation, reward scoring, PPO rollouts) renders
them here, so a model is trained and sampled with the same layout. See `PromptConfig` for the
modes: chat templates for messages, an instruction template for plain text, optional few-shot
examples and a system prompt.
"""

from __future__ import annotations

from rlhf.config.parts import PromptConfig
from rlhf.data.errors import DataError
from rlhf.data.records import Demonstration, Message, Prompt
from rlhf.data.tokenize import render_prompt


class PromptRenderer:
    """Renders prompts for one tokenizer following a `PromptConfig` (few-shot examples loaded once)."""

    def __init__(self, cfg: PromptConfig | None, tokenizer) -> None:
        self.cfg = cfg or PromptConfig()
        self.tokenizer = tokenizer
        self.shots: list[Demonstration] = load_shots(self.cfg)

    def render(self, prompt: Prompt) -> str:
        """The full prompt text, ending where the completion starts. An empty text prompt (plain
        text data) stays empty: there is nothing to template."""
        if isinstance(prompt, str) and not prompt:
            return ""
        mode = self.cfg.template
        if mode == "instruction" or (mode == "auto" and isinstance(prompt, str)):
            return self._instruction(prompt)
        if mode == "raw" and isinstance(prompt, str):
            return "".join(f"{_as_text(s.prompt)}{s.completion}\n\n" for s in self.shots) + prompt
        return self._chat(_as_messages(prompt))

    def _chat(self, messages: tuple[Message, ...]) -> str:
        system = tuple(m for m in messages[:1] if m.role == "system")
        if not system and self.cfg.system_prompt:
            system = (Message("system", self.cfg.system_prompt),)
        shots: list[Message] = []
        for shot in self.shots:
            shots += [m for m in _as_messages(shot.prompt) if m.role != "system"]
            shots.append(Message("assistant", shot.completion))
        rest = messages[len(system) :] if system and messages[:1] == system else messages
        return render_prompt(system + tuple(shots) + rest, self.tokenizer)

    def _instruction(self, prompt: Prompt) -> str:
        template, system = self.cfg.instruction_template, self.cfg.system_prompt or ""
        blocks = [_as_text(shot.prompt) for shot in self.shots] + [_as_text(prompt)]
        completions = [shot.completion for shot in self.shots]
        parts = []
        for index, block in enumerate(blocks):
            # The system text appears once, in the first block.
            filled = template.format(prompt=block, system=system if index == 0 else "")
            parts.append(filled + (f"{completions[index]}\n\n" if index < len(completions) else ""))
        text = "".join(parts)
        if system and "{system}" not in template:
            text = f"{system}\n\n{text}"
        return text


def load_shots(cfg: PromptConfig) -> list[Demonstration]:
    """The first `few_shot_count` demonstrations of `few_shot_path` (none when unset)."""
    if not cfg.few_shot_path or cfg.few_shot_count == 0:
        return []
    from rlhf.data.load import load_records

    records = load_records(cfg.few_shot_path, expect="demonstration").demonstrations()[: cfg.few_shot_count]
    for record in records:
        if record.plain_text:
            raise DataError.at(
                record.source,
                None,
                "few-shot examples need a prompt and a completion; plain text has no prompt",
            )
    return records


def _as_messages(prompt: Prompt) -> tuple[Message, ...]:
    return (Message("user", prompt),) if isinstance(prompt, str) else prompt


def _as_text(prompt: Prompt) -> str:
    """A text prompt as it is; messages as `role: text` lines (a single user turn: its text)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].role == "user":
        return prompt[0].content
    return "\n".join(f"{message.role}: {message.content}" for message in prompt)
