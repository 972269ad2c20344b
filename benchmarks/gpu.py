"""Decode speed of the transformers backend on a GPU, against HF `generate` and the bandwidth floor.

    python benchmarks/gpu.py                          # CUDA: Qwen2.5-0.5B and 1.5B shapes, random weights
    python benchmarks/gpu.py --device cpu --tiny      # any machine: a tiny Qwen2 shape, seconds

No downloads: the models are Qwen2 configs of the real shapes with random weights, and a stub
tokenizer (the benchmark feeds token ids; no EOS, so every sequence runs its full length). What it
measures, per model shape:

- decode step time at batch 1, 16, 64, 128 (one request with n = batch): ttc's `Transformers`
  backend on its CUDA path (static KV cache replayed as CUDA graphs, `decode="auto"`), on its
  dynamic-cache path (`decode="dynamic"`, what it did before), and HF `model.generate`. A step's
  time is (time for 1 + S new tokens - time for 1 new token) / S, so prefill, the batching window
  and start-up cancel out; sampling (temperature 1, seeded) is included, as in real use.
- the memory-bandwidth floor of that step: (weight bytes + KV bytes read at the step's mean context)
  / bandwidth, with the bandwidth measured here by a large device-to-device copy (bytes read +
  written) and, for reference, the GPU's nominal figure; every step time is also given as x over floor.
- n candidates as one batch (one request, n=16) vs the same 16 candidates as sequential requests.
- step-wise vs one-shot: 16 candidates generated as K steps of T tokens (each step re-sends prompt +
  steps so far, 16 concurrent requests, as a beam search does) vs one request for K*T tokens.

Prints a table last and writes JSON to --out (default $OUT/gpu.json when OUT is set).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch

from ttc.backends.transformers import Transformers
from ttc.types import SamplingParams

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B and Qwen2.5-1.5B (their config.json), tied embeddings
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}

# vendor datasheet memory bandwidth, bytes/s, by the name torch reports (first match wins)
NOMINAL_BANDWIDTH = [("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("A100-SXM4-80GB", 2.039e12),
                     ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12), ("L40S", 0.864e12), ("A10G", 0.6e12),
                     ("L4", 0.3e12), ("T4", 0.32e12)]


class StubTokenizer:
    """Token ids in, ids-as-text out: no vocabulary file needed, and no EOS (forced lengths)."""

    pad_token_id = 0
    eos_token_id = None
    model_max_length = 32768
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 1000 + 1 for c in text]}

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: torch.device, size_bytes: int, repeats: int = 10) -> float:
    """Bytes read + written per second by a device-to-device copy (median of `repeats`)."""
    src = torch.empty(size_bytes // 2, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t)
    del src, dst
    return 2 * size_bytes / statistics.median(times)


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(max_position_embeddings=32768, rope_theta=1e6, attn_implementation="sdpa", **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: seconds on a GPU instead of a minute on a CPU
        model = Qwen2ForCausalLM(config)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def model_bytes(model: Any) -> tuple[int, int]:
    """(weight bytes read per step, KV bytes per token of context)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    element = next(model.parameters()).element_size()
    return weights, c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * element


def prompt_ids(length: int, vocab: int, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (length,), generator=g).tolist()


async def timed(coro_fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    await coro_fn()
    sync(device)
    return time.perf_counter() - t


async def ttc_step(backend: Transformers, prompt: list[int], batch: int, steps: int, temperature: float,
                   device: torch.device) -> float:
    """Seconds per decode step at `batch` rows (differenced, so prefill and start-up cancel)."""
    def run(k: int):
        return lambda: backend.generate(prompt, SamplingParams(n=batch, temperature=temperature, max_tokens=k, seed=3))

    await run(1 + steps)()  # warm-up: graph capture for this bucket, allocator
    short = min([await timed(run(1), device) for _ in range(2)])
    full = min([await timed(run(1 + steps), device) for _ in range(2)])
    return max(full - short, 0.0) / steps


def hf_step(model: Any, prompt: list[int], batch: int, steps: int, device: torch.device) -> float:
    ids = torch.tensor([prompt] * batch, device=device)
    mask = torch.ones_like(ids)

    def run(k: int) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                           max_new_tokens=k, min_new_tokens=k, pad_token_id=0, eos_token_id=None)
        sync(device)
        return time.perf_counter() - t

    run(2)  # warm-up
    return max(run(1 + steps) - run(1), 0.0) / steps


async def batch_vs_sequential(backend: Transformers, prompt: list[int], n: int, tokens: int,
                              device: torch.device) -> dict[str, float]:
    params = SamplingParams(n=n, temperature=1.0, max_tokens=tokens, seed=5)
    one = SamplingParams(n=1, temperature=1.0, max_tokens=tokens, seed=5)
    await backend.generate(prompt, params)  # warm-up (graph of this bucket)
    await backend.generate(prompt, one)

    async def sequential():
        for _ in range(n):
            await backend.generate(prompt, one)

    batched = await timed(lambda: backend.generate(prompt, params), device)
    seq = await timed(sequential, device)
    return {"n": n, "tokens": tokens, "batch_s": batched, "sequential_s": seq, "sequential_over_batch": seq / batched}


async def stepwise_vs_oneshot(backend: Transformers, prompt: list[int], n: int, steps: int, step_tokens: int,
                              device: torch.device) -> dict[str, float]:
    async def oneshot():
        await backend.generate(prompt, SamplingParams(n=n, temperature=1.0, max_tokens=steps * step_tokens, seed=7))

    async def stepwise():
        traces = [list(prompt) for _ in range(n)]
        for k in range(steps):
            outs = await asyncio.gather(*(backend.generate(t, SamplingParams(temperature=1.0, max_tokens=step_tokens,
                                                                            seed=11 + 97 * k + i))
                                          for i, t in enumerate(traces)))
            for t, g in zip(traces, outs, strict=False):
                t.extend(g.completions[0].token_ids)

    await oneshot()
    await stepwise()  # warm-up both
    one = await timed(oneshot, device)
    step = await timed(stepwise, device)
    tokens = n * steps * step_tokens
    return {"n": n, "steps": steps, "step_tokens": step_tokens, "oneshot_s": one, "stepwise_s": step,
            "oneshot_tok_s": tokens / one, "stepwise_tok_s": tokens / step, "stepwise_over_oneshot": one / step}


def replay_ms(
    backend: Transformers, batch: int, past: int, attention: str | None = "same", repeats: int = 20
) -> float | None:
    """GPU time of one captured decode step alone (CUDA events around graph replays), or None off CUDA graphs.

    attention="same" times the backend's own graph; None captures a second graph with transformers'
    SDPA (key/value heads repeated), for comparison with the backend's grouped-query decode attention.
    """
    from ttc.backends.transformers import static_decode

    decoder = backend._static
    if decoder is None or not decoder.graphs:
        return None
    bucket = static_decode._bucket(batch, decoder.max_batch_size)
    length = next((length for (b, length) in decoder._runners if b == bucket), None)
    if length is None:
        return None
    if attention == "same":
        runner = decoder._runners[(bucket, length)]
    else:
        with torch.inference_mode():
            runner = static_decode._Runner(decoder.model, decoder.config, bucket, length, True, attention)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            runner.set_length(past)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                runner.step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / repeats)
    return min(times)


def profile_step(backend: Transformers, batch: int, past: int, device: torch.device, steps: int = 5) -> dict[str, Any]:
    """Kernels of one static decode step run eagerly under torch.profiler: how many, and which take the time.

    Graph replay removes the launch gaps but not the kernels, so this says what a fused step would save.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from ttc.backends.transformers import static_decode

    decoder = backend._static
    bucket = static_decode._bucket(batch, decoder.max_batch_size)
    length = next((length for (b, length) in decoder._runners if b == bucket), 512)
    gpu = device.type == "cuda"
    with torch.inference_mode():
        runner = static_decode._Runner(decoder.model, decoder.config, bucket, length, False, decoder.attention)
        runner.set_length(past)
        runner.step()
        sync(device)
        with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                runner.step()
            sync(device)
    kind = DeviceType.CUDA if gpu else DeviceType.CPU
    kernels = [e for e in prof.events() if e.device_type == kind]
    totals: dict[str, list[float]] = {}
    for e in kernels:
        t = totals.setdefault(e.name, [0, 0.0])
        t[0] += 1
        t[1] += getattr(e, "device_time", 0.0) if gpu else getattr(e, "cpu_time", 0.0)
    top = sorted(totals.items(), key=lambda kv: -kv[1][1])[:15]
    return {
        "batch": bucket,
        "kernels_per_step": len(kernels) / steps,
        "kernel_ms_per_step": sum(v[1] for v in totals.values()) / steps / 1e3,
        "top": [{"name": name[:90], "per_step": n / steps, "ms_per_step": us / steps / 1e3} for name, (n, us) in top],
    }


async def check_against_forward(backend: Transformers, model: Any, prompt: list[int], device: torch.device,
                                n: int = 4, tokens: int = 16) -> dict[str, float]:
    """The fast path's greedy tokens and logprobs against one plain forward pass over prompt + tokens."""
    out = await backend.generate(prompt, SamplingParams(n=n, temperature=0, max_tokens=tokens, logprobs=True))
    worst, agree, total = 0.0, 0, 0
    for c in out.completions:
        ids = torch.tensor([list(prompt) + list(c.token_ids)], device=device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
        ref = torch.log_softmax(logits, -1)
        chosen = ref.gather(-1, torch.tensor(c.token_ids, device=device)[:, None]).squeeze(-1).cpu()
        worst = max(worst, float((chosen - torch.tensor(c.logprobs)).abs().max()))
        agree += int((ref.argmax(-1).cpu() == torch.tensor(c.token_ids)).sum())
        total += len(c.token_ids)
    return {"max_abs_logprob_diff": worst, "greedy_argmax_agreement": agree / total, "tokens": total}


async def bench_shape(shape: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                      bandwidth: float, nominal: float | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = build_model(shape, device, dtype)
    weights, kv_per_token = model_bytes(model)
    prompt = prompt_ids(args.prompt, model.config.vocab_size)
    print(f"[{shape}] built in {time.perf_counter() - t0:.1f}s: {weights / 1e9:.3f} GB of weights, "
          f"{kv_per_token / 1e3:.1f} kB of KV per token", flush=True)
    fast = Transformers.from_model(
        model, StubTokenizer(), name=f"qwen2-{shape}-random", max_batch_size=max(args.batches), decode=args.decode
    )
    plain = Transformers.from_model(
        model, StubTokenizer(), name=f"qwen2-{shape}-random", max_batch_size=max(args.batches), decode="dynamic"
    )
    check = await check_against_forward(fast, model, prompt, device)
    print(f"[{shape}] {fast.decode_mode} vs a plain forward pass: {check}", flush=True)
    rows = []
    for batch in args.batches:
        if time.monotonic() > args.deadline:
            print(f"[{shape}] batch {batch} skipped: past --budget-s", flush=True)
            continue
        context = args.prompt + 1 + args.steps / 2  # mean context over the timed steps
        floor_bytes = weights + batch * context * kv_per_token
        row: dict[str, Any] = {"batch": batch, "floor_ms": 1e3 * floor_bytes / bandwidth,
                               "floor_nominal_ms": None if nominal is None else 1e3 * floor_bytes / nominal}
        row["ttc_ms"] = 1e3 * await ttc_step(fast, prompt, batch, args.steps, 1.0, device)
        row["ttc_greedy_ms"] = 1e3 * await ttc_step(fast, prompt, batch, args.steps, 0.0, device)
        if fast.decode_mode != plain.decode_mode and not args.skip_dynamic:
            row["ttc_dynamic_ms"] = 1e3 * await ttc_step(plain, prompt, batch, args.steps, 1.0, device)
        row["graph_replay_ms"] = replay_ms(fast, batch, args.prompt + 1)
        if row["graph_replay_ms"] is not None and batch >= 64:
            row["graph_replay_repeat_kv_ms"] = replay_ms(fast, batch, args.prompt + 1, attention=None)
        row["hf_generate_ms"] = 1e3 * hf_step(model, prompt, batch, args.steps, device)
        for key in ("ttc_ms", "ttc_greedy_ms", "ttc_dynamic_ms", "hf_generate_ms"):
            if key in row:
                row[key.replace("_ms", "_x_floor")] = row[key] / row["floor_ms"]
        row["hf_over_ttc"] = row["hf_generate_ms"] / row["ttc_ms"] if row["ttc_ms"] else None
        row["ttc_tok_s"] = batch / row["ttc_ms"] * 1e3 if row["ttc_ms"] else None
        rows.append(row)
        print(f"[{shape}] batch {batch}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()
                                                        if isinstance(v, float)), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result: dict[str, Any] = {
        "shape": shape,
        "config": SHAPES[shape],
        "weight_bytes": weights,
        "kv_bytes_per_token": kv_per_token,
        "decode_mode": fast.decode_mode,
        "check": check,
        "steps": rows,
    }
    if args.profile and fast._static is not None:
        try:
            result["profile"] = profile_step(fast, args.profile, args.prompt + 1, device)
        except Exception as exc:  # noqa: BLE001 - the profile is an extra; keep the shape's other numbers
            result["profile"] = {"error": f"{type(exc).__name__}: {exc}", "kernels_per_step": 0,
                                 "kernel_ms_per_step": 0, "top": []}
        print(
            f"[{shape}] profile of one eager static step at batch {args.profile}: "
            f"{result['profile']['kernels_per_step']:.0f} kernels, {result['profile']['kernel_ms_per_step']:.2f} ms",
            flush=True,
        )
        for k in result["profile"]["top"]:
            print(f"    {k['per_step']:5.0f} x {k['ms_per_step']:.3f} ms  {k['name']}", flush=True)
    result["batch_vs_sequential"] = await batch_vs_sequential(fast, prompt, args.n, args.steps, device)
    print(f"[{shape}] batch vs sequential: {result['batch_vs_sequential']}", flush=True)
    result["stepwise_vs_oneshot"] = await stepwise_vs_oneshot(fast, prompt, args.n, args.search_steps,
                                                              args.step_tokens, device)
    print(f"[{shape}] step-wise vs one-shot: {result['stepwise_vs_oneshot']}", flush=True)
    result["stepwise_vs_oneshot_by_window"] = {}
    for window in args.windows:  # the batching window is paid once per step of a step search
        other = Transformers.from_model(model, StubTokenizer(), max_batch_size=max(args.batches), decode=args.decode,
                                        batch_window=window)
        found = await stepwise_vs_oneshot(other, prompt, args.n, args.search_steps, args.step_tokens, device)
        await other.aclose()
        result["stepwise_vs_oneshot_by_window"][str(window)] = found
        print(f"[{shape}] step-wise vs one-shot, batch_window={window}: {found}", flush=True)
    result["graph_captures"] = getattr(fast._static, "captures", 0)
    result["graph_error"] = getattr(fast._static, "graph_error", None)
    result["decode_mode_after"] = fast.decode_mode
    await fast.aclose()
    await plain.aclose()
    result["seconds"] = time.perf_counter() - t0
    del fast, plain, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def table(report: dict[str, Any]) -> str:
    lines = [
        f"device: {report['machine']['device_name']}; "
        f"copy bandwidth measured {report['bandwidth_measured'] / 1e9:.1f} GB/s"
        + (f", nominal {report['bandwidth_nominal'] / 1e9:.0f} GB/s" if report["bandwidth_nominal"] else ""),
        "| shape | batch | floor ms | ttc ms (x floor) | ttc greedy ms | graph replay ms | ttc dynamic ms (x floor) "
        "| HF generate ms (x floor) | HF / ttc |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape in report["shapes"]:
        for r in shape["steps"]:
            dyn = (f"{r['ttc_dynamic_ms']:.2f} ({r['ttc_dynamic_x_floor']:.1f}x)" if "ttc_dynamic_ms" in r else "-")
            graph = "-" if r.get("graph_replay_ms") is None else f"{r['graph_replay_ms']:.2f}"
            if r.get("graph_replay_repeat_kv_ms") is not None:
                graph += f" (repeat_kv {r['graph_replay_repeat_kv_ms']:.2f})"
            # None when the differenced ttc step time came out 0 (timer noise at tiny CPU shapes)
            ratio = "-" if r["hf_over_ttc"] is None else f"{r['hf_over_ttc']:.1f}"
            lines.append(
                f"| {shape['shape']} | {r['batch']} | {r['floor_ms']:.3f} | {r['ttc_ms']:.2f} "
                f"({r['ttc_x_floor']:.1f}x) | {r['ttc_greedy_ms']:.2f} | {graph} | {dyn} | {r['hf_generate_ms']:.2f} "
                f"({r['hf_generate_x_floor']:.1f}x) | {ratio} |"
            )
    for shape in report["shapes"]:
        b, s = shape["batch_vs_sequential"], shape["stepwise_vs_oneshot"]
        lines.append(
            f"{shape['shape']}: n={b['n']} x {b['tokens']} tokens, sequential over one batch "
            f"{b['sequential_over_batch']:.1f}x; step-wise ({s['steps']} x {s['step_tokens']} tokens, "
            f"n={s['n']}) over one-shot throughput {s['stepwise_over_oneshot']:.2f} "
            f"({s['stepwise_tok_s']:.0f} vs {s['oneshot_tok_s']:.0f} tok/s); decode {shape['decode_mode_after']}; "
            f"vs plain forward: max |d logprob| {shape['check']['max_abs_logprob_diff']:.3g}, greedy argmax "
            f"agreement {shape['check']['greedy_argmax_agreement']:.2f}"
            + (f"; graph error: {shape['graph_error']}" if shape["graph_error"] else "")
        )
        for window, w in shape.get("stepwise_vs_oneshot_by_window", {}).items():
            lines.append(
                f"{shape['shape']}: step-wise over one-shot with batch_window={window}: "
                f"{w['stepwise_over_oneshot']:.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny Qwen2 shape with small batches (CPU smoke run)")
    parser.add_argument("--shapes", default=None, help="comma-separated of " + ", ".join(SHAPES))
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16,64,128)")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 256)")
    parser.add_argument("--steps", type=int, default=None, help="timed decode steps (default 64)")
    parser.add_argument("--n", type=int, default=16, help="candidates for batch-vs-sequential and step-wise")
    parser.add_argument("--search-steps", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=32)
    parser.add_argument("--decode", default="auto", choices=["auto", "static"],
                        help="ttc's fast path: auto (static + CUDA graphs on CUDA) or static (also on CPU, eager)")
    parser.add_argument("--windows", default="0.002",
                        help="other batch_window values (s) for step-wise vs one-shot, comma-separated ('' for none)")
    parser.add_argument("--profile", type=int, default=0, help="profile one eager static step at this batch (0: no)")
    parser.add_argument("--skip-dynamic", action="store_true", help="skip the dynamic-cache ttc path")
    parser.add_argument("--out", default=None)
    parser.add_argument("--budget-s", type=float, default=330, help="skip the remaining batch sizes after this long")
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes = args.shapes or "tiny"
        args.batches = args.batches or "1,4"
        args.prompt = args.prompt or 16
        args.steps = args.steps or 4
        args.n = min(args.n, 4)
        args.search_steps, args.step_tokens = min(args.search_steps, 2), min(args.step_tokens, 4)
    args.windows = [float(w) for w in args.windows.split(",") if w]
    args.shapes = (args.shapes or "0.5b,1.5b").split(",")
    args.batches = [int(b) for b in (args.batches or "1,16,64,128").split(",")]
    args.prompt = args.prompt or 256
    args.steps = args.steps or 64
    args.deadline = time.monotonic() + args.budget_s
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        copy_bytes = 4 << 30  # 4 GiB: far beyond the L2
    else:
        name = platform.processor() or platform.machine()
        copy_bytes = 64 << 20 if args.tiny else 1 << 30
    nominal = next((bw for key, bw in NOMINAL_BANDWIDTH if key in name), None) if device.type == "cuda" else None
    bandwidth = measure_bandwidth(device, copy_bytes)
    import transformers

    report: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), "benchmarks/gpu.py"] + sys.argv[1:] if argv is None
                            else ["benchmarks/gpu.py"] + list(argv)),
        "machine": {"device_name": name, "torch": torch.__version__, "transformers": transformers.__version__,
                    "cuda": torch.version.cuda, "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "dtype": str(dtype), "prompt_tokens": args.prompt, "timed_steps": args.steps,
        "bandwidth_measured": bandwidth, "bandwidth_nominal": nominal, "shapes": []}
    print(f"{name}: copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    out = args.out or (os.path.join(os.environ["OUT"], "gpu.json") if os.environ.get("OUT") else None)
    report["errors"] = {}
    for shape in args.shapes:
        try:
            report["shapes"].append(asyncio.run(bench_shape(shape, args, device, dtype, bandwidth, nominal)))
        except Exception as exc:  # noqa: BLE001 - keep the other shapes' numbers; the error is reported
            import traceback

            traceback.print_exc()
            report["errors"][shape] = f"{type(exc).__name__}: {exc}"
        if out:  # after every shape, so a run stopped at its time limit keeps what it measured
            with open(out, "w") as f:
                json.dump(report, f, indent=1)
    print(table(report), flush=True)
    if report["errors"]:
        print("errors:", report["errors"], flush=True)
    return report


if __name__ == "__main__":
    main()
