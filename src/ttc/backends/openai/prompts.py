"""The chat prompt as messages (`ChatMessages`), for servers that are sent conversations."""

from __future__ import annotations

from collections.abc import Sequence

from ttc.errors import InvalidInput

__all__ = ["ChatMessages"]


class ChatMessages(str):
    """A chat prompt kept as messages, for `use_chat=True`: sent to `/v1/chat/completions`.

    It is a string (a plain rendering of the messages) so that it passes wherever a text prompt
    does; `messages` holds the real conversation. `continue_final`: the last message is the
    start of the assistant's reply, to be continued (not answered) by the model.
    """

    messages: tuple[dict[str, str], ...]
    continue_final: bool

    def __new__(cls, messages: Sequence[dict[str, str]], continue_final: bool = False) -> ChatMessages:
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages)
        self = super().__new__(cls, text)
        self.messages = tuple(dict(m) for m in messages)
        self.continue_final = bool(continue_final)
        return self

    def continued(self, text: str) -> ChatMessages:
        """This conversation with `text` added to the assistant's reply, to be continued."""
        if not text:
            return self
        messages = list(self.messages)
        if self.continue_final:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
        else:
            messages.append({"role": "assistant", "content": text})
        return ChatMessages(messages, continue_final=True)

    def __add__(self, other: str) -> str:  # type: ignore[override]
        raise InvalidInput("ChatMessages cannot be extended as text (that would drop the chat template); "
                           "use generator.continue_prompt(prompt, text)")
