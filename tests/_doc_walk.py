"""Walking the README and docs: their ``faket-dask`` lines and Python snippets, found and run.

Used by tests/test_documented_commands.py, which holds the reviewed tables (what is substituted,
what is skipped and why); this module only finds the lines, applies the tables and runs them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "deploy").glob("**/README.md")),
]
CLI = [sys.executable, "-m", "faket_dask_cli"]


@dataclass(frozen=True)
class DocLine:
    """One documented ``faket-dask`` command: its page, line and arguments (after the name)."""

    page: str  # its path in the repository
    line: int
    argv: tuple[str, ...]
    #: what runs it there, e.g. ``kubectl exec -it POD --`` (empty: a shell)
    prefix: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def command(self) -> str:
        return shlex.join(["faket-dask", *self.argv])


@dataclass(frozen=True)
class DocSnippet:
    """One fenced ``python`` block."""

    page: str
    line: int
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _commands(words: list[str]) -> Iterable[list[str]]:
    """The commands of one shell line, split at ``&& || ; |``."""
    cmd: list[str] = []
    for w in [*words, "&&"]:
        if w in ("&&", "||", ";", "|"):
            if cmd:
                yield cmd
            cmd = []
        else:
            cmd.append(w)


def _faket_part(cmd: list[str]) -> tuple[str, list[str]] | None:
    """``(prefix, argv)`` when ``cmd`` runs faket-dask (directly or after ``kubectl exec --``)."""
    if cmd[0] == "faket-dask":
        return "", cmd[1:]
    if cmd[0] == "kubectl" and "--" in cmd:
        k = cmd.index("--")
        if cmd[k + 1 : k + 2] == ["faket-dask"]:
            return shlex.join(cmd[: k + 1]), cmd[k + 2 :]
    return None


def _logical_lines(body: str) -> Iterable[tuple[int, str]]:
    """``(index of its first line, text)`` of each shell line, ``\\`` continuations joined."""
    pending: list[str] = []
    first = 0
    for k, line in enumerate(body.splitlines()):
        if not pending:
            first = k
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        yield first, " ".join([*pending, line])
        pending = []


def documented_lines(pages: Iterable[Path] = PAGES) -> list[DocLine]:
    """Every ``faket-dask`` command in a fenced bash block (continuations joined, comments
    dropped, ``a && b`` split), in document order."""
    found = []
    for page in pages:
        if not page.exists():
            continue
        text = page.read_text()
        for block in re.finditer(r"```(?:bash|sh|console)\n(.*?)```", text, re.DOTALL):
            start = text[: block.start()].count("\n") + 2
            for first, joined in _logical_lines(block.group(1)):
                for cmd in _commands(shlex.split(joined, comments=True)):
                    part = _faket_part(cmd)
                    if part is not None:
                        name = page.relative_to(ROOT).as_posix()
                        found.append(DocLine(name, start + first, tuple(part[1]), part[0]))
    return found


def python_snippets(pages: Iterable[Path] = PAGES) -> list[DocSnippet]:
    """Every fenced ``python`` block, in document order."""
    found = []
    for page in pages:
        if page.exists():
            text = page.read_text()
            for block in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
                line = text[: block.start()].count("\n") + 2
                found.append(DocSnippet(page.relative_to(ROOT).as_posix(), line, block.group(1)))
    return found


@dataclass(frozen=True)
class Sub:
    """Replace the argument sequence ``old`` by ``new`` (``{dir}``, ``{scheduler}``... filled
    in when run); ``prefix``: ``old[0]`` is a path prefix of one argument instead."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    why: str
    prefix: bool = False


def substitute(argv: Iterable[str], subs: Iterable[Sub], values: Mapping[str, str]) -> list[str]:
    """``argv`` with every matching substitution applied (left to right, each once per place)."""
    out = list(argv)
    for sub in subs:
        new = [w.format_map(values) for w in sub.new]
        if sub.prefix:
            out = [new[0] + w[len(sub.old[0]) :] if w.startswith(sub.old[0]) else w for w in out]
            continue
        k, n = 0, len(sub.old)
        while k <= len(out) - n:
            if tuple(out[k : k + n]) == sub.old:
                out[k : k + n] = new
                k += len(new)
            else:
                k += 1
    return out


def matches(sub: Sub, argv: Iterable[str]) -> bool:
    """Whether ``sub`` changes ``argv``."""
    return substitute(argv, [sub], _Blank()) != list(argv)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def option_value(argv: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` given in ``argv`` (``-o X`` or ``--output=X``)."""
    for k, w in enumerate(argv):
        for name in names:
            if w == name and k + 1 < len(argv):
                return argv[k + 1]
            if w.startswith(name + "="):
                return w.split("=", 1)[1]
    return None


def remove_output(path: Path) -> None:
    """Remove an output and its siblings (``ref.mrc``: ``ref.tlt``, ``ref.synth.json``...)."""
    if path.suffix == ".zarr" or path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        path.with_name(path.name + ".lock").unlink(missing_ok=True)
        return
    for sibling in path.parent.glob(glob_escape(path.stem) + ".*"):
        if sibling.is_file():
            sibling.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass
class Outcome:
    """What one run did: exit code, the end of its output, seconds."""

    code: int
    tail: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def run(argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float) -> Outcome:
    """Run ``argv`` in ``cwd``; the exit code and the last lines of stdout and stderr."""
    import time

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return Outcome(-9, f"timed out after {timeout:.0f} s", time.perf_counter() - t0)
    tail = "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-12:])
    return Outcome(proc.returncode, tail, time.perf_counter() - t0)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a documented command: this one, offline, with ``extra``."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env["FAKET_DASK_OFFLINE"] = "1"
    env.update(extra)
    return env
