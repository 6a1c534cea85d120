"""Sharded training (FSDP2, DeepSpeed ZeRO) through Accelerate: which engine a run is on, the CPU
shim, gathering a sharded model, and the memory each process holds.

The engine comes from Accelerate's own configuration: `accelerate launch --config_file
examples/accelerate/<file>` (or, under torchrun, the same environment variables it sets:
`ACCELERATE_USE_FSDP=true FSDP_VERSION=2`, `ACCELERATE_USE_DEEPSPEED=true
ACCELERATE_DEEPSPEED_CONFIG_FILE=...`). rlhf builds nothing of its own here: the sharding, the
collectives and the sharded checkpoints are torch's FSDP2 and DeepSpeed's.

The CPU shim (`_select_engine_on_cpu`, the only one): Accelerate 1.15 honours an FSDP or DeepSpeed
configuration only on its GPU paths; with `cpu=True` it builds the plugin from the environment but
then runs plain DDP. Both engines work on CPU over gloo (FSDP2's `fully_shard`; DeepSpeed's CPU
accelerator), so on CPU the shim sets the distributed type Accelerate would have set on a GPU. It
runs only when the run is on CPU, several processes and such a configuration; the tests check that
parameters really are sharded afterwards (each process holds its share).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def _select_engine_on_cpu(accelerator) -> None:
    """On CPU, turn the DDP run Accelerate set up into the FSDP or DeepSpeed run its configuration
    asks for (see the module docstring): the plugin built from the same environment variables
    Accelerate reads, and the distributed type it sets on a GPU. Does nothing on GPUs, in one
    process, or without such a configuration."""
    from accelerate.state import PartialState
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return
    if _env_flag("ACCELERATE_USE_FSDP"):
        plugin = FullyShardedDataParallelPlugin()
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
    elif _env_flag("ACCELERATE_USE_DEEPSPEED"):
        ds_plugin = DeepSpeedPlugin()
        ds_plugin.set_mixed_precision(state.mixed_precision)
        ds_plugin.select(_from_accelerator_state=True)
        state.deepspeed_plugins = ds_plugin
        state.distributed_type = DistributedType.DEEPSPEED
    else:
        return
    # Every later `AcceleratorState()` copies the process-level state's type over its own (Accelerate
    # makes some while preparing a model), so that one must say the same.
    PartialState._shared_state["distributed_type"] = state.distributed_type


def sharding_kind(accelerator) -> str:
    """What the run is on, in words: `FSDP2 full shard`, `DeepSpeed ZeRO-3 (CPU offload: optimizer)`,
    `DDP`, `one process`."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        version = plugin.fsdp_version
        reshard = plugin.reshard_after_forward
        how = "full shard" if reshard in (True, "FULL_SHARD") or reshard is None else "shard grad op"
        offload = ", CPU offload" if getattr(plugin.cpu_offload, "offload_params", False) else ""
        return f"FSDP{version} {how}{offload}"
    if kind == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        zero = config.get("zero_optimization", {})
        offloaded = [
            what
            for what in ("optimizer", "param")
            if zero.get(f"offload_{what}", {}).get("device", "none") not in ("none", None)
        ]
        offload = f" (CPU offload: {', '.join(offloaded)})" if offloaded else ""
        return f"DeepSpeed ZeRO-{zero.get('stage', 0)}{offload}"
    if accelerator.num_processes > 1:
        return "DDP"
    return "one process"


def is_sharded(accelerator) -> bool:
    """True under FSDP or DeepSpeed: the model's parameters (or their optimizer state) are split over
    processes, so every process must take part in forward passes, gathering and saving."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator) -> int | None:
    """DeepSpeed's ZeRO stage, or None when the run is not on DeepSpeed."""
    if not is_deepspeed(accelerator):
        return None
    return int(
        accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
    )


def full_state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights gathered onto the main process (on the CPU), None elsewhere. Every
    process must call it (it is a collective under FSDP and ZeRO-3). `model` as prepared."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model).state_dict() if accelerator.is_main_process else None
    if is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        gathered = get_model_state_dict(model, options=options)  # tensors only, for a module's state
        return (
            {k: v for k, v in gathered.items() if isinstance(v, torch.Tensor)}
            if accelerator.is_main_process
            else None
        )
    module = accelerator.unwrap_model(model)
    if zero_stage(accelerator) != 3:  # ZeRO-1/2 split the optimizer state; the weights are whole
        return {k: v.cpu() for k, v in module.state_dict().items()} if accelerator.is_main_process else None
    # DeepSpeed's own gather (what its 16-bit model save uses; it keeps the dtype the weights have),
    # one module at a time, after releasing the partitions prefetched or offloaded for the last forward.
    engine: Any = model  # the DeepSpeedEngine Accelerate prepared
    engine.empty_partition_cache()
    state = engine._zero3_consolidated_16bit_state_dict()
    return {k: v.cpu() for k, v in state.items()} if accelerator.is_main_process else None


def peak_memory_gib(accelerator) -> float:
    """This process's peak memory over the run, GiB: on a GPU the largest allocation torch made, on
    the CPU the peak resident set (including the Python interpreter and its libraries, about 0.4 GiB
    with torch and transformers, and loading the model). The kernel's counter is not reset here:
    the benchmarks against TRL measure whole windows with it."""
    if accelerator.device.type == "cuda":
        return torch.cuda.max_memory_allocated(accelerator.device) / 2**30
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def peak_memory_per_process(accelerator) -> list[float]:
    """Every process's `peak_memory_gib`, in process order, on every process (a collective)."""
    peak = torch.tensor([peak_memory_gib(accelerator)], device=accelerator.device)
    return accelerator.gather(peak).tolist() if accelerator.num_processes > 1 else peak.tolist()


def memory_line(accelerator, peaks: list[float]) -> str:
    """`[memory] peak per process: 1.23, 1.21 GiB (CPU resident)`."""
    what = "GPU allocated" if accelerator.device.type == "cuda" else "CPU resident"
    return f"[memory] peak per process: {', '.join(f'{p:.2f}' for p in peaks)} GiB ({what})"


def prepare_engine_config(accelerator, *, micro_batch_size: int, max_grad_norm: float | None) -> None:
    """Fill the DeepSpeed settings rlhf's own config decides (Accelerate leaves them `auto` when no
    dataloader is prepared): the micro-batch per process, the global batch, and gradient clipping
    (DeepSpeed clips inside its step; 0 turns it off). Nothing to do on other engines."""
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    accumulation = accelerator.gradient_accumulation_steps
    decided = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "train_batch_size": micro_batch_size * accumulation * accelerator.num_processes,
        "gradient_clipping": 0.0 if max_grad_norm is None else float(max_grad_norm),
    }
    for key, value in decided.items():
        if config.get(key, "auto") == "auto":
            config[key] = value


def even_batches(accelerator, count: int, batch_size: int) -> Iterator[tuple[list[int], bool]]:
    """This process's batches of the items 0..count-1 (every N-th item), as (indices, keep).

    Under FSDP or ZeRO-3 each forward pass is a collective (the layers are gathered from all
    processes), so every process must run as many as the others: a process with fewer batches runs
    one of its own again (or item 0) with keep=False, and drops what it computes."""
    mine = list(range(accelerator.process_index, count, accelerator.num_processes))
    chunks = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    yield from ((chunk, True) for chunk in chunks)
    if not is_sharded(accelerator) or count == 0:
        return
    most = -(-len(range(0, count, accelerator.num_processes)) // batch_size)  # process 0 has the most
    filler = chunks[-1] if chunks else [0]
    for _ in range(most - len(chunks)):
        yield filler, False


SHARDED_DIR = "sharded"
"""A checkpoint's engine-format state: torch.distributed.checkpoint files (FSDP), or DeepSpeed's."""


def save_sharded(accelerator, model, optimizer, directory: Path) -> None:
    """Write the model's and optimizer's shards in the engine's own format into `directory` (every
    process writes its part; a collective). `model` as prepared (the FSDP module, or the DeepSpeed
    engine); under FSDP `optimizer` may be a list of optimizers over parts of the model (PPO's
    policy and value head)."""
    if is_fsdp(accelerator):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))
    else:
        # DeepSpeed: its own layout (model states, and each process's optimizer partition)
        model.save_checkpoint(str(directory), tag="state", save_latest=False)


def load_sharded(accelerator, model, optimizer, directory: Path) -> None:
    """Read back what `save_sharded` wrote (every process reads its part), written by a run with
    the same engine; torch.distributed.checkpoint also reshards onto another number of processes."""
    if is_fsdp(accelerator):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.load({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))  # in place
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    else:
        loaded, _ = model.load_checkpoint(
            str(directory), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if loaded is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {directory}")


def unsharded_model(accelerator, prepared, part: torch.nn.Module, rebuild: Callable[[], torch.nn.Module]):
    """The trained `part` of the `prepared` model as a plain module on the main process (None on the
    others; every process must call this): under FSDP or ZeRO-3, `rebuild()` makes a fresh copy
    of the part as it was built before training (on the main process only) and the gathered weights
    go into it; otherwise `part` itself. What stages save and hand back."""
    if not is_sharded(accelerator):
        return part
    state = full_state_dict(accelerator, prepared)
    if not accelerator.is_main_process:
        return None
    assert state is not None
    inner = accelerator.unwrap_model(prepared)
    prefix = next(name for name, module in inner.named_modules() if module is part)
    prefix = f"{prefix}." if prefix else ""
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    with whole_on_each_process():
        model = rebuild()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied weights are saved once; anything else missing or left over is a mismatch.
    missing = [k for k in missing if k not in _tied_names(model)]
    if missing or unexpected:
        raise RuntimeError(
            f"gathered weights do not fit the rebuilt model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


@contextlib.contextmanager
def whole_on_each_process() -> Iterator[None]:
    """Build models whole, on this process alone. Under ZeRO-3, transformers builds every model
    partitioned over the processes (`deepspeed.zero.Init`, a collective), which only a model handed
    to DeepSpeed's engine can use: a frozen model run outside it (a reference, a reward model, a
    policy sampled before training) or one rebuilt on the main process must be built whole.
    transformers keeps the run's DeepSpeed settings as a module-level reference, restored after."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    settings = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if settings is not None:
            hf_deepspeed.set_hf_deepspeed_config(settings)


def one_embedding_module(model: torch.nn.Module) -> None:
    """Under FSDP2: an encoder-decoder's encoder and decoder embed tokens with modules of their own
    around the one shared weight (T5, BART), and a parameter can belong to one FSDP group only (the
    input embedding gets a group of its own): point both at the model's `shared` module itself, so
    every use of the weight is one module in one group. Nothing changes in what is computed (the
    same weight, the same embedding class and scale), nor in the optimizer's parameters."""
    from transformers import PreTrainedModel

    for base in [m for m in model.modules() if isinstance(m, PreTrainedModel)]:
        if not getattr(base.config, "is_encoder_decoder", False) or not hasattr(base, "get_encoder"):
            continue
        shared = base.get_input_embeddings()
        for stack in (base.get_encoder(), base.get_decoder()):
            own = getattr(stack, "embed_tokens", None)
            same = own is not None and own.weight is shared.weight and type(own) is type(shared)
            if same and getattr(own, "embed_scale", None) == getattr(shared, "embed_scale", None):
                stack.embed_tokens = shared


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that share their tensor with an earlier one (e.g. a tied LM head)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.setdefault(id(param), name)
    return tied


def clip_grad_norm(accelerator, parameters: list[torch.nn.Parameter], max_norm: float):
    """Clip the gradients of `parameters` to `max_norm` in total; returns the norm before clipping.

    Under FSDP2 the gradients are shards (DTensors): torch's own clipping computes the norm over
    all processes' shards; Accelerate's FSDP path clips only when handed exactly the model's
    parameter list, which a partly frozen model (LoRA, selective layers) is not."""
    if not is_fsdp(accelerator):
        return accelerator.clip_grad_norm_(parameters, max_norm)
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def held_fraction(accelerator, model, optimizer) -> float:
    """The share of the trained state the engine splits that this process holds: under FSDP and
    ZeRO-3 the trainable parameters (and with them gradients and optimizer state), under ZeRO-1/2
    the fp32 master copy the optimizer updates; 1.0 when nothing is split (DDP, one process).
    `model` and `optimizer` as prepared."""
    trainable = [p for p in accelerator.unwrap_model(model).parameters() if p.requires_grad]
    if is_fsdp(accelerator):
        from torch.distributed.tensor import DTensor

        held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in trainable)
        return held / max(1, sum(p.numel() for p in trainable))
    stage = zero_stage(accelerator)
    if stage == 3:
        return sum(p.ds_tensor.numel() for p in trainable) / max(1, sum(p.ds_numel for p in trainable))
    if stage in (1, 2):
        partitions = optimizer.optimizer.single_partition_of_fp32_groups  # the ZeRO optimizer's own
        return sum(t.numel() for t in partitions) / max(1, sum(p.numel() for p in trainable))
    return 1.0


def sharding_report(accelerator, model, optimizer) -> tuple[dict[str, Any], str]:
    """What a prepared run is sharded on, for `summary.json` (`{"engine", "processes", "held"}`,
    `held`: each process's `held_fraction`) and the line printed: `[distributed] FSDP2 full shard,
    2 process(es); each holds 50.0%, 50.0% of the trained state`. A collective."""
    held = torch.tensor([held_fraction(accelerator, model, optimizer)], device=accelerator.device)
    shares = accelerator.gather(held).tolist() if accelerator.num_processes > 1 else held.tolist()
    report = {"engine": sharding_kind(accelerator), "processes": accelerator.num_processes,
              "held": [round(x, 4) for x in shares]}  # fmt: skip
    line = (
        f"[distributed] {report['engine']}, {accelerator.num_processes} process(es); each holds "
        + ", ".join(f"{x:.1%}" for x in shares)
        + " of the trained state"
    )
    return report, line


def start_fsdp_root(root: torch.nn.Module, *inputs: Any, **kwargs: Any) -> None:
    """Under FSDP2, run one forward through the prepared `root` (without gradients) so that it
    becomes FSDP's root, before any of its parts is called on its own (a `generate` on the LM
    inside it calls the decoder layers directly: the first to run would otherwise take the root's
    place). Does nothing to a module FSDP2 did not shard."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(root, FSDPModule):
        with torch.no_grad():
            root(*inputs, **kwargs)
        _reshard_all(root)


def _reshard_all(root: torch.nn.Module) -> None:
    """Free the gathered weights of every FSDP2 unit in `root` (a forward without gradients leaves
    them gathered: only a backward pass reshards them)."""
    from torch.distributed.fsdp import FSDPModule

    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextlib.contextmanager
def root_gathered(root: torch.nn.Module) -> Iterator[None]:
    """Under FSDP2, the weights of `root`'s own shard unit (those outside its sharded layers: the
    embeddings, the final norm, the output and value heads) gathered on every process while
    inside, for code that calls the parts of `root` rather than `root` itself (`generate`); each
    sharded layer still gathers its own weights as it runs. `start_fsdp_root` first. Nothing to do
    elsewhere."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(root, FSDPModule):
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        _reshard_all(root)
