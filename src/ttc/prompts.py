"""How a problem becomes a prompt: a chat message rendered with the backend's chat template."""

from __future__ import annotations

from dataclasses import dataclass

from ttc.backends.base import Generator
from ttc.types import Problem, Prompt, SamplingParams

#: The default instruction: step-by-step reasoning ending in a boxed answer.
DEFAULT_INSTRUCTION = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclass(frozen=True)
class ChatPrompt:
    """A user message built from `instruction` (with `{question}`), optionally after a system message.

    A problem that brings its own conversation is sent as it is: `metadata["messages"]` (chat
    messages, as a `ttc serve` client sends them) replaces the rendered message, and
    `metadata["prompt"]` (a raw text prompt, `/v1/completions`) is sent without a chat template.
    """

    instruction: str = DEFAULT_INSTRUCTION
    system: str | None = None

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        given = problem.metadata.get("messages")
        if given:
            return [dict(m) for m in given]
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.instruction.format(question=problem.question)})
        return messages

    async def render(self, problem: Problem, generator: Generator, params: SamplingParams | None = None) -> Prompt:
        """The prompt for `problem`; `params.chat_template_kwargs` (e.g. {"enable_thinking": False})
        go to the chat template."""
        raw = problem.metadata.get("prompt")
        if isinstance(raw, str) and raw:
            return raw
        options = None if params is None else params.chat_template_kwargs
        if options:
            return await generator.chat_prompt(self.messages(problem), chat_template_kwargs=options)
        return await generator.chat_prompt(self.messages(problem))
