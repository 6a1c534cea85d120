"""A PPO run (`run_ppo`) under torchrun, launched by tests/test_distributed.py.

    ppo_ranks.py OUT_DIR KEY=VALUE ...     (the config overrides, as `rlhf ppo --set`)

A generation engine that wraps the built-in one records, on every process, the prompts it
sampled each step and a checksum of the policy's trainable weights it was asked to sample from;
after the run each process writes these, the outputs of its final policy and value head on a
fixed input, and its own history to OUT_DIR/rank<R>.json. The test checks that the processes
sampled different prompts yet held the same weights at every step and at the end.
"""

import dataclasses
import faulthandler
import json
import sys
from pathlib import Path

import torch

from rlhf.config.core import load_config
from rlhf.models import load_tokenizer
from rlhf.ppo import PpoConfig, run_ppo
from rlhf.ppo.rollout import HFGenerator


class RecordingGenerator:
    def __init__(self, inner: HFGenerator) -> None:
        self.inner = inner
        self.checksums: list[float] = []
        self.prompts: list[list[list[int]]] = []

    def sync(self, policy: torch.nn.Module) -> None:
        trainable = [p.detach().double() for p in policy.parameters() if p.requires_grad]
        self.checksums.append(float(sum(p.sum() + (p * p).sum() for p in trainable)))
        self.inner.sync(policy)

    def generate(self, prompt_ids: list[list[int]]):
        self.prompts.append(prompt_ids)
        return self.inner.generate(prompt_ids)


def main(out_dir: Path, overrides: list[str]) -> None:
    # A hang outside a collective would outlive the test's subprocess timeout without a trace: dump
    # every thread's stack to stderr and exit instead.
    faulthandler.dump_traceback_later(200, exit=True)
    cfg = load_config(PpoConfig, overrides=overrides)
    tokenizer = load_tokenizer(cfg.model, padding_side="left")
    generator = RecordingGenerator(
        HFGenerator(tokenizer, dataclasses.replace(cfg.rollout.sampling, seed=None))
    )
    result = run_ppo(cfg, generator=generator)

    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    # The main process merged its LoRA into the LM while saving; the others still run it as an
    # adapter: the same function either way.
    policy = result.policy.eval()
    ids = torch.tensor([tokenizer("Once upon a time there was a little cat")["input_ids"]])
    with torch.no_grad():
        out = policy(ids, torch.ones_like(ids), ids[:, -4:])
    report = {
        "rank": rank,
        "num_processes": world,
        "prompts": generator.prompts,
        "checksums": generator.checksums,
        "logprobs": out.logprobs[0].tolist(),
        "values": out.values[0].tolist(),
        "value_head_sum": float(policy.value_head.weight.detach().double().abs().sum()),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
