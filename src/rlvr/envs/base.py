"""An Environment is a dataset, a prompt format and a rubric; the trainer knows nothing of the task."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from rlvr.env_config import EnvCommon
from rlvr.errors import ConfigError, lone_surrogate, parser_limit
from rlvr.length_control import effort_line
from rlvr.rewards.calibration import CONFIDENCE_INSTRUCTION
from rlvr.rewards.rubric import Rubric
from rlvr.types import Document, Problem

# Short on purpose: every prompt token is paid for again in each forward and backward pass.
DEFAULT_SYSTEM_PROMPT = "Think briefly, then give the final answer on the last line as 'Answer: <answer>'."


DEMO_ROLES = ("user", "assistant", "tool")


def load_demos(path: str | None) -> list[dict[str, Any]]:
    """Demonstration messages from a JSON file (a list of chat messages), checked so that a bad file fails at load
    time with the message that is wrong rather than as a template error mid-run."""
    if path is None:
        return []
    try:
        demos = json.loads(open(path, encoding="utf-8").read())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"env.demos: {path}: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"env.demos: {path}: not UTF-8 text") from None
    except (ValueError, RecursionError) as error:  # valid syntax that Python does not read: a huge integer, deep nesting
        raise ConfigError(f"env.demos: {path}: {parser_limit(error)}") from None
    if not isinstance(demos, list):
        raise ConfigError(f"env.demos: {path}: expected a JSON list of chat messages")
    return check_messages(demos, f"env.demos: {path}", DEMO_ROLES)


def check_messages(messages: list[Any], where: str, roles: tuple[str, ...]) -> list[dict[str, Any]]:
    """OpenAI chat messages checked so that a bad one fails with its index and field rather than as a template error
    later; an assistant message that only calls tools gets the empty content templates read."""
    for index, message in enumerate(messages):
        at = f"{where}: message {index}"
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise ConfigError(f"{at}: role: expected one of {', '.join(roles)}")
        calls = message.get("tool_calls", [])
        if not isinstance(calls, list):
            raise ConfigError(f"{at}: tool_calls: expected a list of calls")
        if message["role"] == "assistant" and calls and message.get("content") is None:
            message["content"] = ""  # OpenAI's format leaves out (or nulls) a call's text; templates read it
        content = message.get("content")
        if not isinstance(content, str):
            raise ConfigError(f"{at}: content: {'required' if 'content' not in message else 'expected a string'}")
        if lone_surrogate(content) is not None:
            raise ConfigError(f"{at}: content: not Unicode text (a lone surrogate)")
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or "arguments" not in function:
                raise ConfigError(f'{at}: tool_calls: expected {{"type": "function", "function": {{"name", "arguments"}}}}')
    return messages


def standard_rubric(config: EnvCommon) -> Rubric:
    """Correctness (the problem's verifier), the answer-line format and the recipe's extra terms, weighted as the
    recipe says: the rubric of every built-in environment."""
    weights = {"correct": config.correct_weight, "format": config.format_reward, **config.rewards}
    return Rubric(weights, confidence=config.confidence, brier_weight=config.brier_weight)


class Environment(ABC):
    rubric: Rubric
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Few-shot demonstrations shown between the system prompt and each question.
    demos: list[dict[str, Any]] = []
    # The tools its problems need (used when a recipe does not list tools itself).
    default_tools: tuple[str, ...] = ()

    @abstractmethod
    def train_problems(self, start: int, count: int) -> list[Problem]:
        """Training problems number start .. start+count-1 of an endless, seeded stream."""

    @abstractmethod
    def eval_problems(self) -> list[Problem]:
        """The fixed held-out split."""

    def train_pool(self) -> list[Problem] | None:
        """Every training problem when there are finitely many (rows of files), the ones the training stream cycles
        through; None for an endless, generated stream (reasoning-gym tasks, searchqa) or when it is not known."""
        return None

    def subsets(self) -> set[str]:
        """The data subsets this environment draws from (those of its held-out split, by default)."""
        return {problem.subset for problem in self.eval_problems()}

    def documents(self) -> list[Document] | None:
        """The environment's own search corpus (the `env` corpus of the search tool), if it has one."""
        return None

    def system_text(self, problem: Problem) -> str:
        """The problem's system prompt (its own, else the environment's), then the effort it states (length control)
        and the request for a stated confidence when the rubric reads one."""
        parts = [problem.system_prompt or self.system_prompt, effort_line(problem)]
        parts.append(CONFIDENCE_INSTRUCTION if self.rubric.confidence else None)
        return " ".join(part for part in parts if part)

    def messages(self, problem: Problem) -> list[dict[str, Any]]:
        """The prompt in chat format (OpenAI messages; demonstrations may hold tool calls and results)."""
        system = self.system_text(problem)
        return [{"role": "system", "content": system}, *self.demos, {"role": "user", "content": problem.question}]
