"""Command line: `ttc demo`, `ttc run "question"`, `ttc eval`, `ttc compare`, `ttc report`, `ttc serve`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ttc.backends.factory import BACKENDS, make_backend
from ttc.backends.threads import parse_threads
from ttc.errors import InvalidInput, TTCError
from ttc.types import SamplingParams


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="transformers", help="generator backend")
    p.add_argument("--model", default=None, help="HF id or local folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--url", default=None, help="base URL of an OpenAI-compatible server (--backend openai)")
    p.add_argument("--threads", type=parse_threads, default="auto",
                   help="CPU threads of the transformers backend: auto = OMP_NUM_THREADS if set, else half "
                   "the physical cores (torch's one per core collapses on a busy machine); torch = torch's "
                   "own choice; or a count (default: auto)")


def _solve_with_progress(strategy, question, backend, seed: int | None, total: int | None,  # noqa: ANN001
                         enabled: bool, whole: bool = True):
    """Solve one question with a tqdm bar on stderr counting the tokens the backend has decoded.

    The bar follows `backend.tokens_generated()` (polled twice a second), so a vote's n
    candidates, which arrive together, still show progress while they are decoded. Backends
    that cannot count tokens before a request finishes show the elapsed time only. `whole`: the
    total is the real size of the work (n whole candidates), not a bound the strategy usually
    stays well under (a step search), which the bar's label then says.
    """
    import threading

    from ttc._progress import tqdm

    start = backend.tokens_generated()
    desc = f"{strategy.name} tokens" + ("" if whole or total is None else " (total: at most)")
    bar = tqdm(total=total if start is not None else None, unit="tok", desc=desc,
               disable=not enabled, file=sys.stderr, dynamic_ncols=True, leave=False)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            now = backend.tokens_generated()
            if now is not None and start is not None:
                bar.update(max(0, now - start - bar.n))
            else:
                bar.refresh()

    thread = threading.Thread(target=poll, name="ttc-progress", daemon=True)
    thread.start()
    try:
        return strategy.solve(question, backend, seed=seed)
    finally:
        stop.set()
        thread.join()
        bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from ttc.display import thinking_preview, tie_line
    from ttc.run_cli import WHOLE_CANDIDATE_STRATEGIES, judge_note, progress_total, prompt_problem
    from ttc.runner import run_sync
    from ttc.strategies.registry import make_strategy
    from ttc.thinking_cli import backend_options, sampling_options
    from ttc.verifiers import LogprobConfidence

    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, logprobs=True, seed=args.seed,
                            **sampling_options(args))
    verifier = LogprobConfidence(args.verifier) if args.verifier else None
    strategy = make_strategy(args.strategy, n=args.n, verifier=verifier, params=params)
    problem = prompt_problem(args.question, args.prompt)
    backend = make_backend(args.backend, args.model, args.url, threads=args.threads, **backend_options(args))
    try:
        # the work's size for whole candidates, an upper bound for step searches; others show a count only
        total = progress_total(strategy, args.n, args.max_tokens)
        result = _solve_with_progress(strategy, problem, backend, args.seed, total,
                                      enabled=not args.quiet and not args.json,
                                      whole=strategy.name in WHOLE_CANDIDATE_STRATEGIES)
    finally:
        run_sync(backend.aclose())
    note = judge_note(strategy, getattr(backend, "model_name", args.model))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        if note:
            print(note, file=sys.stderr)
    else:
        if note:
            print(note)
        print(f"answer: {result.answer}" + (f" ({result.no_answer_reason})" if result.answer is None else ""))
        if "votes" in result.details:
            print(f"votes: {result.details['votes']}")
        if tie_line(result):
            print(tie_line(result))
        u = result.usage
        print(f"usage: {u.token_summary()}, "
              f"{u.generator_calls} generator calls, {u.verifier_calls} verifier calls, {u.wall_seconds:.1f} s")
        if result.candidates:
            print(f"cut at max_tokens: {result.truncated}/{len(result.candidates)} candidates")
            chosen = next((c for c in result.candidates if c.answer == result.answer and c.thinking), None)
            if chosen is not None and not args.show:
                print(thinking_preview(chosen))
        if "truncation" in result.details:
            print(f"warning: {result.details['truncation']} (--max-tokens)")
        if args.show:
            for i, c in enumerate(result.candidates):
                print(f"--- candidate {i}: answer={c.answer} scores={c.scores} finish={c.finish_reason}")
                if c.thinking is not None:
                    print(thinking_preview(c))
                print(c.text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ttc.serve import Connections, Limits, ServeConfig, serve

    limits = Limits(max_n=args.max_n, max_tokens=args.cap_max_tokens, max_budget_tokens=args.max_budget_tokens,
                    max_budget_seconds=args.max_budget_seconds, max_body_bytes=args.max_body_bytes,
                    max_in_flight=args.max_in_flight, retry_after=args.retry_after,
                    max_top_logprobs=args.max_top_logprobs)
    connections = Connections(
        passthrough_connections=args.passthrough_connections, strategy_connections=args.strategy_connections,
        pool_wait=args.pool_wait, connect_timeout=args.upstream_connect_timeout,
        read_timeout=args.upstream_read_timeout, total_timeout=args.upstream_timeout, body_timeout=args.body_timeout,
        health_interval=args.health_interval, health_timeout=args.health_timeout,
        shutdown_timeout=args.shutdown_timeout)
    config = ServeConfig(upstream=tuple(args.upstream), strategy=args.strategy, n=args.n, default=args.default,
                         temperature=args.temperature, max_tokens=args.max_tokens, prm_upstream=args.prm_upstream,
                         prm_format=args.prm_format, api_key=serve_api_key(args),
                         upstream_api_key=upstream_api_key(args), host=args.host, port=args.port,
                         health_port=args.health_port, insecure=args.insecure, limits=limits, connections=connections,
                         passthrough_untouched=args.passthrough_untouched,
                         allowed_hosts=tuple(args.allowed_hosts or ()),
                         allowed_origins=tuple(args.allowed_origins or ()),
                         tokenizer=args.tokenizer, use_chat=args.use_chat, log_format=args.log_format,
                         log_level=args.log_level, thinking=None if args.thinking is None else
                         (False if args.thinking == "none" else args.thinking))
    serve(config)
    return 0


def _read_key_file(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as exc:
        raise InvalidInput(f"{flag}: cannot read {path!r} ({exc.strerror})") from None
    if not key:
        raise InvalidInput(f"{flag}: {path!r} is empty")
    return key


def serve_api_key(args: argparse.Namespace) -> str | None:
    """The key clients must send: --api-key, else --api-key-file, else $TTC_SERVE_API_KEY, else none."""
    import os

    if args.api_key and args.api_key_file:
        raise InvalidInput("give --api-key or --api-key-file, not both")
    if args.api_key_file:
        return _read_key_file(args.api_key_file, "--api-key-file")
    return args.api_key or os.environ.get("TTC_SERVE_API_KEY") or None


def upstream_api_key(args: argparse.Namespace) -> str | None:
    """The key sent upstream, only when configured: --upstream-api-key-file, or the variable named
    by --upstream-api-key-env (e.g. OPENAI_API_KEY); none otherwise."""
    import os

    if args.upstream_api_key_file and args.upstream_api_key_env:
        raise InvalidInput("give --upstream-api-key-file or --upstream-api-key-env, not both")
    if args.upstream_api_key_file:
        return _read_key_file(args.upstream_api_key_file, "--upstream-api-key-file")
    if args.upstream_api_key_env:
        key = os.environ.get(args.upstream_api_key_env)
        if not key:
            raise InvalidInput(f"--upstream-api-key-env: ${args.upstream_api_key_env} is not set")
        return key
    return None


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible endpoint that runs strategies against upstream servers")
    p.add_argument("--upstream", action="append", required=True, metavar="URL",
                   help="base URL of an OpenAI-compatible server (e.g. vLLM's http://127.0.0.1:8000/v1); give it "
                   "again for more replicas of the same model")
    p.add_argument("--strategy", default="majority", help="the strategy of requests whose ttc object names none")
    p.add_argument("--n", type=int, default=8, help="candidates of that default strategy")
    p.add_argument("--default", choices=["passthrough", "strategy"], default="passthrough",
                   help="requests without a ttc object: forwarded unchanged, or solved with --strategy")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature when a request gives none")
    p.add_argument("--max-tokens", type=int, default=512, help="completion tokens per candidate when a request "
                   "gives none")
    p.add_argument("--prm-upstream", default=None, metavar="URL",
                   help="a vLLM deployment of a process reward model: the default PRM of step searches and "
                   "ttc.prm='remote'")
    p.add_argument("--prm-format", choices=["qwen2.5-math-prm", "math-shepherd"], default="qwen2.5-math-prm",
                   help="what the --prm-upstream model is")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; not loopback needs --api-key or --insecure")
    p.add_argument("--port", type=int, default=8100, help="port to bind")
    p.add_argument("--health-port", type=int, default=None,
                   help="also serve /live and /health on this port, from a thread of their own (for "
                   "orchestrators' probes: they never wait behind a burst of requests)")
    p.add_argument("--api-key", default=None, help="key clients must send as a Bearer token "
                   "(default: --api-key-file, else $TTC_SERVE_API_KEY, else none); visible in ps: prefer the others")
    p.add_argument("--api-key-file", default=None, metavar="PATH", help="read the clients' key from PATH")
    p.add_argument("--upstream-api-key-file", default=None, metavar="PATH",
                   help="read the key sent to the upstreams from PATH (default: no key is sent)")
    p.add_argument("--upstream-api-key-env", default=None, metavar="NAME",
                   help="send the key in $NAME to the upstreams (e.g. OPENAI_API_KEY; default: no key is sent)")
    p.add_argument("--allowed-hosts", nargs="*", default=None, metavar="HOST",
                   help="Host names served without --api-key besides loopback ones (DNS-rebinding guard)")
    p.add_argument("--allowed-origins", nargs="*", default=None, metavar="ORIGIN",
                   help="browser Origins served without --api-key (default: none: a web page cannot drive it)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --api-key")
    p.add_argument("--max-n", type=int, default=64,
                   help="cap on the sequences a request generates at once (n, beam width x expansions, particles, "
                   "...: each strategy's worst case) and on a passthrough request's n")
    p.add_argument("--cap-max-tokens", type=int, default=4096,
                   help="cap on max_tokens per candidate or step (and on a passthrough request's max_tokens)")
    p.add_argument("--max-top-logprobs", type=int, default=20, help="cap on top logprobs per token")
    p.add_argument("--max-budget-tokens", type=int, default=1_000_000,
                   help="cap on a request's token budget, and on its worst case when it gives no ttc.budget.tokens")
    p.add_argument("--passthrough-untouched", action="store_true",
                   help="forward requests without a ttc object past the caps on n, max_tokens and top logprobs")
    p.add_argument("--max-budget-seconds", type=float, default=600.0,
                   help="cap on a request's time budget (and the budget of requests that give none)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="cap on a request body's size")
    p.add_argument("--max-in-flight", type=int, default=64,
                   help="problems solved at once; more get 429 with Retry-After")
    p.add_argument("--retry-after", type=int, default=1, help="seconds a 429 or 503 asks the client to wait")
    p.add_argument("--passthrough-connections", type=int, default=256,
                   help="upstream connections of the passthrough path (its own pool)")
    p.add_argument("--strategy-connections", type=int, default=256,
                   help="upstream requests of the strategy path at once (its own pool)")
    p.add_argument("--pool-wait", type=float, default=5.0,
                   help="seconds an upstream request (either path) waits for a free connection: 503 with Retry-After")
    p.add_argument("--upstream-connect-timeout", type=float, default=10.0,
                   help="seconds to open an upstream connection")
    p.add_argument("--upstream-read-timeout", type=float, default=300.0,
                   help="seconds without a byte from the upstream (a stalled answer or stream): 504")
    p.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds for a whole upstream request: 504")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds to read a request body: 408")
    p.add_argument("--health-interval", type=float, default=5.0, help="seconds between probes of the upstreams")
    p.add_argument("--health-timeout", type=float, default=3.0, help="seconds a probe of an upstream may take")
    p.add_argument("--shutdown-timeout", type=float, default=20.0,
                   help="after SIGTERM, seconds in-flight requests may finish before they are cancelled")
    p.add_argument("--tokenizer", default=None, metavar="ID_OR_DIR",
                   help="the served model's tokenizer (Hugging Face id or folder), for upstreams without vLLM's "
                   "/tokenize (OpenAI, LiteLLM, Ollama, transformers serve)")
    p.add_argument("--use-chat", action="store_true", default=None,
                   help="run strategies through the upstream's /v1/chat/completions (no tokenizer needed)")
    from ttc.thinking import FORMATS

    p.add_argument("--thinking", default=None, choices=[*FORMATS, "none"], metavar="FORMAT",
                   help=f"the upstream model's thinking format ({', '.join(FORMATS)}; none: it does not think): "
                   "splits thinking from the answer where the upstream does not (its /v1/completions, or no "
                   "--reasoning-parser) (default: what the model's folder declares, else none)")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="access and error log lines")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="info: one access-log line per request; warning: errors only")
    p.set_defaults(func=cmd_serve)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").strip()
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or not action.option_strings \
                or "default" in text:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def _defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and all its subcommands' parsers the formatter that shows defaults."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default is not None \
                and action.default is not False:
            action.help = "(default: %(default)s)"  # argparse prints no help line for an option without help
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _defaults_in_help(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttc", description="Test-time-compute strategies for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)

    from ttc.demo_cli import register as register_demo_command

    register_demo_command(sub, _add_backend_args, lambda: make_backend)  # `ttc demo`

    run = sub.add_parser("run", help="solve one question with a strategy")
    run.add_argument("question")
    _add_backend_args(run)
    run.add_argument("--strategy", default="majority", help="sample, majority, best_of_n, ...")
    run.add_argument("--n", type=int, default=8, help="number of candidates")
    run.add_argument("--verifier", choices=["mean_logprob", "self_certainty"], default=None,
                     help="logprob-confidence verifier (weights votes; picks for best_of_n)")
    run.add_argument("--prompt", default=None, metavar="PROMPT",
                     help="the user message: default (step by step, answer in \\boxed{}), demo (\"Give the final "
                     "answer as a number.\", suits the small embedded model) or a template in which {question} is "
                     "replaced (default: the strategy's own prompt, which is default)")
    run.add_argument("--max-tokens", type=int, default=256, help="completion tokens per candidate")
    run.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    run.add_argument("--seed", type=int, default=None, help="sampling seed (default: none, a new sample each run)")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--show", action="store_true", help="print every candidate")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    from ttc.thinking_cli import add_thinking_args

    add_thinking_args(run)
    run.set_defaults(func=cmd_run)

    from ttc.eval.cli import register as register_eval_commands

    register_eval_commands(sub, _add_backend_args)  # `ttc eval`, `ttc compare`, `ttc report`

    from ttc.probes.cli import register as register_probe_commands

    register_probe_commands(sub, _add_backend_args)  # `ttc probes collect|train|calibrate`

    from ttc.bank.cli import register as register_bank_commands

    register_bank_commands(sub, _add_backend_args)  # `ttc record`, `ttc join`, `ttc tune`
    _add_serve_command(sub)  # `ttc serve`
    _defaults_in_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TTCError as exc:
        print(f"ttc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
