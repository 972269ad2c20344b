"""Budget forcing (s1): a reasoning model thinks for at most B tokens, or longer by "Wait"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ttc import forcing
from ttc.answers import answer_fields
from ttc.backends.base import TOKEN_IDS
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, Unsupported, check_positive
from ttc.forcing import ANSWER, THINK, WAIT, WAIT_TEXT, MarkerIds, Piece
from ttc.infos import BudgetForcingInfo
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler
from ttc.thinking import ThinkingFormat, split_text, thinking_format
from ttc.types import Candidate, Completion, Problem, Result, SamplingParams, Thinking, Usage

#: the capability of a backend that enforces vLLM's `thinking_token_budget` itself (VLLMEngine or a
#: vLLM server started with a reasoning config); declared by the backend, never guessed
THINKING_BUDGET = "thinking_budget"
DEFAULT_PARAMS = SamplingParams(temperature=0.7, max_tokens=4096)
ENGINE_MODES = ("auto", "always", "never")


class BudgetForcing(Sampler):
    """One candidate whose thinking is held to `budget` thinking tokens, and extended `waits` times.

    The rule (s1, Muennighoff et al., 2025, arXiv 2501.19393v3, section 3.1, "Budget forcing"):
    when the thinking reaches `budget` tokens still open, the end-of-thinking marker and the
    format's answer cue (`ThinkingFormat.answer_cue`) are appended and the model answers; when the
    model ends its thinking early, its end marker is suppressed and `wait` ("Wait") appended, up to
    `waits` times, and it thinks on (within the same budget). Every continuation is sent as token
    ids (prompt ids + generated ids + injected ids), never a re-rendered chat template, so the
    thinking is continued exactly as generated. Counting (`ttc.forcing`): thinking tokens are the
    model's own between the markers; the marker, cue and "Wait" that ttc appends are prompt tokens
    of the next request; completion tokens = thinking + generated markers + content (+ any tokens
    generated after a suppressed marker, `discarded_tokens`), each request as the backend counted it.

    Where the backend enforces vLLM's `thinking_token_budget` itself (it declares the
    `"thinking_budget"` capability: VLLMEngine, or a vLLM server with a reasoning config) and no
    extension is asked for, one request carries `extra={"thinking_token_budget": budget}` (the
    engine then forces its configured end string, not ttc's cue); `engine="never"` keeps the token
    path, `engine="always"` refuses a backend without it. `Result.details` (`BudgetForcingInfo`)
    says which path ran; each candidate's scores carry `thinking_tokens`, `waits`, `forced`.

    Deviations from the paper: the answer cue is the format's (default "The final answer is
    \\boxed{"), not "Final Answer:"; the paper's "Wait" tokens (like ours) are not charged to the
    budget; a thinking that stops without its marker (end-of-sequence inside the thinking) is
    treated as an attempt to end it.

    Args:
        budget: the most thinking tokens the model may generate (None: `params.max_tokens`).
        waits: how many times an early end of thinking is suppressed and `wait` appended.
        wait: the extension string.
        thinking: the thinking format (a name of `ttc.thinking.FORMATS` or a `ThinkingFormat`);
            default: the generator's.
        params: sampling parameters of the thinking and the answer (max_tokens: see `budget`).
        prompt: the chat prompt the question is rendered into.
        answer_tokens: the most content tokens of the answer after the thinking.
        engine: "auto" (the engine's own budget where it has one and waits == 0), "always", "never".

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> llm = Scripted(lambda p, params, i: "7}" if p.endswith("{") else " 3 plus 4 is 7 , so")
        >>> r = ttc.BudgetForcing(budget=4, thinking="deepseek_r1").solve("3 + 4?", llm)
        >>> r.answer, r.details["forced"], r.details["thinking_tokens"]
        ('7', True, 4)
    """

    name = "budget_forcing"

    def __init__(self, budget: int | None = 256, waits: int = 0, wait: str = WAIT_TEXT,
                 thinking: str | ThinkingFormat | None = None, params: SamplingParams = DEFAULT_PARAMS,
                 prompt: ChatPrompt = ChatPrompt(), answer_tokens: int = 128, engine: str = "auto"):
        if budget is not None:
            check_positive("BudgetForcing budget (thinking tokens)", budget)
        if not isinstance(waits, int) or isinstance(waits, bool) or waits < 0:
            raise InvalidInput(f"BudgetForcing waits must be an integer >= 0, got {waits!r}")
        if waits and (not isinstance(wait, str) or not wait.strip()):
            raise InvalidInput(f"BudgetForcing wait must be a non-empty string, got {wait!r}")
        if engine not in ENGINE_MODES:
            raise InvalidInput(f"BudgetForcing engine must be one of {ENGINE_MODES}, got {engine!r}")
        if engine == "always" and waits:
            raise InvalidInput("BudgetForcing(engine='always') cannot extend the thinking: vLLM's "
                               "thinking_token_budget only caps it; use waits=0 or engine='auto'")
        self.budget = budget
        self.waits = waits
        self.wait = wait
        self.thinking = thinking_format(thinking)
        self.params = params.replace(n=1)
        self.prompt = prompt
        self.answer_tokens = check_positive("BudgetForcing answer_tokens", answer_tokens)
        self.engine = engine

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidate, info = await self._forced(problem, ctx)
        return Result(problem=problem, answer=candidate.answer, candidates=[candidate], usage=ctx.usage,
                      strategy=self.name, details=info)

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        return (await self._forced(problem, ctx))[0]

    # -- the two paths --------------------------------------------------------------------------
    async def _forced(self, problem: Problem, ctx: Context) -> tuple[Candidate, BudgetForcingInfo]:
        seed = ctx.next_seed(self.params.seed)  # drawn before any await: the same run gives the same seeds
        fmt = self._format(ctx)
        capabilities = await ctx.generator.detect_capabilities()
        engine = self._use_engine(capabilities, ctx)
        if not engine and TOKEN_IDS not in capabilities:
            raise Unsupported(f"BudgetForcing continues the thinking as token ids, and "
                              f"{type(ctx.generator).__name__} has no token ids (on a server: vLLM's "
                              f"/tokenize and return_token_ids) nor vLLM's thinking_token_budget "
                              f"(capability {THINKING_BUDGET!r}: a vLLM server with a reasoning config)")
        markers = await forcing.marker_token_ids(ctx.generator, fmt)
        prompt = await self.prompt.render(problem, ctx.generator, self.params)
        prompt_ids = list(await ctx.generator.tokenize(prompt)) if isinstance(prompt, str) else list(prompt)
        opened = forcing.prompt_state(prompt_ids, markers)
        if opened is False:
            raise InvalidInput(f"the prompt closes the thinking ({fmt.end!r} after {fmt.start!r}: the chat "
                               f"template was told enable_thinking=False?): there is no thinking to force")
        opens = opened is None and fmt.opened_by_template  # the template should have opened it: ttc does
        run = _Run(fmt=fmt, markers=markers, prompt_ids=prompt_ids + [markers.start] * opens,
                   opened=bool(opened) or opens, seed=seed, injected=int(opens),
                   logprobs=self.params.logprobs is True or bool(self.params.top_logprobs))
        if engine:
            await self._engine(run, ctx)
        else:
            await self._tokens(run, ctx)
        return self._candidate(run, ctx)

    def _use_engine(self, capabilities: frozenset[str], ctx: Context) -> bool:
        has = THINKING_BUDGET in capabilities
        if self.engine == "always" and not has:
            raise Unsupported(f"BudgetForcing(engine='always') needs vLLM's thinking_token_budget, which "
                              f"{type(ctx.generator).__name__} does not enforce (capability {THINKING_BUDGET!r}: "
                              f"VLLMEngine or a vLLM server started with --reasoning-config)")
        return has and self.engine != "never" and not self.waits and self.budget is not None

    async def _engine(self, run: _Run, ctx: Context) -> None:
        """One request; vLLM holds the thinking to the budget and forces its own end string."""
        run.path = "engine"
        budget = self._cap()
        extra = {**(self.params.extra or {}), "thinking_token_budget": budget}
        params = self.params.replace(max_tokens=budget + 1 + (not run.opened) + self.answer_tokens,
                                     seed=run.seed, extra=extra)
        completion, usage = await self._request(run, run.prompt_ids, params, ctx)
        piece = run.take(completion, usage, opened=run.opened, ctx=ctx)
        run.keep_markers(piece, upto_end=False)
        run.keep_thinking(piece)
        run.keep_markers(piece, upto_end=True)
        run.keep_content(piece)
        run.finish = completion.finish_reason

    async def _tokens(self, run: _Run, ctx: Context) -> None:
        """Think in requests of at most the budget left; force, extend or let the model answer."""
        run.path = "tokens"
        cap = self._cap()
        opened = run.opened
        while True:
            left = cap - run.thought
            extend = run.waits < self.waits
            params = self.params.replace(max_tokens=left + (not opened), seed=run.next_seed(),
                                         stop=tuple(self.params.stop) + ((run.fmt.end,) if extend else ()))
            try:
                completion, usage = await self._request(run, run.prompt_ids + run.trace, params, ctx)
            except BudgetExhausted:
                if not run.requests:
                    raise
                break
            piece = run.take(completion, usage, opened=opened, ctx=ctx)
            if not piece.opened:  # the model answered without thinking (a Qwen3-style model may)
                run.keep_content(piece)
                run.finish = completion.finish_reason
                await self._answer_on(run, ctx)
                return
            opened = True
            run.keep_markers(piece, upto_end=False)
            run.keep_thinking(piece)
            move = forcing.next_move(thought=run.thought, cap=cap, closed=piece.closed,
                                     finish=completion.finish_reason, waits_done=run.waits, waits=self.waits,
                                     progressed=bool(run.last_ids))
            if move == THINK:
                continue
            if move == WAIT:
                run.suppress(piece)
                await run.inject(ctx, self.wait)
                run.waits += 1
                continue
            if move == ANSWER:
                run.keep_markers(piece, upto_end=True)
                run.keep_content(piece)
                run.finish = completion.finish_reason
                await self._answer_on(run, ctx)
                return
            break
        await self._force(run, ctx)

    async def _force(self, run: _Run, ctx: Context) -> None:
        """Append the end marker and the answer cue (prompt tokens), and read the answer."""
        run.forced = True
        await run.inject(ctx, run.fmt.end, ids=[run.markers.end])
        await run.inject(ctx, run.fmt.answer_cue)
        run.cue = run.fmt.answer_cue
        params = self.params.replace(max_tokens=self.answer_tokens, seed=run.next_seed(), stop=self.params.stop)
        try:
            completion, usage = await self._request(run, run.prompt_ids + run.trace, params, ctx)
        except BudgetExhausted:
            run.finish = "length"
            return
        piece = run.take(completion, usage, opened=False, ctx=ctx)
        run.keep_content(piece)
        run.finish = completion.finish_reason

    async def _answer_on(self, run: _Run, ctx: Context) -> None:
        """The model closed its thinking itself and was cut while answering: let it finish."""
        left = self.answer_tokens - len(run.content_ids)
        if run.finish != "length" or left <= 0:
            return
        params = self.params.replace(max_tokens=left, seed=run.next_seed())
        try:
            completion, usage = await self._request(run, run.prompt_ids + run.trace, params, ctx)
        except BudgetExhausted:
            return
        piece = run.take(completion, usage, opened=False, ctx=ctx)
        run.keep_content(piece)
        run.finish = completion.finish_reason

    async def _request(self, run: _Run, prompt: list[int], params: SamplingParams, ctx: Context
                       ) -> tuple[Completion, Usage]:
        (completion, usage), = await ctx.generate(prompt, params)
        run.requests += 1
        return completion, usage

    def _cap(self) -> int:
        return self.budget if self.budget is not None else self.params.max_tokens

    def _format(self, ctx: Context) -> ThinkingFormat:
        fmt = self.thinking or ctx.generator.thinking
        if fmt is None:
            raise Unsupported(f"BudgetForcing needs the model's thinking format: {type(ctx.generator).__name__} "
                               f"declares none; pass thinking='deepseek_r1' / 'qwen3' / a ThinkingFormat, "
                               f"or give the backend thinking=")
        return fmt

    def _candidate(self, run: _Run, ctx: Context) -> tuple[Candidate, BudgetForcingInfo]:
        decode = ctx.generator.decode if ctx.generator.can_decode else None
        thinking_text = decode(run.trace_thinking_ids) if decode else run.thinking_text
        content_text = decode(run.content_ids) if decode else run.content_text
        text = run.cue + content_text
        # `closed`: the model wrote its end marker (a forced thinking was closed by ttc: a prompt token)
        thinking = Thinking(text=thinking_text, token_ids=tuple(run.thinking_ids),
                            closed=run.markers.end in run.kept_markers,
                            logprobs=None if run.thinking_lps is None else tuple(run.thinking_lps),
                            top_logprobs=tuple(run.thinking_tops) if run.thinking_tops else None,
                            marker_token_ids=tuple(run.kept_markers))
        finish = run.finish or "length"
        if not (run.opened or run.kept_markers):  # a Qwen3-style model that answered without thinking
            thinking, thinking_text = None, None
        # the completion is what the model generated (the cue is not); the candidate reads cue + answer
        completion = Completion(text=content_text, token_ids=tuple(run.content_ids), finish_reason=finish,
                                logprobs=None if run.content_lps is None else tuple(run.content_lps),
                                top_logprobs=tuple(run.content_tops) if run.content_tops else None,
                                thinking=thinking)
        info = run.info(self.budget, self.waits)
        scores = {"thinking_tokens": float(run.thought), "waits": float(run.waits), "forced": float(run.forced)}
        fields = answer_fields(text, finished=run.forced or finish != "length")
        return Candidate(text=text, **fields, completion=completion, usage=run.usage, scores=scores,
                         finish_reason=finish, thinking=thinking_text,
                         thinking_closed=None if thinking is None else True), info  # ended: by the model or ttc


@dataclass
class _Run:
    """What one candidate's forcing has produced so far."""

    fmt: ThinkingFormat
    markers: MarkerIds
    prompt_ids: list[int]
    opened: bool
    seed: int | None
    logprobs: bool
    path: str = "tokens"
    trace: list[int] = field(default_factory=list)       # ids after the prompt: generated and injected
    trace_thinking_ids: list[int] = field(default_factory=list)  # the thinking as read, "Wait"s included
    thinking_ids: list[int] = field(default_factory=list)  # the model's own thinking tokens
    thinking_lps: list[float] | None = None
    content_ids: list[int] = field(default_factory=list)
    content_lps: list[float] | None = None
    kept_markers: list[int] = field(default_factory=list)
    thinking_text: str = ""
    content_text: str = ""
    cue: str = ""
    usage: Usage = field(default_factory=Usage)
    marker_tokens: int = 0
    discarded: int = 0
    injected: int = 0
    requests: int = 0
    waits: int = 0
    forced: bool = False
    finish: str | None = None
    last_ids: list[int] = field(default_factory=list)
    last_lps: list[float] | None = None
    last_tops: list[dict] | None = None
    thinking_tops: list[dict] | None = None
    content_tops: list[dict] | None = None
    _draws: int = 0

    def __post_init__(self) -> None:
        if self.logprobs:
            self.thinking_lps, self.content_lps = [], []
            self.thinking_tops, self.content_tops = [], []

    @property
    def thought(self) -> int:
        return len(self.thinking_ids)

    def next_seed(self) -> int | None:
        self._draws += 1
        return None if self.seed is None else self.seed + self._draws - 1

    def take(self, completion: Completion, usage: Usage, *, opened: bool, ctx: Context) -> Piece:
        """Split one request's output; count its thinking tokens into the usage where the backend
        did not split it (a backend that did counted them itself, or reported the server's count)."""
        try:
            ids, lps, tops = forcing.generated(completion)
        except ValueError:
            raise Unsupported(f"BudgetForcing needs the thinking's token ids, and {type(ctx.generator).__name__} "
                              f"hides the thinking (it reports {completion.reasoning_tokens} thinking tokens "
                              f"and returns none)") from None
        piece = forcing.split_piece(ids, self.markers, opened=opened)
        self.last_ids, self.last_lps, self.last_tops = ids, lps, tops
        self.marker_tokens += len(piece.markers)
        counted = len(piece.thinking)
        if completion.thinking is None and usage.reasoning_tokens != counted:  # the backend did not split it
            delta = counted - usage.reasoning_tokens
            usage.reasoning_tokens += delta
            ctx.usage.reasoning_tokens += delta
        self.usage.add(usage)
        if completion.thinking is None:
            text_thinking, text_content = _texts(completion.text, self.fmt, opened)
        else:
            text_thinking, text_content = completion.thinking.text, completion.text
        self._texts = (text_thinking, text_content)
        return piece

    def keep_thinking(self, piece: Piece) -> None:
        ids = [self.last_ids[i] for i in piece.thinking]
        self.thinking_ids += ids
        self.trace_thinking_ids += ids
        self.thinking_text += self._texts[0]
        self.thinking_lps = _extend(self.thinking_lps, self.last_lps, piece.thinking)
        self.thinking_tops = _extend(self.thinking_tops, self.last_tops, piece.thinking)
        self.trace += ids

    def keep_markers(self, piece: Piece, upto_end: bool = True) -> None:
        """Keep the generated markers in the trace: the start marker (always), the end marker
        only when the thinking ends here (`upto_end`)."""
        for i in piece.markers:
            token = self.last_ids[i]
            if token == self.markers.end and not upto_end:
                continue
            if token == self.markers.start and self.markers.start in self.kept_markers:
                continue
            self.kept_markers.append(token)
            self.trace.append(token)

    def keep_content(self, piece: Piece) -> None:
        ids = [self.last_ids[i] for i in piece.content]
        self.content_ids += ids
        self.content_text += self._texts[1]
        self.content_lps = _extend(self.content_lps, self.last_lps, piece.content)
        self.content_tops = _extend(self.content_tops, self.last_tops, piece.content)
        self.trace += ids

    def suppress(self, piece: Piece) -> None:
        """Drop the end marker the model wrote and whatever it generated after it."""
        self.discarded += len(piece.content)

    async def inject(self, ctx: Context, text: str, ids: Sequence[int] | None = None) -> None:
        """Append `text` (as `ids` when given, else tokenised) to the trace: prompt tokens of the
        next request, part of the thinking text when it is injected inside the thinking."""
        ids = list(ids) if ids is not None else list(await ctx.generator.tokenize(text))
        self.trace += ids
        self.injected += len(ids)
        if text != self.fmt.end and not self.forced:
            self.trace_thinking_ids += ids
            self.thinking_text += text

    def info(self, budget: int | None, waits: int) -> BudgetForcingInfo:
        return BudgetForcingInfo(path=self.path, budget=budget, max_waits=waits, waits=self.waits,
                                 forced=self.forced, thinking_tokens=self.thought, marker_tokens=self.marker_tokens,
                                 content_tokens=len(self.content_ids), discarded_tokens=self.discarded,
                                 injected_tokens=self.injected, requests=self.requests)


def _extend(kept: list | None, values: list | None, positions: list[int]) -> list | None:
    """`kept` + `values` at `positions` (None once a request returned none: the part has none)."""
    if kept is None or values is None:
        return None
    return kept + [values[i] for i in positions]


def _texts(text: str, fmt: ThinkingFormat, opened: bool) -> tuple[str, str]:
    thinking, content = split_text(text, fmt, opened=opened)
    return ("", content) if thinking is None else (thinking.text, content)
