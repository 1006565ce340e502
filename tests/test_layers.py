"""The floor plan holds: every import of faket_dask/ and cli/ points down a layer.

Layers, top to bottom: ``cli`` → ``dist``, ``ops``, ``read`` → ``pipeline`` → ``stages`` →
``io`` → the base (``config``, ``angles``, ``errors``, ``demo``, ``_version``). Function-local
imports count as much as top-level ones. The rules are read from the source (``ast``), so a test
fails the moment a file imports upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# what each layer may import of the package (besides itself)
ALLOWED: dict[str, set[str]] = {
    "base": {"base"},
    "io": {"base"},
    "stages": {"base", "io"},
    "pipeline": {"base", "io", "stages"},
    "read": {"base", "io", "stages"},
    "ops": {"base", "io", "stages", "pipeline"},
    "dist": {"base", "io", "stages", "pipeline"},
    "cli": {"base", "io", "stages", "pipeline", "read", "ops", "dist", "cli"},
}
# third-party packages a layer must not touch
FORBIDDEN: dict[str, set[str]] = {
    "base": {"dask", "distributed", "zarr", "xarray", "rich", "torch"},
    "io": {"distributed", "rich", "torch"},
    "stages": {"dask", "distributed", "zarr", "xarray", "rich", "mrcfile"},
    "pipeline": {"dask", "distributed", "zarr", "rich"},
    "read": {"distributed", "rich"},
    "ops": {"distributed", "rich"},
    "dist": {"rich"},
    "cli": {"torch"},
}


def _layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "faket_dask_cli":
        return "cli"
    if parts[0] != "faket_dask":
        return None
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in ALLOWED else "base"


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "cli":
        return "cli"
    return rel.parts[1] if len(rel.parts) > 2 and rel.parts[1] in ALLOWED else "base"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = list(path.relative_to(ROOT).with_suffix("").parts[:-node.level])
                if pkg and pkg[0] == "cli":
                    pkg[0] = "faket_dask_cli"
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += [(node.lineno, base)]
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if base == "faket_dask"]
    return found


SOURCES = sorted([*ROOT.joinpath("faket_dask").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")])

# Files that still import upward while the house is being rebuilt (issue 13): strict, so each
# entry must go the moment its file is mended.
KNOWN_UPWARD: set[str] = set()


def _param(path: Path) -> object:
    rel = str(path.relative_to(ROOT))
    marks = [pytest.mark.xfail(strict=True, reason="upward import")] if rel in KNOWN_UPWARD else []
    return pytest.param(path, id=rel, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in SOURCES])
def test_imports_point_down(path):
    layer = _layer_of_file(path)
    if path.name == "__init__.py" and path.parent.name == "faket_dask":
        return  # the package's face re-exports open_dataset lazily
    wrong = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top in FORBIDDEN[layer]:
            wrong.append(f"line {line}: {layer} imports {module}")
        target = _layer_of_module(module)
        if target in (None, "package") or target == layer:
            continue
        if target not in ALLOWED[layer]:
            wrong.append(f"line {line}: {layer} imports {module} ({target} is not below it)")
    assert not wrong, "\n".join(wrong)


def test_the_rules_catch_an_upward_import(tmp_path):
    # the checker itself: a stage that imports zarr and the runner is caught on both counts
    fake = ROOT / "faket_dask" / "stages" / "_probe_upward.py"
    fake.write_text("import zarr\nfrom faket_dask.dist import runner\n")
    try:
        lines = _imports(fake)
        layer = _layer_of_file(fake)
        assert layer == "stages"
        assert "zarr" in {m.split(".")[0] for _, m in lines} & FORBIDDEN[layer]
        assert _layer_of_module("faket_dask.dist") not in ALLOWED[layer]
    finally:
        fake.unlink()
