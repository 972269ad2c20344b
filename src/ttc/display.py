"""Rich display of results in Jupyter: `Result._repr_html_` and `Result._repr_markdown_`.

The HTML includes the pictures of `ttc.render`: a vote's bar chart and a step search's tree.

Importing `ttc` attaches them, so a `Result` left at the end of a notebook cell shows its answer
(checked against the gold answer when there is one), what it cost, the votes or scores, and every
candidate, with the candidates' full texts folded away.
"""

from __future__ import annotations

import html
import math
from typing import Any

from ttc.types import Candidate, Result

_MAX_TEXT = 4000  # characters of a candidate's text shown in HTML


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _verdict(result: Result) -> str:
    correct = result.is_correct() if result.ok else None
    if correct is None:
        return ""
    return " ✓" if correct else f" ✗ (gold: {result.problem.answer})"


def _usage_line(result: Result) -> str:
    u = result.usage
    parts = [u.token_summary(),
             f"{u.generator_calls} generator call{'s' if u.generator_calls != 1 else ''}"]
    if u.verifier_calls or u.verifier_tokens:
        parts.append(f"{u.verifier_calls} verifier calls ({u.verifier_tokens} tokens)")
    parts.append(f"{u.wall_seconds:.2f} s")
    return ", ".join(parts)


def thinking_preview(candidate: Candidate, width: int = 160) -> str:
    """A candidate's thinking, shortened, on its own line: "[thinking, 57 tokens, closed] Let me ... 7."."""
    text = " ".join((candidate.thinking or "").split())
    if len(text) > width:
        text = text[: width // 2 - 2] + " … " + text[-(width // 2 - 2):]
    state = "closed" if candidate.thinking_closed else "cut inside"
    return f"[thinking, {candidate.usage.reasoning_tokens} tokens, {state}] {text}"


def tie_line(result: Result) -> str | None:
    """"tie: ..." when the answer won a tied vote (`details["tie"]`, rule in `ttc.votes`), else None."""
    tie = result.details.get("tie")
    if not tie:
        return None
    others = ", ".join(str(a) for a in tie[1:])
    return (f"tie: {len(tie)} answers shared the most votes; {tie[0]} won as the one seen first "
            f"(also tied: {others})")


def _candidate_correct(result: Result, answer: str | None) -> str:
    gold = result.problem.answer
    if gold is None:
        return ""
    from ttc.answers import equivalent

    return "✓" if answer is not None and equivalent(answer, gold) else "✗"


def result_html(result: Result) -> str:
    """HTML summary of a Result: answer and verdict, usage, votes, candidates (texts folded)."""
    e = html.escape
    question = result.problem.question
    short_q = question if len(question) <= 300 else question[:300] + "…"
    head = (f"<div class='ttc-result' style='font-family:sans-serif;font-size:13px'>"
            f"<div><strong>{e(result.strategy)}</strong>"
            + (f" · problem <code>{e(str(result.problem.id))}</code>" if result.problem.id else "") + "</div>"
            f"<div style='color:#555;margin:2px 0'>{e(short_q)}</div>")
    if not result.ok:
        return (head + f"<div style='color:#b00020'><strong>error:</strong> {e(str(result.error))}</div>"
                f"<div style='color:#555'>{e(_usage_line(result))}</div></div>")
    verdict = _verdict(result)
    colour = "#1b7f3b" if verdict.startswith(" ✓") else "#b00020" if verdict else "inherit"
    parts = [head,
             f"<div>answer: <strong>{e(str(result.answer))}</strong>"
             f"<span style='color:{colour}'>{e(verdict)}</span>"
             + (f" <span style='color:#555'>({e(result.no_answer_reason)})</span>" if result.answer is None else "")
             + "</div>",
             f"<div style='color:#555'>{e(_usage_line(result))}</div>"]
    votes = result.details.get("votes")
    if isinstance(votes, dict) and votes:
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
        parts.append("<div>votes: " + ", ".join(f"<code>{e(str(a))}</code>: {e(_fmt(v))}" for a, v in ranked)
                     + "</div>")
    tie = tie_line(result)
    if tie:
        parts.append(f"<div class='ttc-tie' style='color:#8a5a00'>{e(tie)}</div>")
    from ttc.render import result_pictures_html  # the vote chart and the search tree, inline SVG

    parts.append(result_pictures_html(result))
    if result.candidates:
        chosen = result.details.get("chosen")
        score_names = sorted({k for c in result.candidates for k in c.scores})
        thought = any(c.thinking is not None for c in result.candidates)
        header = "".join(f"<th>{e(h)}</th>" for h in
                         ["#", "answer", "", *score_names, "tokens", *(["thinking"] if thought else []),
                          "finish", "text"])
        rows = []
        for i, c in enumerate(result.candidates):
            mark = " ◀" if chosen == i else ""
            text = c.text if len(c.text) <= _MAX_TEXT else c.text[:_MAX_TEXT] + "…"
            preview = c.text.strip().replace("\n", " ")[:60]
            cells = [f"{i}{mark}", f"<code>{e(str(c.answer))}</code>", _candidate_correct(result, c.answer),
                     *[e(_fmt(c.scores[k])) if k in c.scores else "" for k in score_names],
                     str(c.usage.completion_tokens), *([_thinking_cell(c)] if thought else []),
                     e(str(c.finish_reason or "")),
                     f"<details><summary>{e(preview)}…</summary><pre style='white-space:pre-wrap'>"
                     f"{e(text)}</pre></details>"]
            rows.append("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{x}</td>"
                                         for x in cells) + "</tr>")
        parts.append(f"<details><summary>{len(result.candidates)} candidate"
                     f"{'s' if len(result.candidates) != 1 else ''}</summary>"
                     f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>")
    return "".join(parts) + "</div>"


def _thinking_cell(c: Candidate) -> str:
    """A candidate's thinking for the HTML table: its token count, folded text, and a cut mark."""
    if c.thinking is None:
        return ""
    e = html.escape
    text = c.thinking if len(c.thinking) <= _MAX_TEXT else c.thinking[:_MAX_TEXT] + "…"
    cut = "" if c.thinking_closed else " (cut inside)"
    return (f"<details><summary>{c.usage.reasoning_tokens} tokens{cut}</summary>"
            f"<pre style='white-space:pre-wrap;color:#555'>{e(text)}</pre></details>")


def result_markdown(result: Result) -> str:
    """Markdown summary of a Result (answer and verdict, usage, votes, one line per candidate)."""
    lines = [f"**{result.strategy}**" + (f" · problem `{result.problem.id}`" if result.problem.id else "")]
    if not result.ok:
        return "\n\n".join(lines + [f"**error:** {result.error}", _usage_line(result)])
    why = f" ({result.no_answer_reason})" if result.answer is None else ""
    lines.append(f"answer: **{result.answer}**{_verdict(result)}{why}")
    lines.append(_usage_line(result))
    votes = result.details.get("votes")
    if isinstance(votes, dict) and votes:
        lines.append(
            "votes: " + ", ".join(f"`{a}`: {_fmt(v)}" for a, v in sorted(votes.items(), key=lambda kv: -kv[1]))
        )
    tie = tie_line(result)
    if tie:
        lines.append(tie)
    out = "\n\n".join(lines)
    if result.candidates:
        thought = any(c.thinking is not None for c in result.candidates)
        rows = ["| # | answer | | tokens | " + ("thinking | " if thought else "") + "finish | scores |",
                "|---:|---|---|---:|" + ("---:|" if thought else "") + "---|---|"]
        for i, c in enumerate(result.candidates):
            scores = ", ".join(f"{k}={_fmt(v)}" for k, v in c.scores.items())
            thinking = ""
            if thought:
                thinking = (f"{c.usage.reasoning_tokens}" + ("" if c.thinking_closed in (True, None) else " (cut)")
                            + " | ")
            rows.append(f"| {i} | `{c.answer}` | {_candidate_correct(result, c.answer)} | "
                        f"{c.usage.completion_tokens} | {thinking}{c.finish_reason or ''} | {scores} |")
        out += "\n\n" + "\n".join(rows)
    return out


def install() -> None:
    """Attach the rich displays to `Result` (done on `import ttc`)."""
    Result._repr_html_ = result_html  # type: ignore[attr-defined]
    Result._repr_markdown_ = result_markdown  # type: ignore[attr-defined]


install()
