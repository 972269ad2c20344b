"""Early exit: generate one candidate in pieces and let a probe decide when to stop and answer."""

from __future__ import annotations

from collections.abc import Sequence

from ttc.backends.base import HIDDEN_STATES, TOKEN_IDS
from ttc.candidates import answer_of, thinking_fields
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, Unsupported
from ttc.needs import Needs, fill, needs_of
from ttc.probes.base import DROP, EXIT, PLAIN_SUFFIX, Decision, Probe, TraceState, elicit_answer
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler
from ttc.strategies.sample import DEFAULT_PARAMS
from ttc.thinking import generated_ids, generated_logprobs, generated_text
from ttc.types import Candidate, Completion, Problem, SamplingParams

MODES = ("chunks", "stream")
#: Candidate.finish_reason of a trace a probe stopped
EARLY_EXIT, DROPPED = "early_exit", "dropped"


class EarlyExit(Sampler):
    """One candidate, checked by `probe` as it is generated; stops when the probe says so.

    mode="chunks" (default): generate `probe.every` tokens per request; each continuation is sent
        as token ids (prompt ids + generated ids), so it is never re-tokenised and a prefix-caching
        backend reuses the KV cache. Prompt tokens are counted per request, as for any request.
    mode="stream": one streamed request; the probe is asked every `probe.every` tokens (every token
        for probes that scan tokens, see `scan_every_token`) and leaving stops the stream.

    On "exit" the answer is the probe's (answer consistency) or forced: the trace, cut where the
    probe says, is followed by `answer_suffix` (default: the probe's suffix, else
    `ttc.probes.PLAIN_SUFFIX`) and a short greedy answer. On "drop" the candidate has no answer
    (it does not vote) unless `on_drop="answer"`. A trace that ends on its own is answered as usual.

    Wrappers compose: `MajorityVote(n=8, sample=EarlyExit(probe))`. Each candidate of a seeded run
    gets its own seed by the seed rule (`Context.next_seed`); chunk i of a candidate is sent with
    that seed + i.

    Sources and deviations: those of the probe (answer consistency: Dynasor, Fu et al., 2024;
    token confidence: DeepConf, Fu et al., 2025; hidden-state exits: LYNX), see each probe's
    docstring. The harness itself: in chunk mode a probe is asked between chunks, so the tokens
    of a chunk generated after a stop position (`Decision.at`) are still generated and counted.

    Args:
        probe: the probe that decides (a `ttc.probes` probe, or `AnyOf([...])` of several).
        params: sampling parameters of the candidate; what the probe needs (`probe.needs`: token
            logprobs, top logprobs) is asked for where they leave it unset, and an explicit
            setting that refuses it (`logprobs=False` beside `TokenConfidence`) is an InvalidInput.
        prompt: the chat prompt the question is rendered into.
        mode: "chunks" (token-id continuations) or "stream" (one cancellable stream).
        answer_suffix: the text that forces an answer (default: the probe's `suffix`).
        answer_tokens: greedy tokens read after the suffix.
        on_drop: "abstain" (a dropped trace has no answer) or "answer" (force one anyway).
        scan_every_token: in stream mode, ask the probe at every token (default: `probe.scans_tokens`).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.probes import PLAIN_SUFFIX, AnswerConsistency
        >>> llm = Scripted(lambda prompt, params, i: " 7" if prompt.endswith(PLAIN_SUFFIX) else "Adding 3 and 4 gives")
        >>> r = ttc.EarlyExit(AnswerConsistency(every=4, suffix=PLAIN_SUFFIX)).solve("3 + 4?", llm)
        >>> r.answer, r.candidates[0].finish_reason
        ('7', 'early_exit')
    """

    name = "early_exit"

    def __init__(self, probe: Probe, params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt(),
                 mode: str = "chunks", answer_suffix: str | None = None, answer_tokens: int = 12,
                 on_drop: str = "abstain", scan_every_token: bool | None = None):
        if not isinstance(probe, Probe):
            raise InvalidInput(f"EarlyExit needs a ttc probe (ttc.probes.*), got {type(probe).__name__}")
        if mode not in MODES:
            raise InvalidInput(f"unknown EarlyExit mode {mode!r}; known: {', '.join(MODES)}")
        needs = needs_of(probe)
        if mode == "stream" and needs.top_logprobs:
            raise InvalidInput(f"probe {probe.name!r} needs top-{needs.top_logprobs} logprobs per token, "
                               f"which streams do not carry: use mode='chunks' (or top_k=0 for the sampled "
                               f"token's logprob)")
        if on_drop not in ("abstain", "answer"):
            raise InvalidInput(f"on_drop must be 'abstain' or 'answer', got {on_drop!r}")
        self.probe = probe
        self.params = fill(params.replace(n=1), needs, who=f"probe {probe.name!r} ({type(probe).__name__})",
                           where="EarlyExit's params")
        self.prompt = prompt
        self.mode = mode
        self.answer_suffix = answer_suffix or probe.suffix or PLAIN_SUFFIX
        self.answer_tokens = answer_tokens
        self.on_drop = on_drop
        self.scan_every_token = probe.scans_tokens if scan_every_token is None else scan_every_token

    def with_needs(self, needs: Needs, who: str) -> EarlyExit:
        """As `Sampler.with_needs`; a stream carries no top logprobs, so mode="stream" refuses them."""
        if self.mode == "stream" and needs.top_logprobs:
            raise InvalidInput(f"{who} needs the top-{needs.top_logprobs} logprobs of every token, which "
                               f"EarlyExit(mode='stream') cannot give (streams carry the sampled token's "
                               f"logprob only): use mode='chunks'")
        return super().with_needs(needs, who)  # type: ignore[return-value]

    @property
    def required_capabilities(self) -> frozenset[str]:
        """Backend capabilities the probe needs: its declared ones, and hidden states if it reads them."""
        hidden = {HIDDEN_STATES} if needs_of(self.probe).hidden_states else set()
        return frozenset(self.probe.required_capabilities) | hidden

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        seed = ctx.next_seed(self.params.seed)  # drawn before any await: the same run gives the same seeds
        capabilities = await ctx.generator.detect_capabilities()
        if TOKEN_IDS not in capabilities:
            raise Unsupported(f"EarlyExit continues and probes traces as token ids: it needs a backend with token "
                              f"ids ({type(ctx.generator).__name__} here has none: on a server, vLLM's /tokenize "
                              f"and return_token_ids); use FirstFinish or MajorityVote on this backend")
        missing = self.required_capabilities - capabilities
        if missing:
            raise InvalidInput(f"probe {self.probe.name!r} needs backend capabilities {sorted(missing)}, "
                               f"which {type(ctx.generator).__name__} does not declare")
        prompt = await self.prompt.render(problem, ctx.generator, self.params)
        prompt_ids = list(await ctx.generator.tokenize(prompt)) if isinstance(prompt, str) else list(prompt)
        state = TraceState(problem=problem, prompt_ids=prompt_ids,
                           logprobs=[] if self.params.logprobs else None,
                           top_logprobs=[] if self.params.top_logprobs else None)
        self.probe.reset(state)
        params = self.params.replace(seed=seed)
        if self.mode == "chunks":
            finish, decision = await self._chunks(state, params, ctx)
        else:
            finish, decision = await self._stream(state, params, ctx)
        return await self._finish(state, finish, decision, ctx)

    async def _chunks(self, state: TraceState, params: SamplingParams, ctx: Context
                      ) -> tuple[str, Decision | None]:
        every = max(1, self.probe.every)
        chunk = 0
        while True:
            left = params.max_tokens - len(state.token_ids)
            size = min(every - len(state.token_ids) % every, left)
            chunk_params = params.replace(max_tokens=size, seed=None if params.seed is None else params.seed + chunk)
            try:
                (completion, usage), = await ctx.generate(state.prompt_ids + state.token_ids, chunk_params)
            except BudgetExhausted:
                if not state.token_ids:
                    raise
                return "length", None  # the budget ends the trace, as max_tokens would
            chunk += 1
            state.usage.add(usage)
            ids = generated_ids(completion)  # the whole chunk: a reasoning model's thinking and markers too
            logprobs, top = generated_logprobs(completion)
            _append(state, generated_text(completion, ctx.generator.thinking), ids, logprobs, top)
            if completion.finish_reason != "length" or not ids:
                return completion.finish_reason or "stop", None
            if len(state.token_ids) >= params.max_tokens:
                return "length", None
            try:
                decision = await self.probe.check(state, ctx)
            except BudgetExhausted:
                return "length", None
            if decision.stop:
                return decision.action, decision

    async def _stream(self, state: TraceState, params: SamplingParams, ctx: Context
                      ) -> tuple[str, Decision | None]:
        every = 1 if self.scan_every_token else max(1, self.probe.every)
        next_check = every
        finish, decision = "length", None
        async with ctx.stream(state.prompt_ids, params) as s:
            async for delta in s:
                top = None  # streams carry the sampled token's logprob only
                _append(state, delta.text, delta.token_ids, delta.logprobs, top)
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
                    break
                if len(state.token_ids) >= next_check:
                    next_check = len(state.token_ids) + every
                    try:
                        decision = await self.probe.check(state, ctx)
                    except BudgetExhausted:  # as in chunk mode: the budget ends the trace
                        decision = None
                        break
                    if decision.stop:
                        finish = decision.action
                        break
        state.usage.add(s.usage)
        return finish, decision

    async def _finish(self, state: TraceState, finish: str, decision: Decision | None, ctx: Context) -> Candidate:
        whole = Completion(text=state.text, token_ids=tuple(state.token_ids),
                           finish_reason=finish if finish in ("stop", "length") else "cancelled",
                           logprobs=None if state.logprobs is None else tuple(state.logprobs),
                           top_logprobs=None if not state.top_logprobs else tuple(state.top_logprobs))
        # a reasoning model's thinking split off as generate() would; chunks counted theirs already
        completion = ctx.generator.split_thinking(whole, state.prompt_ids, self.params)
        if self.mode == "stream" and completion.reasoning_tokens:
            state.usage.reasoning_tokens += completion.reasoning_tokens
            ctx.usage.reasoning_tokens += completion.reasoning_tokens
        scores = {"probe_calls": float(state.probe_calls), "probe_tokens": float(state.probe_tokens),
                  "exit_tokens": float(len(state.token_ids))}
        if decision is not None and decision.score is not None:
            scores[decision.probe or self.probe.name] = decision.score
        text, answer, reason, source = state.text, None, finish, None
        if finish == EXIT or (finish == DROP and self.on_drop == "answer"):
            cut = decision.at if decision is not None and decision.at is not None else len(state.token_ids)
            if cut < len(state.token_ids):
                text = await _decode_prefix(ctx, state, cut)
            answer = decision.answer if decision is not None else None
            if answer is None:
                try:
                    answer, appended = await elicit_answer(state, ctx, self.answer_suffix, self.answer_tokens,
                                                           upto=cut)
                except BudgetExhausted:  # no budget left to force an answer: abstain
                    answer, appended = None, ""
            else:
                appended = decision.appended
            text = text + appended
            scores["exit_tokens"] = float(cut)
            reason = EARLY_EXIT if finish == EXIT else DROPPED
        elif finish == DROP:
            reason = DROPPED
            if decision is not None and decision.at is not None:
                scores["exit_tokens"] = float(decision.at)
        else:  # read to its end: the answer comes from the final content only
            fields = answer_of(completion)
            text, answer, source = completion.text, fields["answer"], fields["answer_source"]
        scores["probe_calls"] = float(state.probe_calls)
        scores["probe_tokens"] = float(state.probe_tokens)
        return Candidate(text=text, answer=answer, completion=completion, usage=state.usage, scores=scores,
                         finish_reason=reason, answer_source=source, **thinking_fields(completion))


def _append(state: TraceState, text: str, ids: Sequence[int], logprobs: Sequence[float] | None,
            top: Sequence[dict[int, float]] | None) -> None:
    state.text += text
    state.token_ids.extend(ids)
    if state.logprobs is not None and logprobs is not None:
        state.logprobs.extend(logprobs)
    if state.top_logprobs is not None and top is not None:
        state.top_logprobs.extend(top)


async def _decode_prefix(ctx: Context, state: TraceState, cut: int) -> str:
    decode = ctx.generator.decode if ctx.generator.can_decode else None
    if decode is not None:
        return decode(state.token_ids[:cut])
    return state.text  # no decoder: keep the whole text (the answer is still forced at the cut)
