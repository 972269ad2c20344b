"""Synthetic step-by-step arithmetic problems with thinking traces (the thinking test model's data).

Each `ArithmeticTrace` is a short word problem (2-3 operations, small whole numbers, GSM8K-light),
the thinking a reasoning model would write for it (one step per paragraph, steps separated by a
blank line, the step delimiter of `ttc.thinking.FORMATS`), and the final answer. Everything comes
from a seeded `random.Random`, so the same seed gives the same problems on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ttc.errors import InvalidInput

_NAMES = ("Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivan", "Jade", "Kai", "Lena", "Max",
          "Nora", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vera", "Will", "Yara", "Zoe")
_ITEMS = ("apples", "books", "marbles", "stickers", "pencils", "cookies", "cards", "shells", "coins",
          "stamps", "eggs", "flowers")


@dataclass(frozen=True)
class ArithmeticTrace:
    """A word problem, the thinking that solves it step by step, and its whole-number answer."""

    question: str
    steps: tuple[str, ...]
    answer: int

    @property
    def thinking(self) -> str:
        """The steps, one paragraph each (blank line between them), as the model writes them."""
        return "\n\n".join(self.steps)

    @property
    def final(self) -> str:
        """The one-line final content after the thinking."""
        return f"The answer is \\boxed{{{self.answer}}}."


def _buy_then_give(rng: random.Random) -> ArithmeticTrace:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    return ArithmeticTrace(
        f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. "
        f"How many {item} does {name} have now?",
        (f"{name} starts with {a} {item}.",
         f"After getting {b} more: {a} + {b} = {a + b}.",
         f"After giving away {c}: {a + b} - {c} = {a + b - c}."),
        a + b - c)


def _packs_minus(rng: random.Random) -> ArithmeticTrace:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    packs, each = rng.randint(2, 9), rng.randint(2, 12)
    c = rng.randint(1, packs * each - 1)
    return ArithmeticTrace(
        f"{name} buys {packs} packs of {item} with {each} {item} in each pack, then uses {c} of them. "
        f"How many {item} are left?",
        (f"The packs hold {packs} * {each} = {packs * each} {item}.",
         f"After using {c}: {packs * each} - {c} = {packs * each - c}."),
        packs * each - c)


def _hours_pay(rng: random.Random) -> ArithmeticTrace:
    name = rng.choice(_NAMES)
    rate, mon, tue = rng.randint(2, 15), rng.randint(1, 8), rng.randint(1, 8)
    return ArithmeticTrace(
        f"{name} earns {rate} dollars an hour and works {mon} hours on Monday and {tue} hours on Tuesday. "
        f"How many dollars does {name} earn in total?",
        (f"Hours worked: {mon} + {tue} = {mon + tue}.",
         f"Pay: {mon + tue} * {rate} = {(mon + tue) * rate} dollars."),
        (mon + tue) * rate)


def _share_equally(rng: random.Random) -> ArithmeticTrace:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    friends, each, extra = rng.randint(2, 6), rng.randint(2, 10), rng.randint(1, 20)
    total = friends * each + extra
    return ArithmeticTrace(
        f"{name} has {total} {item}, keeps {extra} and shares the rest equally among {friends} friends. "
        f"How many {item} does each friend get?",
        (f"{name} keeps {extra}, so {total} - {extra} = {total - extra} are shared.",
         f"Each friend gets {total - extra} / {friends} = {each}."),
        each)


def _three_steps(rng: random.Random) -> ArithmeticTrace:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    boxes, each, lost, found = rng.randint(2, 6), rng.randint(3, 10), rng.randint(1, 5), rng.randint(1, 9)
    have = boxes * each
    return ArithmeticTrace(
        f"{name} has {boxes} boxes with {each} {item} each. {name} loses {lost} {item} and then finds {found}. "
        f"How many {item} does {name} have?",
        (f"The boxes hold {boxes} * {each} = {have} {item}.",
         f"After losing {lost}: {have} - {lost} = {have - lost}.",
         f"After finding {found}: {have - lost} + {found} = {have - lost + found}."),
        have - lost + found)


def _double_then_add(rng: random.Random) -> ArithmeticTrace:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 25), rng.randint(1, 20)
    return ArithmeticTrace(
        f"{name} had {a} {item}. The number doubled, and then {name} bought {b} more. "
        f"How many {item} does {name} have?",
        (f"Doubling {a}: {a} * 2 = {2 * a}.",
         f"Buying {b} more: {2 * a} + {b} = {2 * a + b}."),
        2 * a + b)


#: problem kinds, each a function of a seeded Random
KINDS: tuple[Callable[[random.Random], ArithmeticTrace], ...] = (
    _buy_then_give, _packs_minus, _hours_pay, _share_equally, _three_steps, _double_then_add)


def arithmetic_traces(n: int, seed: int) -> list[ArithmeticTrace]:
    """`n` problems with their thinking and answers, the same for the same `seed`."""
    if not isinstance(n, int) or n < 0:
        raise InvalidInput(f"arithmetic_traces: n must be a whole number >= 0, got {n!r}")
    return list(_stream(seed, n))


def _stream(seed: int, n: int) -> Iterator[ArithmeticTrace]:
    rng = random.Random(seed)
    for _ in range(n):
        yield rng.choice(KINDS)(rng)
