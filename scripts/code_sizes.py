"""Line counts of modules, classes and their largest methods (the size rule of the house style).

    python scripts/code_sizes.py src/ttc/backends            # every module under a folder
    python scripts/code_sizes.py src/ttc/backends/vllm_engine.py --methods 5

Prints each module's lines, each class's lines (from `class` to its last line) and its largest
methods; ends with the largest module and class. Files are read with `ast`, nothing is imported.
"""

from __future__ import annotations

import argparse
import ast
import pathlib


def sizes(path: pathlib.Path, methods: int) -> tuple[int, list[tuple[str, int, int, list[tuple[str, int]]]]]:
    """(module lines, [(class, lines, number of methods, [(method, lines), ...largest first])])."""
    text = path.read_text()
    tree = ast.parse(text)
    classes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            defs = [(f.name, f.end_lineno - f.lineno + 1) for f in node.body
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
            defs.sort(key=lambda d: -d[1])
            classes.append((node.name, node.end_lineno - node.lineno + 1, len(defs), defs[:methods]))
    return len(text.splitlines()), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=pathlib.Path)
    parser.add_argument("--methods", type=int, default=3, help="largest methods shown per class")
    args = parser.parse_args()
    files = sorted(f for p in args.paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    largest_module, largest_class = ("", 0), ("", 0)
    for f in files:
        lines, classes = sizes(f, args.methods)
        print(f"{lines:5d}  {f}")
        largest_module = max(largest_module, (str(f), lines), key=lambda x: x[1])
        for name, n, count, defs in classes:
            shown = ", ".join(f"{m} {k}" for m, k in defs)
            print(f"       class {name}: {n} lines, {count} methods; largest: {shown}")
            largest_class = max(largest_class, (f"{f}:{name}", n), key=lambda x: x[1])
    print(f"largest module: {largest_module[0]} ({largest_module[1]} lines)")
    print(f"largest class:  {largest_class[0]} ({largest_class[1]} lines)")


if __name__ == "__main__":
    main()
