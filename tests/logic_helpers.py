"""Shared by the tests/test_logic_*.py files: a scripted step tree with a table PRM."""

from __future__ import annotations

import re

from ttc.backends import Scripted
from ttc.verifiers import ProgrammaticPRM

NAME = re.compile(r"Step (\w+)")


def step_name(text: str) -> str:
    return NAME.match(text.strip()).group(1)


def toy(children: dict[str, list[str]], scores: dict[str, float], answers: dict[str, str]):
    """A scripted tree: the i-th sample of a request from node X is children[X][(i + seed) % k]
    (seed: the request's, 0 without one); steps named in `answers` end with a boxed answer (the
    trace finishes). The PRM scores a step by its name from `scores`. Returns (backend, prm)."""

    def script(prompt, params, i):
        done = [s for s in prompt.split("<assistant>\n", 1)[1].split("\n\n") if s.strip()]
        parent = step_name(done[-1]) if done else "root"
        kids = children[parent]
        name = kids[(i + (params.seed or 0)) % len(kids)]
        if name in answers:
            return f"Step {name}: so \\boxed{{{answers[name]}}}"
        return f"Step {name}: more.\n\nignored"

    prm = ProgrammaticPRM(lambda problem, steps: scores[step_name(steps[-1])], name="table")
    return Scripted(script), prm


def node_name(node) -> str:
    return step_name(node.trace.steps[-1].text)
