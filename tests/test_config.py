"""Config loading: YAML + --set, types, one-line errors with suggestions, docs on every field."""

from dataclasses import dataclass, field

import pytest

from rlhf.config import (
    ConfigError,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    load_config,
    parse_overrides,
    render_config,
    to_dict,
)
from rlhf.config.core import undocumented_fields
from rlhf.demo import DemoConfig
from rlhf.pipeline.config import PipelineConfig


@dataclass
class StageConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Adapters."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer."""
    steps: int = 10
    """Steps."""
    name: str = "run"
    """A name."""
    out: str = field(default="x")
    """Out."""


@dataclass
class WithPartDefaults:
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=3e-3, warmup_steps=10))
    """A part with stage-specific defaults."""


@dataclass
class NeedsPath:
    path: str
    """Where the data is."""


def err(overrides=None, path=None, cls=StageConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_yaml_and_overrides_compose(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  path: some/model\npeft:\n  method: lora\n  lora_rank: 4\nsteps: 3\n")
    cfg = load_config(StageConfig, cfg_file, ["peft.lora_rank=16", "optimizer.lr=3e-4", "name=123"])
    assert cfg.model.path == "some/model"
    assert cfg.peft.method == "lora"
    assert cfg.peft.lora_rank == 16  # --set wins over the file
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.steps == 3
    assert cfg.name == "123"  # a number given for a string field is kept as its text
    assert cfg.model.dtype == "auto"  # untouched fields keep defaults


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("optimizer:\n  lr: 1e-5\n")  # YAML 1.1 reads this as a string
    assert load_config(StageConfig, cfg_file).optimizer.lr == pytest.approx(1e-5)


def test_unknown_key_suggests_the_close_one():
    assert err(["peft.lora_rnak=3"]) == "unknown key `peft.lora_rnak`; did you mean `peft.lora_rank`?"
    assert err(["modle.path=x"]) == "unknown key `modle`; did you mean `model`?"
    message = err(["model.zzzzzz=1"])
    assert message.startswith("unknown key `model.zzzzzz`; `model` accepts: path, tokenizer")


def test_wrong_types_name_key_expected_and_given():
    assert err(["peft.lora_rank=abc"]) == "`peft.lora_rank` expects an integer, got str 'abc'"
    assert err(["steps=1.5"]) == "`steps` expects an integer, got float 1.5"
    assert err(["model.gradient_checkpointing=maybe"]).startswith(
        "`model.gradient_checkpointing` expects true or false"
    )
    assert err(["model.dtype=bf16"]) == (
        "`model.dtype` must be one of 'auto' | 'float32' | 'bfloat16' | 'float16', got 'bf16'; "
        "did you mean 'bfloat16'?"
    )
    assert err(["model=3"]) == "`model` must be a mapping of ModelConfig fields, got int 3"
    assert "`optimizer.betas` expects a list" in err(["optimizer.betas=0.9"])


def test_overriding_one_field_keeps_the_stage_defaults_of_its_part():
    cfg = load_config(WithPartDefaults, None, ["optimizer.warmup_steps=5"])
    assert cfg.optimizer.warmup_steps == 5
    assert cfg.optimizer.lr == pytest.approx(3e-3)  # the stage's default, not OptimizerConfig's 1e-5


def test_missing_required_field_is_named():
    assert err(cls=NeedsPath) == "missing required field `path` (Where the data is.)"
    assert load_config(NeedsPath, None, ["path=a.jsonl"]).path == "a.jsonl"


def test_numbers_must_be_finite_and_in_range():
    """`lr=.inf` once passed the "positive" check and trained a NaN model that was saved as a success."""
    for value in (".inf", ".nan", "-.inf", "1e999", "1" + "0" * 400):
        assert err([f"optimizer.lr={value}"]).startswith("`optimizer.lr` expects a finite number, got"), value
    assert "`optimizer.betas[0]` expects a finite number" in err(["optimizer.betas=[.nan, 0.9]"])
    assert "`optimizer.betas` must be two values in [0, 1), got [1.5, 0.9]" in err(
        ["optimizer.betas=[1.5, 0.9]"]
    )
    assert "`optimizer.eps` must be positive" in err(["optimizer.eps=0"])
    assert "`optimizer.weight_decay` must be >= 0" in err(["optimizer.weight_decay=-0.1"])
    assert "`optimizer.max_grad_norm` must be positive" in err(["optimizer.max_grad_norm=0"])


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    """A YAML file used to keep the last of two values silently."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("optimizer:\n  lr: 1.0e-3\n  warmup_steps: 2\n  lr: 2.0e-3\n")
    assert err(path=twice) == f"{twice}:4: invalid YAML: key `lr` is given twice in one mapping; give it once"


def test_a_key_given_twice_in_set_is_said_not_silent(capsys):
    """`--set` keeps overriding (shortcut flags and scripts add theirs after the user's), but a key
    whose value a later one changes is a warning line, not silence."""
    cfg = load_config(StageConfig, None, ["optimizer.lr=1.0e-3", "steps=3", "optimizer.lr=2.0e-3", "steps=3"])
    assert cfg.optimizer.lr == pytest.approx(2e-3)
    assert capsys.readouterr().err == (
        "[config] warning: `optimizer.lr` is given twice in --set (0.001, then 0.002): using 0.002\n"
    )


def test_an_unknown_builtin_model_is_named():
    assert (
        err(["model.path=builtin:huge"])
        == "`model.path` builtin:huge is not a built-in model: the only one is `builtin:tiny`"
    )


def test_cross_field_checks_are_one_line():
    assert "`peft.lora_rank` must be at least 1" in err(["peft.lora_rank=0"])
    assert "`data.rating_scale` must be [low, high]" in err(["data.rating_scale=[5,1]"])


def test_bad_yaml_and_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: [unclosed\n")
    assert err(path=bad).startswith(f"{bad}:")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert "must be a mapping" in err(path=listy)
    assert err(path=tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"
    assert "expects key=value" in err(["steps"])


def test_parse_overrides_nests_and_reads_yaml_values():
    assert parse_overrides(["a.b=1", "a.c=[x, y]", "d=true", "e="]) == {
        "a": {"b": 1, "c": ["x", "y"]},
        "d": True,
        "e": "",
    }


def test_a_list_field_accepts_a_single_value():
    cfg = load_config(StageConfig, None, ["peft.target_modules=q_proj"])
    assert cfg.peft.target_modules == ["q_proj"]


@pytest.mark.parametrize(
    "cls",
    [
        StageConfig,
        DemoConfig,
        PipelineConfig,
        ModelConfig,
        PeftConfig,
        DataConfig,
        OptimizerConfig,
        LoggingConfig,
    ],
)
def test_every_field_is_documented(cls):
    assert undocumented_fields(cls) == []


def test_render_shows_docs_and_roundtrips(tmp_path):
    cfg = load_config(StageConfig, None, ["peft.method=lora", "data.rating_scale=[1, 7]"])
    text = render_config(cfg)
    assert "# LoRA rank r: the width of each adapter's low-rank update." in text
    assert "  method: lora" in text
    saved = tmp_path / "resolved.yaml"
    saved.write_text(text)
    assert to_dict(load_config(StageConfig, saved)) == to_dict(cfg)


def test_the_kl_leash_goes_where_the_estimator_can_assign_it():
    from rlhf.config.core import ConfigError
    from rlhf.ppo.config import PpoConfig

    # With a critic, GAE hands each token's penalty back to the tokens before it: in the reward, k1.
    gae = load_config(PpoConfig, None, [])
    assert (gae.kl_placement, gae.kl_estimator) == ("reward", "k1")
    # Critic-free: one advantage per completion, so the leash is a per-token loss term, k2.
    rloo = load_config(PpoConfig, None, ["advantage.estimator=rloo", "rollout.samples_per_prompt=4"])
    assert (rloo.kl_placement, rloo.kl_estimator) == ("loss", "k2")
    chosen = load_config(PpoConfig, None, ["advantage.estimator=grpo", "rollout.samples_per_prompt=2",
                                           "kl.placement=reward", "kl.estimator=k3"])  # fmt: skip
    assert (chosen.kl_placement, chosen.kl_estimator) == ("reward", "k3")
    with pytest.raises(ConfigError, match="gradient of mean zero"):
        load_config(PpoConfig, None, ["kl.placement=loss", "kl.estimator=k1"])
    with pytest.raises(ConfigError, match="gradient of mean zero"):  # auto resolves to the loss here
        load_config(PpoConfig, None, ["advantage.estimator=rloo", "rollout.samples_per_prompt=2",
                                      "kl.estimator=k1"])  # fmt: skip


RENAMED = [
    ("ppo", ["steps=60"], "`steps` was renamed `max_steps`"),
    ("ppo", ["guards.max_nonfinite=5"], "`guards.max_nonfinite` was renamed `max_nonfinite`"),
    ("ppo", ["rollout.completions_per_prompt=4"], "`rollout.completions_per_prompt` was renamed `rollout.samples_per_prompt`"),
    ("ppo", ["rollout.sampling.num_samples=4"], "`rollout.sampling.num_samples` was renamed `rollout.samples_per_prompt`"),
    ("ppo", ["logging.output_dir=runs/x"], "`logging.output_dir` was renamed `output_dir`"),
    ("sft", ["logging.output_dir=runs/x"], "`logging.output_dir` was renamed `output_dir`"),
    ("reward", ["loss=pairwise"], "`loss` was renamed `loss_type`"),
    ("rrhf", ["reward_model=runs/rm"], "`reward_model` was renamed `reward.model`"),
    ("rrhf", ["reward_batch_size=8"], "`reward_batch_size` was renamed `reward.batch_size`"),
    ("rrhf", ["sampling.unique=false"], "`sampling.unique` was renamed `unique`"),
    ("generate", ["sampling.num_samples=4"], "`sampling.num_samples` was renamed `samples_per_prompt`"),
    ("generate", ["reward_model=runs/rm"], "`reward_model` was renamed `reward.model`"),
    ("score", ["model=runs/rm"], "`model` was renamed `reward.model`"),
    ("eval_reward", ["device=cpu"], "`device` was renamed `reward.device`"),
    ("pipeline", ["ppo.steps=60"], "`ppo.steps` was renamed `ppo.max_steps`"),
    ("pipeline", ["dpo.logging.output_dir=x"], "`dpo.logging.output_dir` was renamed `dpo.output_dir`"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "overrides", "message"), RENAMED, ids=[f"{c}:{o[0]}" for c, o, _ in RENAMED]
)
def test_a_renamed_key_is_refused_naming_its_new_name(command, overrides, message):
    from rlhf.dpo.config import DpoConfig
    from rlhf.generate.config import GenerateConfig
    from rlhf.pipeline.config import PipelineConfig
    from rlhf.ppo.config import PpoConfig
    from rlhf.reward.config import EvalRewardConfig, RewardConfig, ScoreConfig
    from rlhf.rrhf.config import RrhfConfig
    from rlhf.sft.config import SftConfig

    classes = {
        "ppo": PpoConfig, "sft": SftConfig, "reward": RewardConfig, "rrhf": RrhfConfig, "dpo": DpoConfig,
        "generate": GenerateConfig, "score": ScoreConfig, "eval_reward": EvalRewardConfig,
        "pipeline": PipelineConfig,
    }  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(classes[command], None, overrides)
    assert str(info.value) == message


def test_a_bare_value_for_a_reward_section_says_which_key_it_meant():
    from rlhf.eval.config import EvalPolicyConfig

    with pytest.raises(ConfigError, match=r"for one value: `reward.model: runs/rm`"):
        load_config(EvalPolicyConfig, None, ["reward=runs/rm"])
