"""On-policy distillation: the k2 loss's expected gradient is the reverse KL's (by enumeration over a small vocabulary),
the config `rlvr distill` builds, a teacher that does not share the tokenizer refused, and a tiny student moving
towards its teacher."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.api import distill_config
from rlvr.config import ConfigError, load_config


def test_the_expected_gradient_of_k2_on_the_students_samples_is_the_reverse_kl_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, requires_grad=True)
    teacher = torch.log_softmax(torch.tensor([1.0, -0.5, 0.2, 2.0, 0.0]), dim=0)
    student = torch.log_softmax(logits, dim=0)
    kl = (student.exp() * (student - teacher)).sum()  # KL(student || teacher)
    exact = torch.autograd.grad(kl, logits, retain_graph=True)[0]
    # The loss on one sampled token x is k2(x); its expectation under the student's own (detached) sampling weights:
    per_token = KL_ESTIMATORS["k2"](student, teacher)
    expected = torch.autograd.grad((student.exp().detach() * per_token).sum(), logits, retain_graph=True)[0]
    torch.testing.assert_close(expected, exact, rtol=1e-6, atol=1e-7)
    # k3, the default KL penalty, is not this gradient: the distillation loss has to be k2.
    k3 = torch.autograd.grad((student.exp().detach() * KL_ESTIMATORS["k3"](student, teacher)).sum(), logits)[0]
    assert not torch.allclose(k3, exact, atol=1e-3)


def test_the_distill_config(tmp_path):
    config = distill_config("default", "runs/teacher", overrides=["train.steps=3"])
    assert (config.name, config.algo.teacher, config.algo.kl.coef, config.algo.kl.estimator) == (
        "default-distill",
        "runs/teacher",
        1.0,
        "k2",
    )
    assert (config.env.correct_weight, config.env.format_reward, config.algo.kl.in_reward) == (0.0, 0.0, False)
    paid = distill_config("default", "t", with_reward=True, overrides=["algo.kl.coef=0.2", "name=x"])
    assert (paid.name, paid.algo.kl.coef, paid.env.correct_weight, paid.env.format_reward) == ("x", 0.2, 1.0, 0.1)
    with pytest.raises(ConfigError, match=r"default.yaml: algo: a teacher is the KL term.s reference: set algo.kl.coef > 0"):
        load_config(None, ["algo.teacher=t"])


def _teacher(tmp_path, tokenizer, extra_token: bool = False):
    folder = tmp_path / ("other-vocab" if extra_token else "teacher")
    model = tiny_llama(seed=1, vocab_size=len(tokenizer))
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    saved = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    if extra_token:
        saved.add_tokens(["<not-the-students>"])
    saved.save_pretrained(folder)
    return folder


def _settings(tiny_model_dir, tmp_path) -> list[str]:
    return [
        f"model.path={tiny_model_dir}",
        f"output_dir={tmp_path / 'runs'}",
        "rollout.engine=transformers",
        "scoring.workers=0",
        "train.steps=6",
        "train.prompts_per_step=2",
        "train.group_size=2",
        "train.lr=1e-3",
        "sampling.max_new_tokens=6",
        "algo.overlong_filter=false",
        "eval.before=false",
        "eval.after=false",
    ]


def _k2(trainer, episodes) -> float:
    """The distillation loss, mean k2 per trained token, of the trainer's student on fixed episodes."""
    batch = trainer.micro_batches(episodes)[0]
    with torch.no_grad():
        student, _ = trainer.learner(batch, trainer.learner_temperature)
        teacher = trainer._reference_logprobs(batch)
    per_token = KL_ESTIMATORS["k2"](student, teacher)
    return float((per_token * batch.loss_mask).sum() / batch.loss_mask.sum())


def test_an_update_moves_the_student_towards_its_teacher_on_its_own_samples(tiny_model_dir, tokenizer, tmp_path):
    from rlvr.trainer import Trainer

    trainer = Trainer(distill_config(None, str(_teacher(tmp_path, tokenizer)), overrides=_settings(tiny_model_dir, tmp_path)))
    episodes = trainer.assign_advantages(trainer.rollout(0))
    assert episodes and all(e.reward == 0.0 and e.advantage == 0.0 for e in episodes)  # the KL is the only signal
    before = _k2(trainer, episodes)
    stats = trainer.update(episodes)
    assert stats["kl"] == pytest.approx(before, rel=1e-2)  # what the step logs is that loss (bf16 autocast aside)
    assert _k2(trainer, episodes) < 0.9 * before


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, tokenizer, tmp_path):
    from rlvr.trainer import Trainer

    config = distill_config(
        None, str(_teacher(tmp_path, tokenizer, extra_token=True)), overrides=_settings(tiny_model_dir, tmp_path)
    )
    with pytest.raises(ConfigError, match=r"algo.teacher: .*other-vocab: its tokenizer differs from the student's"):
        Trainer(config)
