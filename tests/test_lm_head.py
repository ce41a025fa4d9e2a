import math

import torch

from rlvr.lm_head import token_logprobs


def test_hand_computed_two_token_vocabulary():
    # hidden [1, 0] and weight rows [2, 0] and [0, 0]: logits (2, 0); at temperature 2 they are (1, 0).
    hidden = torch.tensor([[1.0, 0.0]], requires_grad=True)
    weight = torch.tensor([[2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    logprobs, entropy = token_logprobs(hidden, weight, torch.tensor([0]), temperature=2.0, with_entropy=True)
    p0 = math.e / (math.e + 1)
    assert math.isclose(logprobs.item(), math.log(p0), rel_tol=1e-6)
    assert math.isclose(entropy.item(), -(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0)), rel_tol=1e-6)
    logprobs.sum().backward()
    # d logp0 / d logits = (onehot - softmax) / T = (1 - p0, -(1 - p0)) / 2; logits = hidden @ weight.T, so
    # d/d hidden = that @ weight and d/d weight = that (as a column) times hidden.
    torch.testing.assert_close(hidden.grad, torch.tensor([[(1 - p0) / 2 * 2.0, 0.0]]))
    torch.testing.assert_close(weight.grad, torch.tensor([[(1 - p0) / 2, 0.0], [-(1 - p0) / 2, 0.0]]))


def test_chunks_agree_with_full_softmax_values_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    upstream = torch.randn(37, dtype=torch.float64)

    logits = (hidden @ weight.t()) / 0.7
    expected = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    (expected * upstream).sum().backward()
    want = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None

    logprobs, entropy = token_logprobs(hidden, weight, targets, temperature=0.7, with_entropy=True, chunk=8)
    torch.testing.assert_close(logprobs.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    probs = logits.detach().softmax(-1)
    torch.testing.assert_close(entropy.double(), -(probs * probs.log()).sum(-1), rtol=1e-4, atol=1e-4)
    (logprobs * upstream).sum().backward()
    torch.testing.assert_close(hidden.grad, want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, want[1], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    hidden = torch.randn(20, 32)
    weight = torch.randn(100, 32) / 4
    targets = torch.randint(0, 100, (20,))
    exact, _ = token_logprobs(hidden, weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx, _ = token_logprobs(hidden, weight, targets)
    assert approx.dtype == torch.float32
    assert (approx - exact).abs().max() < 0.1
