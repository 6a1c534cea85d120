"""PPO's reward function: function, HTTP and reward-model sources, running normalization across
processes, weighting and shaping, worked out by hand."""

from __future__ import annotations

import json
import math
import shutil
import socket
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rlhf.config.core import ConfigError
from rlhf.data.records import Message
from rlhf.rewards import FunctionSource, HttpSource, RewardSourceError, RunningMoments, build_reward_function
from rlhf.rewards.config import RewardSourceConfig, RewardSourcesConfig
from rlhf.rewards.function import source_names

MODULE = "ppo_reward_fns"
FUNCTIONS = '''
SEEN = []

def value(prompts, completions):
    """Each completion is a number written out: its reward is that number."""
    SEEN.append(prompts)
    return [float(c) for c in completions]

def with_gold(prompts, completions):
    return {"rewards": [len(c) for c in completions], "gold": [10.0 * len(c) for c in completions]}

def short(prompts, completions):
    return [1.0] * (len(completions) - 1)

def strings(prompts, completions):
    return ["a"] * len(completions)

def no_rewards(prompts, completions):
    return {"score": [1.0] * len(completions)}

def bad_extra(prompts, completions):
    return {"rewards": [1.0] * len(completions), "gold": [1.0]}

NOT_CALLABLE = 3
'''


@pytest.fixture()
def fns(tmp_path, monkeypatch):
    """The module `ppo_reward_fns`, importable from a fresh directory on sys.path."""
    (tmp_path / f"{MODULE}.py").write_text(FUNCTIONS)
    (tmp_path / "ppo_broken_fns.py").write_text("import ppo_not_installed_anywhere\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    yield
    for name in (MODULE, "ppo_broken_fns"):
        sys.modules.pop(name, None)


def function_cfg(function: str = f"{MODULE}:value", **kwargs) -> RewardSourcesConfig:
    return RewardSourcesConfig(sources=[RewardSourceConfig(function=function, **kwargs)])


def test_function_source_gets_plain_json_prompts(fns):
    reward_fn = build_reward_function(RewardSourcesConfig(function=f"{MODULE}:value"))
    chat = (Message("system", "Be brief."), Message("user", "Hi"))
    out = reward_fn(["Say 1.", chat], ["1.5", "-2"], [True, True])
    assert out.rewards.dtype == torch.float32 and out.rewards.tolist() == [1.5, -2.0]
    assert out.per_source == {"value": [1.5, -2.0]}  # named after the function
    seen = sys.modules[MODULE].SEEN
    assert seen == [
        ["Say 1.", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    ]
    json.dumps(seen)  # plain JSON values, no Message objects
    assert out.metrics() == {
        "reward/raw": -0.25,
        "reward/normalized": -0.25,
        "reward/nonfinite_fraction": 0.0,
        "reward/no_eos_fraction": 0.0,
    }


def test_file_form_with_dict_return_and_extras(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the file's directory is added: undo it
    sub = tmp_path / "scoring"
    sub.mkdir()
    (sub / "ppo_rewards_helper.py").write_text("BONUS = 0.5\n")
    (sub / "judge.py").write_text(
        textwrap.dedent("""
        from ppo_rewards_helper import BONUS

        def scored(prompts, completions):
            return {"rewards": [len(c) + BONUS for c in completions], "gold": [len(c) * 2 for c in completions]}
        """)
    )
    try:
        reward_fn = build_reward_function(RewardSourcesConfig(function=f"{sub / 'judge.py'}:scored"))
        out = reward_fn(["a", "b"], ["xy", "wxyz"], [True, False])
    finally:
        sys.modules.pop("ppo_rewards_helper", None)
    assert out.rewards.tolist() == [2.5, 4.5]
    assert out.per_source == {"scored": [2.5, 4.5]}
    assert out.extras == {"gold": [4.0, 8.0]}
    metrics = out.metrics()
    assert metrics["reward/gold"] == 6.0 and metrics["reward/no_eos_fraction"] == 0.5
    assert "reward/scored" not in metrics  # one source: its mean is reward/raw


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("short", "function ppo_reward_fns:short: returned 3 rewards for 4 completions"),
        ("strings", "function ppo_reward_fns:strings: rewards[0] is 'a' (str), expected a number"),
        (
            "no_rewards",
            "function ppo_reward_fns:no_rewards: returned a dict without `rewards` (keys: ['score'])",
        ),
        ("bad_extra", "function ppo_reward_fns:bad_extra: returned 1 `gold` for 4 completions"),
    ],
)
def test_bad_returns_name_the_source_and_the_problem(fns, function, message):
    reward_fn = build_reward_function(RewardSourcesConfig(function=f"{MODULE}:{function}"))
    with pytest.raises(RewardSourceError) as err:
        reward_fn(["p"] * 4, ["1", "2", "3", "4"], [True] * 4)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "ppo_no_such_module:f",
            "no module `ppo_no_such_module` in the working directory or on the Python path",
        ),
        (f"{MODULE}:missing", f"module `{MODULE}` has no attribute `missing`"),
        (f"{MODULE}:NOT_CALLABLE", "`NOT_CALLABLE` in `ppo_reward_fns` is a int, not callable"),
        (
            "ppo_broken_fns:f",
            "importing `ppo_broken_fns` failed: No module named 'ppo_not_installed_anywhere'",
        ),
        ("no_colon", "expected `module:function` or `path/to/file.py:function`"),
        ("missing/file.py:f", "no such file missing/file.py"),
    ],
)
def test_import_errors_name_the_module_and_attribute(fns, spec, message):
    with pytest.raises(RewardSourceError) as err:
        FunctionSource(spec)
    assert str(err.value) == f"function {spec}: {message}"


# ----------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    """Rewards = completion lengths, plus `words`; `server.failures` 500s first, `server.status` forced."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.server.failures or self.server.status:
            self.server.failures = max(0, self.server.failures - 1)
            self._send(self.server.status or 500, b"model overloaded, try later")
            return
        completions = body["completions"]
        answer = {"rewards": [len(c) for c in completions], "words": [len(c.split()) for c in completions]}
        if self.server.drop_one:
            answer["rewards"] = answer["rewards"][1:]
        self._send(200, json.dumps(answer).encode())

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy of the environment
    monkeypatch.setenv("NO_PROXY", "*")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.failures, httpd.status, httpd.drop_one = [], 0, 0, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/score"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_http_source_batches_requests_and_keeps_extras(server):
    source = HttpSource(server.url, batch_size=2, backoff_s=0)
    chat = (Message("user", "Hi"),)
    completions = ["a", "bb b", "ccc", "dd dd dd", "e"]
    out = source(["p", chat, "p", "p", "p"], completions)
    assert out.rewards == [1.0, 4.0, 3.0, 8.0, 1.0]
    assert out.extras == {"words": [1.0, 2.0, 1.0, 3.0, 1.0]}
    assert [len(r["completions"]) for r in server.requests] == [2, 2, 1]
    assert server.requests[0]["prompts"] == ["p", [{"role": "user", "content": "Hi"}]]


def test_http_source_retries_a_500_then_succeeds(server):
    server.failures = 1
    out = HttpSource(server.url, retries=1, backoff_s=0)(["p"], ["abc"])
    assert out.rewards == [3.0] and len(server.requests) == 2


def test_http_source_that_keeps_failing_names_url_and_status(server):
    server.failures = 100
    with pytest.raises(RewardSourceError) as err:
        HttpSource(server.url, retries=2, backoff_s=0)(["p"], ["abc"])
    message = str(err.value)
    assert message.startswith(f"url {server.url}: failed 3 times")
    assert "HTTP 500" in message and "model overloaded" in message
    assert len(server.requests) == 3


def test_http_client_errors_and_bad_answers_fail_at_once(server):
    server.status = 400
    with pytest.raises(RewardSourceError, match=r"HTTP 400 .*model overloaded") as err:
        HttpSource(server.url, retries=3, backoff_s=0)(["p"], ["abc"])
    assert server.url in str(err.value) and len(server.requests) == 1
    server.status, server.drop_one = 0, True
    with pytest.raises(RewardSourceError) as err:
        HttpSource(server.url, retries=3, backoff_s=0)(["p", "q"], ["abc", "d"])
    assert str(err.value) == f"url {server.url}: returned 1 rewards for 2 completions"
    assert len(server.requests) == 2


def test_http_source_unreachable_names_url():
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/score"
    with pytest.raises(RewardSourceError, match=r"failed 2 times; last: ConnectionRefusedError") as err:
        HttpSource(url, retries=1, backoff_s=0)(["p"], ["abc"])
    assert str(err.value).startswith(f"url {url}:")


# ----------------------------------------------------------------------------- sum and shaping


def test_weighted_sum_of_two_sources(fns, server):
    cfg = RewardSourcesConfig(
        function=f"{MODULE}:value",
        sources=[RewardSourceConfig(url=server.url, weight=-0.5, name="judge")],
    )
    reward_fn = build_reward_function(cfg)
    out = reward_fn(["p", "p"], ["2", "100"], [True, True])
    # value: [2, 100]; judge (length): [1, 3]  ->  [2 - 0.5, 100 - 1.5]
    assert out.rewards.tolist() == [1.5, 98.5] and out.raw.tolist() == [1.5, 98.5]
    assert out.per_source == {"value": [2.0, 100.0], "judge": [1.0, 3.0]}
    metrics = out.metrics()
    assert (
        metrics["reward/value"] == 51.0 and metrics["reward/judge"] == 2.0 and metrics["reward/words"] == 1.0
    )
    assert metrics["reward/raw"] == 50.0


def test_clashing_extras_are_named_after_their_source(fns):
    cfg = RewardSourcesConfig(
        sources=[
            RewardSourceConfig(function=f"{MODULE}:with_gold", name="a"),
            RewardSourceConfig(function=f"{MODULE}:with_gold", name="b", weight=0.0),
        ]
    )
    out = build_reward_function(cfg)(["p"], ["xyz"], [True])
    assert out.extras == {"a/gold": [30.0], "b/gold": [30.0]}
    assert out.rewards.tolist() == [3.0]  # weight 0: b is only logged
    assert out.metrics()["reward/b/gold"] == 30.0 and out.metrics()["reward/b"] == 3.0


def test_no_eos_penalty_then_clip(fns):
    cfg = RewardSourcesConfig(function=f"{MODULE}:value", no_eos_penalty=2.0, clip=4.0)
    out = build_reward_function(cfg)(["p"] * 5, ["1", "5", "12", "3", "-9"], [True, False, True, False, True])
    # minus 2 where unfinished: [1, 3, 12, 1, -9]; clipped to [-4, 4]: [1, 3, 4, 1, -4]
    assert out.rewards.tolist() == [1.0, 3.0, 4.0, 1.0, -4.0]
    assert out.raw.tolist() == [1.0, 5.0, 12.0, 3.0, -9.0]
    metrics = out.metrics()
    assert metrics["reward/no_eos_fraction"] == pytest.approx(0.4)
    assert metrics["reward/clipped_fraction"] == pytest.approx(0.4)
    assert metrics["reward/normalized"] == pytest.approx(1.0)
    assert metrics["reward/raw"] == pytest.approx(2.4)


def test_nonfinite_rewards_propagate_and_metrics_still_compute(fns):
    cfg = RewardSourcesConfig(
        sources=[RewardSourceConfig(function=f"{MODULE}:value", normalize="running")], clip=5.0
    )
    reward_fn = build_reward_function(cfg)
    out = reward_fn(["p"] * 3, ["nan", "1", "3"], [True] * 3)
    assert math.isnan(out.rewards[0]) and out.rewards[1:].tolist() == [-1.0, 1.0]  # mean 2, std 1
    metrics = out.metrics()
    assert metrics["reward/raw"] == 2.0 and metrics["reward/nonfinite_fraction"] == pytest.approx(1 / 3)
    assert reward_fn.state_dict()["moments"]["value"]["count"] == 2  # the NaN is not counted


def test_config_errors():
    with pytest.raises(ConfigError) as err:
        build_reward_function(RewardSourcesConfig())
    assert str(err.value) == (
        "no reward given: set reward.model, reward.function, reward.url or reward.sources"
    )
    with pytest.raises(ConfigError, match="`normalize: saved` needs a reward model"):
        build_reward_function(function_cfg(normalize="saved"))
    with pytest.raises(ConfigError, match="`raw` is reserved"):
        build_reward_function(function_cfg(name="raw"))
    with pytest.raises(ConfigError, match="names must differ"):
        source_names([RewardSourceConfig(url="u", name="a"), RewardSourceConfig(url="v", name="a")])


def test_default_source_names():
    configs = [
        RewardSourceConfig(model="a"),
        RewardSourceConfig(model="b"),
        RewardSourceConfig(function="pkg.mod:score"),
        RewardSourceConfig(url="u1"),
        RewardSourceConfig(url="u2"),
        RewardSourceConfig(url="u3", name="http1"),
        RewardSourceConfig(url="u4", name="mine"),
    ]
    assert source_names(configs) == ["rm1", "rm2", "score", "http2", "http3", "http1", "mine"]
    assert source_names([RewardSourceConfig(url="u")]) == ["http"]


# ----------------------------------------------------------------------------- running normalization


def test_running_moments_match_torch_over_everything_seen():
    torch.manual_seed(0)
    moments, seen = RunningMoments(), []
    assert (moments.mean, moments.std) == (0.0, 1.0)
    for size in (1, 5, 17, 3, 40):
        batch = torch.randn(size) * 3 + 7
        moments.update(batch)
        seen.append(batch)
        everything = torch.cat(seen).double()
        assert moments.count == len(everything)
        assert moments.mean == pytest.approx(everything.mean().item(), rel=1e-9)
        assert moments.std == pytest.approx(everything.std(correction=0).item(), rel=1e-9)
    moments.update(torch.tensor([float("nan"), float("inf"), 7.0]))  # only the 7 counts
    assert moments.count == len(everything) + 1
    copy = RunningMoments()
    copy.load_state_dict(json.loads(json.dumps(moments.state_dict())))
    assert (copy.count, copy.mean, copy.std) == (moments.count, moments.mean, moments.std)


def all_reduce_of(world: int):
    """A sum all-reduce among `world` threads, one per simulated process."""
    barrier = threading.Barrier(world)
    slots: list[torch.Tensor | None] = [None] * world

    def for_rank(rank: int):
        def reduce_sum(t: torch.Tensor) -> torch.Tensor:
            slots[rank] = t.clone()
            barrier.wait()
            total = sum(slots)
            barrier.wait()  # everyone has read the slots before they are written again
            return total

        return reduce_sum

    return for_rank


def test_running_moments_across_two_processes_equal_one_seeing_everything():
    torch.manual_seed(1)
    batches = [torch.randn(n) * 2 - 1 for n in (10, 6, 30)]
    splits = [3, 0, 21]  # rank 0 gets the first values of each batch (none of the second), rank 1 the rest
    reduce_for = all_reduce_of(2)
    ranks = [RunningMoments(), RunningMoments()]

    def run(rank: int):
        for batch, split in zip(batches, splits):
            part = batch[:split] if rank == 0 else batch[split:]
            ranks[rank].update(part, reduce_sum=reduce_for(rank))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    single = RunningMoments()
    for batch in batches:
        single.update(batch)
    everything = torch.cat(batches).double()
    for moments in ranks:
        assert moments.count == single.count == 46
        assert moments.mean == pytest.approx(single.mean, rel=1e-12)
        assert moments.std == pytest.approx(single.std, rel=1e-12)
    assert single.std == pytest.approx(everything.std(correction=0).item(), rel=1e-9)


def test_running_normalization_includes_the_batch_and_resumes(fns):
    reward_fn = build_reward_function(function_cfg(normalize="running", weight=2.0))
    first = reward_fn(["p"] * 2, ["1", "3"], [True, True])
    # seen [1, 3]: mean 2, std 1 -> weight 2 * [-1, 1]
    assert first.rewards.tolist() == [-2.0, 2.0] and first.raw.tolist() == [2.0, 6.0]
    second = reward_fn(["p"] * 2, ["5", "7"], [True, True])
    # seen [1, 3, 5, 7]: mean 4, std sqrt(5) -> 2 * [1, 3] / sqrt(5)
    assert second.rewards.tolist() == pytest.approx([2 / 5**0.5, 6 / 5**0.5])
    state = json.loads(json.dumps(reward_fn.state_dict()))
    resumed = build_reward_function(function_cfg(normalize="running", weight=2.0))
    resumed.load_state_dict(state)
    batch = (["p"] * 3, ["0", "10", "4"], [True] * 3)
    assert resumed(*batch).rewards.tolist() == reward_fn(*batch).rewards.tolist()
    with pytest.raises(RewardSourceError, match="running reward statistics"):
        build_reward_function(function_cfg()).load_state_dict(state)


# ----------------------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    """A tiny random reward model saved with reward statistics, and a copy without them."""
    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import SCALAR_FILE, load_scalar_model, save_scalar_model

    root = tmp_path_factory.mktemp("ppo_rm")
    cfg = ModelConfig(path="builtin:tiny")
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    model = load_scalar_model(cfg, tokenizer=tokenizer, for_training=False)
    with_stats = root / "with-stats"
    save_scalar_model(model, with_stats, tokenizer, extra={"reward_mean": 0.02, "reward_std": 0.5})
    bare = root / "bare"
    shutil.copytree(with_stats, bare)
    extra = json.loads((bare / SCALAR_FILE).read_text())
    del extra["reward_mean"], extra["reward_std"]
    (bare / SCALAR_FILE).write_text(json.dumps(extra))
    return with_stats, bare


PROMPTS = ["Say the cat.", (Message("user", "Name a dog."),), "Count."]
COMPLETIONS = ["the cat sat", "Rex", "one two three four"]


def test_reward_model_source_scores_like_the_scorer_with_saved_stats(tiny_rm):
    from rlhf.rewards.scorer import RewardScorer

    with_stats, _ = tiny_rm
    reward_fn = build_reward_function(
        RewardSourcesConfig(model=str(with_stats), no_eos_penalty=1.0), device="cpu"
    )
    out = reward_fn(PROMPTS, COMPLETIONS, [True, True, False])
    expected = RewardScorer.load(with_stats, device="cpu").score(PROMPTS, COMPLETIONS)
    assert len(set(expected)) == 3  # three different scores: the check below means something
    assert out.per_source == {"rm": pytest.approx(expected, abs=1e-6)}
    assert out.raw.tolist() == pytest.approx(expected, abs=1e-6)
    normalized = [(r - 0.02) / 0.5 for r in expected]  # `auto` uses the saved statistics
    assert out.rewards.tolist() == pytest.approx(
        [normalized[0], normalized[1], normalized[2] - 1.0], abs=1e-5
    )
    assert reward_fn.reward_model_dirs == [str(with_stats)]


def test_reward_model_without_stats(tiny_rm, fns):
    _, bare = tiny_rm
    cfg = RewardSourcesConfig(model=str(bare), function=f"{MODULE}:value")
    reward_fn = build_reward_function(cfg, device="cpu")
    out = reward_fn(PROMPTS, ["1", "2", "3"], [True] * 3)
    rm = out.per_source["rm"]
    assert out.rewards.tolist() == pytest.approx(
        [r + v for r, v in zip(rm, [1, 2, 3])], abs=1e-6
    )  # `auto`: none
    with pytest.raises(
        ConfigError, match=r"`rm`: `normalize: saved` but .*bare has no saved reward statistics"
    ):
        build_reward_function(
            RewardSourcesConfig(sources=[RewardSourceConfig(model=str(bare), normalize="saved")]),
            device="cpu",
        )
