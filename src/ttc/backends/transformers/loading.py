"""Loading a model and tokenizer for the transformers backend: device, dtype, folders and hub ids.

Offline is the normal case here: a hub id is looked up in the local hub cache before the network,
and a failure names what to pass instead (a model folder) rather than the loaders' retries.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ttc.errors import InvalidInput, ModelNotFound


def as_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """None/"auto": float32 on CPU, bfloat16 (float16 without bf16 support) on CUDA."""
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise InvalidInput(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or a torch.dtype")


def as_device(device: str | torch.device) -> torch.device:
    """"auto": CUDA when available, else CPU; a CUDA device without a GPU is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}: {exc}") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} asked for, but this torch sees no CUDA GPU")
    return torch_device


def load(path: str, dtype: torch.dtype, trust_remote_code: bool, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(model, tokenizer) of a folder or hub id; ModelNotFound says why one could not be loaded."""
    try:
        return _load(path, dtype, trust_remote_code, kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isdir(path):
            raise ModelNotFound(f"could not load the model folder {path!r}: {exc}") from exc
        raise ModelNotFound(
            f"could not load {path!r}: it is not a local folder, and as a hub id it needs the "
            f"Hugging Face hub (unreachable offline) or a local hub cache. Pass a model folder "
            f"instead (HF_HUB_OFFLINE=1 skips the network attempts). ({type(exc).__name__}: {exc})") from exc


def _load(path: str, dtype: torch.dtype, trust_remote_code: bool, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Load model and tokenizer; a hub id is looked up in the local hub cache before the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_keys = ("local_files_only", "revision", "cache_dir", "token", "subfolder")
    shared = {k: kwargs[k] for k in hub_keys if k in kwargs}

    def load(**extra: Any) -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **shared, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     **kwargs, **extra)
        return model, tokenizer

    if os.path.isdir(path) or "local_files_only" in kwargs:
        return load()
    try:
        return load(local_files_only=True)  # offline, a cached hub model loads without network timeouts
    except (OSError, ValueError):
        return load()


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every end-of-sequence id the generation config or the tokenizer names."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        ids.update([source] if isinstance(source, int) else source)
    return frozenset(int(i) for i in ids)
