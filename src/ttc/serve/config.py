"""What `ttc serve` is configured with: upstreams, the default strategy, and the limits a client
cannot exceed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttc.errors import InvalidInput

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: what a `--prm-upstream` model can be (`ttc.verifiers.RemotePRM`'s formats)
PRM_FORMATS = ("qwen2.5-math-prm", "math-shepherd")


@dataclass(frozen=True)
class Limits:
    """Server-side caps. A request asking for more is refused (400 naming the field), never
    silently cut; a request that gives no budget runs under `max_budget_tokens` /
    `max_budget_seconds`, so every problem is bounded.

    max_n: candidates (ttc.n) per request. max_tokens: completion tokens per candidate (or step).
    max_budget_tokens / max_budget_seconds / max_budget_verifier_calls: the per-request budget.
    max_body_bytes: request body size (413 above). max_in_flight: problems run at once; one more
    gets 429 with `Retry-After: retry_after` seconds.
    """

    max_n: int = 64
    max_tokens: int = 4096
    max_budget_tokens: int = 1_000_000
    max_budget_seconds: float = 600.0
    max_budget_verifier_calls: int | None = None
    max_body_bytes: int = 1 << 20
    max_in_flight: int = 64
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("max_n", "max_tokens", "max_budget_tokens", "max_budget_seconds", "max_body_bytes",
                     "max_in_flight", "retry_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InvalidInput(f"Limits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """`ttc serve`'s settings (the CLI flags of the same names).

    upstream: base URLs of replicas of one model (as `OpenAICompatible` takes them).
    default: what a request without a `ttc` object gets: "passthrough" (forwarded unchanged) or
        "strategy" (the server's `strategy` with `n`).
    api_key: the key clients must send (`Authorization: Bearer KEY`); None: no check, allowed on a
        loopback address only unless `insecure`. upstream_api_key: sent to the upstreams, never
        shown to clients (None: $OPENAI_API_KEY / $VLLM_API_KEY, as `OpenAICompatible`).
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
    insecure: bool = False
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        ups = (self.upstream,) if isinstance(self.upstream, str) else tuple(self.upstream)
        if not ups:
            raise InvalidInput("ttc serve needs at least one --upstream URL")
        object.__setattr__(self, "upstream", ups)
        if self.default not in ("passthrough", "strategy"):
            raise InvalidInput(f"default must be 'passthrough' or 'strategy', got {self.default!r}")
        if self.host not in LOOPBACK and not self.api_key and not self.insecure:
            raise InvalidInput(f"binding {self.host!r} (not loopback) exposes the upstream to the network: "
                               f"give --api-key KEY (clients send it as a Bearer token), or --insecure to "
                               f"serve without one")
        from ttc.strategies.registry import canonical_name

        object.__setattr__(self, "strategy", canonical_name(self.strategy))  # unknown: an error now, not per request
        if self.prm_format not in PRM_FORMATS:
            raise InvalidInput(f"prm_format must be one of {', '.join(PRM_FORMATS)}, got {self.prm_format!r}")
        if not 0 < self.n <= self.limits.max_n:
            raise InvalidInput(f"n must be in [1, max_n={self.limits.max_n}], got {self.n}")
        if not 0 < self.max_tokens <= self.limits.max_tokens:
            raise InvalidInput(f"max_tokens must be in [1, {self.limits.max_tokens}], got {self.max_tokens}")
