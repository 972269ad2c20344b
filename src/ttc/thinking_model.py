"""The thinking test model: the embedded SmolLM2 taught to think like DeepSeek-R1, built offline.

No reasoning model can be downloaded where ttc is tested, so `smollm2_thinking()` makes one from the
embedded SmolLM2-135M-Instruct (`ttc.models.smollm2()`), reproducibly:

- `<think>` and `</think>` become single added tokens (not "special": vLLM's reasoning parsers and
  ttc read them in the decoded text, which drops special tokens), and the embeddings are resized;
- its chat template opens the thinking as DeepSeek-R1's does (the generation prompt ends with
  `<think>\\n`) and honours `enable_thinking=False` as Qwen3's does (it writes an empty, closed
  thinking `<think>\\n\\n</think>\\n\\n` into the prompt);
- a short, seeded CPU fine-tune on synthetic step-by-step arithmetic traces
  (`ttc.thinking_traces`): the model writes steps separated by blank lines, closes its thinking
  and answers in one line with `\\boxed{N}`.

It is not smart; it is a real model whose traces have the shape of a reasoning model's. Its folder
declares its thinking format in `ttc_thinking.json` and records the recipe it was built from.
Build it ahead with `python -m ttc.models smollm2-thinking` (minutes on a small CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ttc.thinking_traces import arithmetic_traces

logger = logging.getLogger(__name__)

THINKING_NAME = "SmolLM2-135M-Thinking"
START, END = "<think>", "</think>"
#: the file in a model folder that declares its thinking format (read by ttc backends)
THINKING_FILE = "ttc_thinking.json"
RECIPE_FILE = "ttc_recipe.json"
_BUILD_VERSION = "1"  # bump when the template, the data or the trainer change what a recipe builds

#: DeepSeek-R1-like: the generation prompt opens the thinking; `enable_thinking=False` (Qwen3's
#: switch) closes an empty one. Earlier assistant turns keep only their final content, as R1's and
#: Qwen3's templates do.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else '' -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else -%}"
    "{{ '<think>\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class ThinkingRecipe:
    """What the fine-tune does; the same recipe (and build version) gives the same weights.

    Only the top `trainable_layers` decoder layers, the final norm and the two new token rows are
    trained (the rest is frozen, which keeps a CPU build within minutes). The examples mix four
    kinds: `direct_fraction` are rendered with `enable_thinking=False` (the model answers at once);
    `cut_fraction` have their thinking cut at a random token and closed right there (as a thinking
    budget closes it: the model learns to answer after any `</think>`); `check_fraction` re-check
    their last step after a "Wait," (so a "Wait" appended by budget forcing reads naturally); the
    rest think step by step and answer. `threads` fixes torch's thread count during the build (the
    float reductions, so the weights, depend on it).
    """

    seed: int = 0
    steps: int = 80
    batch_size: int = 8
    learning_rate: float = 4e-4
    trainable_layers: int = 6
    direct_fraction: float = 0.15
    cut_fraction: float = 0.15
    check_fraction: float = 0.1
    threads: int = 1

    def digest(self) -> str:
        """A short hash of the recipe, the build version and the chat template."""
        blob = json.dumps({"recipe": asdict(self), "version": _BUILD_VERSION, "template": CHAT_TEMPLATE},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEFAULT_RECIPE = ThinkingRecipe()


def thinking_folder_name(recipe: ThinkingRecipe = DEFAULT_RECIPE) -> str:
    """The cache folder name, `<name>-v<version>-<recipe digest>`: a changed recipe, template or
    trainer never reuses a folder built by another one."""
    return f"{THINKING_NAME}-v{_BUILD_VERSION}-{recipe.digest()}"


def training_traces(recipe: ThinkingRecipe = DEFAULT_RECIPE):
    """The problems the recipe fine-tunes on (one per example)."""
    return arithmetic_traces(recipe.steps * recipe.batch_size, seed=recipe.seed)


def held_out_traces(n: int, recipe: ThinkingRecipe = DEFAULT_RECIPE, seed: int = 10_000):
    """`n` problems of the same kinds that the recipe never trained on (for evaluations and tests)."""
    seen = {trace.question for trace in training_traces(recipe)}
    out = []
    for trace in arithmetic_traces(4 * n + 100, seed=seed + recipe.seed):
        if trace.question not in seen and len(out) < n:
            seen.add(trace.question)
            out.append(trace)
    return out


def target_text(trace, *, thinking: bool = True) -> str:
    """What the model is taught to generate after the generation prompt, end-of-turn included."""
    if not thinking:
        return f"{trace.final}<|im_end|>"
    return f"{trace.thinking}\n{END}\n\n{trace.final}<|im_end|>"


def weights_checksum(model) -> str:
    """sha256 over a model's parameters in name order (bitwise: equal only for identical weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_thinking_model(base: str | os.PathLike, recipe: ThinkingRecipe = DEFAULT_RECIPE, *,
                         progress: bool = True):
    """(model, tokenizer, losses): the SmolLM2 folder `base` with the marker tokens and the chat
    template, fine-tuned by `recipe` (torch's thread count fixed to `recipe.threads` meanwhile)."""
    from ttc._extras import require_extra

    require_extra("transformers", "building the thinking test model")
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        _add_marker_tokens(tokenizer, model, AddedToken, torch)
        tokenizer.chat_template = CHAT_TEMPLATE
        losses = _fine_tune(model, tokenizer, recipe, torch, progress=progress)
    finally:
        torch.set_num_threads(previous_threads)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return model, tokenizer, losses


def build_thinking_model(base: str | os.PathLike, out: str | os.PathLike,
                         recipe: ThinkingRecipe = DEFAULT_RECIPE, *, progress: bool = True) -> None:
    """Fine-tune the SmolLM2 folder `base` into a thinking model written into the folder `out`
    (`ttc.models.smollm2_thinking()` calls it on a staging folder that it publishes atomically).
    The folder declares its thinking format (`ttc_thinking.json`) and records its recipe, the
    recipe's digest, the weights' checksum and the training losses (`ttc_recipe.json`)."""
    started = time.monotonic()
    logger.info("building the thinking test model (recipe %s); this takes minutes", recipe.digest())
    model, tokenizer, losses = train_thinking_model(base, recipe, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / THINKING_FILE).write_text(json.dumps({"format": "deepseek_r1"}) + "\n")
    (out / RECIPE_FILE).write_text(json.dumps({
        "recipe": asdict(recipe), "digest": recipe.digest(), "build_version": _BUILD_VERSION,
        "base": "SmolLM2-135M-Instruct", "weights_sha256": weights_checksum(model),
        "losses": [round(loss, 4) for loss in losses],
        "build_seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")
    logger.info("built the thinking test model in %.0f s", time.monotonic() - started)


def _add_marker_tokens(tokenizer, model, added_token, torch) -> None:
    """Add `<think>`/`</think>` as single tokens; each new row starts as the mean of the rows of
    the pieces its text used to be split into (a meaningful start for a short fine-tune)."""
    pieces = {marker: tokenizer.encode(marker, add_special_tokens=False) for marker in (START, END)}
    tokenizer.add_tokens([added_token(marker, special=False, normalized=False, single_word=False,
                                      lstrip=False, rstrip=False) for marker in (START, END)])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for marker, ids in pieces.items():
            weight[tokenizer.convert_tokens_to_ids(marker)] = weight[ids].mean(dim=0)


def _examples(tokenizer, recipe: ThinkingRecipe, count: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) pairs, the prompt rendered by the model's own chat template.

    Targets are assembled from token ids (thinking, then the `</think>` id, then the answer), so a
    thinking cut at token k is exactly what a server that forces `</think>` after k tokens holds.
    """
    import random

    rng = random.Random(recipe.seed + 1)
    end_id = tokenizer.convert_tokens_to_ids(END)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    out = []
    for trace in training_traces(recipe)[:count]:
        draw = rng.random()
        answer = encode(f"\n\n{trace.final}<|im_end|>")
        if draw < recipe.direct_fraction:
            thinking, target = False, encode(target_text(trace, thinking=False))
        elif draw < recipe.direct_fraction + recipe.cut_fraction:
            steps = encode(trace.thinking)
            thinking, target = True, steps[:rng.randrange(1, len(steps))] + [end_id] + answer
        elif draw < recipe.direct_fraction + recipe.cut_fraction + recipe.check_fraction:
            check = f"Wait, let me check: {trace.steps[-1].split(': ')[-1]} Yes."
            thinking, target = True, encode(f"{trace.thinking}\n\n{check}\n") + [end_id] + answer
        else:
            thinking, target = True, encode(f"{trace.thinking}\n") + [end_id] + answer
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": trace.question}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=thinking)
        out.append((encode(prompt), target))
    return out


def _fine_tune(model, tokenizer, recipe: ThinkingRecipe, torch, *, progress: bool) -> list[float]:
    """Train the top layers and the marker rows on the traces, loss on the targets only."""
    from ttc._progress import tqdm

    torch.manual_seed(recipe.seed)
    layers = model.model.layers
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [p for layer in layers[len(layers) - recipe.trainable_layers:] for p in layer.parameters()]
    trainable += list(model.model.norm.parameters())
    embedding = model.get_input_embeddings().weight  # tied with the output layer
    embedding.requires_grad_(True)
    new_rows = torch.zeros(embedding.shape[0], 1)
    new_rows[[tokenizer.convert_tokens_to_ids(START), tokenizer.convert_tokens_to_ids(END)]] = 1.0
    embedding.register_hook(lambda grad: grad * new_rows)  # only the new markers' rows learn
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable + [embedding], lr=recipe.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 5) * max(0.05, 1 - step / recipe.steps))
    examples = _examples(tokenizer, recipe, recipe.steps * recipe.batch_size)
    pad = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.train()
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc="fine-tuning the thinking test model", unit="step",
               disable=not progress)
    for step in bar:
        batch = examples[step * recipe.batch_size:(step + 1) * recipe.batch_size]
        ids, labels, mask = _collate(batch, pad, torch)
        with torch.no_grad():
            inputs = model.get_input_embeddings()(ids)  # no gradient down through the frozen layers
        hidden = model.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state[:, :-1]
        taught = labels[:, 1:] != -100  # the output layer runs only where there is something to learn
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[taught]), labels[:, 1:][taught])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable + [embedding], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return losses


def _collate(batch, pad: int, torch):
    """Right-padded input ids, labels (-100 on the prompt and the padding) and attention mask."""
    width = max(len(p) + len(t) for p, t in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (prompt, target) in enumerate(batch):
        sequence = prompt + target
        ids[row, :len(sequence)] = torch.tensor(sequence)
        labels[row, len(prompt):len(sequence)] = torch.tensor(target)
        mask[row, :len(sequence)] = 1
    return ids, labels, mask
