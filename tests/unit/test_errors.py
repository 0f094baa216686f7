"""One error tree: every exception cocolab defines is a CocolabError (a ProtocolError of the
device back-ends was outside it), and errors.py's docstring draws each of them."""

from __future__ import annotations

import ast
from pathlib import Path

import cocolab.errors

PACKAGE = Path(cocolab.errors.__file__).parent


def _defined_errors() -> list[tuple[str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id in ("Exception", "BaseException")
                    for b in node.bases):
                found.append((str(path.relative_to(PACKAGE)), node.name))
    return found


def test_only_the_root_of_the_tree_derives_from_exception() -> None:
    assert _defined_errors() == [("errors.py", "CocolabError")]


def test_the_tree_in_the_docstring_names_every_error_of_errors_py() -> None:
    drawn = cocolab.errors.__doc__ or ""
    for name, value in vars(cocolab.errors).items():
        if isinstance(value, type) and issubclass(value, cocolab.errors.CocolabError):
            assert name in drawn, f"{name} is not drawn in errors.py's tree"
