"""Every error ttc raises on purpose derives from `TTCError`, so callers can catch one type."""

from __future__ import annotations


class TTCError(Exception):
    """Base class of all ttc errors."""


class InvalidInput(TTCError, ValueError):
    """A problem, parameter or configuration is malformed (empty prompt, n <= 0, ...)."""


def check_positive(name: str, value: object, what: str = "integer") -> int:
    """`value` if it is a positive int (not a bool), else `InvalidInput` naming `name`: the one
    positive-integer check of ttc's constructors (`what` words the unit, e.g. "number of tokens")."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{name} must be a positive {what}, got {value!r}")
    return value


class Unsupported(InvalidInput):
    """The backend (or the server behind it) lacks a feature this call needs; the message names it
    and says what would provide it (e.g. a local tokenizer for a server without /tokenize)."""


class MissingExtra(TTCError, ImportError):
    """A feature needs an optional dependency that is not installed (`pip install ttc` is the light
    core); the message names it and has the `pip install "ttc[...]"` line (`ttc._extras.require`).
    An ImportError too, so `except ImportError` around an optional feature keeps working."""


class ModelNotFound(TTCError, FileNotFoundError):
    """A model name or folder could not be resolved to weights on this machine."""


class BudgetExhausted(TTCError):
    """The budget cannot cover the next unit of work (e.g. one candidate)."""


class PromptTooLong(TTCError):
    """An aggregation prompt (several candidates shown at once) is longer than `max_prompt_tokens`
    or the model's context allows: refused before it is sent. `tokens` and `limit` say by how much."""

    def __init__(self, message: str, tokens: int = 0, limit: int = 0):
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


class GenerationError(TTCError):
    """A backend failed to produce completions (server down, malformed response, ...).

    `usage` is what the failed request already cost when the backend knows it (a server that
    answered, and reported its usage, with something ttc rejects); the problem's usage keeps it.
    """

    usage = None  # ttc.types.Usage | None, set by the backend that raises


class BackendUnavailable(GenerationError):
    """The backend cannot be reached at all (connection refused, no server)."""


class PoolExhausted(BackendUnavailable):
    """No connection slot of the backend's own pool came free within its wait limit
    (`OpenAICompatible(pool_wait=)`): the server is busy, not down; retry later or elsewhere."""


class GenerationTimeout(GenerationError):
    """The server did not answer in time. `phase` says which limit expired: "connect" (opening a
    connection), "read" (between two reads of an answer, a stalled stream) or "total" (a whole
    request); the request was aborted (its connection closed)."""

    def __init__(self, message: str, phase: str = "total"):
        super().__init__(message)
        self.phase = phase


class ConnectTimeout(GenerationTimeout, BackendUnavailable):
    """No connection could be opened in time: a timeout, and the server unreachable (both
    `except` clauses catch it)."""

    def __init__(self, message: str):
        super().__init__(message, "connect")


class MalformedResponse(GenerationError):
    """The backend answered, but not with something ttc can parse."""


class AnswerNotFound(TTCError):
    """No final answer could be extracted from a candidate's text."""


class TTCWarning(UserWarning):
    """Base class of the warnings ttc issues on purpose."""


class ProblemsFailed(TTCWarning):
    """Some problems of a `solve_many` run failed: the warning gives the count and the first error;
    the returned `Results` hold them (`results.failed`, `results.first_error`, each `Result.error`)."""
