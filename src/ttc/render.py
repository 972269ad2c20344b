"""Pictures of results as inline SVG, for notebooks: a step search's tree and a vote's answers.

Plain SVG strings (no JavaScript, no service, no extra package), so they show in Jupyter, in a
saved notebook and on GitHub's notebook viewer alike. `ttc.display` puts them in a Result's HTML.

- `tree_svg(result)`: one box per node of `result.tree` with its PRM score; nodes on the chosen
  candidate's path are highlighted, nodes that lead to no final candidate (pruned by a beam,
  dropped by a particle filter's resampling, never popped by A*) are greyed; hovering a node shows
  its step text (an SVG `<title>`).
- `votes_svg(votes, chosen, gold)`: a small horizontal bar chart of a vote's answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ttc.types import Candidate, Result

#: node states, also the CSS classes of the nodes' <g> elements (tests and styles key on them)
CHOSEN, KEPT, PRUNED = "chosen", "kept", "pruned"

_STYLE = {  # (box fill, box stroke, stroke width, text colour, edge colour, edge width)
    CHOSEN: ("#e3f4e8", "#1b7f3b", 2.5, "#0d4d22", "#1b7f3b", 2.5),
    KEPT: ("#ffffff", "#1f5fa8", 1.2, "#1a1a1a", "#1f5fa8", 1.2),
    PRUNED: ("#f1f1f1", "#c4c4c4", 1.0, "#9a9a9a", "#cfcfcf", 1.0),
}
_BOX_W, _BOX_H, _DX, _DY, _PAD = 44, 18, 74, 24, 10
_HOVER_CHARS = 600  # characters of a step's text in its hover title


def _a(value: Any) -> str:
    """An attribute value, escaped (quotes included)."""
    return escape(str(value), quote=True)


def _score_text(score: float | None) -> str:
    if score is None or not math.isfinite(score):
        return "–"
    return f"{score:.2f}"


def _node_of(tree: Any, candidate: Candidate) -> Any:
    """The tree node a step-search candidate was made from (same Trace object; else same text)."""
    for node in tree:
        if node.trace is candidate.trace:
            return node
    text = candidate.text
    return next((n for n in tree if n.finished and n.trace.text == text), None)


def chosen_node(result: Result) -> Any:
    """The node of the candidate that supplied the answer: `details["chosen"]` when the search
    picked one, else the highest-scored candidate whose answer won the vote."""
    tree = result.tree
    if tree is None or not result.candidates:
        return None
    index = result.details.get("chosen")
    if not isinstance(index, int) or not 0 <= index < len(result.candidates):
        from ttc.answers import equivalent

        winners = [i for i, c in enumerate(result.candidates)
                   if result.answer is not None and c.answer is not None and equivalent(c.answer, result.answer)]
        if not winners:
            return None

        def value(i: int) -> float:
            scores = list(result.candidates[i].scores.values())
            return scores[0] if scores and scores[0] is not None else -math.inf

        index = max(winners, key=value)  # max keeps the first of equals
    return _node_of(tree, result.candidates[index])


def node_states(result: Result) -> dict[int, str]:
    """State of every node: CHOSEN (on the chosen path), KEPT (on the path of some final
    candidate) or PRUNED (leads to no candidate). The root is CHOSEN when anything is."""
    tree = result.tree
    states = {n.id: PRUNED for n in tree}

    def mark(node: Any, state: str) -> None:
        while node is not None:
            if states[node.id] != CHOSEN:
                states[node.id] = state
            node = None if node.parent is None else tree[node.parent]

    for candidate in result.candidates:
        node = _node_of(tree, candidate)
        if node is not None:
            mark(node, KEPT)
    chosen = chosen_node(result)
    if chosen is not None:
        mark(chosen, CHOSEN)
    return states


def _layout(tree: Any) -> dict[int, tuple[float, float]]:
    """Left-to-right tidy layout: x by depth, leaves one row each (in depth-first order), a parent
    at the middle of its children's rows."""
    rows: dict[int, float] = {}
    next_row = 0

    def place(node: Any) -> float:
        nonlocal next_row
        if not node.children:
            rows[node.id] = float(next_row)
            next_row += 1
        else:
            ys = [place(tree[c]) for c in node.children]
            rows[node.id] = (ys[0] + ys[-1]) / 2
        return rows[node.id]

    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(tree) + 100))
    try:
        place(tree.root)
    finally:
        sys.setrecursionlimit(limit)
    return {n.id: (_PAD + n.depth * _DX, _PAD + rows[n.id] * _DY) for n in tree}


def _hover(node: Any) -> str:
    if node.parent is None:
        return "the problem (root)"
    text = node.text.strip()
    text = text if len(text) <= _HOVER_CHARS else text[:_HOVER_CHARS] + "…"
    facts = [f"node #{node.id}, step {node.depth}", f"PRM score {_score_text(node.score)}"]
    if node.value is not None and node.value != node.score:
        facts.append(f"value {_score_text(node.value)}")
    if node.finish_reason:
        facts.append(f"finished: {node.finish_reason}")
    facts.append(f"{node.usage.completion_tokens} tokens")
    return " · ".join(facts) + "\n" + text


def tree_svg(result: Result) -> str:
    """The search tree of a step-search Result as an SVG document (a string); '' without a tree."""
    tree = result.tree
    if tree is None or len(tree) == 0:
        return ""
    states = node_states(result)
    pos = _layout(tree)
    answers = {}
    for candidate in result.candidates:
        node = _node_of(tree, candidate)
        if node is not None and candidate.answer is not None:
            answers[node.id] = candidate.answer
    width = max(x for x, _ in pos.values()) + _BOX_W + 80 + _PAD
    width = max(width, 320)  # room for the legend
    height = max(y for _, y in pos.values()) + _BOX_H + _PAD + 26
    counts = {s: sum(1 for v in states.values() if v == s) for s in (CHOSEN, KEPT, PRUNED)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ttc-tree" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="10">',
           f'<title>{_a(result.strategy)}: {len(tree) - 1} steps generated; {counts[CHOSEN] - 1} on the chosen '
           f'path, {counts[PRUNED]} pruned or dropped (grey)</title>']
    # edges first, so boxes cover their ends
    for node in tree:
        if node.parent is None:
            continue
        (px, py), (x, y) = pos[node.parent], pos[node.id]
        _, _, _, _, colour, w = _STYLE[states[node.id]]
        dash = ' stroke-dasharray="3,2"' if states[node.id] == PRUNED else ""
        mid = (px + _BOX_W + x) / 2
        out.append(f'<path class="ttc-edge {states[node.id]}" d="M{px + _BOX_W:.1f},{py + _BOX_H / 2:.1f} '
                   f'C{mid:.1f},{py + _BOX_H / 2:.1f} {mid:.1f},{y + _BOX_H / 2:.1f} {x:.1f},{y + _BOX_H / 2:.1f}" '
                   f'fill="none" stroke="{colour}" stroke-width="{w}"{dash}/>')
    for node in tree:
        x, y = pos[node.id]
        state = states[node.id]
        fill, stroke, sw, ink, _, _ = _STYLE[state]
        label = "Q" if node.parent is None else _score_text(node.score)
        rx = 2 if node.finished else 8  # finished traces: square corners
        out.append(f'<g class="ttc-node {state}" data-node="{node.id}"><title>{_a(_hover(node))}</title>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{_BOX_W}" height="{_BOX_H}" rx="{rx}" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{sw}"/>'
                   f'<text x="{x + _BOX_W / 2:.1f}" y="{y + _BOX_H / 2 + 3.5:.1f}" text-anchor="middle" '
                   f'fill="{ink}">{_a(label)}</text>')
        if node.id in answers:
            answer = answers[node.id]
            answer = answer if len(answer) <= 14 else answer[:13] + "…"
            weight = ' font-weight="bold"' if state == CHOSEN else ""
            out.append(f'<text x="{x + _BOX_W + 4:.1f}" y="{y + _BOX_H / 2 + 3.5:.1f}" fill="{ink}"{weight}>'
                       f'→ {_a(answer)}</text>')
        out.append("</g>")
    for i, line in enumerate(("box: PRM score of the step · square corners: a finished trace",
                              "green: chosen path · grey: pruned or dropped · hover a box: its step")):
        out.append(f'<text x="{_PAD}" y="{height - 18 + 11 * i:.0f}" fill="#555" font-size="9">{_a(line)}</text>')
    out.append("</svg>")
    return "".join(out)


def votes_svg(votes: Mapping[Any, float], chosen: Any = None, gold: str | None = None, top: int = 10) -> str:
    """A vote's answers as horizontal bars (largest first; the rest summed in one bar); '' if none."""
    if not votes:
        return ""
    ranked = sorted(votes.items(), key=lambda kv: -float(kv[1]))
    rows: list[tuple[str, float, bool, bool]] = []
    correct = _matcher(gold)
    for answer, count in ranked[:top]:
        rows.append((str(answer), float(count), chosen is not None and str(answer) == str(chosen), correct(answer)))
    if len(ranked) > top:
        rest = ranked[top:]
        rows.append((f"{len(rest)} others", sum(float(v) for _, v in rest), False, False))
    biggest = max((v for _, v, _, _ in rows), default=0.0) or 1.0
    label_w, bar_w, row_h = 90, 160, 16
    width, height = label_w + bar_w + 70, len(rows) * row_h + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ttc-votes" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
           "<title>votes per answer" + (f" (gold: {_a(gold)})" if gold is not None else "") + "</title>"]
    for i, (answer, value, is_chosen, is_gold) in enumerate(rows):
        y = 4 + i * row_h
        short = answer if len(answer) <= 14 else answer[:13] + "…"
        w = max(1.0, bar_w * value / biggest)
        colour = "#1b7f3b" if is_chosen else "#8aa6c8"
        mark = " ✓ gold" if is_gold else ""
        out.append(f'<g class="ttc-bar{" chosen" if is_chosen else ""}"><title>{_a(answer)}: {value:g} votes'
                   f'{" (chosen)" if is_chosen else ""}{" (gold)" if is_gold else ""}</title>'
                   f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end">{_a(short)}</text>'
                   f'<rect x="{label_w}" y="{y + 1}" width="{w:.1f}" height="{row_h - 4}" fill="{colour}"/>'
                   f'<text x="{label_w + w + 4:.1f}" y="{y + 11}">{value:g}{_a(mark)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _matcher(gold: str | None):
    if gold is None:
        return lambda answer: False
    from ttc.answers import equivalent

    return lambda answer: answer is not None and equivalent(str(answer), gold)


def result_pictures_html(result: Result) -> str:
    """The pictures of a Result as HTML: the vote chart and/or the search tree ('' if neither)."""
    parts: list[str] = []
    votes = result.details.get("votes") if result.ok else None
    if isinstance(votes, dict) and votes:
        parts.append(f"<div class='ttc-votes-chart' style='margin:4px 0'>"
                     f"{votes_svg(votes, result.answer, result.problem.answer)}</div>")
    if result.tree is not None and hasattr(result.tree, "nodes"):
        svg = tree_svg(result)
        if svg:
            parts.append(f"<div class='ttc-tree-view' style='max-height:520px;overflow:auto;margin:4px 0'>"
                         f"{svg}</div>")
    return "".join(parts)


__all__: Sequence[str] = (
    "CHOSEN",
    "KEPT",
    "PRUNED",
    "chosen_node",
    "node_states",
    "result_pictures_html",
    "tree_svg",
    "votes_svg",
)
