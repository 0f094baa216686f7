"""A kernel's modules as modules.dep describes them: by name, and what each depends on."""

from __future__ import annotations

from pathlib import Path


def module_index(modules: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(module name -> path, path -> dependency paths) from modules.dep."""
    by_name: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[module_name(path)] = path
    return by_name, deps


def module_name(path: str) -> str:
    name = Path(path).name
    for ext in (".xz", ".zst", ".gz"):
        name = name.removesuffix(ext)
    return name.removesuffix(".ko").replace("-", "_")


def module_closure(modules: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to `modules`) of `wanted` and everything they depend on."""
    by_name, deps = module_index(modules)
    out: list[str] = []
    todo = [by_name[w.replace("-", "_")] for w in wanted if w.replace("-", "_") in by_name]
    while todo:
        path = todo.pop()
        if path not in out:
            out.append(path)
            todo += deps.get(path, [])
    return sorted(out)
