"""Fails when a Rust source file has more than 600 lines outside its test module (ARCHITECTURE.md,
"Guardrails"). Usage: python3 scripts/lib/line_budget.py [LIMIT]"""

import pathlib
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 600
ROOT = pathlib.Path(__file__).resolve().parents[2]
over = []
for path in sorted(ROOT.glob("**/*.rs")):
    rel = path.relative_to(ROOT)
    if rel.parts[0] in ("target", "third_party") or "tests" in rel.parts or rel.name == "tests.rs":
        continue
    lines = path.read_text().splitlines()
    code = next((i for i, line in enumerate(lines) if line.strip() == "#[cfg(test)]"), len(lines))
    if code > LIMIT:
        over.append(f"{rel}: {code} lines before its tests")
print("\n".join(over) or f"every Rust source file has at most {LIMIT} non-test lines")
sys.exit(1 if over else 0)
