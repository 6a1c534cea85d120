"""Rollout throughput and PPO step time: the built-in engine (transformers' `generate`) against the
vLLM engine, on the same model, prompts and sampling, in one run.

    .venv/bin/python bench/rollout_engines.py                  # the issue's size (see below)
    .venv/bin/python bench/rollout_engines.py --lora           # also LoRA: merged weights vs adapter sync
    .venv/bin/python bench/rollout_engines.py --hidden 896 --layers 24 --heads 14 --kv-heads 2 \\
        --intermediate 4864 --vocab 151936 --dtype bfloat16    # Qwen2.5-0.5B-shaped, on a GPU

The model is a random-weight Llama (default: hidden 512, 8 layers, 8 heads, vocab 32000) with a
word-level tokenizer of as many tokens, written to `--workdir`; a random model rarely emits EOS, so
every sequence runs to `--new-tokens`. Printed: rollout tokens per second of each engine over
`--repeats` timed rollouts of `--sequences` sequences (after one untimed warm-up; the vLLM engine's
start is timed apart), their ratio, and the mean time of a PPO step (rollout, scoring, update) with
each engine over `--ppo-steps` steps after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def build(args: argparse.Namespace) -> Path:
    """A random Llama of the asked shape and a word-level tokenizer of its vocabulary, saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(args.workdir) / "model"
    if (directory / "model.safetensors").is_file():
        return directory
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, args.vocab)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def prompts(args: argparse.Namespace, count: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, args.vocab, (count, args.prompt_tokens), generator=g).tolist()


def rollout_throughput(args: argparse.Namespace, model_dir: Path) -> dict[str, dict[str, float]]:
    """Tokens per second of each engine on `--sequences` sequences (and the vLLM engine's start)."""
    from rlhf.config.parts import ModelConfig
    from rlhf.engines import make_generator
    from rlhf.generation.config import SamplingConfig
    from rlhf.models import load_lm, load_tokenizer

    model_cfg = ModelConfig(path=str(model_dir), dtype=args.dtype)
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    model = load_lm(model_cfg, for_training=False, tokenizer=tokenizer)
    if torch.cuda.is_available():
        model.to("cuda")
    sampling = SamplingConfig(
        temperature=1.0, max_new_tokens=args.new_tokens, seed=None, batch_size=args.sequences
    )
    ids = prompts(args, args.sequences)
    results = {}
    for engine in ("hf", "vllm"):
        generator = make_generator(engine, tokenizer, sampling, workdir=Path(args.workdir) / "engine")
        started = time.perf_counter()
        generator.sync(model)
        start_seconds = time.perf_counter() - started
        generator.generate(ids[: max(1, args.sequences // 8)])  # warm-up (kernels, allocator)
        rates = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            samples = generator.generate(ids)
            rates.append(sum(len(s.token_ids) for s in samples) / (time.perf_counter() - t0))
        generator.close()
        results[engine] = {"tokens_per_second": statistics.fmean(rates), "spread": _spread(rates),
                           "start_seconds": start_seconds}  # fmt: skip
    return results


def ppo_step_seconds(args: argparse.Namespace, model_dir: Path, engine: str, lora_sync: str | None) -> float:
    """Mean seconds of a PPO step (steps after the first) with `engine` (and LoRA when `lora_sync`)."""
    from rlhf.config.core import from_dict
    from rlhf.ppo import PpoConfig, run_ppo

    name = f"ppo-{engine}" + (f"-lora-{lora_sync}" if lora_sync else "")
    out = Path(args.workdir) / name
    data = Path(args.workdir) / "prompts.jsonl"
    words = [" ".join(f"w{i}" for i in row) for row in prompts(args, args.sequences // args.completions)]
    data.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in words))
    cfg = from_dict(PpoConfig, {
        "model": {"path": str(model_dir), "dtype": args.dtype},
        "peft": {"method": "lora" if lora_sync else "none"},
        "data": {"path": str(data), "max_length": args.prompt_tokens + args.new_tokens + 8},
        "prompt": {"template": "raw"},
        "reward": {"function": str(Path(__file__).resolve().parent.parent / "examples/rewards.py:target_length")},
        "rollout": {
            "prompts_per_step": args.sequences // args.completions, "samples_per_prompt": args.completions,
            "sampling": {"max_new_tokens": args.new_tokens, "batch_size": args.sequences},
            "engine": engine, "vllm": {"lora_sync": lora_sync or "merged"},
        },
        "minibatch_size": args.sequences // 4, "ppo_epochs": 1, "max_steps": args.ppo_steps + 1,
        "optimizer": {"lr": 1e-5},
        "output_dir": str(out),
        "logging": {"progress": False, "tensorboard": False, "log_every": 1},
    })  # fmt: skip
    run_ppo(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["ppo/step_seconds"] for r in rows if "ppo/step_seconds" in r][1:]
    return statistics.fmean(seconds)


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default in (("hidden", 512), ("intermediate", 1376), ("layers", 8), ("heads", 8), ("kv_heads", 8),
                          ("vocab", 32000), ("sequences", 64), ("new_tokens", 128), ("prompt_tokens", 32),
                          ("completions", 4), ("repeats", 3), ("ppo_steps", 2)):  # fmt: skip
        parser.add_argument("--" + flag.replace("_", "-"), type=int, default=default)
    parser.add_argument("--dtype", default="float32" if not torch.cuda.is_available() else "bfloat16")
    parser.add_argument("--workdir", default="runs/bench-rollout")
    parser.add_argument("--lora", action="store_true", help="also time PPO steps with LoRA, both sync modes")
    parser.add_argument("--no-ppo", action="store_true", help="rollout throughput only")
    args = parser.parse_args()
    model_dir = build(args)
    machine = (
        "GPU " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"model: random Llama hidden {args.hidden}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}, "
          f"{args.dtype}; {args.sequences} sequences x {args.new_tokens} new tokens; {machine}")  # fmt: skip
    rates = rollout_throughput(args, model_dir)
    for engine, r in rates.items():
        print(f"rollout {engine:5s} {r['tokens_per_second']:9.1f} tokens/s (± {r['spread']:.1f} over "
              f"{args.repeats} rollouts; engine start {r['start_seconds']:.1f} s)")  # fmt: skip
    print(
        f"rollout throughput, vllm / hf: {rates['vllm']['tokens_per_second'] / rates['hf']['tokens_per_second']:.2f}x"
    )
    if args.no_ppo:
        return
    steps = {engine: ppo_step_seconds(args, model_dir, engine, None) for engine in ("hf", "vllm")}
    print(
        f"PPO step (full fine-tuning): hf {steps['hf']:.1f} s, vllm {steps['vllm']:.1f} s; "
        f"speed-up {steps['hf'] / steps['vllm']:.2f}x"
    )
    if args.lora:
        lora = {mode: ppo_step_seconds(args, model_dir, "vllm", mode) for mode in ("merged", "adapter")}
        hf_lora = ppo_step_seconds(args, model_dir, "hf", "merged")
        print(
            f"PPO step (LoRA): hf {hf_lora:.1f} s, vllm merged-weights sync {lora['merged']:.1f} s, "
            f"vllm adapter sync {lora['adapter']:.1f} s"
        )


if __name__ == "__main__":
    main()
