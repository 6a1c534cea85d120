"""The vLLM engine, colocated: a `vllm.LLM` in the training process, sampling from the policy's
current weights.

    engine = VllmGenerator(tokenizer, sampling, VllmConfig(), workdir=run_dir / "engine")
    engine.sync(model)        # first call: save the weights once, start the engine on them;
                              # later calls: reload the weights in memory (or the LoRA adapter)
    samples = engine.generate(prompt_ids)   # one Sample per entry, with the engine's log-probs

Semantics match the built-in engine (`rlhf.engines.hf`): temperature, top-p, top-k, repetition
penalty, max new tokens, EOS (every id the model or tokenizer names), stop strings (generation
stops at one and the text is cut right before it, by the same code), and seeds (each request's
seed is drawn from torch's random stream, so seeding torch reproduces a rollout). Every prompt is
submitted at once: vLLM batches them itself (`sampling.batch_size` does not apply).

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so weights reach it as
tensors, never through the disk after the start. On a CPU its KV cache is `vllm.kv_cache_gib`; on
a GPU it takes `vllm.gpu_memory_utilization` of the memory and, with `vllm.sleep`, gives it back
between rollouts.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlhf.config.engine import VllmConfig
from rlhf.engines.weights import UnsupportedAdapterError, adapter_unties_embeddings, checkpoint_weights
from rlhf.generation.config import SamplingConfig
from rlhf.generation.sampling import Sample, eos_token_ids, finish_sample


class VllmGenerator:
    """A colocated vLLM engine behind the `Generator` seam (`sync(model)`, `generate(prompt_ids)`)."""

    name = "vllm"

    def __init__(
        self,
        tokenizer: Any,
        sampling: SamplingConfig,
        cfg: VllmConfig,
        *,
        workdir: str | Path,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.seed = seed
        self.progress = progress
        self.llm: Any = None
        self.lora: Any = None
        """The adapter request every generate call carries (`lora_sync: adapter`), else None."""
        self.syncs = 0
        self.eos_ids: list[int] = []
        self.trainer_group = False
        """Whether a torch.distributed group (the trainer's, e.g. under torchrun) existed when the
        engine started: the engine then joins it, and must not take it down when it shuts down."""
        self.asleep: str | None = None
        """What sleep mode released: `all` (weights and KV cache), `kv_cache`, or None (awake)."""

    # -- weights ---------------------------------------------------------------------------------

    def sync(self, policy: torch.nn.Module) -> None:
        """Make the engine sample from `policy`'s current weights (started on the first call)."""
        from rlhf.models.adapters import find_peft_model

        adapter = self.cfg.lora_sync == "adapter" and find_peft_model(policy) is not None
        if self.llm is None:
            self._start(policy, adapter)
        else:
            self._wake(weights_only=True)
            if not adapter:
                weights = checkpoint_weights(policy, merged=True)
                self.llm.collective_rpc(
                    "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
                )
        if adapter:
            self._send_adapter(policy)
        self.llm.reset_prefix_cache()  # cached prompt states belong to the old weights
        self.syncs += 1

    def _start(self, policy: torch.nn.Module, adapter: bool) -> None:
        """Save the weights once (merged, or the base under `lora_sync: adapter`) and start vLLM on them."""
        from vllm import LLM

        model_dir = self.workdir / "model"
        dtype = save_checkpoint(policy, self.tokenizer, model_dir, merged=not adapter)
        self.eos_ids = eos_token_ids(policy, self.tokenizer)
        kwargs = engine_kwargs(self.cfg, dtype, self.seed, lora_rank=_lora_rank(policy) if adapter else None)
        self.trainer_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        with _in_process_engine(self.cfg):
            self.llm = LLM(model=str(model_dir), tokenizer=str(model_dir), **kwargs)

    def _send_adapter(self, policy: torch.nn.Module) -> None:
        from vllm.lora.request import LoRARequest

        from rlhf.models.adapters import find_peft_model

        peft_model = find_peft_model(policy)
        assert peft_model is not None
        path = self.workdir / f"adapter-{self.syncs % 2}"  # two slots: the previous one may still load
        peft_model.save_pretrained(str(path))
        self.lora = LoRARequest(f"policy-{self.syncs}", self.syncs + 1, str(path))

    # -- sampling --------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[list[int]], desc: str = "generate") -> list[Sample]:
        """One sample per entry of `prompt_ids`, in order, each with the engine's log-probs."""
        from vllm.inputs import TokensPrompt

        assert self.llm is not None, "call sync(model) first"
        if any(not ids for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        self._wake(weights_only=False)
        seeds = torch.randint(0, 2**62, (len(prompt_ids),)).tolist()  # from torch's stream: reproducible
        params = [self._params(seed) for seed in seeds]
        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.progress, lora_request=self.lora)
        samples = [self._sample(ids, out.outputs[0]) for ids, out in zip(prompt_ids, outputs, strict=True)]
        self._sleep()
        return samples

    def _params(self, seed: int):
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(
            n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
            repetition_penalty=s.repetition_penalty, max_tokens=s.max_new_tokens,
            stop=list(s.stop) if s.stop else None, stop_token_ids=list(self.eos_ids), ignore_eos=False,
            seed=None if s.greedy else seed, logprobs=0, skip_special_tokens=True,
            # The text is decoded by `finish_sample` from the ids; vLLM detokenizes step by step
            # only to find stop strings.
            detokenize=bool(s.stop),
        )  # fmt: skip

    def _sample(self, prompt: list[int], out) -> Sample:
        """The Sample of one vLLM completion, cut as the built-in engine cuts (`finish_sample`)."""
        ids = list(out.token_ids)
        sample = finish_sample(ids, prompt[-1:], self.tokenizer, self.sampling.stop, set(self.eos_ids))
        logprobs = [step[token].logprob for step, token in zip(out.logprobs or [], ids, strict=False)]
        sample.logprobs = (
            logprobs[: len(sample.token_ids)] if len(logprobs) >= len(sample.token_ids) else None
        )
        return sample

    # -- memory ----------------------------------------------------------------------------------

    def _sleep(self) -> None:
        """GPU with `vllm.sleep`: give the memory back to the trainer until the next rollout."""
        if self.llm is None or not _sleep_mode(self.cfg) or self.asleep is not None:
            return
        # Level 2 drops the weights too: they are reloaded before the next rollout anyway; an
        # adapter-synced engine keeps its base weights (level 1 moves them to CPU memory).
        self.llm.sleep(level=1 if self.lora is not None else 2)
        self.asleep = "all"

    def _wake(self, *, weights_only: bool) -> None:
        """Take back the weights' memory (to load new ones into), or everything (to sample)."""
        if self.asleep is None:
            return
        if weights_only:
            if self.asleep == "all":
                self.llm.wake_up(tags=["weights"])
                self.asleep = "kv_cache"
            return
        self.llm.wake_up(tags=["weights", "kv_cache"] if self.asleep == "all" else ["kv_cache"])
        self.asleep = None

    def close(self) -> None:
        """Shut the engine down and free its memory; the trainer's process group stays up."""
        if self.llm is None:
            return
        with _keep_default_group(self.trainer_group):
            self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        self.lora = None


def engine_kwargs(cfg: VllmConfig, dtype: str, seed: int, *, lora_rank: int | None) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments for `cfg` on this machine."""
    gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "seed": seed,
        # Log-probs of the distribution sampled from (after temperature, top-k, top-p): what the
        # trainer's read-out computes, so the two can be compared token by token.
        "logprobs_mode": "processed_logprobs",
        "enforce_eager": cfg.enforce_eager if cfg.enforce_eager is not None else not gpu,
    }
    if cfg.max_model_len is not None:
        kwargs["max_model_len"] = cfg.max_model_len
    if gpu:
        kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=cfg.sleep)
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_lora_rank=_vllm_rank(lora_rank), max_loras=1)
    return kwargs


def _sleep_mode(cfg: VllmConfig) -> bool:
    return cfg.sleep and torch.cuda.is_available()


def _lora_rank(policy: torch.nn.Module) -> int:
    from rlhf.models.adapters import find_peft_model

    peft_model = find_peft_model(policy)
    assert peft_model is not None
    return int(peft_model.active_peft_config.r)


def _vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts as `max_lora_rank` that holds `rank`."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest (512); use lora_sync merged")


def save_checkpoint(policy: torch.nn.Module, tokenizer: Any, directory: Path, *, merged: bool) -> str:
    """Write `policy`'s weights (`merged`: with the LoRA update added) as a Hugging Face checkpoint
    vLLM can start from; returns the weights' dtype name. Tied weights are written once, unless an
    adapter changes the output matrix or the embedding: the checkpoint is then untied."""
    from safetensors.torch import save_file

    from rlhf.models.adapters import find_peft_model

    peft_model = find_peft_model(policy)
    base: Any = peft_model.get_base_model() if peft_model is not None else policy
    untie = adapter_unties_embeddings(policy)
    if untie and not merged:
        raise UnsupportedAdapterError(
            "an adapter on the tied lm_head/embed_tokens cannot be served as a vLLM adapter: set "
            "rollout.vllm.lora_sync merged"
        )
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in checkpoint_weights(policy, merged=merged):
        key = (tensor.untyped_storage().data_ptr(), tuple(tensor.shape))
        if key in seen and not untie:  # a tied weight (the LM head sharing the embedding): the config says so
            continue
        seen.add(key)
        tensors[name] = (
            tensor.detach().to("cpu").contiguous().clone()
            if untie
            else tensor.detach().to("cpu").contiguous()
        )
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]  # vLLM picks its implementation by this name
    if untie:
        config.tie_word_embeddings = False
    config.save_pretrained(str(directory))
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    dtype = next(iter(tensors.values())).dtype
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def _keep_default_group(keep: bool) -> Iterator[None]:
    """vLLM's shutdown ends with `torch.distributed.destroy_process_group()`, the default group:
    when that is the trainer's (the engine joined it), only the engine's own groups go."""
    if not keep:
        yield
        return
    destroy = torch.distributed.destroy_process_group

    def destroy_but_the_default(group=None) -> None:
        if group is not None:
            destroy(group)

    torch.distributed.destroy_process_group = destroy_but_the_default
    try:
        yield
    finally:
        torch.distributed.destroy_process_group = destroy


class _in_process_engine:
    """Start vLLM inside this process without it changing the trainer's world.

    vLLM's CPU worker sets torch to one thread (unless OMP_NUM_THREADS is set), replaces
    `torch.set_num_threads` with a no-op, and reseeds torch, `random` and NumPy with the engine's
    seed. Around the engine's start this keeps the thread count, puts `set_num_threads` back and
    restores every random state, so training goes on as it would have with the built-in engine.
    """

    def __init__(self, cfg: VllmConfig) -> None:
        self.cfg = cfg

    def __enter__(self) -> None:
        import numpy as np

        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # an embedded engine sends nothing anywhere
        if not torch.cuda.is_available():
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.cfg.kv_cache_gib)
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        self.threads = torch.get_num_threads()
        self.set_num_threads = torch.set_num_threads
        self.states = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        self.cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __exit__(self, *exc: object) -> None:
        import numpy as np

        torch.set_num_threads = self.set_num_threads
        torch.set_num_threads(self.threads)
        torch.set_rng_state(self.states[0])
        random.setstate(self.states[1])
        np.random.set_state(self.states[2])
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)
