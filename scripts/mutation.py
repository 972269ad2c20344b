#!/usr/bin/env python
"""Mutation testing of ttc's selection and weighting logic (issue 10, section 3).

Each mutant is one small change to one target function (a flipped comparison, min/max swapped,
a statement dropped, uniform weights, an off-by-one, a reversed sort, ...). For each mutant the
fast scripted tests run once (`pytest -x`); a mutant is *killed* when they fail (or time out),
and *survives* when they pass. A surviving mutant is either equivalent (the change cannot alter
behaviour) or a line of logic no test pins.

The script never edits the working tree: it copies `src/` (with the data sets packaged in
`src/ttc/data`), `tests/` and `pyproject.toml` into a temporary directory and mutates the copy,
restoring each file from memory after every mutant (and deleting the whole copy at the end, also
on errors or Ctrl-C).

Targets are functions named on the command line as `module:name[,name...]` where a name is a
function, `Class.method`, `Class.*` (every method) or `*` (every function and method of the
module). A target that no longer exists is skipped with a warning, so the same command runs on
a changed tree. Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation.py                 # default targets and tests
    python scripts/mutation.py --list                                      # only list the mutants
    python scripts/mutation.py --targets "ttc.strategies.particle:resample,ParticleFilter.run"
    python scripts/mutation.py --tests tests/test_logic_particle.py --json mutants.json

Not part of CI (`.ci/run`): a full run takes minutes, one mutant at a time.
"""

from __future__ import annotations

import argparse
import ast
import copy
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the selection and weighting logic of issue 10 section 3 (module: functions)
DEFAULT_TARGETS = [
    # resampling, its application to the population, softmax/logit, ESS, the final choice
    "ttc.strategies.particle:resample,check_probability,prefix_at,ParticleFilter.*",
    # particle Gibbs and parallel tempering (issue 25): sweeps, reference draw, swaps
    "ttc.strategies.particle_gibbs:*",
    "ttc.smc:*",  # the pure particle kernels: weights, ESS, the four resamplers
    # vote and best-of-N choice
    "ttc.strategies.best_of_n:BestOfN.run",  # its softmax is ttc.smc.softmax
    "ttc.strategies.majority:MajorityVote.run,*",
    # beam pruning, the A* queue, select_answer, step caps, PRM aggregation
    "ttc.strategies.beam:BeamSearch.run,BeamSearch._plan,BeamSearch._prune,BeamSearch._top",
    "ttc.strategies.astar:AStar.run,AStar._finish",
    "ttc.strategies.stepwise:StepSearch._grow,StepSearch._score,StepSearch._result,all_or_nothing,in_order,"
    "each_capped",
    "ttc.steps:select_answer,verifier_calls_left,Stepper._extend",
    "ttc.verifiers.process:aggregate",
    # FirstFinish's choice
    "ttc.strategies.first_finish:FirstFinish.run,FirstFinish._counted",
    # the probes' stop rules
    "ttc.probes.base:read_answer",
    "ttc.probes.answer_consistency:AnswerConsistency.check",
    "ttc.probes.confidence:token_confidences,group_confidences,lowest_group_confidence,calibrate_threshold,"
    "TokenConfidence.check,ConfidenceFilter.score",
    "ttc.probes.conformal:conformal_threshold,premature_exit_rate",
    "ttc.probes.hidden_state:HiddenStateProbe.check",
    # answer extraction (every function of the module, whatever the rebuild names them)
    "ttc.answers:*",
    # the adaptive strategies (issue 15): stopping rules, adaptive vote, the shared budget's allocation and
    # reservation, RPC's vote and pruning, adaptive best-of-N, ES-CoT's run-jump test
    "ttc.stopping:*",
    "ttc.strategies.adaptive_vote:*",
    "ttc.shared_budget:*",
    "ttc.strategies.rpc:*",
    "ttc.strategies.adaptive_best_of_n:*",
    "ttc.probes.es_cot:*",
]

#: the fast scripted test files (globs; missing ones are skipped). Files named first run first:
#: with -x, a mutant is usually killed by the targeted tests within a second.
DEFAULT_TESTS = [
    "tests/test_logic_*.py",
    "tests/test_smc.py",
    "tests/test_particle_rounds.py",
    "tests/test_step_search.py",
    "tests/test_strategies.py",
    "tests/test_early_exit.py",
    "tests/test_first_finish.py",
    "tests/test_probes.py",
    "tests/test_answers*.py",
    "tests/test_answer_cases.py",
    "tests/test_adaptive_vote.py",
    "tests/test_shared_budget.py",
    "tests/test_rpc_adaptive_bon.py",
    "tests/test_record.py",
    "tests/test_tune.py",
]

#: which of those files run for a module's mutants (first match by prefix; `--all-tests` runs every
#: file for every mutant). Fewer files can only miss kills, never invent them.
TEST_MAP = {
    "ttc.strategies.particle_gibbs": ["tests/test_logic_particle_gibbs.py", "tests/test_logic_particle.py"],
    "ttc.strategies.particle": ["tests/test_logic_particle.py", "tests/test_particle_rounds.py",
                                "tests/test_step_search.py", "tests/test_logic_particle_gibbs.py"],
    "ttc.smc": ["tests/test_smc.py", "tests/test_logic_particle.py", "tests/test_step_search.py",
                "tests/test_logic_particle_gibbs.py"],
    "ttc.strategies.best_of_n": ["tests/test_logic_votes.py", "tests/test_strategies.py"],
    "ttc.strategies.majority": ["tests/test_logic_votes.py", "tests/test_strategies.py"],
    "ttc.strategies.first_finish": ["tests/test_logic_votes.py", "tests/test_first_finish.py"],
    "ttc.strategies.beam": ["tests/test_logic_search.py", "tests/test_particle_rounds.py",
                            "tests/test_step_search.py"],
    "ttc.strategies.astar": ["tests/test_logic_search.py", "tests/test_particle_rounds.py",
                             "tests/test_step_search.py"],
    "ttc.strategies.stepwise": ["tests/test_particle_rounds.py", "tests/test_logic_search.py",
                                "tests/test_logic_particle.py", "tests/test_step_search.py"],
    "ttc.steps": ["tests/test_logic_search.py", "tests/test_logic_particle.py", "tests/test_step_search.py"],
    "ttc.verifiers.process": ["tests/test_logic_search.py", "tests/test_step_search.py"],
    # the adaptive strategies (before "ttc.probes": the first matching prefix wins)
    "ttc.stopping": ["tests/test_logic_adaptive.py", "tests/test_adaptive_vote.py", "tests/test_shared_budget.py",
                     "tests/test_logic_audit.py"],
    "ttc.strategies.adaptive_vote": ["tests/test_adaptive_vote.py", "tests/test_logic_adaptive.py",
                                     "tests/test_shared_budget.py", "tests/test_logic_audit.py"],
    "ttc.shared_budget": ["tests/test_shared_budget.py", "tests/test_logic_adaptive.py", "tests/test_adaptive_vote.py"],
    "ttc.strategies.rpc": ["tests/test_logic_adaptive.py", "tests/test_rpc_adaptive_bon.py",
                           "tests/test_logic_audit.py"],
    "ttc.strategies.adaptive_best_of_n": ["tests/test_rpc_adaptive_bon.py", "tests/test_logic_adaptive.py",
                                          "tests/test_logic_audit.py"],
    "ttc.probes.es_cot": ["tests/test_logic_adaptive.py", "tests/test_rpc_adaptive_bon.py"],
    # Solve-Detect-Verify (issue 25): the detector, the verifier, the shared hesitation words
    "ttc.probes.completion": ["tests/test_logic_solve_detect_verify.py"],
    "ttc.strategies.solve_detect_verify": ["tests/test_logic_solve_detect_verify.py"],
    "ttc.verifiers.flex": ["tests/test_logic_solve_detect_verify.py"],
    "ttc.hesitation": ["tests/test_logic_solve_detect_verify.py"],
    "ttc.probes": ["tests/test_logic_probes.py", "tests/test_probes.py", "tests/test_early_exit.py",
                   "tests/test_logic_audit.py"],
    # extraction is tested by its table; votes and probes compare answers with it
    "ttc.bank.format": ["tests/test_record.py", "tests/test_tune.py"],
    "ttc.answers": ["tests/test_answer_cases.py", "tests/test_answers*.py", "tests/test_logic_votes.py",
                    "tests/test_logic_probes.py"],
}

#: survivors analysed and found equivalent (no input can tell them from the original), matched by
#: function, operator and the original line's text (not line numbers, which move). They are still
#: run and reported, and the kill rate is given with and without them.
KNOWN_EQUIVALENT = [
    ("join_banks", "boolean: True->False", "for rows in zip(*(bank.problems for bank in banks), strict=True):",
     "_require_alike has refused banks with other problems: the lists have one length"),
    ("join_banks", "offbyone: 0->1", "head = rows[0]",
     "the rows are one problem of banks of one prompt: id, index, question, gold and prompt length are alike"),
    ("join_banks", "offbyone: 0->-1", "head = rows[0]",
     "the rows are one problem of banks of one prompt: id, index, question, gold and prompt length are alike"),
    ("_require_alike", "offbyone: 1->0", "for other in banks[1:]:",
     "the first bank compared with itself passes every check"),
    ("_cumulative", "drop: statement dropped", "cumulative[-1] = 1.0",
     "the loop guard i < len(cumulative) - 1 already keeps the index in range when rounding leaves the "
     "last cumulative weight just under 1"),
    ("_invert", "compare: boundary Lt->LtE", "while point >= cumulative[i] and i < len(cumulative) - 1:",
     "points are < 1 = cumulative[-1], so the first condition stops the loop at the last index"),
    ("_invert", "arith: Sub->Add", "while point >= cumulative[i] and i < len(cumulative) - 1:",
     "points are < 1 = cumulative[-1], so the first condition stops the loop at the last index"),
    ("_invert", "offbyone: 1->0", "while point >= cumulative[i] and i < len(cumulative) - 1:",
     "points are < 1 = cumulative[-1], so the first condition stops the loop at the last index"),
    ("residual", "boolean: True->False",
     "out += multinomial(rng, [s - c for s, c in zip(scaled, copies, strict=True)], rest)",
     "scaled and copies are built from the same list: equal lengths, so strict never raises"),
    ("ParticleFilter._sweep", "offbyone: 0->-1",
     "requests = [Request(population[idxs[0]], len(idxs)) for idxs in live]",
     "a group's indices are particles at the same node: population[idxs[0]] is population[idxs[-1]]"),
    ("ParticleFilter._extend", "boolean: True->False",
     "for idxs, children in zip(live, growth.children, strict=True):",
     "all_or_nothing keeps every request, so there is one children tuple per live group"),
    ("StepSearch._grow", "boolean: True->False", "for r, expansions in zip(requests, results, strict=True):",
     "expand_many returns one result list per request"),
    ("StepSearch._grow", "boolean: True->False",
     "requests = [r._replace(n=k) for r, k in zip(requests, granted, strict=True) if k]",
     "every trim rule returns one count per request"),
    ("ParticleFilter._sweep", "offbyone: range bound +1", "for t in range(self.steps.max_steps):",
     "every trace is finished at max_steps steps (Stepper._extend), so the loop ends on 'no live particle' "
     "after max_steps rounds either way"),
    ("AdaptiveBestOfN.run", "boolean: True->False", "for c, outcome in zip(new, evals, strict=True):",
     "asyncio.gather returns one outcome per sample evaluated: equal lengths, so strict never raises"),
    ("ConfidenceFilter.score", "boolean: True->False",
     "answered = [x for x, c in zip(confs, candidates, strict=True) if math.isfinite(x) and c.answer is not None]",
     "confs holds one confidence per candidate (built in the loop above): strict never raises"),
    ("WindowStop.unanimous_window", "drop: statement dropped", "return None",
     "the function's last statement: without it the function returns None all the same"),
    ("swap_acceptance", "compare: boundary GtE->Gt", "return 1.0 if log_ratio >= 0 else math.exp(log_ratio)",
     "at log_ratio = 0 both branches give 1.0 (exp(0))"),
    ("ParticleGibbs.choose_reference", "offbyone: 0->-1", "return finished[multinomial(rng, weights, 1)[0]]",
     "one draw: [0] and [-1] are the same element"),
    ("ParticleGibbs.choose_reference", "offbyone: 1->2", "return finished[multinomial(rng, weights, 1)[0]]",
     "the first of two independent multinomial draws has the same distribution as one draw (only the rng "
     "stream advances further; no test pins a seed's exact reference)"),
    ("ParticleGibbs.run", "drop: statement dropped", "sweep: Sweep | None = None",
     "the loop runs at least once (iterations >= 1) and assigns sweep before it is read"),
    ("ParticleGibbs.run", "offbyone: range bound +1", "for k in range(self.iterations):",
     "the loop breaks at k == iterations - 1, so the extra iteration is never reached"),
    ("ParticleGibbs.run", "drop: statement dropped", "if reference is None:",
     "unreachable: a sweep that ends 'all_finished' has only finished, scored particles, so "
     "choose_reference always finds one"),
    ("ParticleGibbs.run", "drop: statement dropped", "break",
     "the break of `if reference is None:`, unreachable (see that guard)"),
    ("ParallelTempering.run", "drop: statement dropped", "sweeps: list[Sweep] = []",
     "the loop runs at least once (iterations >= 1) and assigns sweeps before it is read"),
    ("ParallelTempering.run", "offbyone: range bound +1", "for k in range(self.iterations):",
     "the loop breaks at k == iterations - 1, so the extra iteration is never reached"),
    ("ParallelTempering.run", "drop: statement dropped", "if any(d is None for d in drawn):",
     "unreachable: sweeps that end 'all_finished' have only finished, scored particles"),
    ("ParallelTempering.run", "drop: statement dropped", "break",
     "the break of `if any(d is None for d in drawn):`, unreachable (see that guard)"),
    ("ParallelTempering.run", "boolean: True->False",
     "drawn = [self.choose_reference(s.population, ctx.rng, t) for s, t in zip(sweeps, self.temperatures,",
     "one sweep per temperature: equal lengths, so strict never raises"),
    ("BestOfN.run", "offbyone: 0->-1",
     "chosen = ctx.rng.choices(range(len(scores)), weights=softmax(scores, self.temperature))[0]",
     "choices(k=1) returns one element: [0] and [-1] are the same"),
    ("AStar.run", "offbyone: 0->1", "f: dict[int, float] = {0: 0.0}",
     "the root's f is never read (the root is excluded from the final ranking; children use g)"),
    ("AStar.run", "offbyone: 0->-1", "f: dict[int, float] = {0: 0.0}",
     "the root's f is never read (the root is excluded from the final ranking; children use g)"),
    ("StepSearch._score", "drop: statement dropped", "if not nodes:",
     "no caller passes an empty list (each stops first when a round produced no step)"),
    ("StepSearch._score", "drop: statement dropped", "return True",
     "no caller passes an empty list (each stops first when a round produced no step)"),
    ("StepSearch._score", "boolean: True->False", "return True",
     "no caller passes an empty list (each stops first when a round produced no step)"),
    ("StepSearch._result", "drop: statement dropped", "final = list(final)",
     "every caller passes a list"),
    ("AStar._finish", "uniform: weights made uniform",
     "weights = [-f[n.id] for n in final] if self.select == \"best\" else [n.value for n in final]",
     "final is always in ascending f (goals are popped in f order, the budget path sorts by f), so the "
     "first candidate is the best either way"),
    ("AStar.run", "drop: statement dropped", "if growth.exhausted:",
     "A* sends one request per expansion: a refused one leaves no children and stops the search one "
     "line earlier, so 'exhausted' with children cannot happen"),
    # the two lines inside that branch (their text also occurs elsewhere in AStar.run, where
    # dropping them is killed: a survivor there would be misfiled here)
    ("AStar.run", "drop: statement dropped", 'stop = "token_budget"',
     "inside A*'s unreachable 'if exhausted:' branch (see above)"),
    ("AnswerConsistency.check", "offbyone: 1->0",
     "agree = len(last) == self.window and None not in last and all(equivalent(a, last[-1]) for a in last)",
     "all equivalent to the first answer of the window iff all equivalent to the last"),
    ("group_confidences", "compare: boundary LtE->Lt", "if len(conf) <= window:",
     "at len(conf) == window the sliding-window formula gives the same single mean"),
    ("TokenConfidence.check", "drop: statement dropped", "if n < self.min_tokens:",
     "without it the scan starts at min_tokens > n, finds no window and continues with no score"),
    ("TokenConfidence.check", "drop: statement dropped", "return Decision(CONTINUE)",
     "without it the scan starts at min_tokens > n, finds no window and continues with no score"),
    ("ConfidenceFilter.score", "drop: statement dropped",
     "if c.completion.logprobs is None and not c.completion.top_logprobs and c.completion.token_ids:",
     "token_confidences raises the same InvalidInput for a completion without logprobs"),
    ("ConfidenceFilter.score", "drop: statement dropped",
     'raise InvalidInput("ConfidenceFilter needs logprobs: sample with SamplingParams(logprobs=True)")',
     "token_confidences raises the same InvalidInput for a completion without logprobs"),
    ("ConfidenceFilter.score", "boolean: drop not",
     "if c.completion.logprobs is None and not c.completion.top_logprobs and c.completion.token_ids:",
     "token_confidences raises the same InvalidInput for a completion without logprobs"),
    ("conformal_threshold", "offbyone: 0->-1", "if n == 0 or k > n:",
     "k = ceil((n + 1)(1 - alpha)) >= 1, so k > n already holds for n == 0"),
    # ttc.answers
    ("last_boxed", "offbyone: range bound -1", "for i in range(brace, len(text)):",
     "text[brace - 1] is the last character of '\\boxed'/'\\fbox' or a space, never a brace"),
    ("last_boxed", "offbyone: 1->2", 'head = text[start:].split("{", 1)[0]',
     "the first piece of a split is the same whatever the split count"),
    ("last_boxed", "boolean: and<->or",
     'word = re.match(r"[^\\s$]+", rest) if rest and not rest.startswith("{") else None',
     "in this branch rest never starts with '{' (that is the \\boxed{...} branch), and re.match on '' is None"),
    ("_math_env", "drop: statement dropped", "return None", "the function's implicit return is None"),
    ("_math_env", "compare: boundary Lt->LtE",
     'if end != -1 and (open_ in ("$$", "\\\\[") or line_end == -1 or end < line_end):',
     "end and line_end are positions of different characters ('$' and a new line), never equal"),
    ("_hashes", "drop: statement dropped", "return None", "the function's implicit return is None"),
    ("_stated", "drop: statement dropped", "return None", "the function's implicit return is None"),
    ("_last_number", "offbyone: slice lower -1", "tail = tail[cut + 1:] if cut != -1 else tail",
     "keeps the separator (a space or new line) in front of the tail: no number or expression changes"),
    ("_last_number", "offbyone: 1->0", "tail = tail[cut + 1:] if cut != -1 else tail",
     "tail[cut:] keeps only the separator (see above); with cut == 0 or -1, tail[cut + 1:] is tail without a "
     "leading separator or tail itself"),
    ("_last_number", "offbyone: 1->2", "tail = tail[cut + 1:] if cut != -1 else tail",
     "with cut == -1, tail[cut + 1:] is tail itself"),
    # ttc.stopping
    ("BetaStop.probability", "offbyone: 0->1", "top = sorted(counts, reverse=True) + [0, 0]",
     "the second padding zero is read only when counts is empty, and then top[0] == 0 returns 0.0"),
    ("BetaStop.probability", "offbyone: 0->-1", "top = sorted(counts, reverse=True) + [0, 0]",
     "the second padding zero is read only when counts is empty, and then top[0] == 0 returns 0.0"),
    # ttc.strategies.rpc
    ('prune_mask', 'drop: statement dropped',
     'if len(probs) < 2:',
     'one path is its own mean, none is below it: the next check returns the same'),
    ('prune_mask', 'offbyone: 2->1',
     'if len(probs) < 2:',
     'one path is its own mean, none is below it: the next check returns the same; n >= 1 always'),
    ('prune_mask', 'drop: statement dropped',
     'if not np.any(data < mean):',
     'the mask also needs p < mean: with no path below the mean it is all False whatever the fit'),
    ('prune_mask', 'compare: negate Lt->GtE',
     'if not np.any(data < mean):',
     'never returns now, and the mask needs p < mean: with no path below the mean it is all False'),
    ('prune_mask', 'compare: flip Lt->Gt',
     'if not np.any(data < mean):',
     'no path above the mean iff none below it (all equal)'),
    ('prune_mask', 'compare: boundary Lt->LtE',
     'if not np.any(data < mean):',
     'never returns now, and the mask needs p < mean: with no path below the mean it is all False'),
    ('prune_mask', 'boolean: True->False',
     'return [bool(lo > hi and p < mean) for lo, hi, p in zip(low, high, data, strict=True)]',
     'low and high are computed from data: equal lengths'),
    ('rpc_vote', 'boolean: True->False',
     'probs = [path_probability(s, c, normalise) for s, c in zip(logprob_sums, token_counts, strict=True)]',
     'the lengths are checked (InvalidInput) at the top of rpc_vote'),
    ('rpc_vote', 'boolean: True->False',
     'voting = [a if k else None for a, k in zip(answers, kept, strict=True)]',
     'kept has one entry per answer (built from prune_mask(probs) or [False] * n)'),
    ('RPC.run', 'boolean: True->False',
     'sums, counts = zip(*(candidate_logprobs(c) for c in candidates), strict=True)',
     'each candidate_logprobs returns a pair: the two unzipped tuples have equal lengths'),
    ("prune_mask", "drop: statement dropped", "return [False] * len(probs)",
     "the two early returns (one path, none below the mean) only save the fit (see above); dropping the third, "
     "after a failed fit, is killed by test_mixture_fit_puts_the_higher_mean_first_and_fails_on_non_finite"),
    # ttc.probes.es_cot
    ('run_lengths', 'drop: statement dropped',
     'previous: str | None = None',
     'previous is read only when i > 0, after the first iteration set it'),
    ('run_lengths', 'compare: boundary Gt->GtE',
     'if i > 0 and a is not None and previous is not None and equivalent(a, previous):',
     'at i == 0 previous is still None, so the condition is false either way'),
    ('run_lengths', 'offbyone: 0->-1',
     'if i > 0 and a is not None and previous is not None and equivalent(a, previous):',
     'at i == 0 previous is still None, so the condition is false either way'),
    # ttc.shared_budget
    ('asolve_shared', 'drop: statement dropped',
     'if state.error is not None or state.reason is not None:',
     'the rule is asked again on the candidates it did not stop on after the previous round (a failed or '
     'over-budget round adds none), and an error wins over any reason'),
    ('asolve_shared', 'boolean: and<->or',
     'if state.error is not None or state.reason is not None:',
     'the rule is asked again on the candidates it did not stop on after the previous round (a failed or '
     'over-budget round adds none), and an error wins over any reason'),
    ('asolve_shared', 'drop: statement dropped',
     'return',
     'the rule is asked again on the candidates it did not stop on after the previous round (a failed or '
     'over-budget round adds none), and an error wins over any reason'),
    ('asolve_shared', 'drop: statement dropped',
     'result.usage = usage',
     'ctx.finish() returns ctx.usage itself, which vote_result already put in the Result'),
    ('asolve_shared', 'boolean: True->False',
     'bar = tqdm(total=len(items), desc=f"{plan.name} (shared {allocation})", disable=not progress,',
     'dynamic_ncols only changes how the progress bar is drawn'),
    ("asolve_shared", "drop: statement dropped", "bar.close()",
     "display only: the bar already shows its final count (tested); close() ends its line, as tqdm does when "
     "the bar is collected"),
    ("asolve_shared", "boolean: True->False", "for state, share in zip(states, planner.shares, strict=True):",
     "the planner keeps one share per problem"),
    ("WavePlanner.__init__", "boolean: True->False",
     "short = [i for i, (s, n) in enumerate(zip(self.shares, prompts, strict=True)) if s < n + max_tokens]",
     "the shares are built one per prompt"),
    ("WavePlanner.next_wave", "drop: statement dropped", "elif not self.adaptive:",
     "a uniform share only shrinks: a problem it cannot pay sends nothing in any later wave and is stopped "
     "with 'budget' when the run ends; only the progress bar counts it later"),
    ("WavePlanner.next_wave", "drop: statement dropped",
     "stopped.append(i)  # its own share cannot pay for one more sample, now or later",
     "a uniform share only shrinks: a problem it cannot pay sends nothing in any later wave and is stopped "
     "with 'budget' when the run ends; only the progress bar counts it later"),
    ("WavePlanner.next_wave", "compare: boundary Gt->GtE",
     "while k > 1 and sum(self.cost(i, k) for i in order) > self.pools[0].available():",
     "k > 1 -> >= 1 / > 0 only adds k == 1, and one sample per problem fits the total (refused in __init__); "
     "the per-round loop below shrinks further anyway"),
    ("WavePlanner.next_wave", "offbyone: 1->0",
     "while k > 1 and sum(self.cost(i, k) for i in order) > self.pools[0].available():",
     "k > 1 -> >= 1 / > 0 only adds k == 1, and one sample per problem fits the total (refused in __init__); "
     "the per-round loop below shrinks further anyway"),
    ("WavePlanner.next_wave", "offbyone: 0->-1",
     "while k > 1 and sum(self.cost(i, k) for i in order) > self.pools[0].available():",
     "adaptive: every problem shares one pool object, so pools[0] is pools[-1]"),
    ("WavePlanner.next_wave", "compare: boundary Gt->GtE",
     "while k > 0 and self.cost(i, k) > self.pools[i].available():",
     "k <= 0 sends nothing, whatever its value"),
    ("WavePlanner.next_wave", "offbyone: 0->-1",
     "while k > 0 and self.cost(i, k) > self.pools[i].available():",
     "k <= 0 sends nothing, whatever its value"),
    # ttc.strategies.adaptive_vote
    ('AdaptiveVote._run_streams', 'drop: statement dropped',
     'if exc is not None:',
     'task.result() on the next line raises the same exception'),
    ('AdaptiveVote._run_streams', 'drop: statement dropped',
     'raise exc',
     'task.result() on the next line raises the same exception'),
    ('AdaptiveVote._run_streams', 'drop: statement dropped',
     'continue  # refused before it started: it spent nothing and is not a candidate',
     'the branch is the last statement of the loop body: pass does the same'),
    ('AdaptiveVote._run_streams', 'boolean: True->False',
     'for i, (view, task) in enumerate(zip(views, futures, strict=True)):',
     'views and futures are appended together, one each'),
    # ttc.strategies.adaptive_best_of_n
    ('AdaptiveBestOfN.__init__', 'boolean: False->True',
     'self._judge = LLMJudge(top_logprobs=top_logprobs, cache=False)  # reads P(Yes) from a 1-token answer',
     "the strategy only calls the judge's p_yes, which never reads the cache"),
    ("AdaptiveBestOfN.run", "boolean: True->False",
     "for c, (p, t) in zip(new, evals, strict=True):",
     "evals has one entry per new candidate (one gather task each)"),
    # Solve-Detect-Verify (issue 25)
    ("SolveDetectVerify.__init__", "offbyone: 1->2", "self.params = params.replace(n=1)",
     "the round's EarlyExit replaces n by 1 itself"),
    ("SolveDetectVerify.candidate", "offbyone: range bound +1", "for r in range(self.rounds):",
     "the loop always breaks at r == rounds - 1 (the last round is answered unverified)"),
    ("SolveDetectVerify.candidate", "arith: Add->Sub",
     "round_seed = None if seed is None else seed + r * _ROUND_SEED_STRIDE",
     "any fixed per-round offset of the candidate's one seed keeps runs reproducible and rounds distinct"),
    ("SolveDetectVerify.candidate", "arith: Add->Sub",
     "verdict = await self.verifier.verify(problem.question, solution, ctx, spent=spent,",
     "the verifier's seed offset from the round's seed is arbitrary (any fixed one is reproducible)"),
    ("SolveDetectVerify.candidate", "offbyone: 1->2",
     "verdict = await self.verifier.verify(problem.question, solution, ctx, spent=spent,",
     "the verifier's seed offset from the round's seed is arbitrary (any fixed one is reproducible)"),
    ("SolveDetectVerify.candidate", "offbyone: 1->0",
     "verdict = await self.verifier.verify(problem.question, solution, ctx, spent=spent,",
     "the verifier's seed offset from the round's seed is arbitrary (the round's own chunks start at seed + 0 "
     "too, but a verifier request is another prompt)"),
    ("SolutionComplete.check", "drop: statement dropped", "state.scanned = len(state.token_ids)",
     "this probe keeps its own character offset; EarlyExit does not read `scanned`"),
    ("SolutionComplete.check", "offbyone: 1->2", 'memory["chars"] = at_char + 1',
     "set only when the probe stops the trace, after which it is never asked again"),
    ("SolutionComplete.check", "offbyone: 1->0", 'memory["chars"] = at_char + 1',
     "set only when the probe stops the trace, after which it is never asked again"),
    ("SolutionComplete.check", "arith: Add->Sub", 'memory["chars"] = at_char + 1',
     "set only when the probe stops the trace, after which it is never asked again"),
    ("SolutionComplete.check", "drop: statement dropped", 'memory["chars"] = at_char + 1',
     "set only when the probe stops the trace, after which it is never asked again"),
    ("SolutionComplete.check", "offbyone: 0->1",
     'memory = state.memory.setdefault(self.name, {"chars": 0, "detections": []})',
     "EarlyExit calls reset() before the first check: setdefault's default is never used"),
    ("SolutionComplete.check", "offbyone: 0->-1",
     'memory = state.memory.setdefault(self.name, {"chars": 0, "detections": []})',
     "EarlyExit calls reset() before the first check: setdefault's default is never used"),
    ("SolutionComplete.reset", "drop: statement dropped", 'state.memory[self.name] = {"chars": 0, "detections": []}',
     "a TraceState is new per trace, and check() creates the same memory (setdefault) when reset did not"),
    ("SolutionComplete.reset", "offbyone: 0->-1", 'state.memory[self.name] = {"chars": 0, "detections": []}',
     "find_hesitations keeps words starting at or after the offset: no word starts before 0, so -1 admits the "
     "same ones, and resume = max(-1, ...) is only stored back as the next offset"),
    ("SolutionComplete.check", "offbyone: 4->5",
     'resume = max(memory["chars"], len(text) - max(len(w) for w in self.words) - 4)',
     "the rescan offset only has to reach back to the start of a word cut at the end (longest word - 1 "
     "characters): words are kept by where the word starts, so any margin of at least that is the same"),
    ("SolutionComplete.check", "offbyone: 4->3",
     'resume = max(memory["chars"], len(text) - max(len(w) for w in self.words) - 4)',
     "the rescan offset only has to reach back to the start of a word cut at the end (longest word - 1 "
     "characters): words are kept by where the word starts, so any margin of at least that is the same"),
    ("SolutionComplete.check", "drop: statement dropped", "resume = at_char",
     "resume is already at most at_char there (the start offset, the margin and earlier words + 1 all are) and "
     "past every word asked about, so the word at the end is found again next time either way"),
    ("SolutionComplete.check", "drop: statement dropped", "break",
     "the word at the very end of the text is the last match: the loop ends there anyway"),
    ("SolutionComplete.check", "offbyone: 1->2", "resume = max(resume, at_char + 1)",
     "no two hesitation words start one character apart (each has 3+ letters and needs a boundary before it)"),
    ("SolutionComplete._p_complete", "boolean: True->False",
     "params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)",
     "asking for top_logprobs returns the sampled token's logprob too (Scripted; the OpenAI payload asks for "
     "logprobs when either is set)"),
    ("_p_yes", "offbyone: 0->-1", "top = completion.top_logprobs[0] if completion.top_logprobs else None",
     "the completeness request has max_tokens=1: its one token is the first and the last"),
    ("_p_yes", "offbyone: 0->-1", "p = math.exp(completion.logprobs[0]) if completion.logprobs else 1.0",
     "the completeness request has max_tokens=1: its one token is the first and the last"),
    ("_tokens_before", "offbyone: 0->-1", "lo, hi = 0, len(state.token_ids)",
     "the bisection's mid, (lo + hi + 1) // 2, is never below 0, and 0 tokens always decode to at most `char`"),
    ("_tokens_before", "offbyone: 1->2", "return len(state.token_ids) * char // max(1, len(state.text))",
     "a text holding a hesitation word has at least 3 characters"),
    ("_tokens_before", "offbyone: 1->0", "return len(state.token_ids) * char // max(1, len(state.text))",
     "a text holding a hesitation word has at least 3 characters"),
    ("_tokens_before", "offbyone: 1->2", "mid = (lo + hi + 1) // 2",
     "any mid in (lo, hi] keeps the bisection for the largest k exact, and (lo + hi + 2) // 2 is in it while lo < hi"),
    ("read_verdict", "offbyone: 0->-1", "if index >= 0:", "index -1 has returned on the line before"),
    ("text_prompt_state", "compare: boundary Gt->GtE", "return start > end",
     "the two markers differ, so their last positions are equal only when both are absent (-1), returned before"),
    ("Context.verifier_generate", "offbyone: 0->1", "reserved = 0",
     "kept only without a token budget, where remaining_tokens() is None whatever is reserved"),
    ("Context.verifier_generate", "offbyone: 0->-1", "reserved = 0",
     "kept only without a token budget, where remaining_tokens() is None whatever is reserved"),
]


def known_equivalent(m: Mutant) -> str | None:
    for function, operator, original, reason in KNOWN_EQUIVALENT:
        if m.function == function and m.operator == operator and m.original == original:
            return reason
    return None


OPERATORS = ("compare", "boolean", "minmax", "drop", "uniform", "offbyone", "sort", "arith")

#: variables whose value is a list of weights: the "uniform" operator replaces them by all-ones
WEIGHT_NAMES = re.compile(r"weight|logit|^probs?$|probabilit|votes?$", re.IGNORECASE)

_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}
_NEGATE = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_SIMPLE_STMTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.Break, ast.Continue,
                 ast.Raise, ast.If)


@dataclass
class Mutant:
    id: int
    module: str
    path: str  # relative to the repository root
    function: str
    line: int
    operator: str
    original: str
    mutated: str
    status: str = "pending"  # killed | timeout | survived | error
    seconds: float = 0.0


# -- finding targets ----------------------------------------------------------------------------
def module_path(module: str) -> Path | None:
    base = ROOT / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function of a module by qualified name (`f`, `Class.method`); nested functions are
    part of the function that contains them."""
    out: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{item.name}"] = item
    return out


def parse_targets(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        module, _, names = spec.partition(":")
        out.setdefault(module.strip(), []).extend(n.strip() for n in (names or "*").split(",") if n.strip())
    return out


def resolve(module: str, names: list[str], tree: ast.Module) -> list[str]:
    known = functions(tree)
    chosen: list[str] = []
    for name in names:
        if name == "*":
            hits = list(known)
        elif name.endswith(".*"):
            hits = [q for q in known if q.startswith(name[:-1])]
        else:
            hits = [name] if name in known else []
        if not hits and "*" not in name:
            warn(f"{module}: no function {name!r} (skipped)")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def expand(patterns: list[str], loud: bool = False) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        hits = sorted(glob.glob(pattern, root_dir=ROOT))
        if not hits and loud:
            warn(f"no test file matches {pattern!r} (skipped)")
        out += [h for h in hits if h not in out]
    return out


_STAMP = [int(time.time()) + 10]


def stamp(path: Path) -> None:
    """Give a rewritten source a new whole-second mtime: Python's .pyc check compares mtime (in
    seconds) and size, so two mutants of equal size written within a second could otherwise run
    a stale cached module."""
    _STAMP[0] += 2
    os.utime(path, (_STAMP[0], _STAMP[0]))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -- mutation operators -------------------------------------------------------------------------
# A mutation is found on the original tree as (function, index of a node in ast.walk order,
# operator, variant) and applied to a deep copy, so every mutant is one change to the original.
Apply = Callable[[ast.AST, dict[int, tuple[ast.AST, str, int | None]]], None]


def _replace(node: ast.AST, parents: dict[int, tuple[ast.AST, str, int | None]], new: ast.AST) -> None:
    parent, field, index = parents[id(node)]
    if index is None:
        setattr(parent, field, new)
    else:
        getattr(parent, field)[index] = new


def _plus(expr: ast.expr, delta: int) -> ast.expr:
    return ast.BinOp(left=expr, op=ast.Add() if delta > 0 else ast.Sub(), right=ast.Constant(1))


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_docstring(node: ast.AST, parents) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _already_uniform(expr: ast.expr) -> bool:
    """`[c] * n`: making it uniform changes nothing (an equivalent mutant, not generated)."""
    return (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult) and isinstance(expr.left, ast.List)
            and len(expr.left.elts) == 1 and isinstance(expr.left.elts[0], ast.Constant))


def _uniform(expr: ast.expr) -> ast.expr:
    """[1.0 for _ in expr]: every element weighs the same."""
    return ast.ListComp(elt=ast.Constant(1.0), generators=[
        ast.comprehension(target=ast.Name("_mut", ast.Store()), iter=expr, ifs=[], is_async=0)])


def mutations(node: ast.AST, parents, operators: set[str]) -> Iterator[tuple[str, str, Apply]]:
    """(operator, description, apply) for every mutation of `node` itself."""
    if "compare" in operators and isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for table, label in ((_NEGATE, "negate"), (_FLIP, "flip"), (_BOUNDARY, "boundary")):
                new = table.get(type(op))
                if new is not None:
                    def apply(n, p, i=i, new=new):
                        n.ops[i] = new()
                    yield "compare", f"{label} {type(op).__name__}->{new.__name__}", apply
    if "boolean" in operators:
        if isinstance(node, ast.BoolOp):
            def apply(n, p):
                n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()
            yield "boolean", "and<->or", apply
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield "boolean", "drop not", lambda n, p: _replace(n, p, n.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            def apply(n, p):
                n.value = not n.value
            yield "boolean", f"{node.value}->{not node.value}", apply
    if "minmax" in operators and isinstance(node, ast.Call) and _call_name(node) in ("min", "max", "argmin",
                                                                                      "argmax", "nanmin", "nanmax"):
        name = _call_name(node)
        other = {"min": "max", "max": "min", "argmin": "argmax", "argmax": "argmin", "nanmin": "nanmax",
                 "nanmax": "nanmin"}[name]

        def apply(n, p, other=other):
            if isinstance(n.func, ast.Name):
                n.func.id = other
            else:
                n.func.attr = other
        yield "minmax", f"{name}->{other}", apply
    if "drop" in operators and isinstance(node, _SIMPLE_STMTS) and not _is_docstring(node, parents):
        if id(node) in parents and parents[id(node)][2] is not None:
            yield "drop", "statement dropped", lambda n, p: _replace(n, p, ast.Pass())
    if "uniform" in operators:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and WEIGHT_NAMES.search(t.id) for t in targets) and \
                    not isinstance(node.value, (ast.Dict, ast.DictComp, ast.Constant)) and \
                    not _already_uniform(node.value):
                def apply(n, p):
                    n.value = _uniform(n.value)
                yield "uniform", "weights made uniform", apply
        if isinstance(node, ast.keyword) and node.arg and WEIGHT_NAMES.search(node.arg):
            def apply(n, p):
                n.value = _uniform(n.value)
            yield "uniform", f"{node.arg}= made uniform", apply
    if "offbyone" in operators:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            for delta in (1, -1):
                def apply(n, p, delta=delta):
                    n.value = n.value + delta
                yield "offbyone", f"{node.value}->{node.value + delta}", apply
        if isinstance(node, ast.Call) and _call_name(node) == "range" and isinstance(node.func, ast.Name):
            for i, arg in enumerate(node.args[:2]):
                if isinstance(arg, ast.Constant):
                    continue  # the constant rule covers it
                for delta in (1, -1):
                    def apply(n, p, i=i, delta=delta):
                        n.args[i] = _plus(n.args[i], delta)
                    yield "offbyone", f"range bound {'+1' if delta > 0 else '-1'}", apply
        if isinstance(node, ast.Slice):
            for field in ("lower", "upper"):
                bound = getattr(node, field)
                if bound is None or isinstance(bound, ast.Constant):
                    continue
                for delta in (1, -1):
                    def apply(n, p, field=field, delta=delta):
                        setattr(n, field, _plus(getattr(n, field), delta))
                    yield "offbyone", f"slice {field} {'+1' if delta > 0 else '-1'}", apply
    if "sort" in operators and isinstance(node, ast.Call):
        name = _call_name(node)
        if name in ("sorted", "sort"):
            def apply(n, p):
                for kw in n.keywords:
                    if kw.arg == "reverse":
                        kw.value = ast.UnaryOp(ast.Not(), kw.value)
                        return
                n.keywords.append(ast.keyword("reverse", ast.Constant(True)))
            yield "sort", "reverse toggled", apply
        if name in ("sorted", "sort", "min", "max", "nsmallest", "nlargest"):
            for i, kw in enumerate(node.keywords):
                if kw.arg != "key" or (isinstance(kw.value, ast.Lambda) and isinstance(kw.value.body, ast.Tuple)):
                    continue

                def apply(n, p, i=i):
                    kw = n.keywords[i]
                    if isinstance(kw.value, ast.Lambda):
                        kw.value.body = ast.UnaryOp(ast.USub(), kw.value.body)
                    else:
                        key = kw.value
                        kw.value = ast.parse("lambda _mut: -KEY(_mut)", mode="eval").body
                        kw.value.body.operand.func = key
                yield "sort", "key negated", apply
        if name == "heappush" and len(node.args) == 2 and isinstance(node.args[1], ast.Tuple):
            def apply(n, p):
                elts = n.args[1].elts
                elts[0] = ast.UnaryOp(ast.USub(), elts[0])
            yield "sort", "heap priority negated", apply
    if "arith" in operators and isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        new = _ARITH[type(node.op)]

        def apply(n, p, new=new):
            n.op = new()
        yield "arith", f"{type(node.op).__name__}->{new.__name__}", apply


def parent_map(root: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    out: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(root):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if isinstance(child, ast.AST):
                        out[id(child)] = (parent, field, i)
            elif isinstance(value, ast.AST):
                out[id(value)] = (parent, field, None)
    return out


def enclosing_statement(node: ast.AST, parents) -> ast.AST:
    while not isinstance(node, ast.stmt) and id(node) in parents:
        node = parents[id(node)][0]
    return node


def first_line(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text.splitlines()[0] if text else text


def generate(module: str, path: Path, names: list[str], tree: ast.Module, operators: set[str],
             start_id: int) -> list[tuple[Mutant, str]]:
    """Every mutant of the named functions of one module, as (record, mutated module source)."""
    out: list[tuple[Mutant, str]] = []
    seen = {hashlib.sha1(ast.unparse(tree).encode()).hexdigest()}
    rel = str(path.relative_to(ROOT))
    source_lines = path.read_text().splitlines()
    for qualname in names:
        fn = functions(tree)[qualname]
        nodes = list(ast.walk(fn))
        parents = parent_map(fn)
        body = {id(n) for stmt in fn.body for n in ast.walk(stmt)}  # not defaults, annotations, decorators
        for index, node in enumerate(nodes):
            if id(node) not in body or (index and _is_docstring(node, parents) and node is fn.body[0]):
                continue
            for operator, description, apply in mutations(node, parents, operators):
                mutant_tree = copy.deepcopy(tree)
                mutant_fn = functions(mutant_tree)[qualname]
                mutant_nodes = list(ast.walk(mutant_fn))
                target = mutant_nodes[index]
                mutant_parents = parent_map(mutant_fn)
                stmt = enclosing_statement(target, mutant_parents)
                stmt_parent = mutant_parents.get(id(stmt))
                apply(target, mutant_parents)
                ast.fix_missing_locations(mutant_tree)
                try:
                    code = ast.unparse(mutant_tree)
                    compile(code, rel, "exec")
                except Exception as exc:  # an operator produced invalid code: skip it, loudly
                    warn(f"{rel}:{getattr(node, 'lineno', '?')} {operator} ({description}) not applicable: {exc}")
                    continue
                digest = hashlib.sha1(code.encode()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                if stmt_parent is not None and stmt_parent[2] is not None:
                    stmt = getattr(stmt_parent[0], stmt_parent[1])[stmt_parent[2]]  # after _replace
                line = getattr(enclosing_statement(node, parents), "lineno", getattr(fn, "lineno", 0))
                original = source_lines[line - 1].strip() if 0 < line <= len(source_lines) else ""
                out.append((Mutant(id=start_id + len(out), module=module, path=rel, function=qualname, line=line,
                                   operator=f"{operator}: {description}", original=original,
                                   mutated=first_line(stmt)), code))
    return out


# -- running ------------------------------------------------------------------------------------
def copy_tree(tmp: Path) -> Path:
    """Copy the tree to `tmp`/repo and return that folder (the data sets the tests read are
    packaged in src/ttc/data, so the copy stands alone)."""
    dest = tmp / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def run_tests(workdir: Path, tests: list[str], timeout: float, python: str, fork: bool) -> tuple[str, float, str]:
    """Run pytest on the mutated copy: (status, seconds, output)."""
    args = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    start = time.monotonic()
    if fork:
        rc, out = _forked_pytest(workdir, args, timeout)
    else:
        env = dict(os.environ, PYTHONPATH=str(workdir / "src"), OMP_NUM_THREADS="1")
        proc = subprocess.Popen([python, "-m", "pytest", *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            rc = None
    seconds = time.monotonic() - start
    if rc is None:
        return "timeout", seconds, out
    if rc == 0:
        return "survived", seconds, out
    if rc in (1, 2):  # tests failed, or collection/import failed because of the mutant
        return "killed", seconds, out
    return "error", seconds, out


# -- in-process mode: collect once, fork per mutant, swap the function's code object --------------
def _code_for(code: types.CodeType, qualname: str):
    """The code object of `qualname` among the constants of a compiled module (recursively)."""
    for const in code.co_consts:
        if hasattr(const, "co_qualname"):
            if const.co_qualname == qualname:
                return const
            found = _code_for(const, qualname)
            if found is not None:
                return found
    return None


def _live_function(module: str, qualname: str):
    import importlib

    obj = importlib.import_module(module)
    for part in qualname.split("."):
        owner = obj
        obj = owner.__dict__[part] if isinstance(owner, type) and part in owner.__dict__ else getattr(owner, part)
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    while hasattr(obj, "__wrapped__"):  # functools.lru_cache and friends
        obj = obj.__wrapped__
    return obj


def _patch(m: Mutant, code_text: str) -> None:
    """Make the live function run the mutant: its __code__ becomes the mutated function's."""
    compiled = compile(code_text, m.path, "exec")
    new = _code_for(compiled, m.function)
    if new is None:
        raise RuntimeError(f"no code object for {m.function} in the mutant")
    live = _live_function(m.module, m.function)
    if new.co_freevars == live.__code__.co_freevars:
        live.__code__ = new
        return
    # the mutant changed the closure (e.g. dropped the only super() call): a new function object
    # with the cells it still needs, set where the old one was found
    cells = dict(zip(live.__code__.co_freevars, live.__closure__ or (), strict=False))
    function = types.FunctionType(new, live.__globals__, live.__name__, live.__defaults__,
                                  tuple(cells[name] for name in new.co_freevars))
    function.__kwdefaults__ = live.__kwdefaults__
    import importlib

    owner = importlib.import_module(m.module)
    *path, name = m.function.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, function)


class _MutationPlugin:
    """A pytest plugin: after the tests are collected (once), fork a child per mutant that patches
    one function in memory and runs the collected tests with -x semantics."""

    def __init__(self, mutants, timeout, report, out_fd):
        self.mutants = mutants  # [(Mutant | None, code)], None = the unmutated baseline
        self.timeout = timeout
        self.report = report
        self.out_fd = out_fd
        self.items = 0

    def pytest_runtestloop(self, session):

        if session.config.option.collectonly:
            return None
        self.items = len(session.items)
        for m, code in self.mutants:
            start = time.monotonic()
            rc, log = self._run_child(session, m, code)
            status = ("timeout" if rc is None else "survived" if rc == 0 else "killed" if rc == 1 else "error")
            self.report(m, status, time.monotonic() - start, log)
        return True

    def _run_child(self, session, m, code):
        log = Path(tempfile.gettempdir()) / f"ttc-mutant-{os.getpid()}.log"
        pid = os.fork()
        if pid == 0:
            rc = 3
            try:
                os.setpgid(0, 0)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                if m is not None:
                    _patch(m, code)
                items = session.items
                rc = 0
                for i, item in enumerate(items):
                    nextitem = items[i + 1] if i + 1 < len(items) else None
                    item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                    if session.testsfailed:
                        print(f"mutant killed by {item.nodeid}")
                        rc = 1
                        break
            except BaseException as exc:
                import traceback

                traceback.print_exc()
                print(f"mutation child: {exc!r}")
                rc = 3
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        rc = wait_or_kill(pid, self.timeout, poll=0.005)
        text = log.read_text(errors="replace") if log.exists() else ""
        log.unlink(missing_ok=True)
        return rc, text


def wait_or_kill(pid: int, timeout: float, poll: float) -> int | None:
    """The forked child's exit code, or None when it ran past `timeout` (or we are being stopped):
    then its whole process group is killed and reaped."""
    deadline = time.monotonic() + timeout
    rc: int | None = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
    finally:
        if rc is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    return rc


def run_inprocess(workdir: Path, groups: dict[tuple[str, ...], list], timeout: float | None, report) -> float:
    """Per group of test files: one pytest session collects them, then every mutant of the group
    runs in a forked child. Returns the baseline seconds of the first group."""
    import pytest

    os.chdir(workdir)
    sys.path[:] = [str(workdir / "src")] + [p for p in sys.path if not p.endswith("/src")]
    out_fd = os.dup(1)
    baseline_seconds = 0.0
    for tests, mutants in groups.items():
        baseline: list = []

        def first(m, status, seconds, log, baseline=baseline):
            baseline.append((status, seconds, log))

        plugin = _MutationPlugin([(None, "")], 600, first, out_fd)
        # baseline in the same session as the mutants: collect once, run the unmutated tests first
        plugin.mutants = [(None, "")] + list(mutants)
        state = {"timeout": timeout}

        def report(m, status, seconds, log, state=state, baseline=baseline, tests=tests, plugin=plugin,
                   mutants=mutants):
            if m is None:
                baseline.append((status, seconds, log))
                if status != "survived":
                    os.write(out_fd, (log[-3000:] + f"\nbaseline on {', '.join(tests)} did not pass ({status})\n")
                             .encode())
                    raise SystemExit(2)
                plugin.timeout = state["timeout"] or max(15.0, 3 * seconds)
                os.write(out_fd, f"baseline: {len(tests)} test files, {plugin.items} tests pass in {seconds:.1f} s; "
                                 f"{len(mutants)} mutants, timeout {plugin.timeout:.0f} s each\n".encode())
                return
            m.status, m.seconds = status, seconds
            _report_line(m, log, out_fd)

        plugin.report = report
        plugin.timeout = 600
        rc = pytest.main(["-q", "-s", "-p", "no:cacheprovider", "-m", "not slow", "-x", *tests], plugins=[plugin])
        if rc not in (0, 1, 5) and not baseline:
            raise SystemExit(f"pytest could not collect {tests} (exit {rc})")
        baseline_seconds = baseline_seconds or (baseline[0][1] if baseline else 0.0)
    return baseline_seconds


_VERBOSE = [False]


def _report_line(m: Mutant, log: str, fd: int = 1) -> None:
    line = f"#{m.id:<4} {m.status:<8} {m.seconds:5.1f}s {m.path}:{m.line} {m.operator}\n"
    if m.status in ("survived", "error") and _VERBOSE[0]:
        line += log[-2000:] + "\n"
    os.write(fd, line.encode())


def _preload() -> None:
    """Import what the tests import, except ttc, once: every forked run starts with them loaded."""
    for name in ("pytest", "numpy", "math_verify", "sympy", "aiohttp", "_pytest.python", "asyncio",
                 "anyio.pytest_plugin", "platformdirs", "_pytest.mark.expression", "_pytest.assertion.rewrite"):
        try:
            __import__(name)
        except Exception:
            pass
    assert not any(m == "ttc" or m.startswith("ttc.") for m in sys.modules), "ttc must not be preloaded"


def _forked_pytest(workdir: Path, args: list[str], timeout: float) -> tuple[int | None, str]:
    """pytest.main in a forked child (pre-imported libraries, fresh ttc from the copy); None on timeout."""
    log = workdir / ".mutant.log"
    pid = os.fork()
    if pid == 0:  # child
        rc = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(workdir)
            sys.path[:] = [str(workdir / "src")] + [p for p in sys.path if not p.endswith("/src")]
            import pytest

            rc = int(pytest.main(args))
            import ttc

            if not Path(ttc.__file__).resolve().is_relative_to(workdir.resolve()):
                print(f"ttc was imported from {ttc.__file__}, not the mutated copy")
                rc = 4
        except BaseException as exc:  # never return into the parent's code
            print(f"mutation child: {exc!r}")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    rc = wait_or_kill(pid, timeout, poll=0.01)
    return rc, log.read_text(errors="replace") if log.exists() else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS, metavar="MODULE:NAMES",
                        help="functions to mutate, e.g. 'ttc.strategies.particle:resample,ParticleFilter.run' "
                             "('Class.*' and '*' allowed; default: the selection/weighting logic)")
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, metavar="GLOB",
                        help="test files run per mutant (default: the fast scripted ones)")
    parser.add_argument("--operators", default=",".join(OPERATORS),
                        help=f"comma-separated subset of {','.join(OPERATORS)}")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant before it counts as killed (default: max(15, 3 x baseline))")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", type=str, default=None, help="run only these mutant ids (e.g. 3,7,10-20)")
    parser.add_argument("--json", type=Path, default=None, help="write every mutant and its status here")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    parser.add_argument("--verbose", action="store_true", help="print the test output of survivors' runs")
    parser.add_argument("--all-tests", action="store_true",
                        help="run every test file for every mutant (default: the files TEST_MAP names for its module)")
    parser.add_argument("--mode", choices=("inprocess", "files", "subprocess"), default="inprocess",
                        help="inprocess (default): collect the tests once, fork per mutant and swap the "
                             "mutated function's code in memory; files: write each mutant into the "
                             "temporary copy and fork a preloaded pytest; subprocess: a fresh pytest per mutant")
    args = parser.parse_args(argv)

    operators = {o.strip() for o in args.operators.split(",") if o.strip()}
    unknown = operators - set(OPERATORS)
    if unknown:
        parser.error(f"unknown operators {sorted(unknown)}; known: {', '.join(OPERATORS)}")

    tests = expand(args.tests, loud=True)
    if not tests:
        parser.error("no test files to run")
    mapped = args.tests == DEFAULT_TESTS and not args.all_tests

    def tests_for(module: str) -> list[str]:
        if mapped:
            for prefix, patterns in TEST_MAP.items():
                if module == prefix or module.startswith(prefix + "."):
                    return [t for t in expand(patterns) if t in tests] or tests
        return tests

    mutants: list[tuple[Mutant, str]] = []
    sources: dict[str, str] = {}
    for module, names in parse_targets(args.targets).items():
        path = module_path(module)
        if path is None:
            warn(f"no module {module} under src/ (skipped)")
            continue
        source = path.read_text()
        tree = ast.parse(source)
        chosen = resolve(module, names, tree)
        if not chosen:
            continue
        rel = str(path.relative_to(ROOT))
        sources[rel] = source
        mutants += generate(module, path, chosen, tree, operators, len(mutants))
    if args.only:
        wanted: set[int] = set()
        for part in args.only.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        mutants = [m for m in mutants if m[0].id in wanted]

    if args.list:
        for m, _ in mutants:
            print(f"#{m.id} {m.path}:{m.line} [{m.function}] {m.operator}\n    - {m.original}\n    + {m.mutated}")
        print(f"{len(mutants)} mutants")
        return 0

    # a plain `kill` must still delete the temporary copy (SIGTERM's default skips cleanup)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _VERBOSE[0] = args.verbose
    if args.mode == "inprocess":
        started = time.monotonic()
        groups: dict[tuple[str, ...], list] = {}
        for m, code in mutants:
            groups.setdefault(tuple(tests_for(m.module)), []).append((m, code))
        with tempfile.TemporaryDirectory(prefix="ttc-mutation-") as tmp:
            workdir = copy_tree(Path(tmp))
            cwd = os.getcwd()
            try:
                run_inprocess(workdir, groups, args.timeout, None)
            finally:
                os.chdir(cwd)
        elapsed = time.monotonic() - started
        return summarise(mutants, elapsed, args)
    fork = hasattr(os, "fork") and args.mode == "files"
    if fork:
        os.environ["OMP_NUM_THREADS"] = "1"
        _preload()
    with tempfile.TemporaryDirectory(prefix="ttc-mutation-") as tmp:
        workdir = copy_tree(Path(tmp))
        # baseline: the same tests on the targets as unparsed by ast (what each mutant is written as)
        for rel, source in sources.items():
            (workdir / rel).write_text(ast.unparse(ast.parse(source)))
            stamp(workdir / rel)
        status, seconds, out = run_tests(workdir, tests, 600, args.python, fork)
        if status != "survived":
            print(out[-3000:])
            print(f"baseline run did not pass ({status}): fix the tests before mutating", file=sys.stderr)
            return 2
        timeout = args.timeout or max(15.0, 3 * seconds)
        print(f"baseline: {len(tests)} test files pass in {seconds:.1f} s; {len(mutants)} mutants, "
              f"timeout {timeout:.0f} s each", flush=True)
        started = time.monotonic()
        for m, code in mutants:
            target = workdir / m.path
            original = ast.unparse(ast.parse(sources[m.path]))
            try:
                target.write_text(code)
                stamp(target)
                m.status, m.seconds, out = run_tests(workdir, tests_for(m.module), timeout, args.python, fork)
            finally:
                target.write_text(original)
                stamp(target)
            print(f"#{m.id:<4} {m.status:<8} {m.seconds:5.1f}s {m.path}:{m.line} {m.operator}", flush=True)
            if m.status in ("survived", "error") and args.verbose:
                print(out[-2000:])
        elapsed = time.monotonic() - started
    return summarise(mutants, elapsed, args)


def summarise(mutants: list, elapsed: float, args: argparse.Namespace) -> int:
    records = [m for m, _ in mutants]
    killed = [m for m in records if m.status in ("killed", "timeout")]
    survived = [m for m in records if m.status == "survived"]
    errors = [m for m in records if m.status == "error"]
    equivalent = [m for m in survived if known_equivalent(m)]
    rate = len(killed) / len(records) if records else float("nan")
    relevant = len(records) - len(equivalent)
    rate_eq = len(killed) / relevant if relevant else float("nan")
    print(f"\n{len(records)} mutants: {len(killed)} killed "
          f"({sum(m.status == 'timeout' for m in records)} by timeout), {len(survived)} survived "
          f"({len(equivalent)} known equivalent), {len(errors)} errors; kill rate {rate:.1%}, "
          f"{rate_eq:.1%} without the known equivalent mutants ({elapsed / 60:.1f} min)")
    by_target: dict[str, list[Mutant]] = {}
    for m in records:
        by_target.setdefault(f"{m.module}:{m.function}", []).append(m)
    for name, ms in by_target.items():
        k = sum(m.status in ("killed", "timeout") for m in ms)
        print(f"  {name}: {k}/{len(ms)} killed")
    if survived or errors:
        print("\nsurvivors:")
        for m in sorted(survived + errors, key=lambda m: bool(known_equivalent(m))):
            note = " (ERROR)" if m.status == "error" else ""
            reason = known_equivalent(m)
            note += f"\n    equivalent: {reason}" if reason else ""
            print(f"#{m.id} {m.path}:{m.line} [{m.function}] {m.operator}"
                  f"\n    - {m.original}\n    + {m.mutated}{note}")
    if args.json:
        args.json.write_text(json.dumps({"kill_rate": rate, "kill_rate_without_equivalent": rate_eq,
                                         "mutants": [asdict(m) for m in records]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
