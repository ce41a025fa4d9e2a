"""Supervised fine-tuning data: chat traces, tokenised with the model's own chat template, the loss on the assistant's
tokens only.

A row is `messages` (OpenAI chat format: system, user, assistant, and assistant `tool_calls` with `tool` results, as
`rlvr rejection-sample` writes them), or a `question` with a `completion`, which becomes the recipe's prompt (system
prompt, demonstrations, the question) followed by the completion as the assistant's message, or a `question` with a
worked GSM8K `answer`, whose steps become the thinking and its number the answer line (cold-start data).

The ids are made the way the tool loop makes an episode's: the conversation is rendered at each turn boundary and
each new piece is tokenised and appended, so a trace trains on exactly the ids the model would see and write at
inference. That needs a template that renders append-only (`rlvr template check`); a conversation it does not
render so (a template that drops earlier reasoning, say) is an error naming the row and the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlvr.config import RunConfig
from rlvr.data import Source, read_records
from rlvr.data.validating import InvalidRow
from rlvr.envs.base import Environment, check_messages
from rlvr.errors import ConfigError
from rlvr.rewards.math import worked_solution
from rlvr.tools.protocol import CALL_CLOSE, ChatFormat
from rlvr.types import Problem

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Trace:
    """One tokenised training conversation: the prompt before the first assistant message, then everything after
    it, with 1 in `loss_mask` on the tokens the assistant wrote (its turns' ends included, tool results not)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    where: str  # file:line, for messages about it

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


def read_conversations(path: str, env: Environment) -> list[tuple[str, list[dict[str, Any]]]]:
    """(file:line, messages) of every row of a JSONL, CSV or Parquet file or a `datasets` folder."""
    conversations = []
    for line, record in read_records(Source(path=path)):
        where = f"{path}:{line}"
        if isinstance(record, InvalidRow):
            raise ConfigError(f"{where}: {record}")
        conversations.append((where, _conversation(record, where, env)))
    if not conversations:
        raise ConfigError(f"{path}: no rows")
    return conversations


def _conversation(record: dict[str, Any], where: str, env: Environment) -> list[dict[str, Any]]:
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list):
            raise ConfigError(f"{where}: messages: expected a list of chat messages")
        messages = check_messages([dict(m) if isinstance(m, dict) else m for m in messages], f"{where}: messages", ROLES)
    elif "question" in record and ("completion" in record or "answer" in record):
        target = "completion" if "completion" in record else "answer"
        question, completion = record["question"], record[target]
        for name, value in (("question", question), (target, completion)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {name}: expected non-empty text")
        if target == "answer":
            completion = _from_worked_solution(completion, where)
        messages = [*env.messages(Problem(question, "")), {"role": "assistant", "content": completion}]
    else:
        present = ", ".join(map(str, record)) or "none"
        raise ConfigError(
            f"{where}: expected `messages` (chat format), `question` and `completion`, or `question` and a worked GSM8K "
            f"`answer` (fields present: {present})"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(f"{where}: messages: no assistant message to train on")
    if messages[0]["role"] == "assistant":
        raise ConfigError(f"{where}: messages: the conversation starts with the assistant; it needs a prompt before it")
    return messages


def _from_worked_solution(answer: str, where: str) -> str:
    """A GSM8K row's worked solution in R1's format: the steps as the thinking, the number on the answer line the
    default prompt asks for. This is how a file of worked solutions becomes cold-start data."""
    solution = worked_solution(answer)
    if solution is None:
        raise ConfigError(f"{where}: answer: not a worked solution ending in '#### <answer>'; give a `completion` instead")
    steps, final = solution
    return f"<think>\n{steps}\n</think>\nAnswer: {final}"


def answered_question(messages: Sequence[dict[str, Any]]) -> str:
    """The last user message: the question the trace's final answer answers (demonstrations come before it), to
    keep held-out questions out of training."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def trained_turns(messages: Sequence[dict[str, Any]], turns: str) -> list[int]:
    """The assistant messages whose tokens are trained: every one (`all`), or those after the last user message
    (`last`: the final answer and its tool turns, not the demonstrations or earlier turns shown before it)."""
    assistant = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
    if turns == "all":
        return assistant
    last_user = max((index for index, message in enumerate(messages) if message["role"] == "user"), default=-1)
    return [index for index in assistant if index > last_user]


def tokenize(where: str, messages: Sequence[dict[str, Any]], chat: ChatFormat, max_tokens: int, turns: str = "last") -> Trace:
    """The trace's ids and assistant mask (see the module's docstring). The prompt runs up to the first trained
    assistant turn; messages after the last one train nothing and are left out; a trace longer than `max_tokens`
    after its prompt is cut there."""
    prepared = chat.prepare(messages)
    shift = len(prepared) - len(messages)  # the fallback tool format may put a system message first
    assistant = [index + shift for index in trained_turns(messages, turns)]
    if not assistant:
        raise ConfigError(f"{where}: messages: no assistant message after the last user message to train on (sft.turns)")
    eos = chat.tokenizer.eos_token_id
    # The texts at each boundary: before an assistant turn (with the generation prompt) and after it.
    texts: list[tuple[str, bool]] = []
    for index in assistant:
        texts.append((chat.render_text(prepared[:index], generation_prompt=True), False))
        texts.append((chat.render_text(prepared[: index + 1]), True))
    done, ids, mask = "", [], []
    prompt_ids: list[int] = []
    for number, (text, by_assistant) in enumerate(texts):
        if not text.startswith(done):
            message = assistant[number // 2]
            raise ConfigError(
                f"{where}: the chat template does not render this conversation append-only at message {message} "
                "(it rewrites what came before; rlvr template check shows how): it cannot be trained on as it is sampled"
            )
        piece = chat.tokenizer.encode(text[len(done) :], add_special_tokens=False)
        if number == 0:
            prompt_ids = piece
        elif by_assistant:
            new = text[len(done) :]
            if CALL_CLOSE in new:
                # A turn that calls a tool ends where the model stops, at the call's close (the stop string); the
                # end of turn after it is the tool loop's context, as in the episodes RL trains on.
                cut = new.rindex(CALL_CLOSE) + len(CALL_CLOSE)
                written = chat.tokenizer.encode(new[:cut], add_special_tokens=False)
                after = chat.tokenizer.encode(new[cut:], add_special_tokens=False)
                ids += written + after
                mask += [1] * len(written) + [0] * len(after)
            else:
                # Up to and including the end-of-turn token; what the template writes after it (a newline) is
                # context the model never generates.
                end = piece.index(eos) + 1 if eos in piece else len(piece)
                ids += piece
                mask += [1] * end + [0] * (len(piece) - end)
        else:
            ids += piece
            mask += [0] * len(piece)
        done = text
    if len(ids) > max_tokens:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    if not any(mask):
        raise ConfigError(f"{where}: no assistant token within the first {max_tokens} tokens after the prompt (sft.max_tokens)")
    return Trace(prompt_ids, ids, mask, where)


def held_out_questions(config: RunConfig, env: Environment) -> set[str]:
    """The questions no trace may train on: the recipe's held-out split, and with `train.eval_every` the regression
    suite's (its evaluations would no longer be held out); none with `sft.keep_held_out`."""
    if config.sft.keep_held_out:
        return set()
    questions = {problem.question for problem in env.eval_problems()}
    if config.train.eval_every:
        from rlvr.envs import make_env
        from rlvr.eval.suite import load_suite, suite_configs

        for suite_config in suite_configs(load_suite(config.eval.suite), config.model.path, plugins=config.plugins).values():
            questions |= {problem.question for problem in make_env(suite_config.env).eval_problems()}
    return questions


def training_conversations(
    path: str, env: Environment, held_out: set[str] | frozenset[str] = frozenset(), turns: str = "last"
) -> tuple[list[tuple[str, list[dict[str, Any]]]], int]:
    """The file's conversations to train on, and how many were left out because they train on an answer to a
    held-out question (a trace of one would make the evaluation after training meaningless): the answered (last)
    question, or with `turns: all` any of its questions."""
    rows = read_conversations(path, env)

    def leaks(messages: list[dict[str, Any]]) -> bool:
        if turns == "all":
            return any(m["role"] == "user" and m["content"] in held_out for m in messages)
        return answered_question(messages) in held_out

    kept = [(where, messages) for where, messages in rows if not leaks(messages)]
    if not kept:
        raise ConfigError(f"{path}: every trace's question is held out by the evaluation (sft.keep_held_out)")
    return kept, len(rows) - len(kept)


def load_traces(
    path: str, env: Environment, chat: ChatFormat, max_tokens: int, held_out: set[str] | frozenset[str] = frozenset()
) -> list[Trace]:
    conversations, _ = training_conversations(path, env, held_out)
    return [tokenize(where, messages, chat, max_tokens) for where, messages in conversations]
