"""The old import path of the OpenAI-compatible backend, kept working: it lives in
`ttc.backends.openai` now (transport, features, wire format and tokenization apart)."""

from ttc.backends.openai import (
    COARSE_BLOCK,
    ChatMessages,
    HTTPStatusError,
    OpenAICompatible,
    RequestRejected,
    ServerFeatures,
)

__all__ = ["COARSE_BLOCK", "ChatMessages", "HTTPStatusError", "OpenAICompatible", "RequestRejected",
           "ServerFeatures"]
