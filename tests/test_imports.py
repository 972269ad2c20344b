"""No import cycles in ttc: the module graph is acyclic, and every module imports in a fresh interpreter,
in the orders that used to depend on lazy imports (eval.report <-> eval.runner, verifiers.process <->
verifiers.reward_models, verifiers -> steps)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ttc"

#: deferred (function-level) imports allowed to close a cycle, each with its reason
DEFERRED_CYCLE_EDGES = {
    # the loader builds the torch-bound PRM classes, which subclass the abstract base that forwards
    # `from_pretrained` to the loader: torch is imported only when a PRM is actually loaded
    ("ttc.verifiers.loading", "ttc.verifiers.reward_models"),
    # `solve_many(..., total_budget=)` hands the run to the shared-budget scheduler, which drives
    # the vote strategies, whose `solve` is built on the runner: dispatched at call time only
    ("ttc.runner", "ttc.shared_budget"),
}


def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, deferred: bool) -> set[str]:
    """The ttc modules `name` imports at run time: at module level, and with `deferred` also inside
    functions (never under `if TYPE_CHECKING:`). A package counts as imported with its submodule."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inner or deferred:
                visit(child, inner)

    visit(tree, True)
    modules = module_names()
    deps = set()
    for dotted in found:
        parts = dotted.split(".")
        for i in range(2, len(parts) + 1):
            candidate = ".".join(parts[:i])
            # a submodule always runs its own packages' __init__ first: that is not a cycle
            if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                deps.add(candidate)
    return deps


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = walk(w)
                if found:
                    return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = walk(v)
            if found:
                return found
    return None


def graph(deferred: bool) -> dict[str, set[str]]:
    return {name: imports_of(name, path, deferred) for name, path in module_names().items()}


def test_the_module_level_import_graph_has_no_cycle():
    assert find_cycle(graph(deferred=False)) is None


def test_deferred_imports_close_no_cycle_but_the_declared_ones():
    g = graph(deferred=True)
    for a, b in DEFERRED_CYCLE_EDGES:
        assert b in g[a], f"{a} no longer imports {b}: drop it from DEFERRED_CYCLE_EDGES"
        g[a].discard(b)
    assert find_cycle(g) is None


def test_the_cycle_finder_finds_cycles():
    # the test above cannot pass vacuously: the finder sees a cycle, and the graph has real edges
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    g = graph(deferred=False)
    assert "ttc.eval.results" in g["ttc.eval.report"] and "ttc.eval.results" in g["ttc.eval.runner"]
    assert "ttc.eval.runner" not in graph(deferred=True)["ttc.eval.report"]
    assert "ttc.steps" not in set().union(*(g[m] for m in g if m.startswith("ttc.verifiers")))


def run_fresh(code: str) -> None:
    """Run `code` in a fresh interpreter with this checkout's ttc first on the path."""
    env_code = f"import sys; sys.path.insert(0, {str(SRC)!r})\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


#: orders that used to hold only thanks to lazy imports (each in its own fresh interpreter)
ORDERS = [
    ["ttc.eval.report", "ttc.eval.runner"],
    ["ttc.eval.results", "ttc.eval.report"],
    ["ttc.verifiers.process", "ttc.verifiers"],
    ["ttc.verifiers", "ttc.steps"],
    ["ttc.strategies.registry"],
    ["ttc.probes.any_of", "ttc.strategies.early_exit"],
]


@pytest.mark.parametrize("order", ORDERS, ids=["-then-".join(o) for o in ORDERS])
def test_modules_import_in_a_fresh_interpreter_in_orders_that_used_to_break(order):
    run_fresh("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in order)
              + "import ttc.verifiers.process as p, sys\n"
              + "assert 'torch' not in sys.modules, 'the PRM base pulled in torch'\n"
              + "assert callable(p.ProcessRewardModel.from_pretrained)\n")


@pytest.mark.slow
def test_every_module_imports_first_and_alone():
    """Each module of ttc imported first (ttc's modules cleared from sys.modules before each; heavy
    third-party modules stay loaded, so this runs in one interpreter), then PRM loading first."""
    names = sorted(module_names())
    run_fresh(f"""
        import importlib, sys
        failed = []
        for name in {names!r}:
            for loaded in [m for m in sys.modules if m == "ttc" or m.startswith("ttc.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append((name, repr(exc)))
        assert not failed, failed
    """)
    run_fresh("import ttc.verifiers.reward_models, ttc.verifiers.loading, ttc.verifiers.process")
    # the lazy names of ttc.verifiers load the torch-bound module (they used to recurse forever)
    run_fresh("import ttc.verifiers as v; assert v.QwenPRM is v.reward_models.QwenPRM")
