"""What a verifier, PRM or probe needs from generation, and how a strategy provides it.

A scorer declares its needs (`needs = Needs(logprobs=True)`); a strategy that holds one asks its
sampler for them (`fill`, through `Sampler.with_needs`), once, at construction. That is the one
mechanism for every scorer, so a verifier never finds out by failing that it got no logprobs.

`SamplingParams.logprobs` and `top_logprobs` are None ("unspecified") by default: a need fills
them in. A setting the user made explicitly is kept, unless it refuses what a scorer needs
(`logprobs=False` beside a verifier that reads token logprobs, `top_logprobs=2` beside one that
reads the top 5): that is an `InvalidInput` at construction, naming both.

Hidden states are a backend capability, not a sampling parameter: a strategy checks them against
the backend's declared capabilities when it runs (e.g. `EarlyExit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from ttc.errors import InvalidInput
from ttc.types import SamplingParams


@dataclass(frozen=True)
class Needs:
    """What a scorer reads from each sampled candidate beyond its text.

    Flags combine by "or", counts by "max" (`a | b`, `Needs.union([...])`), so a field added later
    (the thinking, for reasoning models) is one line here and combines the same way.

    Args:
        logprobs: the log-probability of every sampled token.
        top_logprobs: the k most likely alternatives at every position (0: none).
        hidden_states: the model's hidden states (a backend capability, checked when run).
        thinking: the thinking text of a reasoning model's candidates (`Candidate.thinking`), beside
            the final content every scorer sees (`Candidate.text`): a PRM that declares it scores
            the thinking's steps followed by the content's (`PRMVerifier`); a candidate whose server
            hid its thinking (reported a count, returned no text) is then refused (`Unsupported`).

    Example:
        >>> from ttc.needs import Needs
        >>> Needs(logprobs=True) | Needs(top_logprobs=5)
        Needs(logprobs=True, top_logprobs=5, hidden_states=False, thinking=False)
    """

    logprobs: bool = False
    top_logprobs: int = 0
    hidden_states: bool = False
    thinking: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise InvalidInput(f"Needs.{f.name} must be True or False, got {value!r}")
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidInput(f"Needs.{f.name} must be a non-negative integer, got {value!r}")

    def __or__(self, other: Needs) -> Needs:
        """The union: what either needs (a flag if either sets it, the larger count)."""
        if not isinstance(other, Needs):
            return NotImplemented
        return Needs(**{f.name: (max if f.type == "int" else _either)(getattr(self, f.name), getattr(other, f.name))
                        for f in dataclasses.fields(self)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def union(cls, needs: Iterable[Needs]) -> Needs:
        """What all of `needs` need together (nothing for none)."""
        out = cls()
        for n in needs:
            out = out | n
        return out

    @property
    def sampling(self) -> Needs:
        """The part a sampler's `SamplingParams` provide (hidden states are the backend's, the
        thinking is on every candidate of a reasoning model)."""
        return Needs(logprobs=self.logprobs, top_logprobs=self.top_logprobs)

    def settings(self) -> str:
        """The SamplingParams arguments that ask for these needs, e.g. "logprobs=True, top_logprobs=5"."""
        parts = (["logprobs=True"] if self.logprobs else []) + \
            ([f"top_logprobs={self.top_logprobs}"] if self.top_logprobs else [])
        return ", ".join(parts)

    def describe(self) -> str:
        """E.g. "token logprobs and the top-5 logprobs of every token"; "nothing" when empty."""
        parts = []
        if self.logprobs:
            parts.append("token logprobs")
        if self.top_logprobs:
            parts.append(f"the top-{self.top_logprobs} logprobs of every token")
        if self.hidden_states:
            parts.append("hidden states")
        if self.thinking:
            parts.append("the thinking text")
        return " and ".join(parts) or "nothing"


def _either(a: bool, b: bool) -> bool:
    return a or b


#: needs nothing beyond the candidate's text
NOTHING = Needs()


def needs_of(scorer: object) -> Needs:
    """The `needs` a verifier, PRM or probe declares (nothing when it declares none); anything
    else in that attribute is refused, naming the scorer."""
    needs = getattr(scorer, "needs", NOTHING)
    if not isinstance(needs, Needs):
        raise InvalidInput(f"{type(scorer).__name__}.needs must be a ttc.needs.Needs, got {type(needs).__name__}")
    return needs


def thinking_text(candidate: object, who: str) -> str:
    """The thinking of `candidate` for a scorer that declared `Needs(thinking=True)` ("" for a
    candidate without thinking); `Unsupported` when its server hid the thinking."""
    from ttc.errors import Unsupported

    completion = getattr(candidate, "completion", None)
    thinking = getattr(completion, "thinking", None)
    if thinking is not None and thinking.hidden:
        raise Unsupported(f"{who} needs the thinking text (Needs(thinking=True)), but the server hid it: it reported "
                          f"{thinking.hidden_tokens} thinking tokens and returned no text; use a deployment that "
                          f"returns the thinking, or a scorer that reads the final content only")
    return getattr(candidate, "thinking", None) or ""


def fill(params: SamplingParams, needs: Needs, *, who: str, where: str = "the sampler") -> SamplingParams:
    """`params` asking for what `needs` asks where it left the setting unspecified (None).

    An explicit setting that refuses a need (`logprobs=False` beside a need for token logprobs,
    `top_logprobs` smaller than the need) raises `InvalidInput` naming `who` needs it and
    `where` the setting was made. Explicit settings that ask for more are kept.
    """
    changes: dict[str, object] = {}
    if needs.logprobs:
        if params.logprobs is False:
            raise InvalidInput(
                f"{who} needs token logprobs, and {where} sets SamplingParams(logprobs=False): leave logprobs "
                f"unset (it is then asked for) or set it True, or use a scorer that needs no logprobs")
        if params.logprobs is None:
            changes["logprobs"] = True
    if needs.top_logprobs:
        if params.top_logprobs is not None and params.top_logprobs < needs.top_logprobs:
            raise InvalidInput(
                f"{who} needs the top-{needs.top_logprobs} logprobs of every token, and {where} sets "
                f"SamplingParams(top_logprobs={params.top_logprobs}): leave top_logprobs unset (it is then "
                f"asked for) or set it to at least {needs.top_logprobs}")
        if params.top_logprobs is None:
            changes["top_logprobs"] = needs.top_logprobs
    return params.replace(**changes) if changes else params


__all__ = ["NOTHING", "Needs", "fill", "needs_of", "thinking_text"]
