"""A tiny training run through Accelerate, launched by tests/test_distributed.py under torchrun.

Each process writes what it saw and the checksum of its weights to OUT_DIR/rank<R>.json, so the
test can check that there were two processes, that they trained on different shards, and that
gradient all-reduce kept their weights identical.
"""

import faulthandler
import json
import sys
from pathlib import Path

import torch

from rlhf.config import ModelConfig, OptimizerConfig
from rlhf.data import pad_batch
from rlhf.models import load_lm, load_tokenizer
from rlhf.tracking import MetricsLogger
from rlhf.training import LoopOptions, build_optimizer, build_scheduler, make_accelerator, train_loop


def main(out_dir: Path) -> None:
    # A rare hang (3 in ~50 runs, never while watched) outlived the 60 s collective timeout, so it is
    # not in a collective: after 100 s dump every thread's stack to stderr and exit, so the test
    # fails fast with the place it hung instead of only a subprocess timeout.
    faulthandler.dump_traceback_later(100, exit=True)
    optim_cfg = OptimizerConfig(lr=1e-2, gradient_accumulation_steps=2)
    accelerator = make_accelerator(optim_cfg, seed=0, timeout_s=60)
    tokenizer = load_tokenizer(ModelConfig())
    model = load_lm(ModelConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    texts = [f"example {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(16)]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    seen: list[int] = []

    def collate(idx):
        seen.extend(int(i) for i in idx)
        ids = [rows[i] for i in idx]
        return pad_batch(ids, tokenizer.pad_token_id, "right", ids)

    loader = torch.utils.data.DataLoader(list(range(16)), batch_size=2, collate_fn=collate)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, total_steps=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    with MetricsLogger(out_dir, tensorboard=False, enabled=accelerator.is_main_process) as logger:
        options = LoopOptions(max_steps=4, optim_cfg=optim_cfg, logger=logger, log_every=1, progress=False)
        result = train_loop(
            accelerator, model, optimizer, scheduler, loader, lambda m, b: (m(**b).loss, {}), options
        )
    unwrapped = accelerator.unwrap_model(model)
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in unwrapped.named_parameters())
    checksum = sum(float(p.detach().double().sum()) for p in unwrapped.parameters())
    report = {
        "rank": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "backend": str(getattr(accelerator.state, "backend", None)),
        "seen": sorted(seen),
        "steps": result.steps,
        "losses": [row["loss"] for row in result.history],
        "changed_tensors": changed,
        "total_tensors": len(before),
        "checksum": checksum,
    }
    (out_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
