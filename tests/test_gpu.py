"""The learner, the engines and checkpoints on a GPU. Without CUDA every test here skips (run with `pytest -m gpu`)."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import load_config
from rlvr.learner import TokenBatch, completion_logprobs
from rlvr.lm_head import token_logprobs
from rlvr.types import Episode

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_chunked_head_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 64, requires_grad=True), torch.randn(1000, 64, requires_grad=True)
    targets = torch.randint(0, 1000, (300,))
    cpu, _ = token_logprobs(hidden, weight, targets, 0.7, chunk=128)
    cpu.sum().backward()
    hidden_gpu = hidden.detach().cuda().requires_grad_()
    weight_gpu = weight.detach().cuda().requires_grad_()
    gpu, _ = token_logprobs(hidden_gpu, weight_gpu, targets.cuda(), 0.7, chunk=128)
    gpu.sum().backward()
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight_gpu.grad.cpu(), weight.grad, rtol=1e-3, atol=1e-4)


def test_bf16_autocast_backward_on_cuda():
    torch.manual_seed(0)
    hidden = torch.randn(200, 64, device="cuda", requires_grad=True)
    weight = torch.randn(500, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logprobs, _ = token_logprobs(hidden, weight, torch.randint(0, 500, (200,), device="cuda"))
    logprobs.sum().backward()
    assert logprobs.dtype == torch.float32 and torch.isfinite(weight.grad).all()


def test_completion_logprobs_on_cuda_match_the_cpu(tiny_model):
    episodes = [Episode(prompt_ids=[3, 4, 5], completion_ids=[6, 7, 8, 9], logprobs=[-1.0] * 4, loss_mask=[1] * 4)] * 2
    batch = TokenBatch.from_episodes(episodes, pad_id=1)
    cpu, _ = completion_logprobs(tiny_model, batch, 1.0)
    gpu, _ = completion_logprobs(tiny_model.cuda(), batch.to(torch.device("cuda")), 1.0)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def _trainer(model_dir, tmp_path, device: str, name: str, engine: str = "transformers"):
    from rlvr.trainer import Trainer

    settings = {
        "model.path": model_dir,
        "output_dir": tmp_path,
        "name": name,
        "rollout.engine": engine,
        "scoring.workers": 0,
        "train.device": device,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "sampling.max_new_tokens": 8,
        "model.autocast_bf16": False,
    }
    return Trainer(load_config(None, [f"{key}={value}" for key, value in settings.items()]))


def test_a_step_on_cuda_and_a_checkpoint_that_resumes_on_the_cpu(tiny_model_dir, tmp_path):
    gpu = _trainer(tiny_model_dir, tmp_path, "cuda", "gpu")
    assert next(gpu.policy.parameters()).device.type == "cuda"
    metrics = gpu.train_step(0)
    assert metrics["memory/train_gpu_gb"] > 0 and "memory/rollout_gpu_gb" in metrics
    gpu.step = 1
    gpu.save()
    cpu = _trainer(tiny_model_dir, tmp_path, "cpu", "gpu")
    assert cpu.resume() and cpu.step == 1
    for (name, a), (_, b) in zip(gpu.policy.state_dict().items(), cpu.policy.state_dict().items()):
        torch.testing.assert_close(a.cpu(), b, msg=name)
    state = next(iter(cpu.optimizer.state.values()))
    assert state["exp_avg"].device.type == "cpu"


def test_colocated_vllm_sleeps_during_the_update_and_serves_the_new_weights(tmp_path):
    pytest.importorskip("vllm")
    trainer = _trainer("smollm2-135m", tmp_path, "cuda", "colocated", engine="vllm")
    assert trainer.engine.sleep_mode
    first = trainer.train_step(0)
    assert not trainer.engine.asleep  # woken by the weight load, which checked what it serves
    free_awake = torch.cuda.mem_get_info()[0]
    trainer.engine.sleep()
    assert torch.cuda.mem_get_info()[0] > free_awake  # asleep, vLLM's KV cache and weights left the GPU
    second = trainer.train_step(1)
    assert first["memory/train_gpu_gb"] > 0 and second["reward"] >= 0
