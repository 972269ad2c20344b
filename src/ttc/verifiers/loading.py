"""Loading Hugging Face PRMs: `ProcessRewardModel.from_pretrained` forwards here.

The format is read from the folder's config (no torch needed for that); the torch-bound model
classes (`ttc.verifiers.reward_models`) are imported only when a PRM is actually loaded, so the
abstract PRM base (`ttc.verifiers.process`) imports this module at its top without pulling in
torch or transformers, and without an import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ttc.errors import InvalidInput, ModelNotFound

if TYPE_CHECKING:
    from ttc.verifiers.reward_models import HFProcessRewardModel

__all__ = ["FORMATS", "load_prm", "prm_format"]

#: PRM input/output conventions `from_pretrained` knows
FORMATS = ("qwen", "math-shepherd")
_FORMAT_ALIASES = {"qwen2.5-math-prm": "qwen", "qwen-prm": "qwen", "token-classification": "qwen",
                   "shepherd": "math-shepherd", "math_shepherd": "math-shepherd", "mathshepherd": "math-shepherd"}


def prm_format(format: str, architectures: Sequence[str]) -> str:
    """The PRM format named by `format` (an alias, or "auto": read from the config's architectures)."""
    key = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if key in FORMATS:
        return key
    if key != "auto":
        raise InvalidInput(f"unknown PRM format {format!r}; known: auto, {', '.join(FORMATS)}")
    if any(a == "Qwen2ForProcessRewardModel" or a.endswith("ForTokenClassification")
           or a.endswith("ForProcessRewardModel") for a in architectures):
        return "qwen"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "math-shepherd"
    raise InvalidInput(f"cannot tell the PRM format from architectures {list(architectures)}: "
                       f"pass format='qwen' or format='math-shepherd'")


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise InvalidInput(f"unknown dtype {dtype!r}")


def _load_tokenizer(source: str, trust_remote_code: bool) -> Any:
    """The folder's tokenizer.json exactly as saved when there is one, else AutoTokenizer's choice.

    (transformers 5's AutoTokenizer rebuilds some tokenizers from the model type, with that type's
    canonical pre-tokenizer; the file is what the PRM was trained with.)
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if os.path.isfile(os.path.join(source, "tokenizer.json")):
        return PreTrainedTokenizerFast.from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def load_prm(path: str, format: str = "auto", *, device: str = "cpu", dtype: Any = None, batch_size: int = 8,
             max_length: int | None = None, trust_remote_code: bool = False, name: str | None = None,
             tokenizer: Any = None, **options: Any) -> HFProcessRewardModel:
    """Load a PRM folder (or a hub id in the local hub cache) in the given `format`.

    `tokenizer`: a tokenizer object or folder to use instead of the PRM folder's. `options` go to
    the format's class (e.g. `separator=`, `system=` for qwen; `good_token=`, `bad_token=`,
    `step_tag=`, `step_prefix=` for math-shepherd).
    """
    from ttc._extras import require_extra

    require_extra("transformers", "loading a process reward model in process")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

    from ttc.verifiers.reward_models import MathShepherdPRM, Qwen2ForProcessRewardModel, QwenPRM

    expanded = os.path.expanduser(str(path))
    local = os.path.isdir(expanded)
    if not local and (expanded.startswith(("/", ".", "~")) or str(path).count("/") > 1):
        raise ModelNotFound(f"PRM folder {path!r} does not exist")
    source = expanded if local else str(path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = _load_tokenizer(tokenizer or source, trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"could not load the PRM {path!r}: {exc}") from exc
    architectures = list(getattr(config, "architectures", None) or [])
    fmt = prm_format(format, architectures)
    kwargs = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    try:
        if fmt == "qwen":
            if "Qwen2ForProcessRewardModel" in architectures:
                model = Qwen2ForProcessRewardModel.from_pretrained(source, dtype=kwargs["dtype"])
            elif any(a.endswith("ForTokenClassification") for a in architectures):
                model = AutoModelForTokenClassification.from_pretrained(source, **kwargs)
            else:
                model = AutoModel.from_pretrained(source, **kwargs)
            cls: type[HFProcessRewardModel] = QwenPRM
        else:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            cls = MathShepherdPRM
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"could not load the PRM weights from {path!r}: {exc}") from exc
    model.to(device)
    return cls(model, tokenizer, batch_size=batch_size, max_length=max_length,
               name=name or os.path.basename(os.path.normpath(str(path))) or "prm", **options)
