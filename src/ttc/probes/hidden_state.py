"""Hidden-state exit probes (LYNX: "Learning Dynamic Exits for Confidence-Controlled Reasoning").

When the model emits a reasoning cue ("wait", "hmm", "alternatively", ... configurable), a
small logistic probe on the last-layer hidden state at the cue token predicts whether exiting
right there (cutting the trace before the cue and forcing an answer) gives the right answer.
The probe is trained from forced exits (`ttc.probes.training`) and its exit threshold is set
by split conformal calibration, so the user chooses the tolerated rate of premature exits.

The backend must declare the `hidden_states` capability and implement
`async hidden_states(token_ids, positions) -> np.ndarray` of shape (len(positions), hidden_size),
and `decode(token_ids) -> str` (cue tokens are found in the decoded text).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttc.backends.base import HIDDEN_STATES, Generator
from ttc.context import Context, split_verifier_cost
from ttc.errors import InvalidInput
from ttc.needs import Needs
from ttc.probes.base import CONTINUE, EXIT, PLAIN_SUFFIX, Decision, Probe, TraceState
from ttc.probes.conformal import _sigmoid, conformal_threshold

#: LYNX's reasoning cues; the model's own "I am reconsidering" words
DEFAULT_CUES = ("wait", "hmm", "alternatively")
FORMAT_VERSION = 1


@dataclass
class LinearProbe:
    """A logistic probe on hidden states, with its conformal exit threshold and how it was made.

    p(exit is right | h) = sigmoid(((h - mean) / scale) @ weights + bias); exit when p > threshold.
    """

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float = 0.5
    alpha: float | None = None
    cues: tuple[str, ...] = DEFAULT_CUES
    suffix: str = PLAIN_SUFFIX
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.weights)

    def predict_proba(self, hidden: np.ndarray) -> np.ndarray:
        hidden = np.atleast_2d(np.asarray(hidden, dtype=np.float64))
        if hidden.shape[1] != self.dim:
            raise InvalidInput(f"probe expects hidden states of size {self.dim}, got {hidden.shape[1]} "
                               f"(trained on another model?)")
        return _sigmoid(((hidden - self.mean) / self.scale) @ self.weights + self.bias)

    def calibrated(self, negative_scores: Sequence[float], alpha: float) -> LinearProbe:
        """A copy whose threshold is the split-conformal threshold for premature-exit rate `alpha`."""
        import dataclasses

        tau = conformal_threshold(negative_scores, alpha)
        return dataclasses.replace(self, threshold=tau, alpha=alpha,
                                   meta={**self.meta, "calibration_negatives": len(negative_scores)})

    def save(self, path: str | Path) -> Path:
        """Save as a small .npz (arrays + a JSON header)."""
        path = Path(path)
        header = {"format": FORMAT_VERSION, "bias": self.bias,
                  "threshold": None if math.isinf(self.threshold) else self.threshold,
                  "alpha": self.alpha, "cues": list(self.cues), "suffix": self.suffix, "meta": self.meta}
        with open(path, "wb") as f:
            np.savez(f, weights=self.weights.astype(np.float32), mean=self.mean.astype(np.float32),
                     scale=self.scale.astype(np.float32), header=np.array(json.dumps(header)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no probe file at {path}")
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data:
                raise InvalidInput(f"{path} is not a ttc probe file (no header)")
            header = json.loads(str(data["header"]))
            if header.get("format") != FORMAT_VERSION:
                raise InvalidInput(f"{path}: unsupported probe format {header.get('format')!r}")
            threshold = header["threshold"]
            return cls(weights=data["weights"].astype(np.float64), bias=float(header["bias"]),
                       mean=data["mean"].astype(np.float64), scale=data["scale"].astype(np.float64),
                       threshold=math.inf if threshold is None else float(threshold), alpha=header["alpha"],
                       cues=tuple(header["cues"]), suffix=header["suffix"], meta=header.get("meta", {}))


def cue_pattern(cues: Sequence[str]) -> re.Pattern:
    """Matches text that ends with a cue: word cues at a word boundary, others (e.g. "\\n") literally."""
    parts = [rf"\b{re.escape(c)}" if re.match(r"\w", c) else re.escape(c) for c in cues]
    return re.compile(rf"(?:{'|'.join(parts)})$", re.IGNORECASE)


def find_cues(generator: Generator, token_ids: Sequence[int], cues: Sequence[str], start: int = 0,
              pieces: list[str] | None = None) -> list[int]:
    """Positions i >= start where the decoded text up to token i ends with a cue (i is the cue's
    last token). `pieces` caches the decoded text of each token across calls."""
    return [end for _, end in find_cue_spans(generator, token_ids, cues, start, pieces)]


def find_cue_spans(generator: Generator, token_ids: Sequence[int], cues: Sequence[str], start: int = 0,
                   pieces: list[str] | None = None) -> list[tuple[int, int]]:
    """(first, last) token of every cue whose last token is at i >= start. The probe reads the
    hidden state at `last`; an exit cuts the trace before `first`, so a multi-token cue ("let me")
    leaves none of its tokens in the exit prefix. `pieces` caches each token's decoded text."""
    decode = generator.decode if generator.can_decode else None
    if decode is None:
        raise InvalidInput(f"{type(generator).__name__} has no decode(): cannot find cue tokens")
    pattern = cue_pattern(cues)
    if pieces is None:
        pieces = []
    while len(pieces) < len(token_ids):
        pieces.append(decode([token_ids[len(pieces)]]))
    found = []
    for i in range(start, len(token_ids)):
        first = max(0, i - 8)
        match = pattern.search("".join(pieces[first: i + 1])) if pieces[i] else None
        if match is None:
            continue
        offset = 0
        for j in range(first, i + 1):  # the token holding the cue's first character
            offset += len(pieces[j])
            if offset > match.start():
                found.append((j, i))
                break
    return found


async def hidden_states(ctx: Context, token_ids: Sequence[int], positions: Sequence[int]) -> np.ndarray:
    """Last-layer hidden states at absolute `positions` of a token sequence, charged as a verifier call
    (one forward pass over the sequence: its tokens count as verifier tokens)."""
    generator = ctx.generator
    if HIDDEN_STATES not in generator.capabilities or not hasattr(generator, "hidden_states"):
        raise InvalidInput(f"{type(generator).__name__} does not return hidden states "
                           f"(needs the '{HIDDEN_STATES}' capability; use ttc.backends.Transformers)")
    ctx.reserve_verifier_calls(1)
    ctx.record_verifier_tokens(len(token_ids))
    return np.asarray(await generator.hidden_states(list(token_ids), list(positions)), dtype=np.float64)


class HiddenStateProbe(Probe):
    """Exit at the first cue token where the probe's p(correct if exiting now) exceeds its
    conformal threshold; the trace is cut before the cue and an answer forced with `suffix`.

    Source: LYNX ("Learning Dynamic Exits for Confidence-Controlled Reasoning"). Deviations:
    cues are found in the decoded text (any tokenizer), and the probe is a logistic regression on
    the last layer's hidden state at the cue's last token.

    Args:
        probe: a `LinearProbe` or the path of one saved by `ttc probes train`.
        cues: the reasoning cues that are check points (default: the probe's).
        every: tokens between checks in chunked mode (every cue in the chunk is examined).
        threshold: override the probe's calibrated threshold.
        suffix: the answer-forcing text (default: the probe's).
        min_tokens: no exit before this many generated tokens.

    Example (a backend with hidden states, e.g. `ttc.backends.Transformers`, runs it):
        >>> import numpy as np
        >>> from ttc.probes import HiddenStateProbe, LinearProbe
        >>> linear = LinearProbe(np.ones(2), 0.0, np.zeros(2), np.ones(2), threshold=0.5, cues=("wait",))
        >>> probe = HiddenStateProbe(linear)
        >>> probe.scans_tokens, probe.needs.hidden_states
        (True, True)
    """

    name = "hidden_state"
    scans_tokens = True
    needs = Needs(hidden_states=True)

    def __init__(self, probe: LinearProbe | str | Path, cues: Sequence[str] | None = None, every: int = 32,
                 threshold: float | None = None, suffix: str | None = None, min_tokens: int = 0):
        if isinstance(probe, (str, Path)):
            probe = LinearProbe.load(probe)
        if not isinstance(probe, LinearProbe):
            raise InvalidInput(f"HiddenStateProbe needs a LinearProbe or a probe file, got {type(probe).__name__}")
        self.probe = probe
        self.cues = tuple(cues) if cues is not None else probe.cues
        if not self.cues:
            raise InvalidInput("HiddenStateProbe needs at least one cue")
        self.every = every
        self.threshold = probe.threshold if threshold is None else float(threshold)
        self.suffix = probe.suffix if suffix is None else suffix
        self.min_tokens = min_tokens

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        pieces = state.memory.setdefault(self.name + ".pieces", [])
        spans = [(first, last) for first, last in
                 find_cue_spans(ctx.generator, state.token_ids, self.cues, state.scanned, pieces)
                 if last >= self.min_tokens and first > 0]
        state.scanned = len(state.token_ids)
        if not spans:
            return Decision(CONTINUE)
        offset = len(state.prompt_ids)
        ids = list(state.prompt_ids) + list(state.token_ids)
        hidden = await hidden_states(ctx, ids, [offset + last for _, last in spans])
        split_verifier_cost([state.usage], len(ids))
        probs = self.probe.predict_proba(hidden)
        history = state.memory.setdefault(self.name, [])
        for (first, last), p in zip(spans, probs, strict=False):
            history.append((last, float(p)))
            if p > self.threshold:
                return Decision(EXIT, at=first, score=float(p))  # cut before the cue's first token
        return Decision(CONTINUE, score=float(probs.max()))
