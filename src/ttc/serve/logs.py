"""`ttc serve`'s logs: one access-log line per request, and errors with their cause and the
upstream involved; text or JSON lines (`--log-format`), never a secret (`Redactor`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ttc.serve.redact import Redactor

#: the fields of an access-log line, in order (absent ones are left out)
ACCESS_FIELDS = ("request_id", "method", "path", "status", "mode", "strategy", "n", "prompt_tokens",
                 "completion_tokens", "latency_ms", "error")


class _Format(logging.Formatter):
    """`time level logger message key=value ...` or one JSON object per line; secrets redacted."""

    def __init__(self, json_lines: bool, redactor: Redactor):
        super().__init__()
        self.json_lines = json_lines
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        message = record.getMessage()
        if self.json_lines:
            out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                   + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
                   "message": message, **fields}
            return self.redactor.text(json.dumps(out, default=str), urls=False)
        pairs = " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {message} {pairs}".rstrip()
        return self.redactor.text(line, urls=False)


def _plain(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text or '"' in text) else text


class ServerLog:
    """One server's logger (its own, so servers in one process, as in tests, do not share
    handlers): `access(fields)` once per request, `error(message, **fields)` for failures."""

    def __init__(self, log_format: str, level: str, redactor: Redactor, stream: Any = None):
        self.logger = logging.Logger("ttc.serve", level.upper())
        self.handler = logging.StreamHandler(stream or sys.stderr)
        self.handler.setFormatter(_Format(log_format == "json", redactor))
        self.logger.addHandler(self.handler)

    def access(self, fields: dict[str, Any]) -> None:
        kept = {k: fields[k] for k in ACCESS_FIELDS if fields.get(k) is not None}
        self.logger.info("request", extra={"fields": kept})

    def error(self, message: str, **fields: Any) -> None:
        self.logger.warning(message, extra={"fields": fields})

    def info(self, message: str, **fields: Any) -> None:
        self.logger.info(message, extra={"fields": fields})
