"""Structure figures of the vitbench package: import cycles, function-local imports, module and function sizes.

    python3 tools/structure.py [--top N] [--json]

Reads the source with `ast` (nothing is imported or run). An import cycle is a strongly connected set of modules
under module-level imports; a second list counts function-local imports too, since many exist only to dodge a
cycle (the layering is still circular, only the import is deferred).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = "vitbench"


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, node: ast.ImportFrom | ast.Import, known: dict[str, Path], is_pkg: bool) -> list[str]:
    """The vitbench modules an import statement in module `name` binds (a `from pkg import mod` names mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith(PACKAGE):
        return []
    found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return found or ([target] if target in known else [])


def scan(root: Path) -> dict:
    known = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    every: dict[str, set[str]] = {m: set() for m in known}  # module-level and function-local imports
    local_imports: dict[str, int] = {}
    functions: list[tuple[int, str]] = []
    lines: dict[str, int] = {}
    for name, path in known.items():
        text = path.read_text()
        lines[name] = len(text.splitlines())
        tree = ast.parse(text)
        is_pkg = path.name == "__init__.py"
        for node in tree.body:  # module level, including try/except blocks around imports
            stmts = node.body if isinstance(node, ast.Try) else [node]
            for stmt in stmts:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    graph[name].update(t for t in _resolve(name, stmt, known, is_pkg) if t != name)
        for stmt in ast.walk(tree):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                every[name].update(t for t in _resolve(name, stmt, known, is_pkg) if t != name)
        count = 0
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((fn.end_lineno - fn.lineno + 1, f"{name}.{fn.name}"))
                count += sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn)
                             if n is not fn and not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        local_imports[name] = count
    return {"graph": graph, "every": every, "local_imports": local_imports, "functions": functions, "lines": lines}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules is not a cycle of the layering
            real = [m for m in comp if not any(o.startswith(m + ".") for o in comp)]
            if len(real) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=8, help="how many of the longest modules and functions to list")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    s = scan(root)
    found = cycles(s["graph"])
    hidden = [c for c in cycles(s["every"]) if c not in found]
    funcs = sorted(s["functions"], reverse=True)[: args.top]
    mods = sorted(((n, m) for m, n in s["lines"].items()), reverse=True)[: args.top]
    figures = {"modules": len(s["lines"]), "lines": sum(s["lines"].values()),
               "import_cycles": found, "cycles_through_local_imports": hidden, "function_local_imports": sum(s["local_imports"].values()),
               "longest_modules": [[m, n] for n, m in mods], "longest_functions": [[f, n] for n, f in funcs]}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"{figures['modules']} modules, {figures['lines']} lines; "
          f"{figures['function_local_imports']} function-local imports")
    print(f"import cycles (module-level imports): {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"import cycles closed by function-local imports: {len(hidden)}")
    for comp in hidden:
        print("  " + " <-> ".join(comp))
    print("longest modules: " + ", ".join(f"{m} {n}" for m, n in figures["longest_modules"]))
    print("longest functions: " + ", ".join(f"{f} {n}" for f, n in figures["longest_functions"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
