"""ttc's ParticleGibbs against its_hub's on the same server with the same reward scores (issue 25).

its_hub lives in its own virtual environment (it pins its own openai/aiohttp; ttc is not installed
there). Both sides talk to the server through `benchmarks/pg_gateway.py` (standard library only), one
loopback port per side: it counts each side's requests and tokens on the client side of the server
(the server may be shared: its /metrics would hold other users' traffic) and serves both sides the
same step reward (`POST /reward`: ttc's LLMJudge question, asked once per distinct input and cached,
so an input scores the same on both sides).

    python benchmarks/pg_gateway.py --upstream http://127.0.0.1:PORT/v1 --ports 8941 8942 \\
        --names ttc its_hub --stats gateway_stats.json &
    .venv/bin/python benchmarks/its_hub_particle_gibbs.py questions --problems 200 --out demo_questions.jsonl
    # alternate the two sides in blocks of problems (same load for both), each resumable
    nice -n 10 .venv/bin/python benchmarks/its_hub_particle_gibbs.py ttc --gateway http://127.0.0.1:8941 \\
        --questions demo_questions.jsonl --start 0 --problems 20 --out pg_ttc.jsonl
    nice -n 10 ~/.cache/its_hub_venv/bin/python benchmarks/its_hub_particle_gibbs.py its_hub \\
        --gateway http://127.0.0.1:8942 --questions demo_questions.jsonl --start 0 --problems 20 --out pg_its_hub.jsonl
    .venv/bin/python benchmarks/its_hub_particle_gibbs.py report pg_ttc.jsonl pg_its_hub.jsonl \\
        --questions demo_questions.jsonl

The same settings on both sides: 4 particles x 2 iterations (its_hub's budget 8), the demo prompt as
one user message (its_hub gets it as a string: given as messages, its ParticleGibbs would send
"user: ..." as the prompt text), steps cut at "\\n\\n" with at most 48 tokens at temperature 0.7,
at most 3 steps, a trace finished when a step ends with end-of-text or the text holds a closed
\\boxed{} (ttc's rule; its_hub's stock `StepGeneration` has no end-of-text test and takes
`max_steps + 1` steps, so its side uses `TtcSteps` below, a `StepGeneration` that makes the same
requests and stops as ttc does; `--stock-steps` runs its_hub's own instead), weights
softmax(logit(reward)) (temperature 1), multinomial resampling, the answer the final particle with
the highest reward. The two algorithms are each library's own, unmodified.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

DELIMITER = "\n\n"  # ttc.types.DEFAULT_DELIMITER
DEMO_INSTRUCTION = "{question}\nGive the final answer as a number."  # ttc.demo.DEMO_PROMPT
_BOXED = re.compile(r"\\(?:boxed|fbox)\{")
_POOL = ThreadPoolExecutor(64)  # reward calls block on HTTP; enough threads not to queue them


def post_json(url: str, payload: dict, tries: int = 5) -> dict:
    """POST `payload`, retrying a dropped connection (the gateway bills only answered calls)."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"},
                                 method="POST")
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                return json.load(r)
        except (ConnectionError, urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.HTTPError) or attempt == tries - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


async def reward(gateway: str, question: str, steps: list[str]) -> dict:
    """The gateway's shared reward of the last of `steps`."""
    return await asyncio.get_running_loop().run_in_executor(
        _POOL, post_json, f"{gateway}/reward", {"question": question, "steps": steps})


def load_questions(args: argparse.Namespace) -> list[dict]:
    with open(args.questions) as f:
        problems = [json.loads(line) for line in f]
    return problems[args.start: args.start + args.problems]


def done_ids(path: str) -> set[str]:
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {d["id"] for d in map(json.loads, f) if "id" in d and not d.get("error")}  # failed: run again


def stats_delta(before: dict, after: dict, side: str) -> dict:
    a, b = after.get(side, {}), before.get(side, {})
    return {k: a[k] - b.get(k, 0) for k in a}


def append_block(path: str, rows: list[dict], block: dict) -> None:
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"block": block}) + "\n")


def has_closed_box(text: str) -> bool:
    """A closed \\boxed{...} in `text` (ttc.steps.has_closed_box, by brace counting)."""
    for m in _BOXED.finditer(text):
        depth = 1
        for ch in text[m.end():]:
            depth += (ch == "{") - (ch == "}")
            if depth == 0:
                return True
    return False


# --------------------------------------------------------------------------------------------- ttc


def run_ttc(args: argparse.Namespace) -> None:
    import ttc
    from ttc.demo import DEMO_PROMPT
    from ttc.steps import StepConfig
    from ttc.verifiers import ProcessRewardModel

    gateway = args.gateway

    class GatewayPRM(ProcessRewardModel):
        """The gateway's shared reward; step prefixes already scored are cached, as LLMJudge does."""

        name = "gateway_judge"

        def __init__(self) -> None:
            self.cache: dict[tuple, float] = {}

        async def score(self, problem, traces, ctx):  # noqa: ANN001, ANN201 - ttc's signature
            todo = {}
            for steps in traces:
                for k in range(1, len(steps) + 1):
                    key = (problem.question, tuple(steps[:k]))
                    if key not in self.cache:
                        todo[key] = list(steps[:k])
            answers = await asyncio.gather(*(reward(gateway, problem.question, s) for s in todo.values()))
            for key, answer in zip(todo, answers, strict=True):
                self.cache[key] = answer["score"]
                ctx.record_verifier_tokens(answer["prompt_tokens"] + answer["completion_tokens"])
            return [[self.cache[(problem.question, tuple(steps[:k]))] for k in range(1, len(steps) + 1)]
                    for steps in traces]

    steps = StepConfig(max_steps=args.max_steps, max_step_tokens=args.step_tokens, final_completion=False)
    strategy = ttc.ParticleGibbs(particles=args.particles, iterations=args.iterations, prm=GatewayPRM(),
                                 steps=steps, prompt=DEMO_PROMPT,
                                 params=ttc.SamplingParams(temperature=0.7, top_p=1.0, max_tokens=args.step_tokens))
    todo = [q for q in load_questions(args) if q["id"] not in done_ids(args.out)]
    if not todo:
        return
    problems = [ttc.Problem(question=q["question"], answer=q["gold"], id=q["id"]) for q in todo]
    llm = ttc.backends.OpenAICompatible(f"{gateway}/v1")
    before = get_json(f"{gateway}/stats")
    start = time.monotonic()
    results = ttc.solve_many(strategy, problems, llm, concurrency=args.concurrency, seed=args.seed, progress=False)
    wall = time.monotonic() - start
    after = get_json(f"{gateway}/stats")
    rows = []
    for q, r in zip(todo, results, strict=True):
        chosen = r.candidates[r.details["chosen"]] if r.ok and "chosen" in r.details else None
        row = {"id": q["id"], "answer": r.answer, "error": r.error,
               "text": chosen.text if chosen else None,
               "finished": chosen is not None and chosen.finish_reason in ("eos", "boxed"),
               "usage": {k: getattr(r.usage, k) for k in ("prompt_tokens", "completion_tokens", "generator_calls",
                                                            "verifier_tokens", "verifier_calls")}}
        if r.ok:
            row["references"] = len(r.details["references"])
        rows.append(row)
    append_block(args.out, rows, {"side": "ttc", "problems": len(todo), "wall_seconds": wall,
                                  "counts": stats_delta(before, after, args.side)})


# ----------------------------------------------------------------------------------------- its_hub


def run_its_hub(args: argparse.Namespace) -> None:
    import numpy as np
    from its_hub.api.reward_models.prm import AbstractProcessRewardModel
    from its_hub.core.algorithms.particle_gibbs import ParticleGibbs
    from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
    from its_hub.core.lms.step_generation import StepGeneration
    from its_hub.core.utils import extract_content_from_lm_response

    gateway = args.gateway
    model = get_json(f"{gateway}/v1/models")["data"][0]["id"]

    class GatewayPRM(AbstractProcessRewardModel):
        """The gateway's shared reward of a partial response's last step (split at the delimiter)."""

        def __init__(self, question: str):
            self.question = question

        async def ascore(self, prompt_or_messages, steps):  # noqa: ANN001, ANN201 - its_hub's signature
            answers = await asyncio.gather(*(reward(gateway, self.question, r.split(DELIMITER)) for r in steps))
            return [a["score"] for a in answers]

        def score(self, prompt_or_messages, steps):  # noqa: ANN001, ANN201
            return asyncio.run(self.ascore(prompt_or_messages, steps))

    class TtcSteps(StepGeneration):
        """its_hub's step requests (chat, the steps so far as an assistant message continued with
        `continue_final_message`, stop at the delimiter), stopped as ttc stops a trace: after
        `max_steps` steps, at end-of-text (vLLM's finish_reason "stop" with no stop_reason), or
        at a closed \\boxed{}. its_hub's own stops only after max_steps + 1 steps (or at a
        `stop_token` in the text) and keeps asking a finished text for more steps."""

        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            self.ended = set()  # the texts whose last step ended with end-of-text (or closed a box)

        async def aforward(self, lm, prompt_or_prompts, steps_so_far=None, tools=None,  # noqa: ANN001, ANN201
                           tool_choice=None):
            from its_hub.api import ChatMessage

            assert isinstance(prompt_or_prompts, list), "ParticleGibbs asks in batches"
            messages_lst = []
            for prompt, so_far in zip(prompt_or_prompts, steps_so_far, strict=True):
                messages = [ChatMessage(role="user", content=prompt)]
                if so_far:
                    messages.append(ChatMessage(role="assistant", content=self._post_process(so_far)))
                messages_lst.append(messages)
            responses = await lm.agenerate(messages_lst, stop=self.step_token, temperature=self.temperature,
                                           include_stop_str_in_output=False)
            out = []
            for so_far, response in zip(steps_so_far, responses, strict=True):
                step = extract_content_from_lm_response(response)
                raw = response.get("_raw_choice", {})
                eos = raw.get("finish_reason") == "stop" and raw.get("stop_reason") is None
                text = DELIMITER.join([*so_far, step])
                if eos or has_closed_box(text):
                    self.ended.add(text)
                out.append((step, len(so_far) + 1 >= self.max_steps or eos or has_closed_box(text)))
            return out

    todo = [q for q in load_questions(args) if q["id"] not in done_ids(args.out)]
    if not todo:
        return
    random.seed(args.seed)
    np.random.seed(args.seed)
    lm = OpenAICompatibleLanguageModel(endpoint=f"{gateway}/v1", api_key="none", model_name=model,
                                       max_tokens=args.step_tokens, temperature=0.7, include_raw_choices=True)

    async def solve(q: dict, sem: asyncio.Semaphore) -> dict:
        async with sem:
            if args.stock_steps:  # its_hub's own: max_steps + 1 steps, no end-of-text test
                sg = StepGeneration(max_steps=args.max_steps - 1, step_token=DELIMITER, temperature=0.7)
            else:
                sg = TtcSteps(max_steps=args.max_steps, step_token=DELIMITER, temperature=0.7)
            pg = ParticleGibbs(sg, GatewayPRM(q["question"]), num_iterations=args.iterations)
            try:
                result = await pg.ainfer(lm, DEMO_INSTRUCTION.format(question=q["question"]),
                                         budget=args.particles * args.iterations, return_response_only=False)
                text = result.the_one.get("content", "")
                # finished as ttc reads it: ended with end-of-text or a closed box, not cut at max_steps
                finished = text in sg.ended if isinstance(sg, TtcSteps) else None
                return {"id": q["id"], "response": text, "finished": finished, "steps_used": result.steps_used_lst}
            except Exception as exc:  # noqa: BLE001 - one failed problem is recorded, not fatal
                return {"id": q["id"], "error": f"{type(exc).__name__}: {exc}"}

    async def main() -> list[dict]:
        sem = asyncio.Semaphore(args.concurrency)
        return await asyncio.gather(*(solve(q, sem) for q in todo))

    before = get_json(f"{gateway}/stats")
    start = time.monotonic()
    rows = asyncio.run(main())
    wall = time.monotonic() - start
    after = get_json(f"{gateway}/stats")
    append_block(args.out, rows, {"side": "its_hub", "problems": len(todo), "wall_seconds": wall,
                                  "stock_steps": args.stock_steps, "counts": stats_delta(before, after, args.side)})


# ------------------------------------------------------------------------------------------ report


def questions(args: argparse.Namespace) -> None:
    from ttc.demo import demo_problems

    with open(args.out, "w") as f:
        for p in demo_problems(args.problems):
            f.write(json.dumps({"id": p.id, "question": p.question, "gold": p.answer}) + "\n")


def side_row(path: str, gold: dict[str, str]) -> tuple[dict, dict[str, bool]]:
    """One side's accuracy (95 % Wilson interval) and per-problem counts from its result file."""
    from ttc.answers import equivalent, extract
    from ttc.eval import wilson_interval

    with open(path) as f:
        lines = [json.loads(line) for line in f]
    rows = list({r["id"]: r for r in lines if "id" in r}.values())  # a problem run again: its last row
    blocks = [r["block"] for r in lines if "block" in r]
    correct, lenient = {}, {}
    for r in rows:
        # one rule for both sides (ttc's): a trace cut at max_steps or max_tokens is answered only by an
        # explicit answer (boxed, "the answer is"), a finished one also by its last number; `lenient`
        # reads every chosen text as finished
        text = r.get("text") if "text" in r else r.get("response")
        answer = extract(text, finished=bool(r.get("finished"))) if text else None
        loose = extract(text, finished=True) if text else None
        correct[r["id"]] = answer is not None and equivalent(answer, gold[r["id"]])
        lenient[r["id"]] = loose is not None and equivalent(loose, gold[r["id"]])
    n = len(rows)
    low, high = wilson_interval(sum(correct.values()), n)
    counts: dict[str, float] = {}
    for b in blocks:
        for k, v in b["counts"].items():
            counts[k] = counts.get(k, 0) + v
    per = {k: round(v / n, 2) for k, v in sorted(counts.items())}
    per["server_tokens"] = round(sum(counts.get(k, 0) for k in ("prompt_tokens", "completion_tokens",
                                                                  "reward_prompt_tokens",
                                                                  "reward_completion_tokens")) / n, 1)
    per["server_requests"] = round((counts.get("requests", 0) + counts.get("reward_calls", 0)) / n, 2)
    return {"side": blocks[0]["side"] if blocks else path, "problems": n, "correct": sum(correct.values()),
            "accuracy": round(sum(correct.values()) / n, 4), "ci95": [round(low, 4), round(high, 4)],
            "lenient_accuracy": round(sum(lenient.values()) / n, 4),
            "lenient_ci95": [round(x, 4) for x in wilson_interval(sum(lenient.values()), n)],
            "finished": sum(bool(r.get("finished")) for r in rows),
            "failed": sum(bool(r.get("error")) for r in rows), "per_problem": per,
            "wall_seconds": round(sum(b["wall_seconds"] for b in blocks), 1)}, correct


def report(args: argparse.Namespace) -> None:
    with open(args.questions) as f:
        gold = {q["id"]: q["gold"] for q in map(json.loads, f)}
    rows, correct = zip(*(side_row(p, gold) for p in args.results), strict=True)
    out = {"rows": list(rows)}
    if len(correct) == 2:
        common = sorted(set(correct[0]) & set(correct[1]))
        a, b = correct
        out["paired"] = {"problems": len(common), "both": sum(a[i] and b[i] for i in common),
                         "only_first": sum(a[i] and not b[i] for i in common),
                         "only_second": sum(b[i] and not a[i] for i in common)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("questions", help="(ttc's venv) write the demo problems as JSONL")
    q.add_argument("--problems", type=int, default=200)
    q.add_argument("--out", default="demo_questions.jsonl")
    for name in ("ttc", "its_hub"):
        r = sub.add_parser(name, help=f"({name}'s venv) run {name}'s ParticleGibbs through the gateway")
        r.add_argument("--gateway", required=True, help="this side's gateway port, e.g. http://127.0.0.1:8941")
        r.add_argument("--side", default=name, help="this side's name at the gateway")
        r.add_argument("--questions", default="demo_questions.jsonl")
        r.add_argument("--start", type=int, default=0)
        r.add_argument("--problems", type=int, default=20)
        r.add_argument("--particles", type=int, default=4)
        r.add_argument("--iterations", type=int, default=2)
        r.add_argument("--max-steps", type=int, default=3)
        r.add_argument("--step-tokens", type=int, default=48)
        r.add_argument("--concurrency", type=int, default=16)
        r.add_argument("--seed", type=int, default=0)
        r.add_argument("--out", required=True)
        if name == "its_hub":
            r.add_argument("--stock-steps", action="store_true", help="its_hub's own StepGeneration")
    g = sub.add_parser("report", help="(ttc's venv) grade the sides' answers")
    g.add_argument("results", nargs="+")
    g.add_argument("--questions", default="demo_questions.jsonl")
    g.add_argument("--json", help="write the report here")
    args = ap.parse_args()
    {"questions": questions, "ttc": run_ttc, "its_hub": run_its_hub, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(cli())
