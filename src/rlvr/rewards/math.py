"""Math answers: extract the final answer from a completion and compare it to the reference with math-verify.

math-verify (HuggingFace) parses LaTeX and plain expressions into SymPy and compares them symbolically and
numerically, so `\\frac{1}{2}`, `1/2`, `0.5` and `50\\%` are all the same answer, `\\{1,2\\}` equals `\\{2,1\\}` and
`(x+1)^2` equals `x^2+2x+1`.

Timeouts: math-verify bounds its own work with `signal.alarm`, which takes whole seconds and only works in the
main thread. `math_equal` passes math-verify a budget of whole seconds (its own `parsing_timeout` and
`timeout_seconds` parameters) for each step (parse gold, parse prediction, each comparison), drawn from one
overall deadline, so a call takes at most about `timeout_seconds` + 1 s (measured: `9^{9^{9^{9}}}` with a 1 s
budget returns False after ~1.0-1.6 s). The alarm interrupts Python code only: a single long C-level operation
finishes before it fires. Outside the main thread `math_equal` passes `None` (math-verify would otherwise raise),
so there the only guard is `MAX_ANSWER_CHARS`: a caller that scores in worker threads must bound the time itself
(e.g. a process pool), because a short answer such as `9^{9^{9^{9}}}` can keep SymPy busy for ever.
"""

from __future__ import annotations

import math
import re
import threading
import time

from rlvr.rewards.answers import ANSWER_LINE, NUMBER, answer_tag, squash
from rlvr.rewards.base import register_verifier
from rlvr.types import Problem

# A final answer (or reference) longer than this is not an answer but a runaway generation; refusing it up front
# also bounds the cost of parsing, and math-verify logs the whole input on every timeout.
MAX_ANSWER_CHARS = 1000

_BOXED = re.compile(r"\\boxed\s*\{")
_GSM8K_MARK = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each `{` -> index of its matching `}`, in one linear pass (hostile nesting stays O(n)).

    A brace after an odd number of backslashes is an escaped literal (`\\{1,2\\}` is a set, not a group).
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    backslashes = 0
    for i, char in enumerate(text):
        escaped = backslashes % 2 == 1
        backslashes = backslashes + 1 if char == "\\" else 0
        if escaped:
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


def boxed_answers(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` whose braces balance, in order; an unclosed `\\boxed{` is skipped."""
    pairs = _matching_braces(text)
    starts = [match.end() - 1 for match in _BOXED.finditer(text)]
    return [text[start + 1 : pairs[start]].strip() for start in starts if start in pairs]


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance."""
    boxed = boxed_answers(text)
    return boxed[-1] if boxed else None


def _strip_number_commas(answer: str) -> str:
    """`1,234` -> `1234`, but only for a plain number: the commas in `\\{1,2\\}` or `(1, 2]` mean something."""
    answer = answer.strip().rstrip(".").strip()
    return answer.replace(",", "") if NUMBER.fullmatch(answer) else answer


def extract_math_answer(text: str) -> str | None:
    """The final answer in a math completion, first match wins:

    1. the last `\\boxed{...}` (balanced braces, nesting allowed): what MATH-style solutions end with;
    2. else the last `<answer>...</answer>` tag (R1-style prompts);
    3. else the last `Answer: ...` line (this project's own prompt, same rule as `extract_answer`);
    4. else the last GSM8K-style `#### 42` line;
    5. else, as a documented fallback, the last number in the text: a weak base model often states the right
       number in prose, and RL cannot start from a reward of zero.
    Returns None when there is none of these.
    """
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    tagged = answer_tag(text)
    if tagged:
        return tagged
    marked = [m.strip().strip("*").strip().rstrip(".") for m in ANSWER_LINE.findall(text)]
    if marked and marked[-1]:
        return marked[-1]
    gsm8k = _GSM8K_MARK.findall(text)
    if gsm8k:
        return _strip_number_commas(gsm8k[-1])
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def normalize_reference(answer: str) -> str:
    """A GSM8K reference (`<worked solution> #### 1,234`) -> `1234`; any other reference is only stripped."""
    marked = _GSM8K_MARK.findall(answer)
    if marked:
        return _strip_number_commas(marked[-1])
    return answer.strip()


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def worked_solution(answer: str) -> tuple[str, str] | None:
    """A GSM8K reference split into its worked steps (calculator marks `<<48/2=24>>` dropped) and its final answer;
    None for a reference without a `#### answer` line."""
    marked = _GSM8K_MARK.findall(answer)
    if not marked:
        return None
    steps = _CALCULATOR.sub("", _GSM8K_MARK.sub("", answer)).strip()
    return steps, _strip_number_commas(marked[-1])


def _unwrap(answer: str) -> str:
    """Drop inline-math delimiters so the answer can be boxed (`$\\frac12$.` -> `\\frac12`)."""
    answer = answer.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            return answer[len(left) : -len(right)].strip()
    return answer


def _parse(answer: str, budget: int | None) -> list:
    """math-verify's parse of a bare answer, boxed first.

    Boxing matters: unboxed, math-verify's plain-expression extractor reads `2\\sqrt{2}` as `2` and `50\\%` as `50`,
    and its LaTeX extractor finds nothing in `\\frac12` or `\\{1,2\\}`. Only when the boxed form parses to nothing
    (e.g. unbalanced braces) is the raw text tried.
    """
    # Imported here, not at the top: math-verify pulls in SymPy and ANTLR (about a second), which runs that do not
    # score math should not pay for.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    text = _unwrap(answer)
    if "\\boxed" not in text:
        parsed = parse(f"\\boxed{{{text}}}", extraction_config=configs, parsing_timeout=budget)
        if parsed:
            return parsed
    return parse(text, extraction_config=configs, parsing_timeout=budget)


def math_equal(prediction: str, reference: str, timeout_seconds: float = 5) -> bool:
    """Whether `prediction` is mathematically the same answer as `reference` (math-verify; gold first, it is
    not symmetric). Never raises: unparsable, hostile or over-long text is simply not equal. In the main thread
    the call takes at most about `timeout_seconds` + 1 s; in other threads there is no timeout (module docstring).
    """
    if not prediction or not reference or max(len(prediction), len(reference)) > MAX_ANSWER_CHARS:
        return False
    use_signals = threading.current_thread() is threading.main_thread()
    deadline = time.monotonic() + timeout_seconds

    def budget() -> int | None:
        # math-verify's alarm takes whole seconds and 0 means "no timeout", so round up and stop when spent.
        if not use_signals:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return max(1, math.ceil(left))

    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        gold = _parse(reference, budget())
        pred = _parse(prediction, budget())
        return any(verify(g, p, timeout_seconds=budget()) for g in gold for p in pred)
    # Hostile text can raise anything (RecursionError included); math-verify's TimeoutException is a BaseException.
    except (Exception, TimeoutException):
        return False


# A math answer votes by the whitespace-insensitive text of its extracted answer.
@register_verifier("math", vote=lambda text: squash(extract_math_answer(text)))
def math_reward(text: str, problem: Problem) -> float:
    """1.0 when the extracted final answer equals the (GSM8K-normalised) reference under math-verify, else 0.0."""
    prediction = extract_math_answer(text)
    if prediction is None:
        return 0.0
    return float(math_equal(prediction, normalize_reference(problem.answer)))
