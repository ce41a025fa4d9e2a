"""The transformers engine against HF generate and against the learner (token in, token out)."""

import pytest
import torch

from rlvr.learner import TokenBatch, completion_logprobs
from rlvr.rollout import SamplingParams, TransformersEngine
from rlvr.rollout.hf import filter_logits


@pytest.fixture
def model(tiny_model_dir):
    from rlvr.models import load_policy

    return load_policy(str(tiny_model_dir)).eval()


def _prompts(tokenizer):
    questions = ["What is 2 + 3?", "Name a colour.", "Count to three, please, slowly and carefully."]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in questions
    ]


def test_greedy_matches_hf_generate(model, tokenizer):
    engine = TransformersEngine(model, tokenizer, batch_size=2)
    prompts = _prompts(tokenizer)
    episodes = engine.generate(prompts, SamplingParams(greedy=True, max_new_tokens=12))
    for prompt, episode in zip(prompts, episodes):
        expected = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt) :]
        assert episode.completion_ids == expected.tolist()
        assert episode.prompt_ids == prompt
        assert episode.truncated == (episode.completion_ids[-1] != tokenizer.eos_token_id)


def test_sampler_logprobs_match_the_learner(model, tokenizer):
    """What the trainer scores is token for token what the sampler produced, with the same log-probs."""
    engine = TransformersEngine(model, tokenizer, batch_size=4)
    prompts = [p for p in _prompts(tokenizer) for _ in range(3)]  # groups share a prompt
    episodes = engine.generate(prompts, SamplingParams(temperature=0.8, max_new_tokens=10, seed=3))
    batch = TokenBatch.from_episodes(episodes, tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs, _ = completion_logprobs(model, batch, temperature=0.8)
    torch.testing.assert_close(logprobs * batch.loss_mask, batch.old_logprobs, atol=1e-4, rtol=1e-4)


def test_sampling_is_seeded(model, tokenizer):
    engine = TransformersEngine(model, tokenizer)
    prompts = _prompts(tokenizer)
    first = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=7))
    again = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=7))
    other = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=8))
    assert [e.completion_ids for e in first] == [e.completion_ids for e in again]
    assert [e.completion_ids for e in first] != [e.completion_ids for e in other]


def test_update_weights_copies_into_a_separate_model(tiny_model_dir, tokenizer):
    from rlvr.models import load_policy

    learner, sampler = load_policy(str(tiny_model_dir)), load_policy(str(tiny_model_dir))
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.5)
    engine = TransformersEngine(sampler, tokenizer, shares_weights=False)
    engine.update_weights(learner.named_parameters())
    for (name, a), (_, b) in zip(learner.named_parameters(), sampler.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(KeyError, match="no parameter"):
        engine.update_weights([("not.a.weight", torch.zeros(1))])
    with pytest.raises(KeyError, match="no new value"):
        engine.update_weights(list(learner.named_parameters())[:1])


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [[False, False, True, True]]
    # 0.5 + 0.3 = 0.8 covers top_p=0.8, so the rest is dropped
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.1)).tolist() == [[False, True, True, True]]


def test_auto_engine_falls_back_to_transformers_with_a_notice(tiny_model, tokenizer, monkeypatch, caplog):
    import rlvr.rollout as rollout
    from rlvr.config import RolloutConfig

    monkeypatch.setattr(rollout, "vllm_available", lambda: False)
    with caplog.at_level("WARNING", logger="rlvr.rollout"):
        engine = rollout.make_engine(RolloutConfig(engine="auto"), tiny_model, tokenizer)
    assert isinstance(engine, TransformersEngine) and engine.batch_size == 64
    assert ["vLLM is not installed" in record.message for record in caplog.records] == [True]


def test_inference_weights_merge_lora_without_touching_the_policy(tiny_model):
    import copy

    from peft import LoraConfig, get_peft_model

    from rlvr.models import inference_weights

    model = get_peft_model(tiny_model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # fresh adapters are zero; make the merge visible
    before = {n: p.clone() for n, p in model.named_parameters()}
    exported = dict(inference_weights(model))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(exported[name], tensor, msg=name)
    assert not torch.equal(
        exported["model.layers.0.self_attn.q_proj.weight"],
        before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"],
    )
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])  # merging for export leaves the trained model as it was


def _min_new_tokens_hold_back_the_end_of_turn(engine, tokenizer):
    """Shared by both engines' tests: greedy, the model ends its turn early; with min_new_tokens it may not."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2? Reply with the number only."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    (short,) = engine.generate([prompt], SamplingParams(greedy=True, max_new_tokens=24))
    assert short.num_tokens < 12 and not short.truncated and short.completion_ids[-1] == tokenizer.eos_token_id
    (held,) = engine.generate([prompt], SamplingParams(greedy=True, max_new_tokens=24, min_new_tokens=24))
    assert held.num_tokens == 24 and tokenizer.eos_token_id not in held.completion_ids
    assert held.completion_ids[: short.num_tokens - 1] == short.completion_ids[:-1]  # the same text until then
    assert all(lp <= 0.0 for lp in held.logprobs)


def test_min_new_tokens_hold_back_the_end_of_turn(tokenizer):
    from rlvr.models import load_policy

    _min_new_tokens_hold_back_the_end_of_turn(TransformersEngine(load_policy("smollm2-135m").eval(), tokenizer), tokenizer)
