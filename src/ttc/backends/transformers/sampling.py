"""Picking each row's next token, vLLM's way: greedy at temperature 0, else top-p and a seeded draw.

Why a generator per sequence: a seeded request must give the same completions whatever else
shares its batch, so each row draws its Gumbel noise from its own `torch.Generator` (seeded from
the request's seed and the sample's index). Logprobs come from the raw logits, before penalties,
temperature and the filters, as vLLM reports them.

The reasoning-model fields, in vLLM's order: the penalties change the logits first (greedy rows
too): `repetition_penalty` divides positive (multiplies negative) logits of every token seen in
the prompt or output, `frequency_penalty` subtracts per output occurrence, `presence_penalty` once
per token present in the output; then temperature, then `top_k`, `top_p` and `min_p` filter.
"""

from __future__ import annotations

import torch

from ttc.backends.transformers.records import Seq


def sample_tokens(logits: torch.Tensor, active: list[Seq], temps: torch.Tensor,
                  top_ps: torch.Tensor) -> torch.Tensor:
    """Pick one token per row, record it (with logprobs when asked) on its sequence."""
    raw = logits
    if any(_penalised(s) for s in active):
        logits = apply_penalties(logits, active)
    tokens = logits.argmax(-1)
    # which rows sample, read from the host-side params, and no index tensor when all rows do:
    # either would make the host wait for the device before it can queue the sampling kernels
    sampled = [j for j, s in enumerate(active) if s.request.params.temperature != 0]
    if sampled:
        every = len(sampled) == len(active)
        index = None if every else torch.tensor(sampled, device=logits.device)
        scores = logits / temps[:, None] if every else logits[index] / temps[index, None]
        if any(active[j].request.params.top_p < 1 for j in sampled):
            scores = top_p_filter(scores, top_ps if every else top_ps[index])
        if any(_filtered(active[j]) for j in sampled):
            scores = top_k_min_p_filter(scores, [active[j].request.params for j in sampled])
        # Gumbel-max with one generator per sequence: a row's draws do not depend on its batch
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=active[j].generator, device=logits.device)
                               for j in sampled])
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        if every:
            tokens = (scores + gumbel).argmax(-1)
        else:
            tokens[index] = (scores + gumbel).argmax(-1)
    _record(raw, tokens, active)
    return tokens


def _penalised(seq: Seq) -> bool:
    p = seq.request.params
    return bool((p.repetition_penalty not in (None, 1.0)) or p.presence_penalty or p.frequency_penalty)


def _filtered(seq: Seq) -> bool:
    p = seq.request.params
    return (p.top_k is not None and p.top_k > 0) or bool(p.min_p)


def apply_penalties(logits: torch.Tensor, active: list[Seq]) -> torch.Tensor:
    """The logits after each row's repetition, frequency and presence penalties (vLLM's definitions)."""
    logits = logits.clone()
    for j, seq in enumerate(active):
        p = seq.request.params
        if not _penalised(seq):
            continue
        row = logits[j]
        if p.repetition_penalty not in (None, 1.0):
            seen = torch.tensor(sorted(set(seq.request.prompt) | set(seq.tokens)), device=row.device,
                                dtype=torch.long)
            seen = seen[seen < row.shape[-1]]
            values = row[seen]
            row[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if (p.frequency_penalty or p.presence_penalty) and seq.tokens:
            ids = torch.tensor(seq.tokens, device=row.device, dtype=torch.long)
            counts = torch.bincount(ids, minlength=row.shape[-1])[: row.shape[-1]].to(row.dtype)
            row -= (p.frequency_penalty or 0.0) * counts + (p.presence_penalty or 0.0) * (counts > 0).to(row.dtype)
    return logits


def top_k_min_p_filter(scores: torch.Tensor, params: list) -> torch.Tensor:
    """Mask, per row, tokens outside its `top_k` most likely and those under `min_p` x the top probability."""
    out = scores.clone()
    for j, p in enumerate(params):
        row = out[j]
        if p.top_k is not None and 0 < p.top_k < row.shape[-1]:
            kth = row.topk(p.top_k).values[-1]
            row.masked_fill_(row < kth, float("-inf"))
        if p.min_p:
            probs = row.softmax(-1)
            row.masked_fill_(probs < p.min_p * probs.max(), float("-inf"))
    return out


def _record(logits: torch.Tensor, tokens: torch.Tensor, active: list[Seq]) -> None:
    """Append each row's token, and its logprob and top logprobs where its request asks for them."""
    want_lp = [bool(s.request.params.logprobs or s.request.params.top_logprobs) for s in active]
    token_list = tokens.tolist()
    chosen = top_values = top_ids = None
    if any(want_lp):
        logprobs = torch.log_softmax(logits, dim=-1)  # raw distribution, as vLLM reports it
        chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()
        k = min(max(s.request.params.top_logprobs or 0 for s in active), logprobs.shape[-1])
        if k:
            values, ids = logprobs.topk(k, dim=-1)
            top_values, top_ids = values.tolist(), ids.tolist()
    for j, seq in enumerate(active):
        seq.tokens.append(token_list[j])
        if want_lp[j]:
            seq.logprobs.append(chosen[j])
            k = seq.request.params.top_logprobs
            if k:
                seq.top.append(dict(zip(top_ids[j][:k], top_values[j][:k], strict=False)))


def top_p_filter(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask tokens outside the nucleus: those whose more likely tokens already hold >= top_p."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    remove = mass_before >= top_p[:, None]
    remove[:, 0] = False
    sorted_scores = sorted_scores.masked_fill(remove, float("-inf"))
    return torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
