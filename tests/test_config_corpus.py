"""The malformed-config corpus (tests/fixtures/config/bad): each file, loaded as its stage's config,
ends in one line naming the file, the line of the offending key (where it has one) and the key.
Each file says what it expects in its first lines: `# stage:`, `# error:` and `# line:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.config.core import ConfigError, load_config
from rlhf.dpo.config import DpoConfig
from rlhf.ppo.config import PpoConfig
from rlhf.reward.config import RewardConfig
from rlhf.sft.config import SftConfig

STAGES = {"sft": SftConfig, "reward": RewardConfig, "dpo": DpoConfig, "ppo": PpoConfig}
CORPUS = sorted((Path(__file__).parent / "fixtures" / "config" / "bad").glob("*.yaml"))


def test_the_corpus_is_there():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_a_bad_config_is_one_line_naming_file_line_and_key(path):
    header = dict(line[2:].split(": ", 1) for line in path.read_text().splitlines()[:3])
    with pytest.raises(ConfigError) as info:
        load_config(STAGES[header["stage"]], path)
    where = f"{path}: " if header["line"] == "none" else f"{path}:{header['line']}: "
    assert str(info.value) == where + header["error"]
    assert "\n" not in str(info.value)


def test_a_key_set_on_the_command_line_is_not_blamed_on_the_file():
    """The same bad value given by `--set` over a good file: the message names the key alone."""
    path = next(p for p in CORPUS if p.stem == "lr_inf")
    with pytest.raises(ConfigError) as info:
        load_config(SftConfig, path, ["optimizer.lr=.nan"])
    assert str(info.value) == "`optimizer.lr` expects a finite number, got float nan"
