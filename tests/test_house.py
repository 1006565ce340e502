"""The house rules that fit in a parser (issue 13), over every file of faket_dask/ and cli/.

- no function over ``MAX_FUNCTION_LINES`` lines (``def`` line to last line, decorators aside);
- no function with more than ``MAX_PARAMETERS`` parameters (``self``/``cls`` aside, ``*args`` and
  ``**kwargs`` one each): more go into a typed options object. Typer command functions are
  exempt (one parameter per command-line option): those decorated with ``X.command(...)`` or
  ``X.callback(...)``, or registered as ``X.command(...)(function)`` in the same file;
- no module over ``MAX_MODULE_LINES`` lines.

The rules are read from the source (``ast``); a probe checks that each rule can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("faket_dask").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")])

MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8
MAX_MODULE_LINES = 700

_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _typer_commands(tree: ast.Module) -> set[str]:
    """Names of the functions this module registers as typer commands or callbacks."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, _Function):
            for deco in node.decorator_list:
                if _is_registration(deco):
                    names.add(node.name)
        elif isinstance(node, ast.Call) and _is_registration(node.func):
            names |= {a.id for a in node.args if isinstance(a, ast.Name)}
    return names


def _is_registration(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("command", "callback")
    )


def _parameters(fn: _Function) -> list[str]:
    a = fn.args
    names = [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return names[1:] if names and names[0] in ("self", "cls") else names


def house_problems(source: str) -> list[str]:
    """Every breach of the rules above in one module's source, one line each."""
    tree = ast.parse(source)
    problems = []
    n_lines = len(source.splitlines())
    if n_lines > MAX_MODULE_LINES:
        problems.append(f"module has {n_lines} lines (> {MAX_MODULE_LINES}): split it by job")
    commands = _typer_commands(tree)
    for fn in ast.walk(tree):
        if not isinstance(fn, _Function):
            continue
        length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if length > MAX_FUNCTION_LINES:
            problems.append(f"{fn.name} (line {fn.lineno}) has {length} lines")
        params = _parameters(fn)
        if len(params) > MAX_PARAMETERS and fn.name not in commands:
            problems.append(
                f"{fn.name} (line {fn.lineno}) takes {len(params)} parameters: group them in a "
                "typed options object"
            )
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_functions_and_modules_stay_small(path):
    assert not house_problems(path.read_text()), "\n".join(house_problems(path.read_text()))


def test_the_rules_catch_what_they_forbid():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    nine = ", ".join(f"p{i}" for i in range(MAX_PARAMETERS + 1))
    source = (
        f"def long():\n{body}\n\n\n"
        f"def short():\n    return 1\n\n\n"
        f"class A:\n    def wide(self, {nine}):\n        pass\n\n"
        f"    def eight(self, {', '.join(f'p{i}' for i in range(MAX_PARAMETERS))}):\n"
        f"        pass\n\n\n"
        f"def star(a, b, c, d, e, f, g, *args, **kwargs):\n    pass\n\n\n"
        f"@app.command('go')\ndef go({nine}):\n    pass\n\n\n"
        f"def later({nine}):\n    pass\n\n\n"
        f"app.command('later')(later)\n"
    )
    problems = house_problems(source)
    by_name = {p.split(" ")[0]: p for p in problems}
    assert sorted(by_name) == ["long", "star", "wide"], problems  # not short, eight, go, later
    assert f"has {MAX_FUNCTION_LINES + 1} lines" in by_name["long"]
    assert f"takes {MAX_PARAMETERS + 1} parameters" in by_name["wide"]
    padded = source + "\n" * MAX_MODULE_LINES
    assert house_problems(padded)[0].startswith("module has")
