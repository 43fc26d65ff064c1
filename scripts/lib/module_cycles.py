"""Fails when the modules of a crate depend on each other in a cycle (ARCHITECTURE.md, "Guardrails").

A module's dependencies are the `crate::<module>` paths in its non-test code (a file, or a directory of
files). Usage: python3 scripts/lib/module_cycles.py"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def modules(src: pathlib.Path) -> dict[str, str]:
    """Top-level module name -> its non-test source text."""
    out: dict[str, str] = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src)
        name = rel.parts[0].removesuffix(".rs")
        if name in ("lib", "main", "bin") or path.name == "tests.rs":
            continue
        text = path.read_text().split("#[cfg(test)]")[0]
        out[name] = out.get(name, "") + text
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


problems = []
for src in sorted(ROOT.glob("crates/*/src")):
    mods = modules(src)
    graph = {m: set(re.findall(r"crate::(\w+)", t)) & set(mods) - {m} for m, t in mods.items()}
    for cycle in cycles(graph):
        problems.append(f"{src.parent.name}: {' -> '.join(cycle)}")
print("\n".join(problems) or "no module cycles in any crate")
sys.exit(1 if problems else 0)
