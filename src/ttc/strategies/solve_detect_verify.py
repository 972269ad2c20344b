"""Solve-Detect-Verify (Zhong et al., 2025, arXiv 2505.11966): stop a trace where its solution ends,
verify the answer, and try once more with the verifier's critique when it is wrong.

One candidate, in rounds (the authors' `process_with_verification`):

1. **Solve and detect**: the trace is generated in chunks (token-id continuations, or one stream)
   and watched by `ttc.probes.SolutionComplete`: at each hesitation word ("wait", "hmm", ...) the
   model is asked whether its solution is complete; when P(Yes) > P(No) the trace stops before
   the word and its answer is elicited (EarlyExit's machinery). A trace that ends on its own is
   answered as usual.
2. **Verify**: a generative verifier (`ttc.verifiers.FlexVerifier`) names the first wrong paragraph,
   or -1, with quick checks first and long checks when the quick ones disagree.
3. Accepted: the candidate stops. Rejected: a new round solves the problem again, shown its
   previous solution and the verifier's critique. The last round is answered without verification,
   as the authors answer their refined solution; a verifier with no readable verdict keeps the
   answer (the authors' code does too).

Reasoning models (a backend with a thinking format, or `thinking=`): the detector watches the
thinking, a completion point closes the thinking before the answer cue, the answer is read from the
final content only, and the verifier and the next round see the whole solution, its thinking then
its content, without the markers (the authors' `clean_response`).
"""

from __future__ import annotations

from dataclasses import replace

from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.infos import DetectVerifyRound, SolveDetectVerifyInfo, VerifyStop
from ttc.probes.base import PLAIN_SUFFIX, Decision, TraceState
from ttc.probes.completion import SolutionComplete
from ttc.prompts import ChatPrompt
from ttc.strategies.base import Sampler
from ttc.strategies.early_exit import MODES, EarlyExit
from ttc.strategies.sample import DEFAULT_PARAMS
from ttc.thinking import ThinkingFormat, opened_by_text, thinking_format
from ttc.types import Candidate, Problem, Result, SamplingParams, Usage
from ttc.verifiers.flex import FlexVerifier, Verdict

#: the user message of a new round after a rejected answer, with {step} and {feedback}
FEEDBACK_PROMPT = ("A verifier found an error in your solution, first in paragraph {step} (the solution is split "
                   "into paragraphs numbered from 0 at hesitation words such as \"wait\", \"hmm\" or \"let me "
                   "check\"). Its critique:\n\n{feedback}\n\nCorrect your solution and solve the problem again, "
                   "step by step, with the final answer at the end.")
#: seeds of round r are drawn from the candidate's seed + r * this (one seed per candidate, drawn first)
_ROUND_SEED_STRIDE = 7919


class _Detecting(EarlyExit):
    """EarlyExit that keeps the detector's record of the trace on the candidate (`details`)."""

    async def _finish(self, state: TraceState, finish: str, decision: Decision | None, ctx: Context) -> Candidate:
        candidate = await super()._finish(state, finish, decision, ctx)
        probe = self.probe
        candidate.details = tuple(probe.detections(state)) if isinstance(probe, SolutionComplete) else ()
        return candidate


class SolveDetectVerify(Sampler):
    """One candidate, stopped at a detected completion point, verified, and refined once if wrong.

    Wrappers compose: `MajorityVote(n=4, sample=SolveDetectVerify())` votes over four verified
    candidates (the authors' `--majority_voting_n`).

    Source: Zhong et al., 2025 (arXiv 2505.11966) and the authors' `solve_detect_verify.py`. Deviations:
    the verifier is prompted (`FlexVerifier`), not the trained FlexiVe; the refining round draws one
    solution, not the authors' best-of-4 vote; the trace is cut before the hesitation word; see
    docs/strategies/solve_detect_verify.md for all of them.

    Args:
        verifier: the generative verifier (default: `FlexVerifier()` on the run's own generator).
        detector: the completion detector (default: `SolutionComplete()`, the authors' words).
        params: sampling parameters of the solver.
        prompt: the chat prompt the question is rendered into.
        rounds: solutions at most (the authors: 2, the first and one refined); every round but
            the last is verified; 1 = detection only, no verifier.
        mode: "chunks" (token-id continuations every `detector.every` tokens) or "stream".
        answer_suffix: the text that elicits the answer at a completion point (default: PLAIN_SUFFIX,
            or for a reasoning model its format's answer cue after the end of its thinking).
        answer_tokens: greedy tokens read for the elicited answer.
        feedback: the user message of a refining round, with {step} and {feedback}.
        thinking: the solver's thinking format (name or `ttc.thinking.ThinkingFormat`; None: the
            backend's): the default detector then watches the thinking only, and the answer closes it.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> trace = "3 plus 4 is 7.\\nWait, let me add again: 3 plus 4 is 7."
        >>> def script(prompt, params, i):
        ...     if "complete solution" in prompt: return "Yes"          # the detector's question
        ...     if "paragraph" in prompt: return "\\\\boxed{-1}"        # the verifier: no error
        ...     if prompt.endswith(ttc.probes.PLAIN_SUFFIX): return " 7"  # the elicited answer
        ...     return trace[len(prompt.split("<assistant>\\n", 1)[1]):]  # the trace, chunk by chunk
        >>> r = ttc.SolveDetectVerify(detector=ttc.probes.SolutionComplete(every=8)).solve("3 + 4?", Scripted(script))
        >>> r.answer, r.details["stopped_by"], r.details["rounds"][0]["detections"][0]["word"]
        ('7', 'verified', 'Wait')
    """

    name = "solve_detect_verify"

    def __init__(self, verifier: FlexVerifier | None = None, detector: SolutionComplete | None = None,
                 params: SamplingParams = DEFAULT_PARAMS, prompt: ChatPrompt = ChatPrompt(), rounds: int = 2,
                 mode: str = "chunks", answer_suffix: str | None = None, answer_tokens: int = 12,
                 feedback: str = FEEDBACK_PROMPT, thinking: str | ThinkingFormat | None = None):
        if verifier is not None and not isinstance(verifier, FlexVerifier):
            raise InvalidInput(f"SolveDetectVerify needs a ttc.verifiers.FlexVerifier, got {type(verifier).__name__}")
        if detector is not None and not isinstance(detector, SolutionComplete):
            raise InvalidInput(f"SolveDetectVerify needs a ttc.probes.SolutionComplete detector, "
                               f"got {type(detector).__name__}")
        check_positive("rounds", rounds)
        if mode not in MODES:
            raise InvalidInput(f"unknown SolveDetectVerify mode {mode!r}; known: {', '.join(MODES)}")
        for key in ("{step}", "{feedback}"):
            if key not in feedback:
                raise InvalidInput(f"SolveDetectVerify feedback must contain {key}")
        fmt = thinking_format(thinking)
        self.verifier = verifier or FlexVerifier()
        self.detector = detector or SolutionComplete(thinking=fmt)
        self.params = params.replace(n=1)
        self.prompt = prompt
        self.rounds = rounds
        self.mode = mode
        self.thinking = fmt
        self._given_suffix = answer_suffix
        self.answer_suffix = answer_suffix or (PLAIN_SUFFIX if fmt is None else "\n" + fmt.end + fmt.answer_cue)
        self.answer_tokens = answer_tokens
        self.feedback = feedback

    def format_of(self, ctx: Context) -> ThinkingFormat | None:
        """The solver's thinking format: the one given, else the backend's."""
        return self.thinking or ctx.generator.thinking

    def suffix_for(self, ctx: Context) -> str:
        """The answer suffix at a completion point: the one given; on a backend that splits the
        thinking, its format's answer cue (EarlyExit puts the end marker before it inside an open
        thinking); else `answer_suffix` (with the end marker written out where a format was given)."""
        if self._given_suffix or ctx.generator.thinking is None:
            return self.answer_suffix
        return ctx.generator.thinking.answer_cue

    def solver(self, seed: int | None, answer_suffix: str | None = None) -> EarlyExit:
        """The EarlyExit sampler of one round (its chunks seeded from `seed`)."""
        return _Detecting(self.detector, params=self.params.replace(seed=seed), prompt=self.prompt, mode=self.mode,
                          answer_suffix=answer_suffix or self.answer_suffix, answer_tokens=self.answer_tokens)

    @staticmethod
    def solution_of(candidate: Candidate, fmt: ThinkingFormat | None = None) -> str:
        """The solution the verifier checks and the next round is shown: a reasoning model's thinking
        then its final content, the markers removed (the authors' `clean_response`), else the text."""
        text = candidate.text
        if candidate.thinking:
            text = candidate.thinking.rstrip() + "\n\n" + text.lstrip()
        if fmt is not None:
            text = text.replace(fmt.start, "").replace(fmt.end, "")
        return text

    def refined(self, problem: Problem, solution: str, verdict: Verdict, fmt: ThinkingFormat | None = None,
                written: str | None = None) -> Problem:
        """The problem of the next round: the conversation so far, the solution, and the critique.

        A raw text prompt stays raw: `written` (the round's text as generated, markers included;
        default `solution`) and the critique are appended as text, and for a reasoning model whose
        template opens the thinking (`fmt`), a new thinking is opened for the next attempt."""
        message = self.feedback.format(step=verdict.error_step, feedback=verdict.feedback or "(no critique given)")
        metadata = dict(problem.metadata)
        raw = metadata.get("prompt")
        if isinstance(raw, str) and raw:  # a raw text prompt stays raw: append the turn as text
            reopen = fmt.start + "\n" if fmt is not None and fmt.opened_by_template else ""
            metadata["prompt"] = f"{raw}{solution if written is None else written}\n\n{message}\n\n{reopen}"
        else:
            metadata["messages"] = [*self.prompt.messages(problem), {"role": "assistant", "content": solution},
                                    {"role": "user", "content": message}]
        return replace(problem, metadata=metadata)

    async def candidate(self, problem: Problem, ctx: Context) -> Candidate:
        seed = ctx.next_seed(self.params.seed)  # one draw per candidate, before any await
        fmt = self.format_of(ctx)
        suffix = self.suffix_for(ctx)
        usage = Usage()
        records: list[DetectVerifyRound] = []
        stopped: VerifyStop = "max_rounds"
        current, final = problem, None
        for r in range(self.rounds):
            round_seed = None if seed is None else seed + r * _ROUND_SEED_STRIDE
            try:
                solved = await self.solver(round_seed, suffix).candidate(current, ctx)
            except BudgetExhausted:
                if final is None:
                    raise
                stopped = "budget"
                break
            usage.add(solved.usage)
            final = solved
            record = DetectVerifyRound(round=r, detections=tuple(solved.details or ()),
                                       finish_reason=solved.finish_reason, answer=solved.answer,
                                       tokens=solved.usage.total_tokens)
            if r == self.rounds - 1:
                records.append(record)
                break
            solution = self.solution_of(solved, fmt)
            spent = Usage()
            try:
                verdict = await self.verifier.verify(problem.question, solution, ctx, spent=spent,
                                                     seed=None if round_seed is None else round_seed + 1)
            except BudgetExhausted:
                usage.add(spent)
                records.append(record)
                stopped = "budget"
                break
            usage.add(spent)
            records.append(replace(record, verdict=verdict))
            if verdict.valid is None:
                stopped = "unsure"
                break
            if verdict.valid:
                stopped = "verified"
                break
            current = self.refined(current, solution, verdict, fmt, _written(current, solved, fmt))
        assert final is not None  # the first round either answered or raised
        verdicts = [x.verdict for x in records if x.verdict is not None]
        scores = dict(final.scores)
        scores.update({"rounds": float(len(records)), "detections": float(sum(len(x.detections) for x in records)),
                       "verifications": float(len(verdicts)), "escalations": float(sum(v.escalated for v in verdicts)),
                       "verified": float(stopped == "verified")})
        return Candidate(text=final.text, answer=final.answer, completion=final.completion, scores=scores,
                         usage=usage, finish_reason=final.finish_reason, answer_source=final.answer_source,
                         thinking=final.thinking, thinking_closed=final.thinking_closed,
                         details=SolveDetectVerifyInfo(rounds=tuple(records), stopped_by=stopped))

    async def run(self, problem: Problem, ctx: Context) -> Result:
        candidate = await self.candidate(problem, ctx)
        return Result(problem=problem, answer=candidate.answer, candidates=[candidate], usage=ctx.usage,
                      strategy=self.name, details=candidate.details)


def _written(problem: Problem, candidate: Candidate, fmt: ThinkingFormat | None) -> str | None:
    """A raw prompt's round as the model saw it: its thinking, the end marker and its content (the
    start marker first where the raw prompt did not open the thinking); None without a thinking."""
    raw = problem.metadata.get("prompt")
    if fmt is None or candidate.thinking is None or not isinstance(raw, str):
        return None
    start = "" if opened_by_text(raw, fmt) else fmt.start
    return start + candidate.thinking + (fmt.end if candidate.thinking_closed else "") + candidate.text
