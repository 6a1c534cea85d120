"""Reward sources: what turns (prompt, completion) pairs into numbers.

A source is anything callable as `source(prompts, completions) -> SourceOutput`:

    RewardModelSource   a reward model directory, scored in its own tokenizer and prompt layout
    FunctionSource      a Python callable `module:function` or `path/to/file.py:function`
    HttpSource          a JSON endpoint: POST {"prompts", "completions"} -> {"rewards", ...}

A function or endpoint may return, besides `rewards`, other per-completion numbers (extras such as
a gold score): they are logged, never trained on. `rlhf.rewards.function` weighs, normalizes and
shapes them into the reward a trainer uses.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhf.data.jsonl import prompts_to_json
from rlhf.data.records import Prompt

ReduceSum = Callable[[torch.Tensor], torch.Tensor]
"""All-reduce (sum) of a small tensor across processes; returns the elementwise sum."""

RESERVED_NAMES = ("raw", "normalized", "no_eos_fraction", "clipped_fraction", "nonfinite_fraction")
"""Metric names of `RewardOutput.metrics`: no source may be called this."""

STD_FLOOR = 1e-8
"""Smallest standard deviation divided by (a constant reward normalizes to 0, not to inf)."""


class RewardSourceError(ValueError):
    """A reward source that cannot be loaded or returned something unusable; one line naming it."""


@dataclass
class SourceOutput:
    """What one source returns for N completions."""

    rewards: list[float]
    """(N,) the source's raw rewards."""
    extras: dict[str, list[float]] = field(default_factory=dict)
    """Other per-completion numbers (N each), e.g. a gold score: logged, not trained on."""


class RewardSource(Protocol):
    stats: tuple[float, float] | None
    """(mean, std) saved with the source (reward models trained by `rlhf reward`), else None."""

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput: ...


# ----------------------------------------------------------------------------- validation


def _numbers(values: Any, n: int, what: str, label: str) -> list[float]:
    """`values` as N floats, or a RewardSourceError saying what is wrong with them."""
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()  # torch tensors, numpy arrays
    if not isinstance(values, (list, tuple)):
        raise RewardSourceError(
            f"{label}: {what} is a {type(values).__name__}, expected a list of {n} numbers"
        )
    if len(values) != n:
        raise RewardSourceError(f"{label}: returned {len(values)} {what} for {n} completions")
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Real):
            raise RewardSourceError(
                f"{label}: {what}[{i}] is {value!r} ({type(value).__name__}), expected a number"
            )
    return [float(value) for value in values]


def check_output(value: Any, n: int, label: str) -> SourceOutput:
    """Validate what a function or endpoint returned for `n` completions (see the module docstring)."""
    if isinstance(value, dict):
        if "rewards" not in value:
            raise RewardSourceError(
                f"{label}: returned a dict without `rewards` (keys: {sorted(map(str, value))})"
            )
        rewards = _numbers(value["rewards"], n, "rewards", label)
        extras = {str(k): _numbers(v, n, f"`{k}`", label) for k, v in value.items() if k != "rewards"}
        return SourceOutput(rewards, extras)
    return SourceOutput(_numbers(value, n, "rewards", label))


# ----------------------------------------------------------------------------- sources


class RewardModelSource:
    """A reward model directory; the policy's text is re-encoded with the model's own tokenizer."""

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        dtype: str = "auto",
    ) -> None:
        from rlhf.rewards.scorer import RewardScorer

        self.path = str(path)
        self.label = f"reward model {path}"
        device = str(device) if device is not None else None
        self.scorer = RewardScorer.load(path, batch_size=batch_size, device=device, dtype=dtype)
        self.stats = self.scorer.stats

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        return SourceOutput(self.scorer.score(list(prompts), list(completions)))


class ClassifierSource:
    """Any sequence-classification checkpoint read at one label: a sentiment or toxicity classifier,
    a hate-speech model (the reward of "less toxic"), or a reward model published as a classifier
    (OpenAssistant's DeBERTa ones). Its own head and pooling read its own tokenization of the text;
    the reward is the label's logit, probability or log-probability (see `RewardSourceConfig`)."""

    stats: tuple[float, float] | None = None

    def __init__(
        self,
        path: str,
        *,
        label: str | None = None,
        output: str = "logit",
        input: str = "auto",  # noqa: A002 (the config field's name)
        batch_size: int = 16,
        device: str | torch.device | None = None,
        dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        from rlhf.config.parts import ModelConfig
        from rlhf.models.load import load_pretrained, load_tokenizer

        self.path, self.label = str(path), f"classifier {path}"
        model_cfg = ModelConfig(path=str(path), dtype=dtype)  # type: ignore[arg-type]
        self.tokenizer = load_tokenizer(model_cfg, padding_side="right")
        self.model = load_pretrained(
            AutoModelForSequenceClassification,
            model_cfg,
            for_training=False,
            task_type="SEQ_CLS",
            tokenizer=self.tokenizer,
        )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        id2label = getattr(self.model.config, "id2label", None) or {0: "LABEL_0"}
        self.labels = [str(id2label[key]) for key in sorted(id2label, key=int)][
            : self.model.config.num_labels
        ]
        self.index = self._label_index(label)
        self.output, self.batch_size = output, batch_size
        self.pairs = input == "prompt_and_completion" or (input == "auto" and len(self.labels) == 1)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(self.tokenizer.model_max_length, positions - 2 if positions else 512)

    def _label_index(self, label: str | None) -> int:
        names = ", ".join(self.labels)
        if label is None:
            if len(self.labels) > 1:
                raise RewardSourceError(
                    f"{self.label}: it has {len(self.labels)} labels ({names}): name the one that rewards "
                    f"with `label` (e.g. `reward.label: {self.labels[0]}`)"
                )
            return 0
        lowered = [name.lower() for name in self.labels]
        if str(label).lower() in lowered:
            return lowered.index(str(label).lower())
        if str(label).isdigit() and int(label) < len(self.labels):
            return int(label)
        raise RewardSourceError(f"{self.label}: no label `{label}`; its labels are {names} (or an index)")

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        from rlhf.data.tokenize import render_prompt

        rewards: list[float] = []
        for start in range(0, len(completions), self.batch_size):
            texts = list(completions[start : start + self.batch_size])
            firsts = [render_prompt(p, self.tokenizer) for p in prompts[start : start + self.batch_size]]
            inputs = (firsts, texts) if self.pairs else (texts,)
            encoded = self.tokenizer(
                *inputs, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            logits = self.model(**encoded.to(self.device)).logits.float()  # (B, L)
            rewards += self._read(logits).cpu().tolist()
        return SourceOutput(rewards)

    def _read(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) the chosen label's output from the classifier's (B, L) logits."""
        if self.output == "logit":
            return logits[:, self.index]
        if logits.shape[1] == 1:  # one label: its probability is a sigmoid
            log_p = torch.nn.functional.logsigmoid(logits[:, 0])
        else:
            log_p = torch.log_softmax(logits, dim=-1)[:, self.index]
        return log_p if self.output == "log_probability" else log_p.exp()


def load_function(spec: str) -> Callable[..., Any]:
    """The callable named by `module:function` or `path/to/file.py:function`.

    A module name is imported from the Python path, with the working directory added at its end
    (the `rlhf` command does not put it there itself). A file is loaded as a module of its own, with
    its directory added to the path so it can import its neighbours.
    """
    label = f"function {spec}"
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise RewardSourceError(f"{label}: expected `module:function` or `path/to/file.py:function`")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            module = _load_file(Path(module_name).expanduser(), label)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise RewardSourceError(
                f"{label}: no module `{module_name}` in the working directory or on the Python path"
            ) from err
        raise RewardSourceError(f"{label}: importing `{module_name}` failed: {err}") from err
    except RewardSourceError:
        raise
    except Exception as err:  # the module's own code failed while importing: say so on one line
        raise RewardSourceError(
            f"{label}: importing `{module_name}` failed: {type(err).__name__}: {err}"
        ) from err
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise RewardSourceError(f"{label}: module `{module_name}` has no attribute `{attr}`")
        fn = getattr(fn, part)
    if not callable(fn):
        raise RewardSourceError(
            f"{label}: `{attr}` in `{module_name}` is a {type(fn).__name__}, not callable"
        )
    return fn


def _load_file(path: Path, label: str):
    if not path.is_file():
        raise RewardSourceError(f"{label}: no such file {path}")
    name = f"rlhf_reward_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RewardSourceError(f"{label}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class FunctionSource:
    """A Python callable `fn(prompts, completions)`; prompts arrive as plain JSON values."""

    stats: tuple[float, float] | None = None

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.label = f"function {spec}"
        self.fn = load_function(spec)
        self.default_name = spec.rpartition(":")[2].split(".")[-1]

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        value = self.fn(prompts_to_json(prompts), list(completions))
        return check_output(value, len(completions), self.label)


class HttpSource:
    """POST `{"prompts": [...], "completions": [...]}` per batch; answered by `{"rewards": [...], ...}`.

    Connection errors, timeouts and 5xx answers are retried `retries` times, waiting
    `backoff_s * attempt` seconds in between; 4xx answers and malformed bodies fail at once.
    """

    stats: tuple[float, float] | None = None

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 16,
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url
        self.label = f"url {url}"
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        json_prompts = prompts_to_json(prompts)
        out = SourceOutput([])
        for start in range(0, len(completions), self.batch_size):
            end = start + self.batch_size
            batch_completions = list(completions[start:end])
            body = {"prompts": json_prompts[start:end], "completions": batch_completions}
            batch = check_output(self._post(body), len(batch_completions), self.label)
            if start and set(batch.extras) != set(out.extras):
                raise RewardSourceError(
                    f"{self.label}: returned extras {sorted(batch.extras)} for completions {start}.. "
                    f"but {sorted(out.extras)} before"
                )
            out.rewards += batch.rewards
            for key, values in batch.extras.items():
                out.extras.setdefault(key, []).extend(values)
        return out

    def _post(self, body: dict[str, Any]) -> Any:
        from rlhf.http import post_json

        return post_json(self.url, body, label=self.label, error=RewardSourceError, timeout_s=self.timeout_s,
                         retries=self.retries, backoff_s=self.backoff_s)  # fmt: skip
