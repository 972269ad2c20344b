"""Which endpoint a prompt goes to when the server lacks the usual one: a chat reply continued by
the chat endpoint, or as text templated by the local tokenizer; a chat prompt templated locally
sent as the conversation where the server has no `/v1/completions`. Pure decisions on the
`ServerFeatures` record (the facade records what a refusal showed)."""

from __future__ import annotations

from typing import Protocol

from ttc.backends.openai.features import NOT_FOUND, ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.payloads import check_messages, wire_prompt
from ttc.backends.openai.prompts import ChatMessages, TemplatedChat
from ttc.errors import Unsupported
from ttc.types import Prompt

__all__ = ["chat_can_continue", "chat_instead", "check_prompt", "completions_missing", "continued_chat"]


class LocalTemplate(Protocol):
    def continued_text(self, prompt: ChatMessages, text: str) -> str | None: ...


def chat_can_continue(features: ServerFeatures) -> bool:
    """Whether the chat endpoint continues a final assistant message (by vLLM's flag or by
    prefilling it), as far as is known: not refused until the probe or an answer says so."""
    return not (features.continue_final_message is False
                or (features.chat is False and features.continue_final_message is None))


def continued_chat(prompt: ChatMessages, text: str, features: ServerFeatures, template: LocalTemplate,
                   base_url: str) -> Prompt:
    """`prompt` with `text` added to the assistant's reply: continued by the chat endpoint where it
    can, else as text the local tokenizer's chat template renders (sent to /v1/completions)."""
    if chat_can_continue(features):
        return prompt.continued(text)
    templated = template.continued_text(prompt, text) if features.completions is not False else None
    if templated is not None:
        return templated
    raise Unsupported(
        f"continuing a chat reply (step search) on {base_url} needs its /tokenize (vLLM), a local "
        f"tokenizer (OpenAICompatible(..., tokenizer=<Hugging Face id or folder of the served model>)) "
        f"or a chat endpoint that continues a final assistant message (continue_final_message, or "
        f"prefill); it has none of them")


def completions_missing(error: RequestRejected, features: ServerFeatures, model: str | None) -> bool:
    """Whether a refused `/v1/completions` request shows that the server has no such endpoint (a
    404/405/501 on a server not seen to answer it, not naming the model: OpenAI and vLLM answer
    404 for an unknown model too)."""
    return (error.status in NOT_FOUND and features.completions is not True
            and not (model and model in error.server_message))


def chat_instead(prompt: Prompt, base_url: str) -> ChatMessages:
    """The conversation to send to a server without `/v1/completions` in place of `prompt`: a
    locally templated chat prompt's messages; any other text or token ids cannot be sent."""
    if isinstance(prompt, ChatMessages):
        return prompt
    if isinstance(prompt, TemplatedChat):
        return ChatMessages(prompt.messages)
    raise Unsupported(f"{base_url} has no /v1/completions (chat only): a text or token-id prompt cannot be "
                      f"sent; use a chat prompt (OpenAICompatible(..., use_chat=True))")


def check_prompt(prompt: Prompt) -> None:
    """Bad input fails before the server is asked anything (its model name included)."""
    if isinstance(prompt, ChatMessages):
        check_messages(prompt.messages)
    else:
        wire_prompt(prompt)
