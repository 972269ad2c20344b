"""Hugging Face process reward models, run in this process with transformers.

Two formats cover most open PRMs:

- "qwen" (Qwen2.5-Math-PRM-7B/72B and PRMs trained the same way): the chat template is applied to
  system + question + the steps joined and ended by the separator token `<extra_0>`; a 2-class
  head gives logits at every position and P(step correct) = softmax(logits at each separator)[1].
  Qwen's checkpoints declare `Qwen2ForProcessRewardModel`, a Qwen2 model with a
  Linear-ReLU-Linear head ("score.0", "score.2"), which ships as remote code; ttc implements it
  natively under the same name (`Qwen2ForProcessRewardModel`), so no remote code runs and what
  it saves loads like Qwen's checkpoints. A plain token-classification
  model with 2 labels (`...ForTokenClassification`) is read the same way.
- "math-shepherd" (peiyi9979/math-shepherd-mistral-7b-prm and look-alikes): a causal LM reads
  "question Step 1: ... ки\\nStep 2: ... ки"; at each step tag 'ки' the logits of the '+' and '-'
  tokens give P(step correct) = softmax([logit(+), logit(-)])[0].

`ProcessRewardModel.from_pretrained(path, format="auto")` (`ttc.verifiers.loading.load_prm`) picks
the format from the config's architecture. Scoring runs in a worker thread (the event loop stays
free), in length-sorted batches of `batch_size` right-padded sequences; the tokens fed to the
model are recorded as
verifier tokens.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput

from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.types import Problem
from ttc.verifiers.loading import FORMATS, load_prm  # noqa: F401 (re-exported: the loader lives in loading)
from ttc.verifiers.prm_formats import QWEN_SYSTEM, qwen_messages, qwen_plain_text, shepherd_text
from ttc.verifiers.process import ProcessRewardModel

__all__ = ["FORMATS", "HFProcessRewardModel", "MathShepherdPRM", "Qwen2ForProcessRewardModel", "QwenPRM", "load_prm"]



class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2.5-Math-PRM's architecture: a Qwen2 model and a 2-class head on every position.

    Same parameter names as Qwen's `Qwen2ForProcessRewardModel` remote code ("model.*",
    "score.0.*", "score.2.*"), so its checkpoints load here without trust_remote_code.
    """

    config_class = Qwen2Config
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: Qwen2Config):
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                   nn.Linear(config.hidden_size, self.num_labels))
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> TokenClassifierOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            **kwargs).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))


class HFProcessRewardModel(ProcessRewardModel):
    """A transformers PRM: subclasses say how a trace becomes input ids and scores are read."""

    format = "?"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, max_length: int | None = None,
                 name: str | None = None):
        check_positive("batch_size", batch_size)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        config = model.config
        self.max_length = int(max_length or getattr(config, "max_position_embeddings", None) or 1 << 20)
        self.name = name or "prm"
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self._pad_id = int(pad if not isinstance(pad, (list, tuple)) else pad[0])
        self._lock = threading.Lock()

    # -- each format implements these ---------------------------------------------------------
    @abc.abstractmethod
    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Input ids of one trace and the positions where its step scores are read (one per step)."""

    @abc.abstractmethod
    def read(self, batch_ids: torch.Tensor, attention_mask: torch.Tensor,
             positions: list[list[int]]) -> list[list[float]]:
        """Run the model on a padded batch; one P(correct) per position."""

    # -- scoring -------------------------------------------------------------------------------
    def _encode_checked(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        ids, positions = self.encode(question, steps)
        if len(positions) != len(steps):
            raise InvalidInput(f"{self.name}: found {len(positions)} step markers for {len(steps)} steps "
                               f"(the tokenizer merged a marker with its neighbours?)")
        if len(ids) > self.max_length:
            raise InvalidInput(f"{self.name}: a trace of {len(ids)} tokens exceeds the PRM's "
                               f"{self.max_length}-token context")
        return ids, positions

    def score_texts(self, question: str, traces: Sequence[Sequence[str]]) -> tuple[list[list[float]], int]:
        """Step scores of every trace, and the number of tokens fed to the model (sync)."""
        encoded = [self._encode_checked(question, steps) for steps in traces]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        out: list[list[float] | None] = [None] * len(encoded)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start: start + self.batch_size]
                width = max(len(encoded[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    seq = encoded[i][0]
                    ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[row, : len(seq)] = 1
                scores = self.read(ids.to(self.device), mask.to(self.device), [encoded[i][1] for i in chunk])
                for row, i in enumerate(chunk):
                    out[i] = scores[row]
        return [list(s) for s in out], sum(len(ids) for ids, _ in encoded)

    async def score(self, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context) -> list[list[float]]:
        scores, tokens = await asyncio.to_thread(self.score_texts, problem.question, traces)
        ctx.record_verifier_tokens(tokens)
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, format={self.format!r}, device={str(self.device)!r})"


def _token_id(tokenizer: Any, token: str, what: str) -> int:
    """The id of a single-token string: a vocabulary entry, else the last id of its encoding."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is not None and token_id != tokenizer.unk_token_id:
        return int(token_id)
    ids = tokenizer.encode(token, add_special_tokens=False)
    if not ids:
        raise InvalidInput(f"the PRM's tokenizer cannot encode its {what} {token!r}")
    return int(ids[-1])


class QwenPRM(HFProcessRewardModel):
    """Qwen2.5-Math-PRM format: P(correct) = softmax(head logits at each `<extra_0>`)[1].

    Source: Qwen2.5-Math-PRM (Zhang et al., 2025, "The Lessons of Developing Process Reward Models
    in Mathematical Reasoning"), read as its model card does. Deviations: none in the reading.

    Args:
        model, tokenizer: the loaded PRM (`ProcessRewardModel.from_pretrained` builds both).
        separator: the token that ends each step.
        system: the system message of the chat template.
        batch_size, max_length, name: as `HFProcessRewardModel`.

    Example (needs PRM weights, so it is not run here):
        prm = ttc.verifiers.ProcessRewardModel.from_pretrained("path/to/Qwen2.5-Math-PRM-7B")
        beam = ttc.BeamSearch(width=4, expansions=4, prm=prm)"""

    format = "qwen"

    def __init__(self, model: Any, tokenizer: Any, *, separator: str = "<extra_0>", system: str | None = QWEN_SYSTEM,
                 **kwargs: Any):
        super().__init__(model, tokenizer, **kwargs)
        self.separator = separator
        self.system = system
        self.separator_id = _token_id(tokenizer, separator, "step separator")

    def text(self, question: str, steps: Sequence[str]) -> str:
        """The model's input text: the chat template over system, question and separated steps."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = qwen_messages(question, steps, separator=self.separator, system=self.system)
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return qwen_plain_text(question, steps, separator=self.separator, system=self.system)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = list(self.tokenizer(self.text(question, steps))["input_ids"])
        return ids, [i for i, t in enumerate(ids) if t == self.separator_id]

    def read(self, batch_ids: torch.Tensor, attention_mask: torch.Tensor,
             positions: list[list[int]]) -> list[list[float]]:
        out = self.model(input_ids=batch_ids, attention_mask=attention_mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.shape[-1] != 2:
            raise InvalidInput(f"{self.name}: a qwen-format PRM needs a 2-class head, got {logits.shape[-1]} outputs")
        probs = torch.softmax(logits.float(), dim=-1)[..., 1]
        return [[float(probs[row, p]) for p in pos] for row, pos in enumerate(positions)]


class MathShepherdPRM(HFProcessRewardModel):
    """Math-Shepherd format: P(correct) = softmax([logit('+'), logit('-')]) at each step tag 'ки'.

    Source: Math-Shepherd (Wang et al., 2024, "Math-Shepherd: Verify and Reinforce LLMs
    Step-by-step without Human Annotations"), read as its model card does. Deviations: none in
    the reading.

    Args:
        model, tokenizer: the loaded PRM (`ProcessRewardModel.from_pretrained` builds both).
        good_token, bad_token: the tokens whose logits give P(correct).
        step_tag: the tag after each step; step_prefix: the text before step i.
        batch_size, max_length, name: as `HFProcessRewardModel`.

    Example (needs PRM weights, so it is not run here):
        prm = ttc.verifiers.ProcessRewardModel.from_pretrained("path/to/math-shepherd", format="math-shepherd")
        best = ttc.BestOfN(n=8, verifier=prm.as_verifier("min"))"""

    format = "math-shepherd"

    def __init__(self, model: Any, tokenizer: Any, *, good_token: str = "+", bad_token: str = "-",
                 step_tag: str = "ки", step_prefix: str = "Step {i}: ", **kwargs: Any):
        super().__init__(model, tokenizer, **kwargs)
        self.step_tag = step_tag
        self.step_prefix = step_prefix
        # as the reference code: ids of "+ -" (without special tokens), and the tag's last id
        pair = tokenizer.encode(f"{good_token} {bad_token}", add_special_tokens=False)
        if len(pair) == 2:
            self.good_id, self.bad_id = int(pair[0]), int(pair[1])
        else:
            self.good_id = _token_id(tokenizer, good_token, "good label")
            self.bad_id = _token_id(tokenizer, bad_token, "bad label")
        tag_ids = tokenizer.encode(step_tag, add_special_tokens=False)
        if not tag_ids:
            raise InvalidInput(f"the PRM's tokenizer cannot encode the step tag {step_tag!r}")
        self.step_tag_id = int(tag_ids[-1])

    def text(self, question: str, steps: Sequence[str]) -> str:
        return shepherd_text(question, steps, step_tag=self.step_tag, step_prefix=self.step_prefix)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = list(self.tokenizer(self.text(question, steps))["input_ids"])
        return ids, [i for i, t in enumerate(ids) if t == self.step_tag_id]

    def read(self, batch_ids: torch.Tensor, attention_mask: torch.Tensor,
             positions: list[list[int]]) -> list[list[float]]:
        # only the tag positions' logits, and only the two label columns, are computed
        head = self.model.get_output_embeddings()
        body = getattr(self.model, getattr(self.model, "base_model_prefix", "model"), None)
        if head is not None and body is not None:
            hidden = body(input_ids=batch_ids, attention_mask=attention_mask).last_hidden_state
            out = []
            for row, pos in enumerate(positions):
                h = hidden[row, pos]
                logits = nn.functional.linear(h, head.weight[[self.good_id, self.bad_id]],
                                              None if head.bias is None else head.bias[[self.good_id, self.bad_id]])
                out.append([float(p) for p in torch.softmax(logits.float(), dim=-1)[:, 0]])
            return out
        logits = self.model(input_ids=batch_ids, attention_mask=attention_mask).logits
        pair = torch.softmax(logits[..., [self.good_id, self.bad_id]].float(), dim=-1)[..., 0]
        return [[float(pair[row, p]) for p in pos] for row, pos in enumerate(positions)]
