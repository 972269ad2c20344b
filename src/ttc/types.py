"""Core value types shared by backends, verifiers and strategies.

They are plain dataclasses so that results can be printed, compared, and written to JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ttc.errors import InvalidInput, check_positive
from ttc.infos import Info

if TYPE_CHECKING:
    from ttc.steps import SearchTree

#: A prompt is either text (sent as is) or token ids (never re-tokenised).
Prompt = str | Sequence[int]


#: the default step delimiter of step searches (a blank line)
DEFAULT_DELIMITER = "\n\n"

@dataclass(frozen=True)
class Problem:
    """One question to solve, with its gold answer when known (for evaluation only)."""

    question: str
    answer: str | None = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def validate(self) -> Problem:
        """Raise `InvalidInput` unless this problem can be solved (strategies call it first).

        Not done on construction, so that a bad problem can still be recorded in a failed result.
        """
        if not isinstance(self.question, str):
            raise InvalidInput(f"Problem.question must be a string, got {type(self.question).__name__}")
        if not self.question.strip():
            raise InvalidInput("Problem.question is empty: there is nothing to solve")
        return self

    @classmethod
    def coerce(cls, problem: Problem | str) -> Problem:
        """Accept a bare question string wherever a Problem is expected."""
        if isinstance(problem, Problem):
            return problem
        if isinstance(problem, str):
            return cls(question=problem)
        if isinstance(problem, dict) and "question" in problem:
            return cls(question=problem["question"], answer=problem.get("answer"), id=problem.get("id"))
        raise InvalidInput(f"expected a Problem, a question string or a dict with 'question', "
                           f"got {type(problem).__name__}")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: mirrors the common subset of vLLM's and OpenAI's sampling parameters.

    `logprobs` asks for the log-probability of every sampled token; `top_logprobs` additionally
    asks for the k most likely alternatives at each position (used by confidence verifiers).
    Both are None ("unspecified") by default: a backend then returns none, and a strategy whose
    verifier, PRM or probe needs them fills them in (`ttc.needs`). An explicit `logprobs=False` or
    a `top_logprobs` below what a verifier needs is refused when the strategy is built.

    The fields reasoning deployments are run with (`top_k`, `min_p`, the three penalties,
    `chat_template_kwargs` such as `{"enable_thinking": True}`) are None / empty by default, which
    means "the backend's default": each backend maps the ones it supports and refuses the others with
    an error naming the field and the backend (`ttc.Unsupported`), never silently dropping one.
    `extra` passes server- or engine-specific fields that ttc does not know (e.g. vLLM's
    `{"thinking_token_budget": 64}`) as they are: into the request body of a server, into
    `vllm.SamplingParams` in process; a backend that has no place for them refuses them.
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    chat_template_kwargs: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInput(f"SamplingParams.{name} must be a finite number, got {value!r}")
        check_positive("SamplingParams.n", self.n)
        check_positive("SamplingParams.max_tokens", self.max_tokens)
        if self.temperature < 0:
            raise InvalidInput(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise InvalidInput(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if self.logprobs is not None and not isinstance(self.logprobs, bool):
            raise InvalidInput(f"SamplingParams.logprobs must be True, False or None (unspecified), got "
                               f"{self.logprobs!r}; the number of alternatives per token is top_logprobs")
        top = self.top_logprobs
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
            raise InvalidInput(f"SamplingParams.top_logprobs must be an integer >= 0 or None (unspecified), "
                               f"got {top!r}")
        self._check_reasoning_fields()
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))

    def _check_reasoning_fields(self) -> None:
        k = self.top_k
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not (k == -1 or k >= 1)):
            raise InvalidInput(f"SamplingParams.top_k must be an integer >= 1 (or -1: all tokens) or None, got {k!r}")
        for name in ("min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInput(f"SamplingParams.{name} must be a finite number or None, got {value!r}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise InvalidInput(f"SamplingParams.min_p must be in [0, 1], got {self.min_p!r}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise InvalidInput(f"SamplingParams.repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        for name in ("chat_template_kwargs", "extra"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
                raise InvalidInput(f"SamplingParams.{name} must be a mapping of field names (str) to values, "
                                   f"got {value!r}")
            object.__setattr__(self, name, _FrozenFields(value) if value else None)

    def replace(self, **changes: Any) -> SamplingParams:
        return dataclasses.replace(self, **changes)


class _FrozenFields(dict):
    """A read-only, hashable mapping, so that `SamplingParams` stays a frozen value."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("SamplingParams fields are read-only; use params.replace(...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))


@dataclass(frozen=True)
class Thinking:
    """The thinking segment of a reasoning model's output, kept apart from its final content.

    `text`, `token_ids`, `logprobs` and `top_logprobs` are the thinking proper: the tokens strictly
    between the start and end markers (`<think>` ... `</think>`), markers excluded, as vLLM's
    reasoning parsers count `reasoning_tokens`. `marker_token_ids` are the marker tokens the model
    generated itself (the start marker when the chat template did not open the thinking, and the
    end marker when it closed it): they count as completion tokens, neither thinking nor content.
    `closed` says whether the model ended its thinking. `hidden_tokens` is set instead of the text
    when a server reports how many thinking tokens it generated but returns no thinking text.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    closed: bool = True
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[int | str, float], ...] | None = None
    marker_token_ids: tuple[int, ...] = ()
    hidden_tokens: int | None = None
    #: the logprobs (and top logprobs) of the marker tokens, where the backend has them, so that the
    #: whole output's can be put back together in order (`ttc.thinking.generated_logprobs`)
    marker_logprobs: tuple[float, ...] | None = None
    marker_top_logprobs: tuple[dict[int | str, float], ...] | None = None

    @property
    def num_tokens(self) -> int:
        """Thinking tokens generated (markers excluded): what `Usage.reasoning_tokens` adds up."""
        return self.hidden_tokens if self.hidden_tokens is not None else len(self.token_ids)

    @property
    def hidden(self) -> bool:
        return self.hidden_tokens is not None


@dataclass(frozen=True)
class Completion:
    """One generated continuation of a prompt.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the sampling distribution's
    model (before temperature); `top_logprobs[i]` maps the most likely tokens at position i
    to their log-probabilities: keyed by token id, or by the token's text when the server sends
    token strings and no ids (OpenAI-style logprobs). `finish_reason` is "stop" (EOS or a stop
    string), "length" (max_tokens) or "cancelled". `eos` says which kind of "stop" it was when the
    backend knows: True = the model's end-of-sequence token, False = a stop string (or not a
    stop at all), None = the backend cannot tell (then `Stepper` falls back to the token ids).

    For a reasoning model, `text`, `token_ids`, `logprobs` and `top_logprobs` are the final content
    only (what follows the thinking; empty while the thinking is not closed), and `thinking` holds
    the thinking (`Thinking`); answers are read from the content only. Without thinking (an instruct
    model, or a backend told no thinking format) `thinking` is None and `text` is the whole output.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[int | str, float], ...] | None = None
    eos: bool | None = None
    thinking: Thinking | None = None

    @property
    def num_tokens(self) -> int:
        """Every token generated: content, plus thinking and its markers when there is thinking."""
        if self.thinking is None:
            return len(self.token_ids)
        return len(self.token_ids) + self.thinking.num_tokens + len(self.thinking.marker_token_ids)

    @property
    def reasoning_tokens(self) -> int:
        """Thinking tokens generated (markers excluded); 0 without thinking."""
        return 0 if self.thinking is None else self.thinking.num_tokens


@dataclass
class Usage:
    """Compute spent. Token and call counts add up exactly; `wall_seconds` is elapsed time.

    Prompt tokens have two honest meanings, and both are reported:

    - `prompt_tokens` (billed): the prompt once per generator request, as the server's
      `usage.prompt_tokens` says (vLLM and the OpenAI API count an n-sample request's prompt
      once). `Budget(tokens=...)` and `total_tokens` use this one.
    - `processed_prompt_tokens`: the prompt once per generated sequence, since an n-sample
      request runs its prompt n times unless cached (vLLM's `vllm:prompt_tokens_total` counts
      this). `cached_prompt_tokens` is the part of it served from a prefix cache, where the
      backend knows it: the transformers backend prefills a prompt once and copies its KV cache
      to the n candidates (n x prompt processed, (n-1) x prompt cached); vLLM reports its hits in
      `prompt_tokens_details.cached_tokens` (server started with `--enable-prompt-tokens-details`)
      or `RequestOutput.num_cached_tokens`, which for an n > 1 request are the hits of one of its
      n sequences, so a lower bound.

    `generator_calls` counts requests to the generator, as the server sees them (an n-sample
    request split into n single requests, on a server that ignores n, counts n).
    `completion_tokens` are the tokens the backend generated (the server's
    `usage.completion_tokens` where it sends one). `estimated` is True when some count was not
    reported by the backend and ttc had to estimate it (a server that sends no `usage` and no
    token ids): the numbers are then approximate, never a silent zero.

    `closed_streams` counts streams ttc closed before they finished (FirstFinish's losers,
    EarlyExit, a stream-mode AdaptiveVote, a time budget). Their `completion_tokens` are the
    tokens that reached ttc; the backend may have generated a few more before it saw the close,
    and no server reports that number (vLLM counts them in `vllm:generation_tokens_total`, up to
    `max_tokens` per stream). With `closed_streams > 0`, `completion_tokens` is a lower bound.

    `reasoning_tokens` is the part of `completion_tokens` that was thinking (`Thinking.num_tokens`:
    markers excluded, as vLLM's `completion_tokens_details.reasoning_tokens` counts it, which the
    server reports on the chat endpoint with a reasoning parser; elsewhere ttc counts it).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    generator_calls: int = 0
    verifier_calls: int = 0
    verifier_tokens: int = 0
    wall_seconds: float = 0.0
    processed_prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    estimated: bool = False
    closed_streams: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Billed prompt tokens + completion tokens: what `Budget(tokens=...)` counts."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        """Add another usage's counts into this one (wall time is not added: it is elapsed time)."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.generator_calls += other.generator_calls
        self.verifier_calls += other.verifier_calls
        self.verifier_tokens += other.verifier_tokens
        self.processed_prompt_tokens += other.processed_prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.closed_streams += other.closed_streams
        self.reasoning_tokens += other.reasoning_tokens
        self.estimated = self.estimated or other.estimated

    @classmethod
    def total(cls, usages: Sequence[Usage]) -> Usage:
        out = cls()
        for u in usages:
            out.add(u)
        return out

    def counts(self) -> tuple[int, ...]:
        """The additive part, for exact comparisons."""
        return (self.prompt_tokens, self.completion_tokens, self.generator_calls,
                self.verifier_calls, self.verifier_tokens, self.processed_prompt_tokens,
                self.cached_prompt_tokens, self.closed_streams, self.reasoning_tokens)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"total_tokens": self.total_tokens}

    def token_summary(self) -> str:
        """E.g. "87 prompt + 512 completion tokens (prompt processed: 348, 261 cached)"."""
        text = f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
        if self.processed_prompt_tokens != self.prompt_tokens or self.cached_prompt_tokens:
            text += f" (prompt processed: {self.processed_prompt_tokens}, {self.cached_prompt_tokens} cached)"
        if self.reasoning_tokens:
            text += f" ({self.reasoning_tokens} of them thinking)"
        if self.estimated:
            text += " (estimated: the server reported no usage)"
        if self.closed_streams:
            text += f" (at least: {self.closed_streams} stream(s) closed early)"
        return text


@dataclass
class Step:
    """One reasoning step of a trace: its text, token ids and any score a PRM gave it."""

    text: str
    token_ids: tuple[int, ...] = ()
    score: float | None = None

    def content(self, delimiter: str = DEFAULT_DELIMITER) -> str:
        """The step as a PRM sees it: without its trailing delimiter, stripped."""
        text = self.text
        if delimiter and text.endswith(delimiter):
            text = text[: -len(delimiter)]
        return text.strip()


@dataclass
class Trace:
    """A (possibly partial) solution built step by step."""

    steps: list[Step] = field(default_factory=list)
    finished: bool = False

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    def step_texts(self, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
        """Each step's content as a PRM scores it (`Step.content`: delimiter removed, stripped)."""
        return [s.content(delimiter) for s in self.steps]

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(t for s in self.steps for t in s.token_ids)


@dataclass
class Candidate:
    """One candidate solution produced by a strategy, with its scores and what it cost."""

    text: str
    answer: str | None
    completion: Completion | None = None
    scores: dict[str, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    trace: Trace | None = None
    finish_reason: str | None = None
    #: the thinking of a reasoning model (`Completion.thinking`'s text; `text` is the final content)
    thinking: str | None = None
    #: whether that thinking was closed (None without thinking); a candidate cut inside its
    #: thinking (False) has no answer unless a strategy forced one (`ttc.candidates`)
    thinking_closed: bool | None = None
    #: where `answer` came from (`ttc.answers.SOURCES`: "boxed", "hashes", "stated", or
    #: "last_number", the fallback guess); None when there is no answer or a probe forced it (EarlyExit)
    answer_source: str | None = None


@dataclass
class Result:
    """What a strategy returns: the answer, every candidate, and the total usage.

    `details` is the strategy's typed record (`ttc.infos`: votes, the search's rounds, ...), also
    readable as a mapping (`result.details["votes"]`); a plain dict given here becomes its
    `extra`. `tree` is the search tree of a step search, else None.
    """

    problem: Problem
    answer: str | None
    candidates: list[Candidate]
    usage: Usage
    strategy: str
    details: Info = field(default_factory=Info)
    tree: SearchTree | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.details, Info):
            if not isinstance(self.details, Mapping):
                raise InvalidInput(f"Result.details must be a ttc.infos.Info or a dict, "
                                   f"got {type(self.details).__name__}")
            self.details = Info(extra=dict(self.details))

    @classmethod
    def failed(cls, problem: Problem, strategy: str, error: BaseException, usage: Usage) -> Result:
        """The record of a problem that could not be solved, keeping what it had spent."""
        return cls(problem=problem, answer=None, candidates=[], usage=usage, strategy=strategy,
                   error=f"{type(error).__name__}: {error}")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def correct(self) -> bool | None:
        """Whether the answer matches the problem's gold answer; None without gold (as in `to_dict()`)."""
        return self.is_correct()

    @property
    def no_answer_reason(self) -> str | None:
        """Why `answer` is None (None when there is an answer), in words that start with the kind:

        - "error: ..." the problem failed (`error` says how);
        - "cut at max_tokens: ..." every candidate was cut before it stated an answer;
        - "nothing extractable: ..." candidates finished (or were stopped) without a readable answer;
        - "cut inside its thinking: ..." every candidate of a reasoning model was cut before it
          closed its thinking (its final content, where the answer is read, never started);
        - "no candidates" the strategy produced none;
        - "the chosen candidate has no answer: ..." other candidates had one, the strategy chose one
          without (e.g. a verifier's favourite that states none).
        """
        if self.answer is not None:
            return None
        if self.error is not None:
            return f"error: {self.error}"
        total = len(self.candidates)
        if not total:
            return "no candidates"
        answered = sum(c.answer is not None for c in self.candidates)
        if answered:
            return f"the chosen candidate has no answer: {answered} of {total} candidates had one"
        in_thinking = sum(c.thinking_closed is False for c in self.candidates)
        if in_thinking == total:
            which = "the candidate was" if total == 1 else f"all {total} candidates were"
            return (f"cut inside its thinking: {which} cut before closing the thinking, so there is no "
                    f"final content to read an answer from; raise max_tokens")
        cut = self.truncated
        if cut == total:
            which = "the candidate was" if total == 1 else f"all {total} candidates were"
            return f"cut at max_tokens: {which} cut before stating an answer; raise max_tokens"
        reasons: dict[str, int] = {}
        for c in self.candidates:
            reason = "thinking" if c.thinking_closed is False else c.finish_reason or "unknown"
            reasons[reason] = reasons.get(reason, 0) + 1
        words = {"stop": "finished", "length": "cut at max_tokens", "thinking": "cut inside its thinking"}
        how = ", ".join(f"{k} {words.get(r, r)}" for r, k in reasons.items())
        return f"nothing extractable: no candidate stated an answer ({how})"

    @property
    def versions(self) -> dict[str, Any]:
        """The ttc version and the answer-rule version (`ttc.answers.ANSWER_RULES_VERSION`) this
        result was read and graded by: a change of answer rules changes `correct`."""
        from ttc import __version__
        from ttc.answers import ANSWER_RULES_VERSION

        return {"ttc_version": __version__, "answer_rules": ANSWER_RULES_VERSION}

    @property
    def truncated(self) -> int:
        """How many candidates were cut at max_tokens (finish_reason "length") before finishing."""
        return sum(1 for c in self.candidates if c.finish_reason == "length")

    @property
    def text(self) -> str | None:
        """The text of the candidate that supplied the answer (first match), if any."""
        for c in self.candidates:
            if c.answer == self.answer:
                return c.text
        return None

    def is_correct(self, gold: str | None = None) -> bool | None:
        """Whether the answer matches `gold` (default: the problem's gold answer); None if unknown."""
        from ttc.answers import equivalent

        gold = self.problem.answer if gold is None else gold
        if gold is None:
            return None
        return self.answer is not None and equivalent(self.answer, gold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem.id,
            "question": self.problem.question,
            "gold": self.problem.answer,
            "answer": self.answer,
            "correct": self.is_correct(),
            "strategy": self.strategy,
            **self.versions,
            "usage": self.usage.to_dict(),
            "details": self.details.to_dict(),
            "error": self.error,
            "no_answer_reason": self.no_answer_reason,
            "truncated": self.truncated,
            "candidates": [
                {
                    "answer": c.answer,
                    "answer_source": c.answer_source,
                    "scores": c.scores,
                    "finish_reason": c.finish_reason,
                    "completion_tokens": c.usage.completion_tokens,
                    "reasoning_tokens": c.usage.reasoning_tokens,
                    "thinking_closed": c.thinking_closed,
                }
                for c in self.candidates
            ],
        }

    def __repr__(self) -> str:
        if self.error:
            return f"Result(strategy={self.strategy!r}, error={self.error!r})"
        why = f"no_answer_reason={self.no_answer_reason!r}, " if self.answer is None else ""
        tie = self.details.get("tie")  # a tied vote, won by the answer seen first (`ttc.votes`)
        return (f"Result(strategy={self.strategy!r}, answer={self.answer!r}, " + why
                + (f"tie={list(tie)!r}, " if tie else "")
                + f"candidates={len(self.candidates)}, tokens={self.usage.total_tokens}, "
                + (f"reasoning_tokens={self.usage.reasoning_tokens}, " if self.usage.reasoning_tokens else "")
                + f"seconds={self.usage.wall_seconds:.2f})")


class Results(list[Result]):
    """What `solve_many` returns: the results, in the order of the problems (a plain list), and
    what failed, so that a failure is never silent.

    `failed` is how many problems failed (their Result has `error` set), `failures` those results,
    `first_error` the first one's error (None when none failed), `no_answer` how many results have
    no answer for any reason (`Result.no_answer_reason` says which).
    """

    @property
    def failures(self) -> list[Result]:
        return [r for r in self if r.error is not None]

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self)

    @property
    def first_error(self) -> str | None:
        return next((r.error for r in self if r.error is not None), None)

    @property
    def no_answer(self) -> int:
        return sum(r.answer is None for r in self)

    def summary(self) -> str:
        """E.g. "2 of 10 problems failed; the first error: Unsupported: ..." ("10 problems, none failed")."""
        if not self.failed:
            return f"{len(self)} problems, none failed"
        return f"{self.failed} of {len(self)} problems failed; the first error: {self.first_error}"
