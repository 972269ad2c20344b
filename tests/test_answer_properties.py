"""Properties of equivalence and grouping over generated answer lists (seeded, so every run checks
the same lists): `equivalent` is symmetric, `group` does not depend on the order of the answers,
and a group never holds two answers that `equivalent` separates.

The generator draws a few values and writes each in many forms (numbers with separators and units,
fractions, LaTeX, equations and chains, equations with variables, text answers), so that the lists
hold many answers that are equal, almost equal, or equal only by one reading."""

from __future__ import annotations

import itertools
import random

import pytest

from ttc.answers import equivalent, group

SEEDS = range(20)
VALUES = [(3, 4), (7, 1), (42, 1), (32, 1), (1, 2), (24, 1), (15, 1)]  # (numerator, denominator)


def _forms(num: int, den: int, rng: random.Random) -> list[str]:
    """Ways to write num/den as an answer: plain, LaTeX, with units, as the last side of a sum."""
    value = num / den
    out = [rf"\frac{{{num}}}{{{den}}}", f"{num}/{den}", str(value), rf"\dfrac{{{2 * num}}}{{{2 * den}}}"]
    if den == 1:
        a = rng.randint(1, num)
        out += [str(num), f"{num}.0", f"{num:,}", f"{num} apples", rf"{num}\text{{ cm}}", rf"\${num}",
                f"{a} + {num - a} = {num}",                                # a sum, right
                f"{a} + {num - a + 10} = {num}",                           # the last side of a wrong sum
                f"{a} + {num - a} = {num} apples", rf"{num} \times 1 = {num}", rf"${num} \cdot 1 = {num}$",
                f"{a} + {num - a} = {num} = {num}",                        # a chain
                f"x = {num}", f"y = {num}x + 3", f"x + 1 = {num}"]         # equations with a variable
    return out


def _answers(rng: random.Random) -> list[str | None]:
    values = rng.sample(VALUES, 3)
    pool = [form for num, den in values for form in _forms(num, den, rng)]
    pool += ["Evelyn", r"\text{Evelyn}", "x+1", "1+x", "(x+1)^2", "x^2+2x+1", r"x \geq 5", "x >= 5", None]
    return [rng.choice(pool) for _ in range(10)]


def _partition(answers: list[str | None], groups: list[list[int]]) -> list[tuple[str, ...]]:
    """The groups as sorted tuples of answers, sorted: comparable across orders of the same list."""
    return sorted(tuple(sorted(str(answers[i]) for i in g)) for g in groups)


@pytest.mark.parametrize("seed", SEEDS)
def test_equivalence_is_symmetric(seed):
    answers = [a for a in _answers(random.Random(seed)) if a is not None]
    asymmetric = [(a, b) for a, b in itertools.combinations(answers, 2) if equivalent(a, b) != equivalent(b, a)]
    assert asymmetric == []


@pytest.mark.parametrize("seed", SEEDS)
def test_grouping_does_not_depend_on_the_order_of_the_answers(seed):
    rng = random.Random(seed)
    answers = _answers(rng)
    expected = _partition(answers, group(answers))
    for _ in range(3):
        shuffled = rng.sample(answers, len(answers))
        assert _partition(shuffled, group(shuffled)) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_a_group_holds_only_answers_equivalent_to_each_other(seed):
    answers = _answers(random.Random(seed))
    separated = [(answers[i], answers[j]) for g in group(answers) for i, j in itertools.combinations(g, 2)
                 if not equivalent(answers[i], answers[j])]
    assert separated == []


def test_the_generator_makes_lists_where_the_properties_have_something_to_check():
    """Each list has answers that group together and answers that do not (else a check is empty)."""
    for seed in SEEDS:
        answers = _answers(random.Random(seed))
        sizes = [len(g) for g in group(answers)]
        assert max(sizes) >= 2 and len(sizes) >= 2, (seed, answers)


def test_group_puts_equations_with_their_values():
    """The issue's case: before, the right equation joined the wrong one, not its own value."""
    answers = ["17 + 25 = 42", "42", "32", "17 + 25 = 32"]
    assert group(answers) == [[0, 1], [2, 3]]
    assert group(list(reversed(answers))) == [[0, 1], [2, 3]]
