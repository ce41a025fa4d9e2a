"""The errors that reach the user as one line: imported by every layer, so they live below all of them."""


class ConfigError(ValueError):
    """A bad recipe, override, path or data row; its message is one line meant for the user."""


class EngineError(RuntimeError):
    """A rollout engine's call failed. The message is one line naming the engine, the call and what it was
    generating; the engine's own traceback is the exception's cause. A caller that generates in several calls puts
    what the calls before the failure produced in `partial`, so that it can be kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.partial: list = []


class RankError(RuntimeError):
    """One of several learner processes did not reach a meeting point in time, or failed."""


class DivergenceError(RuntimeError):
    """Training diverged and the spike and divergence guard could not roll it back (`train.guard`)."""


def parser_limit(error: ValueError | RecursionError) -> str:
    """What a JSON or YAML parser refused, as one line, when it is not a syntax error (catch these after the parser's
    own, e.g. json.JSONDecodeError, itself a ValueError): Python converts no integer of more than
    `sys.get_int_max_str_digits()` digits, nor nests deeper than its recursion limit, and YAML builds dates and
    `!!float` values that may be out of range."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    # The integer limit's message ends in advice to call sys.set_int_max_str_digits(), which is not the user's to take.
    return str(error).split(";")[0]


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text`, or None when it is Unicode text: JSON's `\\ud800` escape (and YAML's)
    reads as one, which no tokenizer encodes and no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


class WorkerError(RuntimeError):
    """A rollout worker (`cluster.backend: ray`) died or missed a deadline more often than `cluster.max_restarts`
    allows, or failed a call; the message names the worker, the call and the deadline."""
