"""Peak memory per process of DDP, FSDP2 and DeepSpeed ZeRO-3 (and ZeRO-2) for `rlhf sft` and for
`rlhf ppo`, at 2 and 4 processes on this machine's CPU, on a model large enough that its training
state dominates.

    .venv/bin/python bench/sharding_memory.py                    # ~95M-parameter Llama, 2 and 4 processes
    .venv/bin/python bench/sharding_memory.py --processes 2 --layers 4 --stages ppo
    .venv/bin/python bench/sharding_memory.py --engines ddp fsdp2 --bare   # + torch's fully_shard alone

Every run is the real command a user launches (`torchrun` for DDP, `accelerate launch --config_file
examples/accelerate/<engine>.yaml` for the others) on a randomly initialised Llama (hidden 768, 10
layers, vocabulary 32,000, tied embeddings; float32) written to a temporary directory, for a few
optimizer steps (PPO steps) of full fine-tuning with AdamW. Each reports its processes' peak resident memory
over the run (`peak_memory_gib` in summary.json, loading included) and the share of the trained
state each holds. Printed: the largest
process's peak, and its ratio to DDP's at the same number of processes.

What to expect: AdamW keeps 16 bytes per parameter (weights, gradient, two moments); DDP holds all
of it on every process, FSDP2 and ZeRO-3 a 1/N share of it plus one layer gathered at a time;
ZeRO-2 splits only gradients and moments. PPO adds, whole on every process under either engine, the
frozen reference copy (4 bytes a parameter) and the rollout's activations. Every process also holds the Python interpreter with
torch and transformers (about 0.4 GiB), which no engine divides: it sets a floor under the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENGINES = {"ddp": None, "fsdp2": "fsdp2.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml"}


def llama_config(layers: int):
    """The benchmark's Llama: hidden 768, `layers` decoder layers, a 32,000-word tied vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=layers,
        num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=True, max_position_embeddings=512,
    )  # fmt: skip


def make_model(directory: Path, layers: int) -> int:
    """A random Llama with the built-in tiny tokenizer (ids < 512 of the 32,000-word vocabulary)."""
    import torch
    from transformers import LlamaForCausalLM

    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer

    torch.manual_seed(0)
    config = llama_config(layers)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    load_tokenizer(ModelConfig()).save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false",
            # glibc serves large blocks from its heap once one has been freed, and keeps freed heap
            # memory resident: a fixed threshold maps every tensor of 64 KiB or more on its own and
            # unmaps it when freed, so the resident size follows the tensors alive (all engines alike).
            "MALLOC_MMAP_THRESHOLD_": "65536"}  # fmt: skip


def stage_args(stage: str, steps: int) -> list[str]:
    """`sft`: full fine-tuning, one sequence per process and step. `ppo`: full fine-tuning with the
    shared value head, one prompt and 2 completions of 16 tokens per process and step (GAE), the
    reference a whole frozen copy, a reward function (no reward model)."""
    common = ["data.path=src/rlhf/assets/demo/demonstrations.jsonl", "data.max_length=96", "save_every=0",
              "logging.progress=false", "logging.tensorboard=false"]  # fmt: skip
    if stage == "sft":
        return [*common, f"max_steps={steps}", "batch_size=1", "eval.fraction=0"]
    return [
        *common, f"max_steps={steps}", "peft.method=none", "rollout.prompts_per_step=1",
        "rollout.samples_per_prompt=2", "rollout.sampling.max_new_tokens=16", "minibatch_size=2",
        "reward.function=examples/rewards.py:letter_e", "samples_every=0",
    ]  # fmt: skip


def launch(stage: str, engine: str, processes: int, model: Path, out: Path, steps: int) -> dict:
    args = [f"model.path={model}", *stage_args(stage, steps), f"output_dir={out}"]
    port = str(free_port())
    if ENGINES[engine] is None:
        head = [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", port]
    else:
        config = ROOT / "examples" / "accelerate" / ENGINES[engine]
        head = [str(BIN / "accelerate"), "launch", "--config_file", str(config),
                "--num_processes", str(processes), "--main_process_port", port]  # fmt: skip
    env = bench_env()
    started = time.time()
    proc = subprocess.run(
        [*head, "-m", "rlhf.cli.main", stage, "--set", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{stage} on {engine} x{processes} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"peaks": summary["peak_memory_gib"], "held": summary["sharding"]["held"],
            "engine": summary["sharding"]["engine"], "seconds": round(time.time() - started, 1)}  # fmt: skip


def bare_worker(mode: str, layers: int, steps: int) -> None:
    """One process of the bare reference loop (under torchrun): the same Llama and batch, torch's
    `fully_shard` on every decoder layer and the root (`fsdp2`) or whole weights with gradients
    all-reduced (`whole`), unfused AdamW, no rlhf and no Accelerate. Prints the largest process's peak
    resident GiB over the run."""
    import torch
    import torch.distributed as dist
    from transformers import LlamaForCausalLM

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = llama_config(layers)
    model = LlamaForCausalLM(config)
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 500, (1, 96))
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        if mode == "whole":
            for param in model.parameters():
                dist.all_reduce(param.grad)
        optimizer.step()
        optimizer.zero_grad()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    peak = torch.tensor([int(status["VmHWM"].split()[0]) / 2**20])
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        print(f"BARE {peak.item():.3f}")
    dist.destroy_process_group()


def bare(processes: int, layers: int, steps: int) -> dict[str, float]:
    """The bare reference loop's largest peak for `whole` and `fsdp2` at `processes`."""
    peaks = {}
    for mode in ("whole", "fsdp2"):
        proc = subprocess.run(
            [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", str(free_port()),
             __file__, "--worker", mode, "--layers", str(layers), "--steps", str(steps)],
            env=bench_env(), capture_output=True, text=True,
        )  # fmt: skip
        found = [line for line in proc.stdout.splitlines() if line.startswith("BARE ")]
        if proc.returncode != 0 or not found:
            raise SystemExit(f"bare {mode} x{processes} failed:\n{proc.stderr[-3000:]}")
        peaks[mode] = float(found[0].split()[1])
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--engines", nargs="+", default=["ddp", "fsdp2", "zero3", "zero2"], choices=ENGINES)
    parser.add_argument("--stages", nargs="+", default=["sft", "ppo"], choices=["sft", "ppo"])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--bare", action="store_true", help="also the bare torch loop (no rlhf, no Accelerate)"
    )
    parser.add_argument("--worker", choices=["whole", "fsdp2"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bare_worker(args.worker, args.layers, args.steps)
        return
    with tempfile.TemporaryDirectory(prefix="sharding-memory-") as tmp:
        model = Path(tmp) / "model"
        count = make_model(model, args.layers)
        state_gib = 16 * count / 2**30
        print(
            f"model: {count / 1e6:.1f}M parameters; AdamW training state {state_gib:.2f} GiB (16 bytes each)"
        )
        print(
            f"{'stage':<6}{'engine':<8}{'procs':>6}{'peak GiB (largest)':>20}{'x DDP':>8}{'held':>8}{'s':>7}"
        )
        for processes in args.processes:
            for stage in args.stages:
                ddp_peak = None
                for engine in args.engines:
                    out = Path(tmp) / f"{stage}-{engine}-{processes}"
                    result = launch(stage, engine, processes, model, out, args.steps)
                    peak = max(result["peaks"])
                    ddp_peak = peak if engine == "ddp" else ddp_peak
                    ratio = f"{peak / ddp_peak:.2f}" if ddp_peak else "-"
                    held = max(result["held"])
                    print(
                        f"{stage:<6}{engine:<8}{processes:>6}{peak:>20.2f}{ratio:>8}{held:>8.1%}{result['seconds']:>7}",
                        flush=True,
                    )
            if args.bare:
                peaks = bare(processes, args.layers, args.steps)
                print(
                    f"bare torch loop x{processes}: whole weights {peaks['whole']:.2f} GiB, fully_shard "
                    f"{peaks['fsdp2']:.2f} GiB = {peaks['fsdp2'] / peaks['whole']:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
