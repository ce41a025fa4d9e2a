"""Token in, token out, proved on the packaged model: multi-turn episodes with real search and python calls,
re-scored by the learner, give the sampler's per-token log-probs, and the tool tokens are masked out."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.config import RECIPES_DIR, SearchToolConfig, ToolsConfig
from rlvr.env_config import SearchQAEnvConfig
from rlvr.envs import make_env
from rlvr.learner import TokenBatch, completion_logprobs
from rlvr.models import load_policy
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import TransformersEngine
from rlvr.rollout.tool_loop import ToolLoop, ToolLoopSettings
from rlvr.tools import build_tools
from rlvr.tools.protocol import ChatFormat

pytestmark = pytest.mark.slow

TEMPERATURE = 0.9


@pytest.fixture(scope="module")
def policy():
    return load_policy("smollm2-135m").eval()


@pytest.fixture
def one_thread():
    """The rollout and the re-scoring on one torch thread: the seeded samples (which must call both tools) are the
    same on any machine, and decoding two rows at a time does not wait on a second thread that a busy CPU has
    descheduled (on 2 cores shared with another run: 36 s of rollout on 1 thread, 270 s on 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_learner_rescoring_matches_the_sampler_on_multi_turn_tool_episodes(policy, tokenizer, one_thread):
    env = make_env(SearchQAEnvConfig(eval_size=20))
    config = ToolsConfig(search=SearchToolConfig(corpus=["env"], top_k=2))
    chat = ChatFormat(tokenizer, build_tools(["search", "python"], config, env.documents()))
    python_demos = json.loads((RECIPES_DIR / "data" / "python_demos.json").read_text())
    system, *search_demos = env.messages(env.eval_problems()[0])[:-1]
    # Each question comes right after the demonstrations of the tool it needs: a 135M model copies the nearest.
    prompts = [
        chat.prompt_ids([system, *python_demos, *search_demos, {"role": "user", "content": env.eval_problems()[0].question}]),
        chat.prompt_ids([system, *search_demos, *python_demos, {"role": "user", "content": "What is 4821 * 37 - 1234?"}]),
    ]
    loop = ToolLoop(TransformersEngine(policy, tokenizer), chat, ToolLoopSettings(max_turns=3, max_result_tokens=96))
    # One sample of each prompt (seeded): the search episode and the python one call their tool (with 2 torch threads
    # too); rows are what the rollout and the re-scoring cost (copies of a prompt, which the engine prefills once,
    # are test_rollout's).
    episodes = loop.generate(prompts, SamplingParams(TEMPERATURE, max_new_tokens=48, seed=3))

    called = {name for e in episodes for name, count in e.meta["tools"]["calls"].items() if count}
    assert {"search", "python"} <= called, f"the model called {called}: the test needs both tools exercised"
    multi_turn = [e for e in episodes if e.meta["tools"]["turns"] > 1]
    assert multi_turn and all(0 in e.loss_mask for e in multi_turn)

    with torch.no_grad():
        batch = TokenBatch.from_episodes(episodes, tokenizer.pad_token_id)
        learner, _ = completion_logprobs(policy, batch, TEMPERATURE)
    mask = batch.loss_mask.bool()
    difference = (learner - batch.old_logprobs).abs()[mask]
    assert difference.max() < 2e-3, f"max |learner - sampler| = {difference.max():.2e} over {mask.sum()} model tokens"
    # Tool tokens are context, not actions: masked out, no sampler log-prob, and exactly the template's tool messages.
    for episode in episodes:
        spans, current = [], []
        for token, kept in zip(episode.completion_ids, episode.loss_mask):
            if not kept:
                current.append(token)
            elif current:
                spans, current = [*spans, current], []
        results = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
        assert len(spans) == len(results)
        for span, content in zip(spans, results):
            assert f"<tool_response>\n{content}\n</tool_response>" in tokenizer.decode(span)
        assert all(lp == 0.0 for lp, m in zip(episode.logprobs, episode.loss_mask) if not m)
        assert sum(episode.loss_mask) == episode.generated_tokens
