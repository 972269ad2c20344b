"""`GET /metrics`: Prometheus text from prometheus_client, one registry per server (so several
servers in one process, as in the tests, do not share counts)."""

from __future__ import annotations

from ttc._extras import require

require("prometheus_client", "serve", "`ttc serve` (its /metrics)")

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402
from prometheus_client.exposition import CONTENT_TYPE_LATEST  # noqa: E402

from ttc.types import Usage  # noqa: E402

#: strategy latency buckets (seconds): a vote on a CPU model takes seconds to minutes
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests, errors, tokens by kind, strategy latency, in-flight problems, upstream errors by
    cause, upstream connections in use and requests waiting for one."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("ttc_serve_requests", "Requests by endpoint and mode (passthrough or strategy)",
                                ["endpoint", "mode"], registry=r)
        self.errors = Counter("ttc_serve_errors", "Requests answered with an error, by HTTP status", ["status"],
                              registry=r)
        self.tokens = Counter("ttc_serve_tokens", "Tokens spent by kind: prompt (billed), completion, "
                              "processed_prompt, cached_prompt, verifier", ["kind", "mode"], registry=r)
        self.latency = Histogram("ttc_serve_strategy_seconds", "Wall time of a strategy run", ["strategy"],
                                 buckets=BUCKETS, registry=r)
        self.in_flight = Gauge("ttc_serve_problems_in_flight", "Problems being solved now", registry=r)
        self.refused = Counter("ttc_serve_refused", "Requests refused because the server was full (429)",
                               registry=r)
        self.upstream_errors = Counter("ttc_serve_upstream_errors", "Upstream failures by cause (timeout, "
                                       "connect, refused_credentials, rate_limited, bad_response, http_5xx, ...) "
                                       "and path (passthrough, strategy, health)", ["cause", "path"], registry=r)
        self.pool_in_use = Gauge("ttc_serve_upstream_connections_in_use", "Upstream connections held now, by path",
                                 ["path"], registry=r)
        self.pool_waiting = Gauge("ttc_serve_upstream_waiting", "Requests waiting for an upstream connection, by "
                                  "path", ["path"], registry=r)
        self.upstream_up = Gauge("ttc_serve_upstream_up", "1 if the last health probe reached the replica",
                                 ["replica"], registry=r)

    def count_usage(self, usage: Usage, mode: str) -> None:
        for kind, value in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens),
                            ("processed_prompt", usage.processed_prompt_tokens),
                            ("cached_prompt", usage.cached_prompt_tokens), ("verifier", usage.verifier_tokens)):
            if value:
                self.tokens.labels(kind, mode).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
