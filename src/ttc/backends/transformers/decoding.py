"""One batch from prefill to its last token: the decode loop shared by the dynamic and static caches.

Each distinct prompt of the batch is prefilled once (from the prefix cache where it can be), its
KV is replicated for its n candidates, and all rows then decode together; a row leaves the batch
as soon as its candidate finishes (or its caller stops listening), and with `join_running` new
requests join the running batch between steps (dynamic cache only).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ttc.backends.transformers.dynamic_decode import DynamicSession
from ttc.backends.transformers.prefill import keep_kv, prefill
from ttc.backends.transformers.prefix_cache import PrefixCache
from ttc.backends.transformers.records import Batch, Request, Seq, TransformersStats
from ttc.backends.transformers.sampling import sample_tokens
from ttc.backends.transformers.stopping import Decode, finish, finished, send


@dataclass
class _Rows:
    """The live rows of a batch: their candidates, sampling settings and next positions."""

    seqs: list[Seq]
    temps: torch.Tensor
    top_ps: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def of(cls, seqs: list[Seq], positions: torch.Tensor, device: torch.device) -> _Rows:
        return cls(seqs, torch.tensor([s.request.params.temperature for s in seqs], dtype=torch.float32, device=device),
                   torch.tensor([s.request.params.top_p for s in seqs], dtype=torch.float32, device=device), positions)

    def keep(self, keep: list[int], index: torch.Tensor) -> None:
        self.positions = self.positions[index]
        self.temps, self.top_ps = self.temps[index], self.top_ps[index]
        self.seqs = [self.seqs[j] for j in keep]

    def extend(self, other: _Rows) -> None:
        self.positions = torch.cat([self.positions, other.positions])
        self.temps = torch.cat([self.temps, other.temps])
        self.top_ps = torch.cat([self.top_ps, other.top_ps])
        self.seqs = self.seqs + other.seqs


class BatchDecoder:
    """Runs batches on the model thread; owns the counters, the prefix cache and the static decoder."""

    def __init__(self, model: Any, decode: Decode, eos_token_ids: frozenset[int], pad_id: int,
                 static: Any = None):
        self.model, self.decode, self.eos_token_ids, self.pad_id = model, decode, eos_token_ids, pad_id
        self.device = next(model.parameters()).device
        self.static = static
        self.prefix_cache: PrefixCache | None = None
        self.joinable = False  # requests can join a running batch (its KV can be cut by position)
        #: True: requests that arrive while a batch decodes join it at its next step (continuous
        #: batching; dynamic cache only). False (default): they wait for the batch to end. Opt-in
        #: because no gain was measured yet (docs/performance.md, "Requests joining a running batch").
        self.join_running = False
        self.stats = TransformersStats()
        self.decoded = 0  # tokens sampled since construction (not reset with stats), for progress
        forward_params = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward_params
        self._pass_cache_position = "cache_position" in forward_params  # transformers 4.x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                cache: Any, past_length: int) -> torch.Tensor:
        """The last position's logits (float32) of one forward pass over `cache`."""
        kwargs: dict[str, Any] = {}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        if self._pass_cache_position:
            kwargs["cache_position"] = torch.arange(past_length, past_length + input_ids.shape[1],
                                                    device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def prefill(self, distinct: list[tuple[int, ...]]) -> tuple[torch.Tensor, Any, torch.Tensor, int, list[int]]:
        """`prefill.prefill` with this decoder's model, prefix cache and padding."""
        return prefill(self.model, self.forward, self.prefix_cache, distinct, self.pad_id, self.device)

    def prepare(self, batch: Batch) -> tuple[list[Seq], torch.Tensor, torch.Tensor, Any, torch.Tensor, int]:
        """Prefill the batch's distinct prompts (each once); its sequences, the prompt row of each,
        and the prompts' last logits, cache, mask and width."""
        device = self.device
        prompts: dict[tuple[int, ...], int] = {}
        owners: list[Request] = []  # the request charged with each distinct prompt's prefill
        for request, _ in batch:
            if request.prompt not in prompts:  # a prompt shared by requests is prefilled once
                prompts[request.prompt] = len(prompts)
                owners.append(request)
            if not request.started:
                request.started = True
                self.stats.requests += 1
        distinct = list(prompts)
        logits, cache, mask, width, cached = self.prefill(distinct)
        for prompt, owner, reused in zip(distinct, owners, cached, strict=True):
            owner.prefilled += len(prompt) - reused  # the prefix cache's part counts as cached
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += sum(len(p) for p in distinct) - sum(cached)
        self.stats.cached_tokens += sum(cached)

        seqs: list[Seq] = []
        rows: list[int] = []
        for request, indices in batch:
            for i in indices:
                greedy = request.params.temperature == 0
                gen = None
                if not greedy:
                    gen = torch.Generator(device=device)
                    gen.manual_seed(request.seeds[i])
                seqs.append(Seq(request, i, gen))
                rows.append(prompts[request.prompt])
        self.stats.sequences += len(seqs)
        return seqs, torch.tensor(rows, dtype=torch.long, device=device), logits, cache, mask, width

    def decode_batch(self, batch: Batch, more: Callable[[int], Batch]) -> None:
        """Decode `batch` to its last candidate; `more(running)` hands over requests that may join."""
        started = time.perf_counter()
        seqs, row_index, logits, cache, mask, width = self.prepare(batch)
        self.stats.batches += 1
        session: Any = None
        longest = max(r.max_new for r, _ in batch)
        if self.static is not None and self.static.fits(width + longest):
            # the prompts' KV rows go into a fixed-shape cache, one per candidate
            session = self.static.start(cache, row_index, mask, width, longest)
        mask = mask[row_index]
        if session is None:
            cache.batch_select_indices(row_index)  # one prompt's KV cache -> its n candidates
            session = DynamicSession(self.model, self.forward, cache, mask)
        # requests that arrive while this batch decodes join it at the next step (dynamic cache only)
        joining = isinstance(session, DynamicSession) and self.join_running and self.joinable
        logits = logits[row_index]
        rows = _Rows.of(seqs, mask.sum(-1, keepdim=True), self.device)
        while True:
            tokens = sample_tokens(logits, rows.seqs, rows.temps, rows.top_ps)  # waits for the device
            self.stats.model_seconds += time.perf_counter() - started  # counted before answers go out
            self.stats.generated_tokens += len(rows.seqs)
            self.decoded += len(rows.seqs)
            keep = self._settle(rows.seqs, session)
            if not keep:
                break
            if len(keep) < len(rows.seqs):  # drop finished sequences from the batch
                keep_index = torch.tensor(keep, dtype=torch.long, device=self.device)
                session.keep(keep_index)
                tokens = tokens[keep_index]
                rows.keep(keep, keep_index)
            started = time.perf_counter()
            logits = session.step(tokens, rows.positions)
            rows.positions = rows.positions + 1
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(rows.seqs)
            if joining:
                logits = self._join(session, rows, logits, more(len(rows.seqs)))

    def _settle(self, active: list[Seq], session: Any) -> list[int]:
        """Finish (and answer) the rows whose candidate ended, stream the others; the rows to keep."""
        keep = []
        for j, seq in enumerate(active):
            if seq.request.cancelled.is_set():
                continue  # nobody is waiting: drop it without an answer
            if finished(seq, self.eos_token_ids, self.decode):
                if self.prefix_cache is not None:  # where its KV is: (cache, row, columns)
                    keep_kv(self.prefix_cache, *session.row(j), seq)
                finish(seq, self.decode)
                continue
            if seq.request.deltas is not None:
                send(seq)
            keep.append(j)
        return keep

    def _join(self, session: DynamicSession, rows: _Rows, logits: torch.Tensor, extra: Batch) -> torch.Tensor:
        """Prefill the newcomers of `extra`; they sample with the running rows from now on."""
        if not extra:
            return logits
        new, new_rows, new_logits, new_cache, new_mask, _ = self.prepare(extra)
        new_cache.batch_select_indices(new_rows)
        new_mask = new_mask[new_rows]
        session.join(new_cache, new_mask)
        rows.extend(_Rows.of(new, new_mask.sum(-1, keepdim=True), self.device))
        self.stats.joined += len(new)
        return torch.cat([logits, new_logits[new_rows]])
