"""The layout docs/architecture.md promises: domain packages, arrows one way, no import circle."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("dashboard", "services", "jobs", "models")
# What each services package may import besides itself (docs/architecture.md).
ALLOWED = {
    "core": set(),
    "events": {"core"},
    "ledger": {"core", "events"},
    "catalog": {"core", "ledger"},
    "providers": {"core"},
    "refunds": {"core", "ledger", "providers", "events"},
    "payments": {"core", "ledger", "catalog", "providers", "refunds", "events"},
    "tasks": {"core", "ledger", "catalog", "events"},
    "reporting": {"core", "ledger", "refunds", "events"},
    "staff": {"core", "ledger", "events"},
    "jobs": {"core", "ledger", "catalog", "events"},
    "demo": {"core", "ledger", "catalog", "staff", "events"},
}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_of(p): p for top in OURS for p in (ROOT / top).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of ours that `name` imports (at the top or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.add(sub)  # `from pkg import module`: the module, not the package
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(sorted(graph.get(nxt, ())))))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
    return out


def test_no_module_lives_directly_under_services():
    loose = sorted(p.name for p in (ROOT / "services").glob("*.py") if p.name != "__init__.py")
    assert loose == []


def test_every_services_package_says_what_it_owns():
    for pkg in sorted(p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
        assert "Owns" in doc and "May use" in doc, f"services/{pkg.name}/__init__.py: {doc!r}"


def test_there_is_no_import_circle_anywhere():
    assert _cycles(_graph()) == []


def test_the_tool_finds_a_circle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_services_packages_import_only_what_their_arrows_allow():
    wrong = defaultdict(set)
    for mod, deps in _graph().items():
        if not mod.startswith("services."):
            continue
        pkg = mod.split(".")[1]
        for dep in deps:
            other = dep.split(".")[1] if dep.startswith("services.") else pkg
            if other != pkg and other not in ALLOWED[pkg]:
                wrong[f"{pkg} -> {other}"].add(f"{mod} imports {dep}")
            if dep.split(".")[0] in ("dashboard", "jobs"):
                wrong[f"{pkg} -> {dep.split('.')[0]}"].add(f"{mod} imports {dep}")
    assert dict(wrong) == {}


def test_models_import_nothing_of_ours_but_each_other():
    graph = _graph()
    outside = {m: sorted(d for d in deps if not d.startswith("models"))
               for m, deps in graph.items() if m.startswith("models")}
    assert {m: d for m, d in outside.items() if d} == {}


def test_nothing_outside_the_ledger_uses_its_private_names():
    found = []
    for name, path in _modules().items():
        if name.startswith("services.ledger"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("services.ledger"):
                found += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.value.id in {"ledger", "rules", "hotpath", "bulkledger", "batch"}):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == []
