"""What this machine computes fast, so dtypes are chosen by the hardware and never assumed.

A CPU either has bf16 matrix instructions (x86: AVX-512 BF16 or AMX; Zen 4+, Cooper Lake, Sapphire Rapids and
later) or emulates bf16 in software, which on an AVX2-only part is ~100x slower than fp32. On x86 the CPU's
feature flags (read by torch's cpuinfo) settle it. Elsewhere (ARM, POWER, anything whose flags say nothing) a
matmul micro-benchmark of a few milliseconds decides, and its result is cached per machine. On a GPU, torch
knows whether bf16 is native.

`choose_dtype` turns a config value (`auto` or a dtype name) into a `DtypeChoice`: the dtype and one line saying
why, which the run log and the run's `config.yaml` show.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import torch

from rlvr.cache import cache_dir
from rlvr.errors import ConfigError

logger = logging.getLogger(__name__)

# x86 feature flags (as torch.cpu.get_capabilities() names them) that give a dtype native matrix arithmetic.
NATIVE_X86_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}
BENCH_SIZE = 256  # a 256^2 matmul: ~0.2 ms in fp32, ~50 ms where bf16 is emulated (once per machine)
NATIVE_IF_SLOWDOWN_BELOW = 1.0  # a native low-precision matmul is faster than fp32; an emulated one is 10-100x slower


@dataclass(frozen=True)
class DtypeSupport:
    """Whether `device` computes `dtype` natively, how that was decided, and the measured cost when measured."""

    dtype: str
    native: bool
    reason: str
    slowdown: float | None = None  # seconds of a matmul in this dtype / in fp32, where measured


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # "bfloat16", "float16" or "float32"
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype} ({self.reason})"


def cpu_description() -> str:
    """`AMD EPYC, x86_64, torch capability AVX2`: the name, architecture and the vector ISA torch dispatches to."""
    capabilities = _cpu_capabilities()
    name = capabilities.get("cpu_name") or "unknown CPU"
    return f"{name}, {capabilities.get('architecture', 'unknown')}, torch capability {torch.backends.cpu.get_cpu_capability()}"


def _cpu_capabilities() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:  # an old torch or an unknown platform: the micro-benchmark decides instead
        return {}


def dtype_support(dtype: str, device: str = "cpu") -> DtypeSupport:
    """Does `device` compute `dtype` natively? float32 always is."""
    if dtype == "float32":
        return DtypeSupport(dtype, True, "float32 is native everywhere")
    if device.startswith("cuda"):
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return DtypeSupport(dtype, False, f"{torch.cuda.get_device_name()} has no native bf16 (compute capability < 8.0)")
        return DtypeSupport(dtype, True, f"{torch.cuda.get_device_name()} computes {dtype} natively")
    capabilities = _cpu_capabilities()
    flags = NATIVE_X86_FLAGS.get(dtype, ())
    if capabilities.get("architecture") in ("x86_64", "x86") and flags:
        found = [flag for flag in flags if capabilities.get(flag)]
        if found:
            return DtypeSupport(dtype, True, f"{cpu_description()}: has {found[0]}")
        return DtypeSupport(dtype, False, f"{cpu_description()}: no {' or '.join(flags)}, so {dtype} is emulated")
    slowdown = measured_slowdown(dtype)
    native = slowdown < NATIVE_IF_SLOWDOWN_BELOW
    return DtypeSupport(dtype, native, f"{cpu_description()}: a {dtype} matmul measured {slowdown:.2g}x fp32's time", slowdown)


def _matmul_seconds(dtype: torch.dtype, size: int = BENCH_SIZE, repeats: int = 3) -> float:
    """The fastest of a few single-matmul timings (after one warm-up, which builds the kernel), on one thread: a
    busy second core then slows both dtypes alike instead of whichever happens to run with more threads."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return max(best, 1e-9)


def _machine_key(dtype: str) -> str:
    """Names this machine's CPU, flags and torch build: a new machine or a new torch measures again."""
    capabilities = _cpu_capabilities()
    text = json.dumps([sorted(capabilities.items()), torch.__version__, torch.backends.cpu.get_cpu_capability(), dtype])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def measured_slowdown(dtype: str) -> float:
    """Time of a `dtype` matmul over an fp32 one on this CPU: measured once per machine, then read from the cache."""
    path = cache_dir() / "hardware" / f"matmul-{dtype}-{_machine_key(dtype)}.json"
    try:
        return float(json.loads(path.read_text())["slowdown"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    slowdown = _matmul_seconds(getattr(torch, dtype)) / _matmul_seconds(torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"dtype": dtype, "slowdown": slowdown, "cpu": cpu_description(), "torch": torch.__version__}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(record, handle)
    os.replace(handle.name, path)
    return slowdown


def choose_dtype(setting: str, key: str, device: str = "cpu", fallback: str = "float32") -> DtypeChoice:
    """The dtype `key` (a config key, for messages) runs in on `device`.

    `auto`: bf16 where it is native, else `fallback` (float32; vLLM on a GPU without bf16 takes float16). An
    explicit dtype always wins; one that `device` only emulates gets a one-line warning with its measured cost."""
    if setting == "auto":
        support = dtype_support("bfloat16", device)
        if support.native:
            return DtypeChoice("bfloat16", f"auto: native bf16; {support.reason}")
        return DtypeChoice(fallback, f"auto: no native bf16; {support.reason}")
    support = dtype_support(setting, device)
    if not support.native:
        slowdown = support.slowdown
        if slowdown is None and not device.startswith("cuda"):  # the flags decided: measure what it costs
            slowdown = measured_slowdown(setting)
        cost = f"; a {setting} matmul takes {slowdown:.0f}x as long as fp32 here" if slowdown else ""
        logger.warning(f"{key}: {setting} requested, but {support.reason}{cost}. Set {key}=auto to run at full speed.")
        return DtypeChoice(setting, f"set by {key}; emulated here: {support.reason}")
    return DtypeChoice(setting, f"set by {key}")


def learner_autocast(setting: bool | str, device: str = "cpu") -> DtypeChoice:
    """`model.autocast_bf16` (true, false or auto) as the dtype the learner's matmuls run in on `device`."""
    requested = "auto" if setting == "auto" else ("bfloat16" if setting else "float32")
    return choose_dtype(requested, "model.autocast_bf16", device)


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """`train.device` (auto, cpu or cuda) as the device this process trains on: with CUDA, the GPU of this process's
    local rank. Asking for CUDA where there is none is a config error, not a fall back to the CPU."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda: no CUDA device is available on this machine (use auto or cpu)")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"train.device=cuda: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        return torch.device("cuda", local_rank)
    return torch.device(setting)
