"""What `ttc serve` is configured with: upstreams, the default strategy, and the limits a client
cannot exceed."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ttc.errors import InvalidInput

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: what a `--prm-upstream` model can be (`ttc.verifiers.RemotePRM`'s formats)
PRM_FORMATS = ("qwen2.5-math-prm", "math-shepherd")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Limits:
    """Server-side caps. A request asking for more is refused (400 naming the field), never
    silently cut; a request that gives no budget runs under `max_budget_tokens` /
    `max_budget_seconds`, so every problem is bounded.

    max_n: sequences generated at once (n, beam width x expansions, DVTS subtrees x expansions,
    particles, batches: each strategy's declared worst case, `registry.worst_case`); passthrough `n`.
    max_tokens: completion tokens per candidate (or step); passthrough `max_tokens`.
    max_top_logprobs: top logprobs per token (deepconf's top_k; passthrough top_logprobs).
    max_budget_tokens / max_budget_seconds / max_budget_verifier_calls: the per-request budget;
    a request without `ttc.budget.tokens` is refused when its worst case is over max_budget_tokens.
    max_body_bytes: request body size (413 above). max_in_flight: problems run at once; one more
    gets 429 with `Retry-After: retry_after` seconds.
    """

    max_n: int = 64
    max_tokens: int = 4096
    max_budget_tokens: int = 1_000_000
    max_budget_seconds: float = 600.0
    max_budget_verifier_calls: int | None = None
    max_top_logprobs: int = 20
    max_body_bytes: int = 1 << 20
    max_in_flight: int = 64
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("max_n", "max_tokens", "max_top_logprobs", "max_budget_tokens", "max_budget_seconds",
                     "max_body_bytes", "max_in_flight", "retry_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InvalidInput(f"Limits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Connections:
    """How `ttc serve` talks to its upstreams, and how long it waits (seconds; the CLI flags of the
    same names with `--upstream-` or no prefix).

    passthrough_connections / strategy_connections: the two paths' own connection pools (the health
    probe has a third, of its own), so neither can starve the other or readiness. pool_wait: how long an
    upstream request of either path waits for a free connection of its pool before the client gets a 503
    with Retry-After. connect_timeout: to open a connection. read_timeout: between two reads of an
    answer (a stalled stream). total_timeout: a whole upstream request; any of the three expiring is a
    504 and the upstream request is aborted (its connection closed). body_timeout: to read a client's
    request body (408 after). health_interval / health_timeout: the background probe of the upstreams
    that `/health` answers from. shutdown_timeout: after SIGTERM, how long in-flight requests may still
    finish before they are cancelled (below Kubernetes' 30 s grace).
    """

    passthrough_connections: int = 256
    strategy_connections: int = 256
    pool_wait: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    total_timeout: float = 600.0
    body_timeout: float = 30.0
    health_interval: float = 5.0
    health_timeout: float = 3.0
    shutdown_timeout: float = 20.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidInput(f"Connections.{f.name} must be positive, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """`ttc serve`'s settings (the CLI flags of the same names).

    upstream: base URLs of replicas of one model (as `OpenAICompatible` takes them).
    default: what a request without a `ttc` object gets: "passthrough" (forwarded unchanged) or
        "strategy" (the server's `strategy` with `n`).
    api_key: the key clients must send (`Authorization: Bearer KEY`); None: no check, allowed on a
        loopback address only unless `insecure`, and then only from a loopback `Host` (or one of
        `allowed_hosts`) without an `Origin` (or with one of `allowed_origins`): a web page cannot
        drive it. upstream_api_key: sent to the upstreams, never shown to clients, logs or
        /metrics; None: no key is sent (the environment is not read: `ttc serve
        --upstream-api-key-env OPENAI_API_KEY` says so explicitly).
    health_port: also serve /live and /health on this port, from a thread of their own (probes
        never wait behind a burst of requests on the main port); 0 picks a free one.
    passthrough_untouched: forward requests without a `ttc` object past the caps on n, max_tokens
        and top logprobs (default: the caps apply to them too).
    tokenizer: the served model's tokenizer (Hugging Face id or folder), for upstreams without
        vLLM's /tokenize (`OpenAICompatible(tokenizer=)`); use_chat: `OpenAICompatible(use_chat=)`.
    thinking: the upstream model's thinking format ("deepseek_r1", "qwen3", a `ThinkingFormat`;
        `OpenAICompatible(thinking=)`): what splits the thinking the upstream does not split itself
        (its /v1/completions, or no --reasoning-parser); None: what the model's folder declares.
    log_format: "text" or "json" (one access-log line per request); log_level: "debug", "info",
        "warning", "error".
    prm_upstream: a vLLM deployment of a process reward model, the default PRM of step searches
        (`ttc.verifiers.RemotePRM`, response `format` prm_format).
    """

    upstream: tuple[str, ...]
    strategy: str = "majority"
    n: int = 8
    default: str = "passthrough"
    temperature: float = 0.7
    max_tokens: int = 512
    prm_upstream: str | None = None
    prm_format: str = "qwen2.5-math-prm"
    api_key: str | None = None
    upstream_api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8100
    health_port: int | None = None
    insecure: bool = False
    passthrough_untouched: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    tokenizer: Any = None
    use_chat: bool | None = None
    thinking: Any = None
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    connections: Connections = field(default_factory=Connections)

    def __post_init__(self) -> None:
        ups = (self.upstream,) if isinstance(self.upstream, str) else tuple(self.upstream)
        if not ups:
            raise InvalidInput("ttc serve needs at least one --upstream URL")
        object.__setattr__(self, "upstream", ups)
        for name in ("allowed_hosts", "allowed_origins"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.log_format not in LOG_FORMATS:
            raise InvalidInput(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise InvalidInput(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.default not in ("passthrough", "strategy"):
            raise InvalidInput(f"default must be 'passthrough' or 'strategy', got {self.default!r}")
        if self.host not in LOOPBACK and not self.api_key and not self.insecure:
            raise InvalidInput(f"binding {self.host!r} (not loopback) exposes the upstream to the network: "
                               f"give --api-key KEY (clients send it as a Bearer token), or --insecure to "
                               f"serve without one")
        if self.thinking is not None and not isinstance(self.thinking, bool):
            from ttc.thinking import thinking_format

            thinking_format(self.thinking)  # an unknown format: an error now, not per request
        from ttc.strategies.registry import canonical_name

        object.__setattr__(self, "strategy", canonical_name(self.strategy))  # unknown: an error now, not per request
        if self.prm_format not in PRM_FORMATS:
            raise InvalidInput(f"prm_format must be one of {', '.join(PRM_FORMATS)}, got {self.prm_format!r}")
        if not 0 < self.n <= self.limits.max_n:
            raise InvalidInput(f"n must be in [1, max_n={self.limits.max_n}], got {self.n}")
        if not 0 < self.max_tokens <= self.limits.max_tokens:
            raise InvalidInput(f"max_tokens must be in [1, {self.limits.max_tokens}], got {self.max_tokens}")
