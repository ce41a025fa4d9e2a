"""Dtypes chosen by the hardware: the CPU's flags (mocked both ways), the cached micro-benchmark where flags say
nothing, GPUs, explicit settings and their warning, and what a run records of the choice."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from rlvr import hardware
from rlvr.config import load_config
from rlvr.hardware import choose_dtype, dtype_support, learner_autocast

AVX2_ONLY = {"architecture": "x86_64", "cpu_name": "AMD EPYC", "avx2": True, "avx512_bf16": False, "amx_bf16": False}
ZEN4 = {**AVX2_ONLY, "avx512_f": True, "avx512_bf16": True}
SAPPHIRE_RAPIDS = {**AVX2_ONLY, "cpu_name": "Intel Xeon", "amx_bf16": True, "avx512_fp16": True}
GRAVITON = {"architecture": "aarch64", "cpu_name": "Neoverse-V1"}
measured_slowdown = hardware.measured_slowdown  # the cached function itself, whatever a test patches in its place


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Pretend to be a given CPU; measurements go to a fresh cache and are never really taken unless mocked."""
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    measured_slowdown.cache_clear()

    def pretend(capabilities: dict) -> None:
        monkeypatch.setattr(hardware, "_cpu_capabilities", lambda: dict(capabilities))

    yield pretend
    measured_slowdown.cache_clear()


def _no_benchmark(*_):
    raise AssertionError("the flags are conclusive: nothing should be measured")


def test_an_avx2_only_cpu_runs_everything_in_fp32(cpu, monkeypatch):
    cpu(AVX2_ONLY)
    monkeypatch.setattr(hardware, "_matmul_seconds", _no_benchmark)
    support = dtype_support("bfloat16")
    assert not support.native and "no avx512_bf16 or amx_bf16" in support.reason and "AMD EPYC" in support.reason
    vllm = choose_dtype("auto", "rollout.vllm.dtype")
    assert vllm.dtype == "float32" and vllm.reason.startswith("auto: no native bf16")
    assert vllm.torch_dtype is torch.float32
    assert learner_autocast("auto").dtype == "float32"
    assert learner_autocast(False).dtype == "float32"


@pytest.mark.parametrize("capabilities, flag", [(ZEN4, "avx512_bf16"), (SAPPHIRE_RAPIDS, "amx_bf16")])
def test_a_cpu_with_bf16_instructions_runs_bf16(cpu, monkeypatch, capabilities, flag):
    cpu(capabilities)
    monkeypatch.setattr(hardware, "_matmul_seconds", _no_benchmark)
    choice = choose_dtype("auto", "rollout.vllm.dtype")
    assert choice.dtype == "bfloat16" and f"has {flag}" in choice.reason
    assert learner_autocast("auto").dtype == "bfloat16"
    assert dtype_support("float16").native == (capabilities is SAPPHIRE_RAPIDS)  # avx512_fp16 only there


def test_an_explicit_setting_wins_and_emulated_bf16_warns_with_its_measured_cost(cpu, monkeypatch, caplog):
    cpu(AVX2_ONLY)
    monkeypatch.setattr(hardware, "measured_slowdown", lambda dtype: 97.0)
    with caplog.at_level(logging.WARNING, logger="rlvr.hardware"):
        choice = choose_dtype("bfloat16", "rollout.vllm.dtype")
        assert learner_autocast(True).dtype == "bfloat16"
    assert choice.dtype == "bfloat16" and "emulated here" in choice.reason
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith("rollout.vllm.dtype: bfloat16 requested, but AMD EPYC")
    assert "97x as long as fp32" in warnings[0] and "rollout.vllm.dtype=auto" in warnings[0]
    assert warnings[1].startswith("model.autocast_bf16: bfloat16 requested") and "model.autocast_bf16=auto" in warnings[1]
    caplog.clear()
    cpu(ZEN4)
    with caplog.at_level(logging.WARNING, logger="rlvr.hardware"):
        assert choose_dtype("float32", "rollout.vllm.dtype").reason == "set by rollout.vllm.dtype"
        assert choose_dtype("bfloat16", "rollout.vllm.dtype").dtype == "bfloat16"
    assert not caplog.records  # float32, and bf16 where it is native: nothing to warn about


@pytest.mark.parametrize("bf16_seconds, native", [(0.4e-3, True), (60e-3, False)])
def test_where_flags_say_nothing_a_cached_micro_benchmark_decides(cpu, monkeypatch, bf16_seconds, native):
    cpu(GRAVITON)
    calls = []

    def fake_matmul(dtype, *args, **kwargs):
        calls.append(dtype)
        return bf16_seconds if dtype is torch.bfloat16 else 1e-3

    monkeypatch.setattr(hardware, "_matmul_seconds", fake_matmul)
    support = dtype_support("bfloat16")
    assert support.native is native and support.slowdown == pytest.approx(bf16_seconds / 1e-3)
    assert f"measured {support.slowdown:.2g}x fp32's time" in support.reason
    assert choose_dtype("auto", "x").dtype == ("bfloat16" if native else "float32")
    assert calls == [torch.bfloat16, torch.float32]  # measured once in this process
    # ... and once per machine: a new process reads the cached result instead of measuring again.
    measured_slowdown.cache_clear()
    monkeypatch.setattr(hardware, "_matmul_seconds", _no_benchmark)
    assert hardware.measured_slowdown("bfloat16") == pytest.approx(bf16_seconds / 1e-3)
    # Another CPU (or torch build) is another machine: the cache does not answer for it.
    measured_slowdown.cache_clear()
    cpu({**GRAVITON, "cpu_name": "Neoverse-N1"})
    with pytest.raises(AssertionError, match="nothing should be measured"):
        hardware.measured_slowdown("bfloat16")


def test_the_real_micro_benchmark_measures_a_positive_ratio(monkeypatch, tmp_path):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    measured_slowdown.cache_clear()
    threads = torch.get_num_threads()
    try:
        slowdown = hardware.measured_slowdown("bfloat16")
    finally:
        measured_slowdown.cache_clear()
    assert slowdown > 0 and torch.get_num_threads() == threads  # the benchmark's one thread is given back
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "hardware").glob("*.json")]
    assert record["slowdown"] == slowdown and record["dtype"] == "bfloat16"


def test_a_gpu_without_bf16_takes_the_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla V100")
    choice = choose_dtype("auto", "rollout.vllm.dtype", device="cuda", fallback="float16")
    assert choice.dtype == "float16" and "Tesla V100 has no native bf16" in choice.reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose_dtype("auto", "rollout.vllm.dtype", device="cuda", fallback="float16").dtype == "bfloat16"


def test_auto_is_the_default_and_unknown_dtypes_are_config_errors():
    config = load_config(None)
    assert config.rollout.vllm.dtype == "auto" and config.model.autocast_bf16 == "auto"
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="rollout.vllm.dtype"):
        load_config(None, ["rollout.vllm.dtype=bf16"])


def test_a_run_records_what_was_chosen_and_why(cpu, tiny_model_dir, tmp_path):
    from rlvr.run import train

    cpu(AVX2_ONLY)
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "name=choice",
        "train.steps=1",
        "train.prompts_per_step=1",
        "train.group_size=2",
        "sampling.max_new_tokens=4",
        "eval.before=false",
        "eval.after=false",
        "scoring.workers=0",
    ]
    config = load_config(None, settings)
    summary = train(config)
    text = (tmp_path / "choice" / "config.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0].startswith("# cpu: AMD EPYC, x86_64, torch capability ")
    assert header[1] == "# device: cpu, optimizer adamw"
    assert header[2].startswith("# rollout: transformers -> TransformersEngine, float32")
    assert header[3].startswith("# learner: float32 (auto: no native bf16; AMD EPYC")
    assert yaml.safe_load(text) == config.model_dump(mode="json")  # the comments leave the config as asked for
    assert summary["precision"]["learner"] == header[3].removeprefix("# learner: ")
