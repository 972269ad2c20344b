"""Hugging Face PRM formats on tiny randomly initialised models built here (no weights to download).

Each test builds a small model of the real architecture and head, saves it with a word-level
tokenizer to a temporary folder, loads it through `ProcessRewardModel.from_pretrained`, and checks
the step scores against a direct forward pass computed here the way the models' cards do it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForTokenClassification,
)

import ttc
from ttc.context import Budget, Context
from ttc.errors import InvalidInput, ModelNotFound
from ttc.types import Problem
from ttc.verifiers import ProcessRewardModel, ProgrammaticPRM, score_steps
from ttc.verifiers.reward_models import MathShepherdPRM, Qwen2ForProcessRewardModel, QwenPRM

WORDS = ("what is two plus three ? first add the numbers two and three . so the answer is five six step "
         "1 2 3 4 : + - ки \\boxed { } please reason by , put your final within <|im_start|> <|im_end|> "
         "system user assistant wrong right check").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
QUESTION = "what is two plus three ?"
TRACES = [["first add the numbers two and three .", "so the answer is five ."],
          ["so the answer is six ."],
          ["first add the numbers .", "two plus three is five .", "check : right", "the answer is five ."]]


def tokenizer(special: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *special, *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    if special:
        fast.add_special_tokens({"additional_special_tokens": special})
    return fast


def qwen_config(vocab_size: int, **extra) -> Qwen2Config:
    return Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **extra)


@pytest.fixture
def qwen_prm_dir(tmp_path):
    tok = tokenizer(["<extra_0>"])
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForProcessRewardModel(qwen_config(len(tok), architectures=["Qwen2ForProcessRewardModel"]))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, model, tok


def qwen_reference(model, tok, question: str, steps: list[str]) -> list[float]:
    """Qwen2.5-Math-PRM's model card: chat template, then softmax(logits)[:, 1] at each <extra_0>."""
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    sep = tok.convert_tokens_to_ids("<extra_0>")
    probs = torch.softmax(logits, dim=-1)[:, 1]
    return [float(p) for p in probs[ids[0] == sep]]


def test_qwen_format_matches_a_direct_forward_pass(qwen_prm_dir):
    path, model, tok = qwen_prm_dir
    prm = ProcessRewardModel.from_pretrained(str(path))
    assert isinstance(prm, QwenPRM) and isinstance(prm.model, Qwen2ForProcessRewardModel)
    ctx = Context(ttc.backends.Scripted(["x"]))
    scores = asyncio.run(prm.score(Problem(QUESTION), TRACES, ctx))  # one batch, padded
    for steps, row in zip(TRACES, scores, strict=False):
        assert row == pytest.approx(qwen_reference(model, tok, QUESTION, steps), abs=1e-5)
        assert all(0 < s < 1 for s in row)
    assert len({round(s, 6) for row in scores for s in row}) > 3  # random weights: the scores differ
    expected_tokens = sum(len(prm.encode(QUESTION, steps)[0]) for steps in TRACES)
    assert ctx.usage.verifier_tokens == expected_tokens


def test_qwen_checkpoint_layout_is_the_remote_code_one(qwen_prm_dir):
    path, _, _ = qwen_prm_dir
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= keys
    assert any(k.startswith("model.layers.0.") for k in keys)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]


def test_qwen_format_batches_give_the_same_scores_as_one_by_one(qwen_prm_dir):
    path, _, _ = qwen_prm_dir
    batched = ProcessRewardModel.from_pretrained(str(path), batch_size=8)
    single = ProcessRewardModel.from_pretrained(str(path), batch_size=1)
    a, _ = batched.score_texts(QUESTION, TRACES)
    b, _ = single.score_texts(QUESTION, TRACES)
    assert [x for row in a for x in row] == pytest.approx([x for row in b for x in row], abs=1e-5)


def test_token_classification_head_reads_as_qwen_format(tmp_path):
    tok = tokenizer(["<extra_0>"])
    torch.manual_seed(1)
    model = Qwen2ForTokenClassification(qwen_config(len(tok), num_labels=2,
                                                    architectures=["Qwen2ForTokenClassification"]))
    model.eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)  # no chat template: plain "system\nquestion\nsteps" text
    prm = ProcessRewardModel.from_pretrained(str(tmp_path))
    assert isinstance(prm, QwenPRM)
    text = prm.text(QUESTION, TRACES[0])
    assert text.endswith("so the answer is five .<extra_0>") and text.count("<extra_0>") == 2
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0], dim=-1)[:, 1]
    expected = probs[ids[0] == tok.convert_tokens_to_ids("<extra_0>")].tolist()
    assert prm.score_texts(QUESTION, [TRACES[0]])[0][0] == pytest.approx(expected, abs=1e-5)


@pytest.fixture
def shepherd_prm_dir(tmp_path):
    tok = tokenizer([])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, model, tok


def shepherd_reference(model, tok, question: str, steps: list[str]) -> list[float]:
    """Math-Shepherd's model card: '+'/'-' logits at each 'ки' tag, softmax, P('+')."""
    solution = "\n".join(f"Step {i}: {s} ки" for i, s in enumerate(steps, 1))
    ids = torch.tensor([tok.encode(f"{question} {solution}")])
    good, bad = tok.encode("+ -", add_special_tokens=False)
    tag = tok.encode("ки", add_special_tokens=False)[-1]
    with torch.no_grad():
        logits = model(ids).logits[:, :, [good, bad]]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[ids == tag].tolist()


def test_math_shepherd_format_matches_a_direct_forward_pass(shepherd_prm_dir):
    path, model, tok = shepherd_prm_dir
    prm = ProcessRewardModel.from_pretrained(str(path))
    assert isinstance(prm, MathShepherdPRM)
    assert prm.text(QUESTION, TRACES[0]).endswith("Step 2: so the answer is five . ки")
    ctx = Context(ttc.backends.Scripted(["x"]))
    scores = asyncio.run(prm.score(Problem(QUESTION), TRACES, ctx))
    for steps, row in zip(TRACES, scores, strict=False):
        assert row == pytest.approx(shepherd_reference(model, tok, QUESTION, steps), abs=1e-5)
    assert len({round(s, 6) for row in scores for s in row}) > 3
    assert ctx.usage.verifier_tokens == sum(len(prm.encode(QUESTION, s)[0]) for s in TRACES)


def test_hf_prm_inside_a_step_search(shepherd_prm_dir):
    path, _, _ = shepherd_prm_dir
    prm = ProcessRewardModel.from_pretrained(str(path), format="math-shepherd")
    llm = ttc.backends.Scripted(
        lambda prompt, params, i: ["first add the numbers .\n\n", "so the answer is \\boxed{5} ."][
            int("numbers" in prompt.split("<assistant>")[-1])
        ]
    )
    result = ttc.BeamSearch(1, 2, prm).solve(QUESTION, llm, budget=Budget(verifier_calls=10), seed=0)
    assert result.ok and result.usage.verifier_calls == 4
    assert result.tree.usage().counts() == result.usage.counts()
    scored = [n for n in result.tree if n.score is not None]
    assert scored and all(0 < n.score < 1 for n in scored)
    # the search asked the PRM exactly what a direct call gives
    leaf = scored[-1]
    direct = asyncio.run(score_steps(prm, Problem(QUESTION), [[s.text.strip() for s in leaf.trace.steps]],
                                     Context(llm)))
    assert leaf.step_scores == pytest.approx(direct[0], abs=1e-6)


def test_format_errors_are_clear(tmp_path, qwen_prm_dir):
    with pytest.raises(ModelNotFound):
        ProcessRewardModel.from_pretrained(str(tmp_path / "missing"))
    path, _, _ = qwen_prm_dir
    with pytest.raises(InvalidInput, match="unknown PRM format"):
        ProcessRewardModel.from_pretrained(str(path), format="orm")
    prm = ProcessRewardModel.from_pretrained(str(path), max_length=8)
    with pytest.raises(InvalidInput, match="context"):
        prm.score_texts(QUESTION, TRACES)
    assert isinstance(ProgrammaticPRM(lambda p, s: 1.0), ProcessRewardModel)
