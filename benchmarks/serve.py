"""`ttc serve` under load: no lost or mixed-up answers, passthrough overhead, server CPU, vote latency.

    .venv/bin/python benchmarks/serve.py                          # starts a vLLM server (SmolLM2, CPU)
    .venv/bin/python benchmarks/serve.py --url http://127.0.0.1:8000/v1 --requests 256 --runs 3
    .venv/bin/python benchmarks/serve.py --saturation                # no model: a slow fake upstream

`ttc serve` runs as its own process (`ttc serve --upstream URL`), so its CPU time is read from
/proc apart from the clients'. Sections, measured on the spot:

1. correctness: `--requests` passthrough completions from `--concurrency` concurrent clients, each
   prompt naming its own number and sent with `echo: true` (vLLM returns the prompt before the
   completion), so an answer that went to the wrong client shows; every response id is unique.
2. throughput: the same load straight to vLLM and through ttc serve, alternating, `--runs` times
   each; requests/s and the ratio (goal >= 0.95); the server's CPU seconds per request.
3. a vote: `--vote-requests` chat requests of MajorityVote(n=`--vote-n`) through the server,
   `--vote-concurrency` at a time: p50/p95 latency and the server's CPU per request.

`--saturation` (issue 23; no model needed) measures instead, against an upstream process that
answers every request after `--delay` s (8): `--concurrency` (130) passthrough requests at once,
straight to the upstream and through ttc serve, alternating, `--runs` times: the slowest request
through ttc over the slowest direct one (goal <= 1.1), p50/p95 overhead, the server's CPU per
request, and `/health`'s latency polled every 0.2 s throughout, on the main port and on
`--health-port` (goal: all within 100 ms). Then a
hung upstream: the time passthrough requests take to fail with ttc's `--upstream-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import aiohttp

from ttc.backends.vllm_server import VLLMServer, free_port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


async def load(base: str, model: str, requests: int, concurrency: int, max_tokens: int, offset: int
               ) -> tuple[float, list[str]]:
    """Send the passthrough load; (elapsed seconds, problems found: lost, mixed-up or duplicated)."""
    semaphore = asyncio.Semaphore(concurrency)
    problems: list[str] = []
    ids: set[str] = set()

    async def one(session: aiohttp.ClientSession, k: int) -> None:
        prompt = f"Request {k}: repeat the number {k}. The number is"
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "echo": True}
        async with semaphore, session.post(base + "/completions", json=body) as r:
            data = await r.json(content_type=None)
        if r.status != 200:
            problems.append(f"request {k}: HTTP {r.status} {str(data)[:200]}")
            return
        text = data["choices"][0]["text"]
        if not text.startswith(prompt):
            problems.append(f"request {k}: answer of another prompt: {text[:80]!r}")
        if data["id"] in ids:
            problems.append(f"request {k}: duplicate response id {data['id']}")
        ids.add(data["id"])

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        started = time.perf_counter()
        await asyncio.gather(*(one(s, offset + k) for k in range(requests)))
        elapsed = time.perf_counter() - started
    if len(ids) + len([p for p in problems if "HTTP" in p]) != requests:
        problems.append(f"{requests - len(ids)} answers missing")
    return elapsed, problems


async def votes(base: str, model: str, requests: int, concurrency: int, n: int, max_tokens: int
                ) -> tuple[list[float], list[str]]:
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    problems: list[str] = []

    async def one(session: aiohttp.ClientSession, k: int) -> None:
        body = {"model": model, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"What is {k} + {k}? Answer with the number."}],
                "ttc": {"strategy": "majority", "n": n, "temperature": 0.8, "seed": k, "return_candidates": True}}
        async with semaphore:
            started = time.perf_counter()
            async with session.post(base + "/chat/completions", json=body) as r:
                data = await r.json(content_type=None)
            latencies.append(time.perf_counter() - started)
        if r.status != 200:
            problems.append(f"vote {k}: HTTP {r.status} {str(data)[:200]}")
        elif len(data["ttc"]["candidates"]) != n:
            problems.append(f"vote {k}: {len(data['ttc']['candidates'])} candidates")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        await asyncio.gather(*(one(s, k) for k in range(requests)))
    return latencies, problems


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


# -- the saturation case (issue 23) -------------------------------------------------------------
def slow_upstream(port: int, delay: float, hang: bool) -> None:
    """An OpenAI-compatible stand-in answering each chat request after `delay` s (never, if
    `hang`); `/health` and `/v1/models` answer at once. Runs until killed."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(10**6 if hang else delay)
        return web.json_response({"id": "x", "object": "chat.completion", "model": "slow",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "slow", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", ok)
    app.router.add_get("/health", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


async def burst(base: str, concurrency: int, timeout: float) -> list[float | str]:
    """`concurrency` passthrough chat requests at once; each one's latency, or its error."""
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async def one() -> float | str:
            started = time.monotonic()
            try:
                async with session.post(base + "/chat/completions", json=body) as r:
                    await r.read()
                    return time.monotonic() - started if r.status == 200 else f"HTTP {r.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"

        return await asyncio.gather(*(one() for _ in range(concurrency)))


async def burst_with_health(base: str, roots: list[str], concurrency: int, timeout: float
                            ) -> tuple[list[float | str], list[list[float]]]:
    """A burst, with each of `roots`' /health polled every 0.2 s while it runs (their latencies, in
    seconds), from threads of their own, so that the burst's client loop does not delay the clocks."""
    import threading

    health: list[list[float]] = [[] for _ in roots]
    done = threading.Event()

    def poll(root: str, out: list[float]) -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(root + "/health", timeout=30) as r:
                    r.read()
                    out.append(time.monotonic() - started if r.status == 200 else float("inf"))
            except OSError:
                out.append(float("inf"))
            done.wait(0.2)

    pollers = [threading.Thread(target=poll, args=(root, out), daemon=True)
               for root, out in zip(roots, health, strict=True)]
    for poller in pollers:
        poller.start()
    results = await burst(base, concurrency, timeout)
    done.set()
    for poller in pollers:
        poller.join()
    return results, health


def start_upstream(delay: float, hang: bool) -> tuple[subprocess.Popen, str]:
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, __file__, "--_upstream", str(port), str(delay), "1" if hang else "0"])
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(url)
    return proc, url


def start_serve(url: str, *flags: str) -> tuple[subprocess.Popen, str, str]:
    """`ttc serve` in front of `url`: the process, its root URL and its --health-port root URL."""
    port, probes = free_port("127.0.0.1"), free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "ttc.cli", "serve", "--upstream", url, "--port", str(port),
                             "--health-port", str(probes), *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/v1")
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{probes}"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def saturation(args: argparse.Namespace) -> int:
    out: dict = {"args": vars(args), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    upstream, url = start_upstream(args.delay, hang=False)
    serve, root, probes = start_serve(url)
    try:
        rows = []
        for run in range(args.runs):
            for target in (("direct", "ttc") if run % 2 == 0 else ("ttc", "direct")):
                base = url if target == "direct" else root + "/v1"
                cpu = cpu_seconds(serve.pid)
                results, (health, health_port) = asyncio.run(burst_with_health(
                    base, [root, probes] if target == "ttc" else ["", ""], args.concurrency, 10 * args.delay)) \
                    if target == "ttc" else (asyncio.run(burst(base, args.concurrency, 10 * args.delay)), ([], []))
                ok = sorted(r for r in results if isinstance(r, float))
                errors = [r for r in results if not isinstance(r, float)]
                row = {"run": run, "target": target, "slowest": ok[-1] if ok else None,
                       "p50": percentile(ok, 50) if ok else None, "p95": percentile(ok, 95) if ok else None,
                       "errors": errors[:5], "error_count": len(errors),
                       "server_cpu_ms_per_request": 1000 * (cpu_seconds(serve.pid) - cpu) / args.concurrency
                       if target == "ttc" else None,
                       "health_max_ms": 1000 * max(health) if health else None, "health_polls": len(health),
                       "health_over_100ms": sum(h > 0.1 for h in health),
                       "health_port_max_ms": 1000 * max(health_port) if health_port else None,
                       "health_port_over_100ms": sum(h > 0.1 for h in health_port)}
                rows.append(row)
                print(f"run {run} {target:6s}: {len(ok)} ok, {len(errors)} failed; slowest {row['slowest']:.2f} s, "
                      f"p50 {row['p50']:.2f} s, p95 {row['p95']:.2f} s"
                      + (f"; /health max {row['health_max_ms']:.0f} ms ({row['health_over_100ms']} of {len(health)} "
                         f"polls over 100 ms), on --health-port max {row['health_port_max_ms']:.0f} ms "
                         f"({row['health_port_over_100ms']} of {len(health_port)}); server CPU "
                         f"{row['server_cpu_ms_per_request']:.2f} ms/request" if target == "ttc" else ""), flush=True)
        pairs = [(next(r for r in rows if r["run"] == k and r["target"] == "direct"),
                  next(r for r in rows if r["run"] == k and r["target"] == "ttc")) for k in range(args.runs)]
        slowest = [t["slowest"] / d["slowest"] for d, t in pairs]
        p50 = [1000 * (t["p50"] - d["p50"]) for d, t in pairs]
        p95 = [1000 * (t["p95"] - d["p95"]) for d, t in pairs]
        health_max = max(t["health_max_ms"] for _, t in pairs)
        health_port_max = max(t["health_port_max_ms"] for _, t in pairs)
        print(f"slowest through ttc / slowest direct per run: {', '.join(f'{x:.3f}' for x in slowest)} (goal <= 1.1)")
        print(f"overhead p50: {', '.join(f'{x:.0f}' for x in p50)} ms; p95: {', '.join(f'{x:.0f}' for x in p95)} ms")
        print(f"/health worst latency during the bursts: {health_max:.0f} ms on the main port, "
              f"{health_port_max:.0f} ms on --health-port (goal <= 100)")
        out |= {"rows": rows, "slowest_ratio": slowest, "overhead_p50_ms": p50, "overhead_p95_ms": p95,
                "health_max_ms": health_max, "health_port_max_ms": health_port_max}
    finally:
        stop(serve)
        stop(upstream)

    hung, url = start_upstream(args.delay, hang=True)
    serve, root, _ = start_serve(url, "--upstream-timeout", str(args.hang_timeout))
    try:
        started = time.monotonic()
        results = asyncio.run(burst(root + "/v1", 8, 10 * args.hang_timeout + 30))
        print(f"hung upstream, --upstream-timeout {args.hang_timeout:g}: 8 passthrough requests -> "
              f"{sorted(set(map(str, results)))} after {time.monotonic() - started:.1f} s")
        out["hung"] = {"timeout": args.hang_timeout, "results": [str(r) for r in results],
                       "elapsed": time.monotonic() - started}
    finally:
        stop(serve)
        stop(hung)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    errors = sum(r["error_count"] for r in rows)
    return 1 if errors or max(slowest) > 1.1 or health_port_max > 100 else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="an existing vLLM server's /v1 URL (default: start one)")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--vote-requests", type=int, default=16)
    p.add_argument("--vote-concurrency", type=int, default=8)
    p.add_argument("--vote-n", type=int, default=8)
    p.add_argument("--vote-max-tokens", type=int, default=32)
    p.add_argument("--json", default=None, help="write the numbers to this file")
    p.add_argument("--saturation", action="store_true", help="the saturation case (see above); no model needed")
    p.add_argument("--delay", type=float, default=8.0, help="--saturation: seconds the upstream takes per answer")
    p.add_argument("--hang-timeout", type=float, default=5.0, help="--saturation: ttc's --upstream-timeout for "
                   "the hung upstream")
    p.add_argument("--_upstream", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._upstream:
        port, delay, hang = args._upstream
        slow_upstream(int(port), float(delay), hang == "1")
        return 0
    if args.saturation:
        if args.concurrency == 64:  # the parser's default is the other sections'
            args.concurrency = 130
        return saturation(args)

    vllm = None
    url = args.url
    if url is None:
        vllm = VLLMServer()
        vllm.start()
        url = vllm.url
    port = free_port("127.0.0.1")
    serve = subprocess.Popen([sys.executable, "-m", "ttc.cli", "serve", "--upstream", url, "--port", str(port),
                              "--max-in-flight", str(max(64, args.concurrency))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {"args": vars(args), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    try:
        ttc_url = f"http://127.0.0.1:{port}/v1"
        wait_ready(ttc_url)
        with urllib.request.urlopen(url + "/models") as r:
            model = json.loads(r.read())["data"][0]["id"]
        for base in (url, ttc_url):  # warm-up, not counted (the server's math-verify helper starts meanwhile)
            asyncio.run(load(base, model, 16, 16, args.max_tokens, 10**6))
        time.sleep(5)

        rows = []
        problems: list[str] = []
        for run in range(args.runs):
            for target, base in (("vllm", url), ("ttc", ttc_url)) if run % 2 == 0 else \
                    (("ttc", ttc_url), ("vllm", url)):
                cpu = cpu_seconds(serve.pid)
                elapsed, found = asyncio.run(load(base, model, args.requests, args.concurrency, args.max_tokens,
                                                  run * 10**5 + (0 if target == "vllm" else 5 * 10**4)))
                rows.append({"run": run, "target": target, "seconds": elapsed, "rps": args.requests / elapsed,
                             "server_cpu_s": cpu_seconds(serve.pid) - cpu if target == "ttc" else None})
                problems += [f"{target} run {run}: {f}" for f in found]
                print(f"run {run} {target:4s}: {args.requests} requests in {elapsed:6.2f} s = "
                      f"{args.requests / elapsed:6.2f} req/s", flush=True)
        ratios = []
        for run in range(args.runs):
            direct = next(r for r in rows if r["run"] == run and r["target"] == "vllm")
            via = next(r for r in rows if r["run"] == run and r["target"] == "ttc")
            ratios.append(via["rps"] / direct["rps"])
        cpu_per_request = statistics.mean(r["server_cpu_s"] for r in rows if r["target"] == "ttc") / args.requests
        print(f"passthrough throughput ratio (ttc / vLLM) per run: {', '.join(f'{x:.3f}' for x in ratios)}; "
              f"mean {statistics.mean(ratios):.3f}")
        print(f"ttc serve CPU per passthrough request: {1000 * cpu_per_request:.2f} ms")
        print(f"lost or mixed-up answers: {len(problems)}" + "".join(f"\n  {x}" for x in problems[:20]))

        cpu = cpu_seconds(serve.pid)
        latencies, vote_problems = asyncio.run(votes(ttc_url, model, args.vote_requests, args.vote_concurrency,
                                                     args.vote_n, args.vote_max_tokens))
        vote_cpu = (cpu_seconds(serve.pid) - cpu) / args.vote_requests
        print(f"MajorityVote(n={args.vote_n}, max_tokens={args.vote_max_tokens}) through ttc serve, "
              f"{args.vote_requests} requests, {args.vote_concurrency} at a time: "
              f"p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s; "
              f"server CPU {1000 * vote_cpu:.1f} ms per vote; failures: {len(vote_problems)}"
              + "".join(f"\n  {x}" for x in vote_problems[:10]))
        out |= {"rows": rows, "ratios": ratios, "mean_ratio": statistics.mean(ratios),
                "server_cpu_ms_per_request": 1000 * cpu_per_request, "problems": problems,
                "vote_latencies": latencies, "vote_p50": percentile(latencies, 50),
                "vote_p95": percentile(latencies, 95), "vote_server_cpu_ms": 1000 * vote_cpu,
                "vote_problems": vote_problems}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
        return 1 if problems or vote_problems else 0
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        if vllm is not None:
            vllm.stop()


if __name__ == "__main__":
    sys.exit(main())
