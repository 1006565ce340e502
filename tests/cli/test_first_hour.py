"""A newcomer's first commands (issue 19): --version, --help, the README's reference synth."""

from __future__ import annotations

import numpy as np
import pytest
from _cli import assert_one_line_exit_2, run_cli, run_cli_checked

import faket_dask
from faket_dask.angles import even_angles, parse_angles, read_tilt_file
from faket_dask.io import read_tilt_series

pytestmark = pytest.mark.timeout(120)


def test_version_alone_prints_the_version_and_exits_0():
    proc = run_cli_checked("--version")
    assert proc.stdout.strip() == f"faket-dask {faket_dask.__version__}"


def _command_paths() -> list[list[str]]:
    from faket_dask_cli.main import command

    out: list[list[str]] = []

    def walk(cmd, path):
        out.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(command(), [])
    return out


def test_help_shows_no_bool_type_on_flags():
    paths = _command_paths()
    assert ["generate"] in paths and ["reference", "synth"] in paths
    shown = []
    for path in paths:
        proc = run_cli(*path, "--help")
        assert proc.returncode == 0, (path, proc.stderr)
        assert "--help" in proc.stdout
        if "<bool>" in proc.stdout:
            shown.append(" ".join(path) or "(root)")
    assert not shown, f"--help shows <bool> in: {shown}"
    # value options keep their type
    assert "<path>" in run_cli("generate", "--help").stdout


def test_even_angles_match_the_range_syntax():
    np.testing.assert_allclose(even_angles(61), parse_angles("-60:60:2"))
    np.testing.assert_allclose(even_angles(41), parse_angles("-60:60:3"))
    np.testing.assert_allclose(even_angles(1), [0.0])


def test_reference_synth_as_the_readme_writes_it(tmp_path):
    out = tmp_path / "ref.mrc"
    # the README's line, at a tiny detector size
    run_cli_checked(
        "reference", "synth", "-o", out, "--shape", 61, 32, 32, "--defocus", 3, "--voltage", 300
    )
    series = read_tilt_series(out)
    assert series.data.shape == (61, 32, 32)
    np.testing.assert_allclose(read_tilt_file(out.with_suffix(".tlt")), parse_angles("-60:60:2"))
    # H W alone: the default angles give the tilt count
    run_cli_checked("reference", "synth", "-o", tmp_path / "hw.mrc", "--shape", 32, 32)
    assert read_tilt_series(tmp_path / "hw.mrc").data.shape == (41, 32, 32)
    # a real conflict is still one line, exit 2
    proc = run_cli_checked(
        "reference", "synth", "-o", tmp_path / "bad.mrc", "--shape", 5, 32, 32,
        "--angles=-60:60:3", check=False,
    )
    assert_one_line_exit_2(proc, "--shape has 5 tilts but --angles gives 41")


def test_small_demo_config_and_its_option_rules():
    from faket_dask.demo import demo_config

    small, full = demo_config(small=True), demo_config()
    assert small.n_samples == 2 and small.tilts.shape == (64, 64)
    assert len(parse_angles(small.tilts.angles)) == 21
    assert full.n_samples == 4 and full.tilts.shape == (128, 128)
    assert small.sample.thickness < full.sample.thickness
    proc = run_cli("generate", "--small", "-o", "x.zarr")
    assert proc.returncode == 2 and "use `--demo small`" in proc.stderr


@pytest.mark.parametrize(
    "args,planned",
    [
        (["--demo", "small"], "21 of 64x64"),
        (["--demo=small"], "21 of 64x64"),
        (["--demo", "--small"], "21 of 64x64"),  # the older spelling, kept as an alias
        (["--demo"], "31 of 128x128"),
        (["--demo", "full"], "31 of 128x128"),
        (["--dry-run", "-o", "last.zarr", "--demo"], "31 of 128x128"),  # --demo last
    ],
)
def test_demo_takes_an_optional_size_word(tmp_path, args, planned):
    """``--demo [small|full]``: what the dry run plans (in-process; tests/test_documented_commands
    runs the documented spelling as a subprocess)."""
    out = ["-o", tmp_path / "demo.zarr", "--dry-run"] if "-o" not in args else []
    proc = run_cli("generate", *args, *out)
    assert proc.returncode == 0, proc.stderr
    assert f"tilts      │ {planned}" in proc.stderr, proc.stderr
    assert not (tmp_path / "demo.zarr").exists()


def test_demo_with_a_wrong_size_is_one_line_exit_2(tmp_path):
    proc = run_cli_checked("generate", "--demo", "huge", "-o", tmp_path / "d.zarr", check=False)
    assert_one_line_exit_2(proc, "--demo takes a size: `--demo small` or `--demo full`")
    assert "'huge'" in proc.stderr and not (tmp_path / "d.zarr").exists()


def test_demo_size_argv_attaches_only_the_demo_word():
    from faket_dask_cli.generate import demo_size_argv

    assert demo_size_argv(["--demo", "small", "-o", "a.zarr"]) == ["--demo=small", "-o", "a.zarr"]
    assert demo_size_argv(["-o", "a.zarr", "--demo"]) == ["-o", "a.zarr", "--demo=full"]
    assert demo_size_argv(["--demo", "--small"]) == ["--demo=full", "--small"]
    assert demo_size_argv(["--demo=small"]) == ["--demo=small"]
    # other options' values and everything after `--` are untouched
    after = ["-o", "small.zarr", "--", "--demo"]
    assert demo_size_argv(after) == after
