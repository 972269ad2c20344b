"""Steps, traces and the search tree of step-level searches (beam search, DVTS, A*, particle filter).

A *step* is the text a model writes up to a delimiter (default a blank line, "\\n\\n"). One step
is one request with `stop=[delimiter]` and `max_tokens` = the step budget. A continuation is
sent as token ids: the chat prompt's ids followed by the ids of the steps so far (each including
its delimiter), so the backend's prefix cache applies and nothing is re-tokenised differently.

Backends differ in what a stopped completion's token ids hold: vLLM and ttc's transformers
backend keep the token that completed the stop string (and EOS), the scripted backend cuts both
from text and ids. `Stepper` tells the cases apart with the backend's `decode` when it has one
(the delimiter shows up in the decoded ids iff they kept it), and appends the delimiter's own ids
when the backend cut them. A stopped completion that did not stop at the delimiter ended with EOS;
a backend that knows which it was says so in `Completion.eos` (OpenAICompatible reads vLLM's
`stop_reason`), and that wins.

Backends without token ids (a server without /tokenize or return_token_ids) continue traces as
text: the rendered prompt extended by the steps so far (`Generator.continue_prompt`: plain text
for a chat template applied locally, an assistant message continued with
`continue_final_message` for a chat prompt). Steps are then re-tokenised by the server.

A trace is finished when its last step ended with EOS ("eos"), when its text holds a closed
\\boxed{...} ("boxed"), or when it reached the maximum number of steps ("max_steps").

The last step a trace may take (step `max_steps`) is generated as search-and-learn's last iteration
does: without the delimiter as a stop, so the model completes its solution (up to
`final_step_tokens`) and the trace is answered from a finished text, not from a cut-off partial
one. It ends "eos" or "boxed" when the model finishes, "max_steps" when the token limit cuts it.
`StepConfig(final_completion=False)` restores the plain step (the trace is then answered from its
partial text).

On a reasoning model (a generator with a thinking format) the steps are steps of the thinking, cut
at the format's `step_delimiter` unless the StepConfig names another delimiter; the last step runs
without a stop, so the model closes its thinking and answers; the answer is read from the content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc import answers
from ttc.backends.base import TOKEN_IDS, Generator
from ttc.context import Context
from ttc.errors import BudgetExhausted, InvalidInput, check_positive
from ttc.prompts import ChatPrompt
from ttc.thinking import opened_by_text, prompt_opens, split_text, whole
from ttc.types import (
    DEFAULT_DELIMITER,
    Candidate,
    Completion,
    Problem,
    SamplingParams,
    Step,
    Thinking,
    Trace,
    Usage,
)
from ttc.votes import vote_weights, weighted_vote

#: ids of fixed strings (delimiters) per backend, tokenised once: see `Stepper._piece_ids`
_PIECE_IDS: weakref.WeakKeyDictionary[Generator, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()
#: why a trace stopped growing
FINISH_REASONS = ("eos", "boxed", "max_steps")
#: default sampling of steps (max_tokens and stop come from StepConfig)
STEP_PARAMS = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=256)


@dataclass(frozen=True)
class StepConfig:
    """What a step is: text up to `delimiter`, at most `max_step_tokens` tokens, `max_steps` per trace.

    final_completion: the last allowed step is generated without the delimiter as a stop (the
        model completes its solution), as search-and-learn's last iteration; False: a plain step.
    final_step_tokens: the token limit of that final completion (None: `max_step_tokens`).
    """

    delimiter: str = DEFAULT_DELIMITER
    max_steps: int = 12
    max_step_tokens: int = 256
    final_completion: bool = True
    final_step_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise InvalidInput(f"StepConfig.delimiter must be a non-empty string, got {self.delimiter!r}")
        for name in ("max_steps", "max_step_tokens", "final_step_tokens"):
            value = getattr(self, name)
            if value is None and name == "final_step_tokens":
                continue
            check_positive(f"StepConfig.{name}", value)

    def is_final(self, steps_so_far: int) -> bool:
        """Whether the next step of a trace with `steps_so_far` steps is its final completion."""
        return self.final_completion and steps_so_far + 1 >= self.max_steps


def has_closed_box(text: str) -> bool:
    """Whether `text` holds a closed \\boxed{...} (or \\fbox{...}): the solution gave its answer."""
    return answers.last_boxed(text) is not None


def trace_scores(trace: Trace) -> list[float | None]:
    """The PRM score of each step of `trace` (None where a step was never scored)."""
    return [s.score for s in trace.steps]


@dataclass
class Expansion:
    """One generated step: the extended trace, the completion, and the usage it accounts for."""

    trace: Trace
    completion: Completion
    usage: Usage
    finish_reason: str | None

    @property
    def step(self) -> Step:
        return self.trace.steps[-1]


def _eos_ids(generator: Generator) -> frozenset[int]:
    """The backend's declared EOS ids, else its tokenizer's."""
    if generator.eos_token_ids:
        return frozenset(int(i) for i in generator.eos_token_ids)
    eos = getattr(generator.tokenizer, "eos_token_id", None) if generator.tokenizer is not None else None
    if eos is None:
        return frozenset()
    return frozenset([int(eos)] if isinstance(eos, int) else [int(i) for i in eos])


#: generators already warned that end-of-text cannot be told from the step delimiter
_WARNED_EOS: weakref.WeakSet[Generator] = weakref.WeakSet()


def _warn_cannot_tell_eos(generator: Generator) -> None:
    """Warn once per generator: a step that stopped may have ended the text or reached the delimiter."""
    try:
        if generator in _WARNED_EOS:
            return
        _WARNED_EOS.add(generator)
    except TypeError:  # a generator that cannot be weakly referenced: warn every time
        pass
    where = getattr(generator, "base_url", None) or type(generator).__name__
    warnings.warn(f"{where} does not say whether a step that stopped reached end-of-text or the step "
                  f"delimiter (no stop_reason, no token ids, no local tokenizer): a step search assumes the "
                  f"delimiter, so a finished trace is continued until max_steps (more tokens, a different search). "
                  f"Pass the served model's tokenizer: OpenAICompatible(..., tokenizer=<Hugging Face id or folder>)",
                  UserWarning, stacklevel=4)


class Stepper:
    """Generates one step at a time for one problem, continuing partial traces as token ids.

        stepper = await Stepper(problem, ctx, StepConfig(), STEP_PARAMS).start()
        children, exhausted = await stepper.expand_many([(trace, 4), (other, 4)])

    `expand_many` issues all its requests concurrently (the backend batches them); a request the
    budget cannot cover comes back empty and sets `exhausted`. Requests are seeded by the seed rule
    (`Context.next_seed`), so a seeded search is reproducible and two requests for the same prefix
    still differ; without any seed the backend picks random seeds.
    """

    def __init__(self, problem: Problem, ctx: Context, config: StepConfig = StepConfig(),
                 params: SamplingParams = STEP_PARAMS, prompt: ChatPrompt = ChatPrompt()):
        self.problem = problem
        self.ctx = ctx
        self.config = config
        self.params = params
        self.prompt = prompt
        self._decode: Callable[[Sequence[int]], str] | None = None
        self._eos: frozenset[int] = frozenset()
        self.use_token_ids = False
        self.prompt_ids: tuple[int, ...] = ()
        self.prompt_text: Any = ""
        self.delimiter_ids: tuple[int, ...] = ()
        self.opened = False  # the prompt opened a thinking segment (a reasoning model)

    async def start(self) -> Stepper:
        generator = self.ctx.generator
        capabilities = await generator.detect_capabilities()  # a server is asked once, before any branch
        self.use_token_ids = TOKEN_IDS in capabilities
        self._decode = generator.decode if generator.can_decode else None
        self._eos = _eos_ids(generator)
        fmt = generator.thinking
        if fmt is not None and self.config.delimiter == DEFAULT_DELIMITER != fmt.step_delimiter:
            # a reasoning model's thinking is cut into steps by its family's delimiter, unless the
            # StepConfig names its own
            self.config = dataclasses.replace(self.config, delimiter=fmt.step_delimiter)
        rendered = await self.prompt.render(self.problem, generator, self.params)
        if self.use_token_ids:
            self.prompt_ids = tuple(rendered) if not isinstance(rendered, str) else \
                tuple(await generator.tokenize(rendered))
            self.delimiter_ids = await self._piece_ids(self.config.delimiter)
        elif isinstance(rendered, str):
            self.prompt_text = rendered
            generator.continue_prompt(rendered, self.config.delimiter)  # fails now if it cannot continue
        elif self._decode is not None:
            self.prompt_text = self._decode(rendered)
        else:
            raise InvalidInput(f"{type(generator).__name__} returns token-id chat prompts but neither "
                               f"declares token ids nor can decode them: step search cannot continue traces")
        await self._find_opened(rendered)
        return self

    async def _find_opened(self, rendered: Any) -> None:
        """Whether the prompt opened a thinking segment (a reasoning model's template), by marker ids
        where traces are token ids, else by the marker text."""
        fmt = self.ctx.generator.thinking
        if fmt is None:
            return
        if self.use_token_ids:
            start, end = await self._piece_ids(fmt.start), await self._piece_ids(fmt.end)
            if len(start) == 1 and len(end) == 1:
                self.opened = prompt_opens(self.prompt_ids, start[0], end[0])
                return
        text = rendered if isinstance(rendered, str) else self.prompt_text
        self.opened = opened_by_text(text, fmt) is True

    def split(self, text: str) -> tuple[Thinking | None, str]:
        """(thinking, content) of a trace's whole text: the answer is read from the content only."""
        fmt = self.ctx.generator.thinking
        if fmt is None:
            return None, text
        return split_text(text, fmt, opened=self.opened)

    async def _piece_ids(self, text: str) -> tuple[int, ...]:
        """Ids of `text` inside a sequence: without the special tokens tokenize() puts in front.

        A fixed string (the delimiter) is tokenised once per backend, not once per problem."""
        generator = self.ctx.generator
        try:
            known = _PIECE_IDS.setdefault(generator, {})
        except TypeError:  # a generator that cannot be weakly referenced: no cache
            known = {}
        if text not in known:
            known[text] = await self._tokenize_piece(text)
        return known[text]

    async def _tokenize_piece(self, text: str) -> tuple[int, ...]:
        generator = self.ctx.generator
        ids = list(await generator.tokenize(text))
        try:
            prefix = list(await generator.tokenize(""))
        except Exception:  # some tokenizers refuse empty text
            prefix = []
        if prefix and ids[: len(prefix)] == prefix:
            ids = ids[len(prefix):]
        return tuple(ids)

    def request(self, trace: Trace, n: int, seed: int | None) -> tuple[Any, SamplingParams]:
        """The prompt and sampling parameters that generate the next step of `trace`."""
        if self.use_token_ids:
            prompt: Any = list(self.prompt_ids) + list(trace.token_ids)
        else:
            prompt = self.ctx.generator.continue_prompt(self.prompt_text, trace.text)
        final = self.config.is_final(len(trace.steps))  # the last step completes the solution
        max_tokens = (self.config.final_step_tokens or self.config.max_step_tokens) if final else \
            self.config.max_step_tokens
        # the sampler's params (temperature, top_p, logprobs, the reasoning fields, extra), with the
        # step's own n, length, stop and seed
        params = self.params.replace(n=n, max_tokens=max_tokens, stop=() if final else (self.config.delimiter,),
                                     seed=seed)
        return prompt, params

    async def expand(self, trace: Trace, n: int, seed: int | None = None) -> list[Expansion]:
        """n next steps of `trace` (one request); raises BudgetExhausted when it does not fit."""
        if trace.finished:
            raise InvalidInput("cannot extend a finished trace")
        prompt, params = self.request(trace, n, seed)
        fmt = self.ctx.generator.thinking  # steps hold the whole output, a reasoning model's thinking too
        return [self._extend(trace, whole(c, fmt), u) for c, u in await self.ctx.generate(prompt, params)]

    async def expand_many(self, requests: Sequence[tuple[Trace, int]]) -> tuple[list[list[Expansion]], bool]:
        """Run `(trace, n)` requests concurrently; returns their expansions and whether the budget ran out."""
        seeds = [self.ctx.next_seed(self.params.seed) for _ in requests]  # drawn in order: reproducible

        async def one(trace: Trace, n: int, seed: int | None) -> list[Expansion] | None:
            try:
                return await self.expand(trace, n, seed)
            except BudgetExhausted:
                return None

        results = await asyncio.gather(*(one(t, n, s) for (t, n), s in zip(requests, seeds, strict=False)))
        return [r or [] for r in results], any(r is None for r in results)

    # -- what a completion means ------------------------------------------------------------
    def _stopped_at_delimiter(self, completion: Completion) -> tuple[bool, bool]:
        """(ended at the delimiter, its token ids already hold the delimiter) for a completion."""
        if completion.finish_reason != "stop":
            return False, False
        if completion.eos is not None:  # the backend knows whether EOS or a stop string ended it
            if completion.eos:
                return False, False
            kept = bool(completion.token_ids) and (
                self.config.delimiter in self._decode(completion.token_ids) if self._decode is not None
                else self.use_token_ids)
            return True, kept
        ids = completion.token_ids
        if self._decode is not None and ids:
            if self.config.delimiter in self._decode(ids):
                return True, True  # the stop string never stays in the text: the ids kept it
            if ids[-1] in self._eos:
                return False, False
            if not completion.text.strip():
                return False, False  # nothing more to say: the model stopped
            return True, False  # the backend cut the stop string from text and ids
        if ids and ids[-1] in self._eos:
            return False, False
        if not completion.text.strip():
            return False, False
        if not ids or not self._eos:
            _warn_cannot_tell_eos(self.ctx.generator)
        # no way to look inside the ids: assume vLLM's convention (stop-string tokens kept)
        return True, bool(ids)

    def _extend(self, trace: Trace, completion: Completion, usage: Usage) -> Expansion:
        text, ids = completion.text, tuple(completion.token_ids)
        if self.config.is_final(len(trace.steps)):
            return self._final(trace, completion, usage)
        finish = None
        at_delimiter = kept = False
        if completion.finish_reason == "stop":
            at_delimiter, kept = self._stopped_at_delimiter(completion)
            if not at_delimiter:
                finish = "eos"
        if has_closed_box(self.split(trace.text + text)[1]):  # a box in the final content, not the thinking
            finish = "boxed"
        elif finish is None and len(trace.steps) + 1 >= self.config.max_steps:
            finish = "max_steps"
        # the delimiter belongs to the step when the model wrote it (or may have: the backend cut
        # it); a step that ends the trace with a box keeps only a delimiter it is known to have
        if at_delimiter and (kept or finish != "boxed") and not text.endswith(self.config.delimiter):
            text += self.config.delimiter  # (servers that keep the stop string in the text already have it)
            if self.use_token_ids and not kept:
                ids += self.delimiter_ids
        new = Trace(steps=[*trace.steps, Step(text=text, token_ids=ids)])
        new.finished = finish is not None
        return Expansion(trace=new, completion=completion, usage=usage, finish_reason=finish)


    def _final(self, trace: Trace, completion: Completion, usage: Usage) -> Expansion:
        """The final completion (generated without the delimiter stop): the trace ends here."""
        if has_closed_box(self.split(trace.text + completion.text)[1]):
            finish = "boxed"
        elif completion.finish_reason == "stop":
            finish = "eos"
        else:
            finish = "max_steps"  # cut by the token limit before the model finished
        new = Trace(steps=[*trace.steps, Step(text=completion.text, token_ids=tuple(completion.token_ids))])
        new.finished = True
        return Expansion(trace=new, completion=completion, usage=usage, finish_reason=finish)


# -- the search tree --------------------------------------------------------------------------
@dataclass(eq=False)
class Node:
    """A partial solution in the search tree: the trace from the root through this node's step.

    `usage` is what generating this step (and scoring this node's trace) cost; the usages of all
    nodes of a tree add up to the search's usage. `score` is the PRM's score of this node's
    step, `step_scores` the PRM's scores of every step on the path (from the call that scored
    this node), `value` what the search ranked the node by.
    """

    id: int
    parent: int | None
    depth: int
    trace: Trace
    usage: Usage = field(default_factory=Usage)
    children: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    score: float | None = None
    step_scores: list[float] | None = None
    value: float | None = None
    group: int | None = None
    expanded: int | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def step(self) -> Step | None:
        return self.trace.steps[-1] if self.trace.steps else None

    @property
    def text(self) -> str:
        """This node's step text (empty for the root)."""
        return self.step.text if self.step is not None else ""

    def __repr__(self) -> str:
        return (f"Node(id={self.id}, parent={self.parent}, depth={self.depth}, score={self.score}, "
                f"value={self.value}, finish={self.finish_reason}, text={self.text[:40]!r})")


class SearchTree:
    """Every node a search generated, with parents, children, scores and per-node usage."""

    def __init__(self, split: Callable[[str], tuple[Thinking | None, str]] | None = None) -> None:
        self.nodes: list[Node] = [Node(id=0, parent=None, depth=0, trace=Trace())]
        #: (thinking, content) of a trace's text, for a reasoning model (`Stepper.split`); None: no thinking
        self.split = split

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def add(self, parent: Node, expansion: Expansion, group: int | None = None) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, trace=expansion.trace,
                    usage=expansion.usage, finish_reason=expansion.finish_reason,
                    group=parent.group if group is None else group)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """The nodes from the root's first step down to `node` (the root itself excluded)."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def usage(self) -> Usage:
        """The sum of every node's usage: equals the search's usage."""
        return Usage.total([n.usage for n in self.nodes])

    def path_usage(self, node: Node) -> Usage:
        """What the steps on the path to `node` cost (shared prefixes are counted in every path)."""
        return Usage.total([n.usage for n in self.path(node)])

    @property
    def generated(self) -> int:
        """Number of steps generated (nodes other than the root)."""
        return len(self.nodes) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [
            {"id": n.id, "parent": n.parent, "children": list(n.children), "depth": n.depth, "text": n.text,
             "score": n.score, "value": n.value, "finish_reason": n.finish_reason, "group": n.group,
             "expanded": n.expanded, "usage": n.usage.to_dict()}
            for n in self.nodes]}

    def render(self, width: int = 60) -> str:
        """The tree as indented lines: score, value and the start of each step's text."""
        lines: list[str] = []

        def walk(node: Node, indent: int) -> None:
            if node.parent is None:
                lines.append("(root)")
            else:
                text = " ".join(node.text.split())
                text = text if len(text) <= width else text[: width - 1] + "…"
                score = "-" if node.score is None else f"{node.score:.3f}"
                end = f" [{node.finish_reason}]" if node.finish_reason else ""
                lines.append(f"{'  ' * indent}#{node.id} score={score} {text!r}{end}")
            for child in node.children:
                walk(self.nodes[child], indent + 1)

        walk(self.root, 0)
        return "\n".join(lines)

    def __repr__(self) -> str:
        finished = sum(n.finished for n in self.nodes)
        return f"SearchTree(nodes={len(self.nodes)}, finished={finished})"


# -- choosing the answer ----------------------------------------------------------------------
#: how a step search picks its answer among candidates: the highest-scoring one, a vote
#: weighted by scores, or a plain vote
SELECTIONS = ("best", "weighted", "majority")


def check_selection(select: str) -> str:
    if select not in SELECTIONS:
        raise InvalidInput(f"unknown selection {select!r}; known: {', '.join(SELECTIONS)}")
    return select


def select_answer(candidates: Sequence[Candidate], weights: Sequence[float], select: str,
                  name: str = "prm") -> tuple[str | None, dict]:
    """The answer chosen among `candidates` (weights: one per candidate, higher is better; `name`:
    the scorer, named in errors). Weighted votes follow `ttc.votes`: -inf weighs 0, negative
    weights are refused, an all-zero vote falls back to the unweighted plurality."""
    check_selection(select)
    if not candidates:
        return None, {}
    if select == "best":
        best = max(range(len(candidates)), key=lambda i: weights[i])  # max keeps the first of equals
        return candidates[best].answer, {"chosen": best}
    vote = vote_weights(name, weights) if select == "weighted" else None
    answer, votes, info = weighted_vote([c.answer for c in candidates], vote)
    return answer, {"votes": votes, **info}


def make_candidate(tree: SearchTree, node: Node, score_name: str, value: float | None) -> Candidate:
    """A candidate from a tree node; its usage is that of the steps on its path."""
    thinking, text = tree.split(node.trace.text) if tree.split is not None else (None, node.trace.text)
    scores = {} if value is None else {score_name: float(value)}
    finished = node.finish_reason not in (None, "max_steps", "length")  # a step-capped trace is cut, not finished
    if thinking is not None and not thinking.closed:  # cut inside its thinking: no final content, no answer
        fields: dict[str, Any] = {"answer": None, "answer_source": None}
    else:
        fields = answers.answer_fields(text, finished)
    return Candidate(text=text, **fields, scores=scores, usage=tree.path_usage(node), trace=node.trace,
                     finish_reason=node.finish_reason or "unfinished",
                     thinking=None if thinking is None else thinking.text,
                     thinking_closed=None if thinking is None else thinking.closed)
