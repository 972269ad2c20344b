"""The command line's reasoning-model options, shared by `ttc run`, `ttc eval` and `ttc compare`:
the backend's thinking format, the chat template's `enable_thinking`, and server- or engine-specific
sampling fields (docs/reasoning.md, docs/cli.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ttc.errors import InvalidInput
from ttc.thinking import FORMATS


def add_thinking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thinking", default=None, choices=[*FORMATS, "none"], metavar="FORMAT",
                   help=f"the model's thinking format ({', '.join(FORMATS)}; none: the model does not think): "
                   "splits thinking from the final answer where the server does not (default: what the model's "
                   "folder declares in ttc_thinking.json, else none)")
    p.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="the chat template's enable_thinking (Qwen3-style templates; default: the template's own)")
    p.add_argument("--sampling-extra", default=None, metavar="JSON",
                   help="fields passed as they are to the server or engine, e.g. '{\"thinking_token_budget\": 64}' "
                   "(SamplingParams.extra)")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """`make_backend` keyword arguments from the options (only those given)."""
    if args.thinking is None:
        return {}
    return {"thinking": False if args.thinking == "none" else args.thinking}


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """`SamplingParams` fields from the options (only those given)."""
    out: dict[str, Any] = {}
    if args.enable_thinking is not None:
        out["chat_template_kwargs"] = {"enable_thinking": args.enable_thinking}
    if args.sampling_extra is not None:
        try:
            extra = json.loads(args.sampling_extra)
        except ValueError as exc:
            raise InvalidInput(f"--sampling-extra must be a JSON object: {exc}") from None
        if not isinstance(extra, dict):
            raise InvalidInput(f"--sampling-extra must be a JSON object, got {args.sampling_extra!r}")
        out["extra"] = extra
    return out
