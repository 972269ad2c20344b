"""Who may use `ttc serve`: the client key when one is set; without one, no web page (only
loopback or allowed Hosts, no foreign Origin: DNS rebinding and cross-site requests); and only
JSON bodies, which a browser cannot send cross-site without a preflight."""

from __future__ import annotations

import hmac

from aiohttp import web

from ttc.serve.config import LOOPBACK, ServeConfig
from ttc.serve.protocol import RequestError

#: paths served without a key and from any Host: probes of orchestrators and load balancers
OPEN_PATHS = frozenset({"/live", "/health"})


def check(request: web.Request, config: ServeConfig) -> None:
    """Raise the RequestError (401, 403, 415) that `request` deserves, if any."""
    if request.path not in OPEN_PATHS:
        if config.api_key:
            check_key(request.headers.get("Authorization", ""), config.api_key)
        else:
            check_browser(request.headers.get("Host", ""), request.headers.get("Origin"), config)
    if request.method == "POST" and request.content_type != "application/json":
        raise RequestError(f"the request body must be application/json, not {request.content_type!r}", None,
                           status=415)


def check_key(authorization: str, key: str) -> None:
    """`Authorization: Bearer KEY`, the scheme in any case (RFC 7235); compared in constant time.
    A header that is not UTF-8 is a wrong key, not an error."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    try:
        sent = token.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp keeps bytes that are not UTF-8 as surrogates
        sent = b""
    if not hmac.compare_digest(sent, key.encode()):
        raise RequestError("missing or wrong API key (send Authorization: Bearer KEY)", None, status=401,
                           type="authentication_error")


def check_browser(host_header: str, origin: str | None, config: ServeConfig) -> None:
    host = host_name(host_header)
    if host not in LOOPBACK and host not in config.allowed_hosts:
        raise RequestError(f"Host {host!r} is not served without an API key (loopback names and --allowed-hosts "
                           f"only)", None, status=403, type="permission_error")
    if origin is not None and origin not in config.allowed_origins:
        raise RequestError(f"cross-origin requests from {origin!r} are not served without an API key "
                           f"(--allowed-origins)", None, status=403, type="permission_error")


def host_name(host: str) -> str:
    """The name of a Host header, without its port (`[::1]:8100` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
