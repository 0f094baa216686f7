"""The package keeps the shape DESIGN.md gives it: no function over 50 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import cocolab

LIMIT = 50


def test_no_function_is_over_fifty_lines() -> None:
    root = Path(cocolab.__file__).parent
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LIMIT:
                    long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length})")
    assert not long, "functions over 50 lines: " + ", ".join(long)
