"""What produces a run's episodes: the engine itself, or the tool loop that runs tools between its turns.

Training, evaluation, `rlvr chat` and `rlvr sample` all build it here, so they share one tool setup.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from rlvr.config import RunConfig
from rlvr.envs import Environment
from rlvr.rollout.base import RolloutEngine
from rlvr.rollout.tool_loop import ToolLoop, ToolLoopSettings
from rlvr.tools import build_tools
from rlvr.tools.protocol import ChatFormat


def enabled_tools(config: RunConfig, env: Environment) -> list[str]:
    """`tools.enabled`, or the tools the environment needs when the recipe does not say."""
    names = config.tools.enabled if config.tools.enabled is not None else list(env.default_tools)
    return list(dict.fromkeys(names))


def make_sampler(
    engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, config: RunConfig, env: Environment
) -> tuple[RolloutEngine | ToolLoop, ChatFormat, list[str]]:
    """What produces episodes (the engine itself, or the multi-turn loop that runs tools between its turns), the
    chat format that advertises the tools in prompts, and the tools' names."""
    tools = build_tools(enabled_tools(config, env), config.tools, env.documents())
    names = [t.name for t in tools]  # with the tools of the MCP servers in `tools.mcp`, which join unnamed
    chat = ChatFormat(tokenizer, tools)
    if not names:
        return engine, chat, names
    return ToolLoop(engine, chat, tool_loop_settings(config)), chat, names


def tool_loop_settings(config: RunConfig) -> ToolLoopSettings:
    """The tool loop's limits from `tools:` (for the loops built here and the API server's per-request ones)."""
    return ToolLoopSettings(config.tools.max_turns, config.tools.max_result_tokens, config.tools.workers)
