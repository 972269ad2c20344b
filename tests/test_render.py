"""Pictures of results (`ttc.render`): the SVG of a step search's tree and of a vote, on scripted
searches over known trees (the decoy tree of test_step_search), so which nodes are chosen, kept and
pruned is known in advance."""

import xml.etree.ElementTree as ET

import ttc
from test_step_search import chain_tree, decoy_tree, names
from ttc.backends import Scripted
from ttc.render import CHOSEN, KEPT, PRUNED, node_states, tree_svg, votes_svg

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == SVG + "svg"
    return root


def drawn_nodes(root: ET.Element) -> dict[int, tuple[str, str]]:
    """node id -> (state class, hover title) of every node group in the SVG."""
    out = {}
    for g in root.iter(SVG + "g"):
        classes = (g.get("class") or "").split()
        if "ttc-node" in classes:
            state = next(c for c in classes if c != "ttc-node")
            out[int(g.get("data-node"))] = (state, g.find(SVG + "title").text)
    return out


def test_beam_search_tree_svg_marks_the_chosen_path_and_greys_the_pruned_branches():
    toy = decoy_tree()
    result = ttc.BeamSearch(width=2, expansions=3, prm=toy.prm()).solve("q?", toy.backend(), seed=0)
    assert result.answer == "42"
    svg = tree_svg(result)
    nodes = drawn_nodes(parse(svg))
    assert sorted(nodes) == [n.id for n in result.tree]          # one drawn node per tree node
    by_name: dict[str, list[int]] = {}  # a step name can be sampled more than once (A, B, C, A, B, C)
    for n in result.tree:
        if n.parent is not None:
            by_name.setdefault(names(n.trace)[-1], []).append(n.id)
    state = lambda name: {nodes[i][0] for i in by_name[name]}  # noqa: E731
    chosen = sorted(names(result.tree[i].trace)[-1] for i, (s, _) in nodes.items() if s == CHOSEN and i)
    assert chosen == ["B", "B1", "B1x"]                              # the path to the answer 42, once
    assert nodes[0][0] == CHOSEN                                    # the root starts it
    # the decoy A looked best after one step, but nothing under it survived: greyed with its subtree
    assert all(state(k) == {PRUNED} for k in ("A", "A1", "A2", "A3", "C"))
    # B2 was kept as the second beam and finished (B2x, answer 5): a final candidate, not pruned
    assert state("B2") == {KEPT} and state("B2x") == {KEPT}
    # hover text: the step's own text and its PRM score
    b1 = nodes[by_name["B1"][0]][1]
    assert "Step B1: more work." in b1 and "PRM score 0.90" in b1
    # the score is written in the box, the final answer beside the finished node
    assert ">0.95<" in svg and "→ 42" in svg


def test_particle_filter_tree_greys_the_particles_that_resampling_dropped():
    toy = chain_tree(depth=3, branching=2)
    result = ttc.ParticleFilter(particles=8, prm=toy.prm(), temperature=0.5).solve("q?", toy.backend(), seed=1)
    assert result.answer == "1"
    states = node_states(result)
    nodes = drawn_nodes(parse(tree_svg(result)))
    assert {i: s for i, (s, _) in nodes.items()} == states
    # every node not an ancestor of a final particle was dropped by resampling: exactly those are grey
    final = {n.id for n in result.tree if n.trace in [c.trace for c in result.candidates]}
    ancestors = set()
    for node_id in final:
        node = result.tree[node_id]
        while node is not None:
            ancestors.add(node.id)
            node = None if node.parent is None else result.tree[node.parent]
    assert {i for i, s in states.items() if s == PRUNED} == set(states) - ancestors
    assert any(s == PRUNED for s in states.values())          # this run did drop particles
    chosen_leaf = [i for i in final if states[i] == CHOSEN]
    assert len(chosen_leaf) == 1 and names(result.tree[chosen_leaf[0]].trace) == ["Rg", "Rgg", "Rggg"]


def test_the_result_html_shows_the_tree_and_the_vote_chart():
    toy = decoy_tree()
    weighted = ttc.BeamSearch(width=2, expansions=3, prm=toy.prm(), select="weighted").solve(
        ttc.Problem("q?", answer="42"), toy.backend(), seed=0)
    html = weighted._repr_html_()
    assert "class=\"ttc-tree\"" in html and "class=\"ttc-votes\"" in html
    # three copies of B2x (answer 5, 0.5 each) outvote B1x (42, 0.95): the weighted vote picks 5;
    # with no details["chosen"], the chosen path is the best-scored candidate of the winning answer
    assert weighted.details["votes"] == {"7": 1.2, "42": 0.95, "5": 1.5} and weighted.answer == "5"
    states = node_states(weighted)
    leaf = [n for n in weighted.tree if states[n.id] == CHOSEN and n.finished]
    assert [names(n.trace) for n in leaf] == [["B", "B2", "B2x"]]
    votes = parse(votes_svg(weighted.details["votes"], weighted.answer, "42"))
    titles = [g.find(SVG + "title").text for g in votes.iter(SVG + "g")]
    assert titles == ["5: 1.5 votes (chosen)", "7: 1.2 votes", "42: 0.95 votes (gold)"]


def test_vote_chart_has_one_bar_per_answer_and_marks_the_chosen_one():
    llm = Scripted(["\\boxed{7}", "\\boxed{7}", "\\boxed{12}", "\\boxed{7}", "no answer", "\\boxed{3}"])
    result = ttc.MajorityVote(n=6).solve(ttc.Problem("3 + 4?", answer="7"), llm)
    assert result.details["votes"] == {"7": 3.0, "12": 1.0, "3": 1.0}
    root = parse(votes_svg(result.details["votes"], result.answer, "7"))
    bars = [g for g in root.iter(SVG + "g") if "ttc-bar" in (g.get("class") or "")]
    assert len(bars) == 3
    assert [("chosen" in g.get("class")) for g in bars] == [True, False, False]
    widths = [float(g.find(SVG + "rect").get("width")) for g in bars]
    assert widths[1] == widths[2] and abs(widths[0] - 3 * widths[1]) < 0.2   # proportional (0.1 px rounding)
    assert "(gold)" in bars[0].find(SVG + "title").text
    assert "class=\"ttc-votes\"" in result._repr_html_()
    # many answers: the top ones get bars, the rest one summed bar
    many = votes_svg({str(i): float(20 - i) for i in range(15)}, "0", top=10)
    assert len([g for g in parse(many).iter(SVG + "g")]) == 11 and "5 others" in many


def test_step_text_with_markup_is_escaped():
    llm = Scripted(["Step <b>&'\"</b>: \\boxed{1}"])
    prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.5)
    result = ttc.BeamSearch(width=1, expansions=1, prm=prm).solve("q?", llm)
    root = parse(tree_svg(result))
    titles = [t for _, t in drawn_nodes(root).values()]
    assert any("Step <b>&'\"</b>" in t for t in titles)
