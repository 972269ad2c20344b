"""its_hub's ParticleGibbs on the demo problems through the same vLLM server, with ttc's reward scores (issue 25).

its_hub lives in its own virtual environment (it pins its own openai/aiohttp; ttc is not installed
there), so this script has two halves:

    # 1. in its_hub's venv (python -m venv ~/.cache/its_hub_venv && ~/.cache/its_hub_venv/bin/pip install
    #    'its-hub[lm]==1.2.0'): run its_hub's ParticleGibbs, write one JSON line per problem
    nice -n 10 ~/.cache/its_hub_venv/bin/python benchmarks/its_hub_particle_gibbs.py run \\
        --url http://127.0.0.1:PORT/v1 --problems 50 --out its_hub_pg.jsonl
    # 2. in ttc's venv: grade those answers with ttc's answer extraction, print the row
    .venv/bin/python benchmarks/its_hub_particle_gibbs.py grade its_hub_pg.jsonl

The same reward scores: its_hub's PRM here is `JudgePRM`, which asks the server exactly what
`ttc.verifiers.LLMJudge` asks (its `STEP_INSTRUCTION`, the partial solution split into steps at ttc's
step delimiter "\\n\\n", "Is step k correct?" for the last step, one greedy token with its top-20
log-probabilities) and scores P(Yes) / (P(Yes) + P(No)), as LLMJudge does, through the chat endpoint
(the server applies the chat template, as ttc's backend does). The same settings as
`benchmarks/equal_tokens.py particle_gibbs`: 3 particles x 2 iterations (its_hub's budget 6), steps
split at "\\n\\n", at most 2 steps of 48 tokens, temperature 0.7, the demo prompt. Requests and server
tokens are `/metrics` deltas, as in equal_tokens.py (run nothing else on the server meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
import urllib.request

#: ttc.verifiers.judge.STEP_INSTRUCTION (copied: ttc is not installed in its_hub's venv)
STEP_INSTRUCTION = ("Problem: {question}\n\nSolution steps:\n{steps}\n\n"
                    "Is step {k} correct? Answer Yes or No.")
DELIMITER = "\n\n"  # ttc.types.DEFAULT_DELIMITER
DEMO_INSTRUCTION = "{question}\nGive the final answer as a number."  # ttc.demo.DEMO_PROMPT
_METRICS = {"requests": "vllm:request_success_total", "prompt_tokens": "vllm:prompt_tokens_total",
            "generation_tokens": "vllm:generation_tokens_total"}


def server_counts(url: str) -> dict[str, float]:
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for key, metric in _METRICS.items():
        pattern = re.compile(rf"^{re.escape(metric)}(?:{{[^}}]*}})?\s+([0-9.eE+-]+)$", re.MULTILINE)
        out[key] = sum(float(v) for v in pattern.findall(text))
    return out


def run(args: argparse.Namespace) -> None:
    from its_hub.api.reward_models.prm import AbstractProcessRewardModel
    from its_hub.core.algorithms.particle_gibbs import ParticleGibbs
    from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
    from its_hub.core.lms.step_generation import StepGeneration
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=args.url, api_key="none")
    model = args.model

    class JudgePRM(AbstractProcessRewardModel):
        """ttc's LLMJudge, asked over HTTP: P(Yes) of "Is step k correct?" for the last step."""

        def __init__(self, question: str):
            self.question = question
            self.calls = 0

        async def _one(self, response: str) -> float:
            steps = [s for s in response.split(DELIMITER) if s.strip()] or [response]
            listed = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
            content = STEP_INSTRUCTION.format(question=self.question, steps=listed, k=len(steps))
            out = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                                       max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20)
            self.calls += 1
            top = out.choices[0].logprobs.content[0].top_logprobs
            yes = sum(math.exp(t.logprob) for t in top if t.token.strip().strip(".,:;!\"'").lower() == "yes")
            no = sum(math.exp(t.logprob) for t in top if t.token.strip().strip(".,:;!\"'").lower() == "no")
            return yes / (yes + no) if yes + no > 0 else 0.5

        async def ascore(self, prompt_or_messages, steps):  # noqa: ANN001, ANN201 - its_hub's signature
            return list(await asyncio.gather(*(self._one(r) for r in steps)))

        def score(self, prompt_or_messages, steps):  # noqa: ANN001, ANN201
            return asyncio.run(self.ascore(prompt_or_messages, steps))

    with open(args.questions) as f:
        problems = [json.loads(line) for line in f][: args.problems]
    lm = OpenAICompatibleLanguageModel(endpoint=args.url, api_key="none", model_name=model,
                                       max_tokens=args.step_tokens, temperature=0.7)
    before = server_counts(args.url)
    start = time.monotonic()

    async def solve(p: dict, sem: asyncio.Semaphore) -> dict:
        async with sem:
            prm = JudgePRM(p["question"])
            sg = StepGeneration(max_steps=args.max_steps, step_token=DELIMITER, temperature=0.7)
            pg = ParticleGibbs(sg, prm, num_iterations=args.iterations)
            messages = [{"role": "user", "content": DEMO_INSTRUCTION.format(question=p["question"])}]
            try:
                response = await pg.ainfer(lm, messages, budget=args.particles * args.iterations)
                # `the_one`: the chosen particle's chat message ({"role": "assistant", "content": ...})
                text = response.get("content", "") if isinstance(response, dict) else str(response)
                return {"id": p["id"], "response": text, "prm_calls": prm.calls}
            except Exception as exc:  # noqa: BLE001 - one failed problem is recorded, not fatal
                return {"id": p["id"], "error": f"{type(exc).__name__}: {exc}", "prm_calls": prm.calls}

    async def main() -> list[dict]:
        sem = asyncio.Semaphore(args.concurrency)
        return await asyncio.gather(*(solve(p, sem) for p in problems))

    rows = asyncio.run(main())
    wall = time.monotonic() - start
    after = server_counts(args.url)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"server": {k: after[k] - before[k] for k in after}, "wall_seconds": wall}) + "\n")


def questions(args: argparse.Namespace) -> None:
    from ttc.demo import demo_problems

    with open(args.out, "w") as f:
        for p in demo_problems(args.problems):
            f.write(json.dumps({"id": p.id, "question": p.question, "gold": p.answer}) + "\n")


def grade(args: argparse.Namespace) -> None:
    from ttc.answers import equivalent, extract
    from ttc.eval import wilson_interval

    with open(args.questions) as f:
        gold = {q["id"]: q["gold"] for q in map(json.loads, f)}
    with open(args.results) as f:
        lines = [json.loads(line) for line in f]
    rows, summary = lines[:-1], lines[-1]
    correct = [("response" in r and (a := extract(r["response"])) is not None and equivalent(a, gold[r["id"]]))
               for r in rows]
    low, high = wilson_interval(sum(correct), len(correct))
    n = len(rows)
    print(json.dumps({"strategy": "its_hub ParticleGibbs", "problems": n, "accuracy": sum(correct) / n,
                      "ci95": [low, high], "failed": sum("error" in r for r in rows),
                      "prm_calls_per_problem": sum(r["prm_calls"] for r in rows) / n,
                      "server_per_problem": {k: v / n for k, v in summary["server"].items()},
                      "wall_seconds": summary["wall_seconds"]}))


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("questions", help="(ttc's venv) write the demo problems as JSONL")
    q.add_argument("--problems", type=int, default=50)
    q.add_argument("--out", default="demo_questions.jsonl")
    r = sub.add_parser("run", help="(its_hub's venv) run its_hub's ParticleGibbs")
    r.add_argument("--url", required=True)
    r.add_argument("--model", default=None, help="served model name (default: the server's first)")
    r.add_argument("--questions", default="demo_questions.jsonl")
    r.add_argument("--problems", type=int, default=50)
    r.add_argument("--particles", type=int, default=3)
    r.add_argument("--iterations", type=int, default=2)
    r.add_argument("--max-steps", type=int, default=2)
    r.add_argument("--step-tokens", type=int, default=48)
    r.add_argument("--concurrency", type=int, default=25)
    r.add_argument("--out", default="its_hub_pg.jsonl")
    g = sub.add_parser("grade", help="(ttc's venv) grade run's answers")
    g.add_argument("results")
    g.add_argument("--questions", default="demo_questions.jsonl")
    args = ap.parse_args()
    if args.cmd == "run" and args.model is None:
        with urllib.request.urlopen(args.url.rstrip("/") + "/models", timeout=10) as resp:
            args.model = json.load(resp)["data"][0]["id"]
    {"questions": questions, "run": run, "grade": grade}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(cli())
