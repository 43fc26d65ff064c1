"""Guardrails on the size of Rust source files (ARCHITECTURE.md, "Guardrails"): fails when a file has more
than LIMIT (600) lines outside its test module, or an inline test module longer than the code it tests
(those go into a sibling tests.rs). Usage: python3 scripts/lib/line_budget.py [LIMIT]"""

import pathlib
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 600
ROOT = pathlib.Path(__file__).resolve().parents[2]
problems = []
for path in sorted(ROOT.glob("**/*.rs")):
    rel = path.relative_to(ROOT)
    skip = {"target", "third_party", ".venv", "tests"}
    if skip & set(rel.parts) or rel.name == "tests.rs":
        continue
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "#[cfg(test)]"), len(lines))
    inline = start + 1 < len(lines) and lines[start + 1].strip().endswith("{")
    code = start
    tests = len(lines) - start if inline else 0
    if code > LIMIT:
        problems.append(f"{rel}: {code} lines before its tests (limit {LIMIT})")
    if tests > code:
        problems.append(f"{rel}: its test module ({tests} lines) is longer than its code ({code}): move it to tests.rs")
print("\n".join(problems) or f"every Rust source file has at most {LIMIT} non-test lines and no oversized test module")
sys.exit(1 if problems else 0)
