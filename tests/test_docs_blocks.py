"""Every ```python block of README.md and docs/ runs as written (docs/contributing.md says how).

The blocks of one page run top to bottom in one namespace, in a fresh working folder. A block is
skipped only when the line before it is a marker comment `<!-- needs: WHAT -->`:

- `vllm-server`: run in the slow suite against a real vLLM server (the `vllm_server` fixture), with
  the page's URL `http://127.0.0.1:8000/v1` replaced by the server's;
- `gpu`: needs a GPU (and model weights from the hub); never run here;
- `probe-file`: needs a file that the page makes with a command shown on it; never run here;
- `litellm-gateway`: run in the slow suite against a real LiteLLM proxy in front of the vLLM server
  (the `litellm_gateway` fixture), with the page's gateway URL `http://127.0.0.1:4000/v1` and key
  `sk-my-gateway-key` replaced by the fixture's.

A page whose runnable blocks load the real model (`ttc.backends.Transformers`) runs in the slow
suite; the other pages (the `Scripted` backend, or no generation at all) in the fast suite.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!--\s*needs:\s*([\w-]+)\s*-->")
KNOWN = {"vllm-server", "gpu", "probe-file", "litellm-gateway"}
PAGE_URL = "http://127.0.0.1:8000/v1"
GATEWAY_URL, GATEWAY_KEY = "http://127.0.0.1:4000/v1", "sk-my-gateway-key"
REAL_MODEL = re.compile(r"ttc\.backends\.(Transformers|VLLMEngine)\(")


@dataclass
class Block:
    page: str
    line: int          # line of the opening fence, 1-based
    code: str
    needs: str | None  # the marker on the line before the fence


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            marker = MARKER.search(before)
            out.append(Block(str(path.relative_to(ROOT)), start + 1, "\n".join(lines[start + 1:j]) + "\n",
                             marker.group(1) if marker else None))
            i = j
        i += 1
    return out


ALL = {str(p.relative_to(ROOT)): blocks_of(p) for p in pages()}


def without_comments(code: str) -> str:
    """The code with its comments removed (a comment may name the real model: "use Transformers()")."""
    lines = code.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(lines)


def kind(blocks: list[Block]) -> str:
    """'real' if a runnable block loads the real model, else 'fast'."""
    return "real" if any(b.needs is None and REAL_MODEL.search(without_comments(b.code)) for b in blocks) else "fast"


def run_page(blocks: list[Block], tmp_path: Path, server_url: str | None = None,
             gateway: tuple[str, str] | None = None) -> int:
    """Run the page's blocks in order (marked ones only when their server is given: `gateway` is
    the LiteLLM proxy's (url, key)); return how many ran."""
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for block in blocks:
            if block.needs is not None and not ((block.needs == "vllm-server" and server_url)
                                                or (block.needs == "litellm-gateway" and gateway)):
                continue
            code = block.code if server_url is None else block.code.replace(PAGE_URL, server_url)
            if gateway is not None:
                code = code.replace(GATEWAY_URL, gateway[0]).replace(GATEWAY_KEY, gateway[1])
            try:
                exec(compile(code, f"{block.page}:{block.line}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"the python block at {block.page}:{block.line} raised "
                                     f"{type(exc).__name__}: {exc}\n--- block ---\n{block.code}") from exc
            ran += 1
    finally:
        os.chdir(cwd)
    return ran


def _runnable(page_kind: str) -> list[str]:
    return [p for p, bs in ALL.items() if bs and kind(bs) == page_kind and any(b.needs is None for b in bs)]


def test_every_block_is_run_or_marked_with_a_known_need():
    total = sum(len(bs) for bs in ALL.values())
    marked = [(b.page, b.line, b.needs) for bs in ALL.values() for b in bs if b.needs]
    unknown = [m for m in marked if m[2] not in KNOWN]
    assert not unknown, f"unknown markers (known: {sorted(KNOWN)}): {unknown}"
    for b in (b for bs in ALL.values() for b in bs if b.needs == "vllm-server"):
        assert PAGE_URL in b.code, f"{b.page}:{b.line} needs a server but does not use {PAGE_URL}"
    fast = sum(1 for p in _runnable("fast") for b in ALL[p] if b.needs is None)
    real = sum(1 for p in _runnable("real") for b in ALL[p] if b.needs is None)
    for b in (b for bs in ALL.values() for b in bs if b.needs == "litellm-gateway"):
        assert GATEWAY_URL in b.code, f"{b.page}:{b.line} needs a gateway but does not use {GATEWAY_URL}"
    server = sum(1 for bs in ALL.values() for b in bs if b.needs in ("vllm-server", "litellm-gateway"))
    never = [m for m in marked if m[2] not in ("vllm-server", "litellm-gateway")]
    print(f"\n{total} python blocks: {fast} run in the fast suite, {real} on the real model (slow), "
          f"{server} against a vLLM server (slow), {len(never)} never run: {never}")
    assert fast + real + len(marked) == total
    assert total >= 24 and fast >= 10 and real >= 8  # the docs have not silently lost their examples


@pytest.mark.parametrize("page", _runnable("fast"))
def test_fast_page_blocks_run(page, tmp_path, capsys):
    ran = run_page(ALL[page], tmp_path)
    with capsys.disabled():
        print(f"\n{page}: {ran} blocks ran")
    assert ran == sum(1 for b in ALL[page] if b.needs is None)


@pytest.mark.slow
@pytest.mark.parametrize("page", _runnable("real"))
def test_real_model_page_blocks_run(page, tmp_path, capsys):
    ran = run_page(ALL[page], tmp_path)
    with capsys.disabled():
        print(f"\n{page}: {ran} blocks ran on the real model")
    assert ran == sum(1 for b in ALL[page] if b.needs is None)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p, bs in ALL.items() if any(b.needs == "vllm-server" for b in bs)])
def test_server_blocks_run_against_a_real_vllm_server(page, tmp_path, vllm_server, capsys):
    ran = run_page(ALL[page], tmp_path, server_url=vllm_server.url)
    with capsys.disabled():
        print(f"\n{page}: {ran} blocks ran against {vllm_server.url}")
    assert ran == sum(1 for b in ALL[page] if b.needs in (None, "vllm-server"))


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p, bs in ALL.items() if any(b.needs == "litellm-gateway" for b in bs)])
def test_gateway_blocks_run_against_a_real_litellm_proxy(page, tmp_path, litellm_gateway, capsys):
    gateway = (litellm_gateway.url, litellm_gateway.key)
    ran = run_page(ALL[page], tmp_path, gateway=gateway)  # the page's vllm-server blocks run in the test above
    with capsys.disabled():
        print(f"\n{page}: {ran} blocks ran against {litellm_gateway.url}")
    assert ran == sum(1 for b in ALL[page] if b.needs in (None, "litellm-gateway"))
