"""The layout of ttc.backends.openai holds: the wire format (payloads, responses, usage, features,
prompts) imports no transport, so it stays pure and testable without HTTP; importing the package
loads neither torch nor transformers (a local tokenizer is loaded lazily); the old import paths work."""

import ast
import subprocess
import sys
from pathlib import Path

import ttc.backends.openai as package

PACKAGE = Path(package.__file__).parent
WIRE = ("payloads", "responses", "usage", "features", "prompts", "http_errors")
NOT_IN_WIRE = {"aiohttp", "asyncio", "urllib", "ttc.backends.openai.transport", "ttc.backends.openai.client",
               "ttc.backends.openai.tokenization", "ttc.backends.openai.probe"}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_wire_format_imports_no_transport():
    for name in WIRE:
        found = {m for m in imported(PACKAGE / f"{name}.py") if m.split(".")[0] in NOT_IN_WIRE or m in NOT_IN_WIRE}
        assert not found, f"{name}.py imports {found}"


def test_importing_the_backend_loads_neither_torch_nor_transformers():
    code = ("import sys, ttc.backends.openai_compatible, ttc.backends.openai; from ttc.backends import "
            "OpenAICompatible; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_old_import_paths_name_the_same_objects():
    import ttc.backends
    import ttc.backends.openai_compatible as old

    for name in ("OpenAICompatible", "ChatMessages", "HTTPStatusError", "RequestRejected", "ServerFeatures"):
        assert getattr(old, name) is getattr(package, name)
    assert ttc.backends.OpenAICompatible is package.OpenAICompatible
