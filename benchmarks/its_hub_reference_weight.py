"""Which weight its_hub's ParticleGibbs gives the reference particle in a conditional sweep (issue 25).

    ~/.cache/its_hub_venv/bin/python benchmarks/its_hub_reference_weight.py

Runs its_hub's own `ParticleGibbs` (in its venv: `pip install 'its-hub[lm]==1.2.0'`) with 4
particles x 2 iterations, 3 steps, a fake model and a PRM whose score depends only on the number of
steps (0.2 after 1 step, 0.5 after 2, 0.8 after 3), and prints, for every resampling, each entry's
(steps, stopped, log-weight relative to the first entry). With each prefix weighted by its own
score (its_hub's issue #54, ttc's rule), every entry of a round would have the same weight. its_hub
1.2.0 prints, in the second sweep's first round, the 3-step reference at +2.773 =
logit(0.8) - logit(0.2): it competes with its final score, since it is a stopped particle and
stopped particles keep their last weight (PR #84's "Stopped particles use their final weight").
"""

import asyncio
import random

import numpy as np
from its_hub.api.reward_models.prm import AbstractProcessRewardModel
from its_hub.core.algorithms.particle_gibbs import ParticleGibbs
from its_hub.core.lms.step_generation import StepGeneration


class FakeLM:
    async def agenerate(self, messages_lst, **kwargs):  # noqa: ANN001, ANN201, ARG002 - its_hub's call
        return [{"role": "assistant", "content": f"s{random.randint(0, 9)}"} for _ in messages_lst]


class DepthPRM(AbstractProcessRewardModel):
    """A score that depends only on the number of steps."""

    async def ascore(self, prompt, responses):  # noqa: ANN001, ANN201
        return [{1: 0.2, 2: 0.5, 3: 0.8}[r.count("\n\n") + 1] for r in responses]

    def score(self, prompt, responses):  # noqa: ANN001, ANN201
        return asyncio.run(self.ascore(prompt, responses))


def main() -> None:
    random.seed(0)
    np.random.seed(0)
    pg = ParticleGibbs(StepGeneration(max_steps=2, step_token="\n\n"), DepthPRM(), num_iterations=2)
    resample = pg._resampling

    def spy(particles, probabilities, n):  # noqa: ANN001, ANN202
        logs = np.log(np.asarray(probabilities))
        rows = zip(particles, logs, strict=True)
        print([(len(p.steps), p.is_stopped, round(float(w - logs[0]), 3)) for p, w in rows])
        return resample(particles, probabilities, n)

    pg._resampling = spy
    asyncio.run(pg.ainfer(FakeLM(), "q", budget=8, return_response_only=False))


if __name__ == "__main__":
    main()
