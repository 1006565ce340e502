"""Every ``faket-dask ...`` line in the README and docs is a command the CLI accepts as written.

Each line of a fenced ``bash`` block that runs ``faket-dask`` (continuations joined, comments
dropped, ``a && b`` split) is parsed by the real click command tree: the sub-command exists,
every option is known, every value converts and the required options are there. Paths need
not exist (parsing does not open them). Lines that run are tested elsewhere (examples, the
first-hour commands, generate, the stage verbs); this test keeps the docs from drifting.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]


def documented_lines() -> list[tuple[str, str]]:
    """``(page:line, command)`` for every ``faket-dask`` command in a bash block."""
    found = []
    for page in PAGES:
        if not page.exists():
            continue
        text = page.read_text()
        for block in re.finditer(r"```(?:bash|sh|console)\n(.*?)```", text, re.DOTALL):
            start = text[: block.start()].count("\n") + 2
            joined = block.group(1).replace("\\\n", " ")
            for k, line in enumerate(joined.splitlines()):
                words = shlex.split(line, comments=True)
                cmd: list[str] = []
                for w in [*words, "&&"]:
                    if w in ("&&", "||", ";", "|"):
                        if cmd and cmd[0] == "faket-dask":
                            found.append((f"{page.name}:{start + k}", shlex.join(cmd)))
                        cmd = []
                    else:
                        cmd.append(w)
    return found


LINES = documented_lines()


def test_the_docs_show_many_commands():
    pages = {where.split(":")[0] for where, _ in LINES}
    assert {"README.md", "generate.md", "index.md"} <= pages
    assert len(LINES) >= 30


@pytest.mark.parametrize("where,line", LINES, ids=[w for w, _ in LINES])
def test_documented_command_parses(where, line):
    from faket_dask_cli.main import command

    args = shlex.split(line)[1:]
    cmd, path = command(), ["faket-dask"]
    while getattr(cmd, "commands", None) and args and not args[0].startswith("-"):
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"{where}: `{' '.join(path)} {args[0]}` is not a command"
        path.append(args.pop(0))
        cmd = sub
    if args == ["--version"] or getattr(cmd, "commands", None):
        return  # the root's eager options, a group's --help
    try:
        cmd.make_context(" ".join(path), list(args))
    except Exception as err:  # click's UsageError / BadParameter, vendored by typer
        pytest.fail(f"{where}: `{line}` does not parse: {err}")


def python_snippets() -> list[tuple[str, str]]:
    """``(page:line, code)`` of every fenced ``python`` block."""
    found = []
    for page in PAGES:
        if page.exists():
            text = page.read_text()
            for block in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
                line = text[: block.start()].count("\n") + 2
                found.append((f"{page.name}:{line}", block.group(1)))
    return found


@pytest.mark.parametrize("where,code", python_snippets(), ids=[w for w, _ in python_snippets()])
def test_documented_python_compiles(where, code):
    """Syntax only (running them needs the stores they name; see the module docstring)."""
    compile(code, where, "exec")
