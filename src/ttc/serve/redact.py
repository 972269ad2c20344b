"""Keeping the upstream's credentials (and, in error messages, its URLs) away from clients, logs
and /metrics, whatever the upstream echoes."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "<redacted>"
UPSTREAM = "<upstream>"


class Redactor:
    """Replaces `secrets` everywhere and `urls` in messages. `stream()` gives a redactor for one
    relayed byte stream, which holds back a secret's length of bytes so that a secret split
    across two chunks is still found."""

    def __init__(self, secrets: Iterable[str | None], urls: Iterable[str | None] = ()):
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.urls = sorted({u.rstrip("/") for u in urls if u and u.rstrip("/")}, key=len, reverse=True)
        self._secret_bytes = [s.encode() for s in self.secrets]

    def add_urls(self, urls: Iterable[str | None]) -> None:
        """Also redact `urls` from messages (the replicas' base URLs, known once the backend starts)."""
        more = {u.rstrip("/") for u in urls if u and u.rstrip("/")}
        self.urls = sorted(set(self.urls) | more, key=len, reverse=True)

    def text(self, message: str, urls: bool = True) -> str:
        """`message` without secrets (and without upstream URLs unless `urls` is False)."""
        for secret in self.secrets:
            message = message.replace(secret, REDACTED)
        if urls:
            for url in self.urls:
                message = message.replace(url, UPSTREAM)
        return message

    def bytes(self, data: bytes, urls: bool = False) -> bytes:
        """`data` without secrets (and upstream URLs when `urls`)."""
        for secret in self._secret_bytes:
            data = data.replace(secret, REDACTED.encode())
        if urls:
            for url in self.urls:
                data = data.replace(url.encode(), UPSTREAM.encode())
        return data

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """`feed(chunk)` returns what can be relayed now; `flush()` the rest at the end."""

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self.hold = max((len(s) for s in redactor._secret_bytes), default=1) - 1
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.redactor.secrets:
            return chunk
        data = self.redactor.bytes(self.pending + chunk)
        if self.hold <= 0 or len(data) <= self.hold:
            self.pending = data if self.hold > 0 else b""
            return b"" if self.hold > 0 else data
        self.pending = data[-self.hold:]
        return data[: -self.hold]

    def flush(self) -> bytes:
        out, self.pending = self.redactor.bytes(self.pending), b""
        return out
