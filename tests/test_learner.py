import torch

from rlvr.learner import TokenBatch, completion_logprobs
from rlvr.types import Episode


def _episodes() -> list[Episode]:
    prompts = [[5, 6, 7, 8], [9, 10]]  # two groups with prompts of different lengths
    completions = [[11, 12, 13], [14, 1], [15, 16, 17, 18, 1], [19]]
    return [
        Episode(
            prompt_ids=prompts[i // 2],
            completion_ids=c,
            logprobs=[0.0] * len(c),
            loss_mask=[1] * len(c),
            group=i // 2,
            advantage=float(i) - 1.5,
        )
        for i, c in enumerate(completions)
    ]


def _reference_logprobs(model, episodes, temperature):
    """One unpadded forward per episode: the definition the batched versions must match."""
    out = []
    for e in episodes:
        ids = torch.tensor([e.prompt_ids + e.completion_ids])
        logits = model(input_ids=ids).logits[0, len(e.prompt_ids) - 1 : -1] / temperature
        out.append(logits.log_softmax(-1).gather(-1, torch.tensor(e.completion_ids)[:, None]).squeeze(-1))
    return out


def test_batched_logprobs_match_unpadded_forward(tiny_model):
    episodes = _episodes()
    batch = TokenBatch.from_episodes(episodes, pad_id=1)
    assert batch.prompt_ids.shape[0] == 2 and batch.rows.tolist() == [0, 0, 1, 1]
    expected = _reference_logprobs(tiny_model, episodes, 0.7)
    for shared in (False, True):
        logprobs, entropy = completion_logprobs(tiny_model, batch, 0.7, with_entropy=True, shared_prefix=shared)
        for row, e in enumerate(episodes):
            torch.testing.assert_close(logprobs[row, : e.num_tokens], expected[row], atol=1e-5, rtol=1e-5)
        assert (entropy >= 0).all()


def test_shared_prefix_gradient_is_exact(tiny_model):
    batch = TokenBatch.from_episodes(_episodes(), pad_id=1)
    grads = []
    for shared in (False, True):
        tiny_model.zero_grad()
        logprobs, _ = completion_logprobs(tiny_model, batch, 1.0, shared_prefix=shared)
        (logprobs * batch.loss_mask * batch.advantages[:, None]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in tiny_model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4)


def test_entropy_matches_definition(tiny_model):
    episodes = _episodes()
    batch = TokenBatch.from_episodes(episodes, pad_id=1)
    _, entropy = completion_logprobs(tiny_model, batch, 0.7, with_entropy=True)
    for row, e in enumerate(episodes):
        ids = torch.tensor([e.prompt_ids + e.completion_ids])
        with torch.no_grad():
            logp = (tiny_model(input_ids=ids).logits[0, len(e.prompt_ids) - 1 : -1] / 0.7).log_softmax(-1)
        torch.testing.assert_close(entropy[row, : e.num_tokens], -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=1e-5)
        assert (entropy[row, e.num_tokens :] == 0).all()


def test_chunked_head_matches_full_vocabulary_path(tiny_model):
    """The lean path (hidden states + chunked projection) against the model's own full logits: values and gradients."""
    from rlvr.learner import _completion_logprobs_full_vocab

    batch = TokenBatch.from_episodes(_episodes(), pad_id=1)
    results = []
    for lean in (True, False):
        tiny_model.zero_grad()
        if lean:
            logprobs, entropy = completion_logprobs(tiny_model, batch, 0.7, with_entropy=True)
        else:
            logprobs, entropy = _completion_logprobs_full_vocab(tiny_model, batch, 0.7, with_entropy=True)
        mask = batch.completion_attention.bool()
        (logprobs * batch.loss_mask * batch.advantages[:, None]).sum().backward()
        results.append((logprobs[mask], entropy[mask], {n: p.grad.clone() for n, p in tiny_model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)
    for name in results[1][2]:
        torch.testing.assert_close(results[0][2][name], results[1][2][name], atol=1e-5, rtol=1e-4)


def test_packing_splits_long_groups_and_stays_exact(tiny_model):
    from rlvr.learner import PackedGroups, _hidden_full, _hidden_packed

    batch = TokenBatch.from_episodes(_episodes(), pad_id=1)
    packed = PackedGroups.from_batch(batch, max_row_tokens=8)
    # group 0: prompt 4 + completions 3 and 2 -> 9 tokens > 8, so two rows; group 1: prompt 2 + 5 + 1 = 8, one row.
    assert packed.input_ids.shape[0] == 3
    assert packed.input_ids[2, :8].tolist() == [9, 10, 15, 16, 17, 18, 1, 19]
    assert packed.positions[2, :8].tolist() == [0, 1, 2, 3, 4, 5, 6, 2]
    # the last completion sees the prompt and itself, not its sibling
    assert packed.allowed[2, 0, 7, :8].tolist() == [True, True, False, False, False, False, False, True]
    real = batch.completion_attention.bool()
    with torch.no_grad():
        torch.testing.assert_close(
            _hidden_packed(tiny_model, batch, max_row_tokens=8), _hidden_full(tiny_model, batch)[real], atol=1e-5, rtol=1e-5
        )
