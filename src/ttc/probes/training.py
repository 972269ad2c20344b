"""Training and calibration of hidden-state exit probes from forced exits (LYNX recipe).

1. `collect_forced_exits`: sample traces; at each cue token, cut the trace before the cue, force
   an answer (suffix + short greedy continuation), and record the hidden state at the cue with
   label 1 if that forced answer is right (vs the gold answer, or vs the trace's own final answer
   with label="consistent", which needs no gold).
2. `train_probe`: split by problem into a training and a calibration part; fit a logistic probe
   on the first, set the exit threshold by split conformal calibration on the second's label-0
   points, so the premature-exit rate at a cue is at most `alpha`.
3. `calibrate_probe`: re-set the threshold of a trained probe on new data or for another alpha.

The CLI wraps these as `ttc probes collect|train|calibrate`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttc.answers import equivalent, extract
from ttc.backends.base import HIDDEN_STATES, Generator
from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.probes.base import PLAIN_SUFFIX, TraceState, elicit_answer
from ttc.probes.conformal import fit_logistic, premature_exit_rate
from ttc.probes.hidden_state import DEFAULT_CUES, LinearProbe, find_cue_spans
from ttc.prompts import ChatPrompt
from ttc.types import Problem, SamplingParams

LABELS = ("gold", "consistent")


@dataclass
class ForcedExits:
    """Forced-exit examples: one row per (trace, cue) with its hidden state and whether exiting was right."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray          # problem index of each row (splits never separate a problem's rows)
    positions: np.ndarray       # cue position in the generated tokens
    answers: list[str | None] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> ForcedExits:
        return ForcedExits(self.features[mask], self.labels[mask], self.groups[mask], self.positions[mask],
                           [a for a, m in zip(self.answers, mask, strict=False) if m], dict(self.meta))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "wb") as f:
            np.savez(f, features=self.features.astype(np.float32), labels=self.labels.astype(np.int8),
                     groups=self.groups, positions=self.positions,
                     answers=np.array(json.dumps(self.answers)), meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ForcedExits:
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no forced-exit data at {path}")
        with np.load(path, allow_pickle=False) as d:
            missing = {"features", "labels", "groups", "positions"} - set(d.files)
            if missing:
                raise InvalidInput(f"{path} is not forced-exit data (missing {sorted(missing)})")
            return cls(d["features"].astype(np.float64), d["labels"].astype(np.int64), d["groups"], d["positions"],
                       json.loads(str(d["answers"])) if "answers" in d.files else [],
                       json.loads(str(d["meta"])) if "meta" in d.files else {})


async def collect_forced_exits(generator: Generator, problems: Sequence[Problem], *,
                               prompt: ChatPrompt = ChatPrompt(),
                               params: SamplingParams = SamplingParams(temperature=0.7, max_tokens=256),
                               cues: Sequence[str] = DEFAULT_CUES, suffix: str = PLAIN_SUFFIX,
                               samples: int = 1, max_exits_per_trace: int = 8, answer_tokens: int = 12,
                               label: str = "gold", concurrency: int = 8, seed: int = 0) -> ForcedExits:
    """Sample `samples` traces per problem and record a forced exit at (up to `max_exits_per_trace`,
    evenly spread) cue tokens of each. Returns the examples (features = last-layer hidden states)."""
    if HIDDEN_STATES not in generator.capabilities:
        raise InvalidInput(f"{type(generator).__name__} does not return hidden states; "
                           f"forced exits need e.g. ttc.backends.Transformers")
    if label not in LABELS:
        raise InvalidInput(f"label must be one of {LABELS}, got {label!r}")
    if label == "gold" and any(p.answer is None for p in problems):
        raise InvalidInput("label='gold' needs problems with gold answers (or use label='consistent')")
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, problem: Problem, sample: int) -> list[tuple]:
        async with semaphore:
            ctx = Context(generator)
            rendered = await prompt.render(problem, generator)
            prompt_ids = list(await generator.tokenize(rendered)) if isinstance(rendered, str) else list(rendered)
            (completion, _), = await ctx.generate(
                prompt_ids, params.replace(n=1, seed=seed * 100_003 + index * 101 + sample))
            tokens = list(completion.token_ids)
            spans = [(first, last) for first, last in find_cue_spans(generator, tokens, cues) if first > 0]
            if len(spans) > max_exits_per_trace:
                keep = np.linspace(0, len(spans) - 1, max_exits_per_trace).round().astype(int)
                spans = [spans[i] for i in sorted(set(keep))]
            if not spans:
                return []
            positions = [last for _, last in spans]  # hidden state at the cue's last token
            cuts = [first for first, _ in spans]  # the forced exit cuts before the cue
            hidden = np.asarray(await generator.hidden_states(prompt_ids + tokens,
                                                              [len(prompt_ids) + p for p in positions]))
            reference = problem.answer if label == "gold" else extract(completion.text)
            state = TraceState(problem=problem, prompt_ids=prompt_ids, token_ids=tokens, text=completion.text)
            forced = await asyncio.gather(*(elicit_answer(state, ctx, suffix, answer_tokens, upto=cut)
                                            for cut in cuts))
            return [(h, int(a is not None and reference is not None and equivalent(a, reference)), index, p, a)
                    for h, p, (a, _) in zip(hidden, positions, forced, strict=False)]

    rows = [r for rs in await asyncio.gather(*(one(i, p, s) for i, p in enumerate(problems)
                                                for s in range(samples))) for r in rs]
    if not rows:
        raise InvalidInput(f"no cue tokens {tuple(cues)} in any sampled trace: use other cues "
                           f"(e.g. '\\n' or '.') or longer traces")
    meta = {"cues": list(cues), "suffix": suffix, "label": label, "model": generator.model_name,
            "problems": len(problems), "samples": samples}
    return ForcedExits(features=np.stack([r[0] for r in rows]).astype(np.float64),
                       labels=np.array([r[1] for r in rows]), groups=np.array([r[2] for r in rows]),
                       positions=np.array([r[3] for r in rows]), answers=[r[4] for r in rows], meta=meta)


def split_by_group(data: ForcedExits, calibration_fraction: float, seed: int = 0) -> tuple[ForcedExits, ForcedExits]:
    """Random split of the problems (not the rows) into a training and a calibration part."""
    if not 0 < calibration_fraction < 1:
        raise InvalidInput(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")
    groups = np.unique(data.groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    n_cal = max(1, int(round(len(groups) * calibration_fraction)))
    if n_cal >= len(groups):
        raise InvalidInput(f"only {len(groups)} problem(s) have forced exits: too few to split")
    cal = np.isin(data.groups, groups[:n_cal])
    return data.subset(~cal), data.subset(cal)


def train_probe(data: ForcedExits, alpha: float = 0.1, calibration_fraction: float = 0.5, l2: float = 1.0,
                seed: int = 0) -> tuple[LinearProbe, dict[str, Any]]:
    """Fit a logistic exit probe on part of `data` and calibrate its threshold on the rest."""
    train, cal = split_by_group(data, calibration_fraction, seed)
    if len(np.unique(train.labels)) < 2:
        raise InvalidInput(f"the training split has only label {int(train.labels[0])} forced exits: need both "
                           f"right and wrong exits (more problems or samples)")
    w, b, mean, scale = fit_logistic(train.features, train.labels, l2=l2)
    probe = LinearProbe(weights=w, bias=b, mean=mean, scale=scale,
                        cues=tuple(data.meta.get("cues", DEFAULT_CUES)),
                        suffix=data.meta.get("suffix", PLAIN_SUFFIX),
                        meta={"model": data.meta.get("model"), "label": data.meta.get("label"),
                              "train_rows": len(train), "l2": l2})
    train_acc = float(np.mean((probe.predict_proba(train.features) > 0.5) == train.labels))
    probe, report = calibrate_probe(probe, cal, alpha)
    report.update({"train_rows": len(train), "train_problems": int(len(np.unique(train.groups))),
                   "train_positive_rate": float(train.labels.mean()), "train_accuracy": train_acc})
    return probe, report


def calibrate_probe(probe: LinearProbe, data: ForcedExits, alpha: float) -> tuple[LinearProbe, dict[str, Any]]:
    """Set `probe`'s threshold by split conformal prediction on `data`'s wrong (label-0) forced exits."""
    scores = probe.predict_proba(data.features)
    negatives = scores[data.labels == 0]
    calibrated = probe.calibrated(negatives, alpha)
    positives = scores[data.labels == 1]
    report = {"alpha": alpha, "threshold": calibrated.threshold, "calibration_rows": len(data),
              "calibration_negatives": int(len(negatives)),
              "calibration_premature_exit_rate": premature_exit_rate(scores, data.labels, calibrated.threshold),
              "calibration_right_exit_rate": float(np.mean(positives > calibrated.threshold)) if len(positives)
              else float("nan")}
    return calibrated, report
