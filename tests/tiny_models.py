"""A tiny random Qwen2 with grouped-query attention and a tokenizer just big enough for token-id
prompts: shared by the backend tests that compare decode paths (static vs dynamic cache, prefix
cache on vs off) within float32 rounding."""

import torch


class TinyTokenizer:
    """Just enough tokenizer for token-id prompts: decode writes the ids as text."""

    pad_token_id = 0
    eos_token_id = None
    model_max_length = 4096
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) % 200 + 1 for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f" {i}" for i in ids)


def tiny_gqa_model():
    """A 2-layer Qwen2 (4 query heads over 2 key/value heads), float32, seeded, without an EOS."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         attn_implementation="sdpa")
    m = Qwen2ForCausalLM(config).eval()
    m.generation_config.eos_token_id = None
    return m
