"""Every ``faket-dask ...`` line in the README and docs runs as written and exits as documented;
every Python snippet in them runs.

The lines are found in fenced bash blocks (continuations joined, comments dropped, ``a && b``
split; ``kubectl exec ... -- faket-dask ...`` included). Each page runs in document order, as a
real subprocess, in its own working directory prepared with the files the docs assume (a
config, reference tilt-series, a volume, a tomogram, an mdoc...). Only sizes and paths change,
through :data:`SUBSTITUTIONS` (reviewed; an entry that matches no line fails the test). A line
that cannot run on this machine is in :data:`SKIP` with its reason, which the test prints; a
line neither run nor skipped cannot pass (every line of every page is walked).

Rules of the walk, so that it stays within a few minutes on 2 cores:

- The docs list alternatives (three ways to make ``ref.mrc``; ``generate`` without and with
  ``--scheduler``): a line that writes an output that exists (and is not ``--resume`` or
  ``--dry-run``) replaces it, since no documented command overwrites.
- ``generate`` lines that would start an embedded local cluster run on the session's warm
  cluster through ``$DASK_SCHEDULER_ADDRESS`` (dask's own variable, a documented way to point
  the CLI at a cluster), except the lines in :data:`EMBEDDED`, which start their own as written.
- The demo is run once: a later identical ``generate --demo ...`` line reuses its store (a
  sample is a pure function of seed, id and config).
- ``--scheduler tcp://HOST:8786`` and ``--scheduler-file`` lines run against that same real
  cluster (its address; a scheduler file it wrote).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from _cli import run_cli
from _doc_walk import (
    CLI,
    ROOT,
    DocLine,
    DocSnippet,
    Outcome,
    Sub,
    base_env,
    documented_lines,
    matches,
    option_value,
    python_snippets,
    remove_output,
    run,
    substitute,
)
from _generate_helpers import tiny_dict

pytestmark = pytest.mark.timeout(900)

LINES = documented_lines()
SNIPPETS = python_snippets()

#: Sizes and paths only. Applied to every line in this order; ``{dir}`` is the page's working
#: directory, ``{scheduler}`` the warm cluster's address, ``{weights}`` a VGG-19 state dict.
SUBSTITUTIONS: tuple[Sub, ...] = (
    Sub(("--n-samples", "1000"), ("--n-samples", "4"), "size: the tiny config's 4 samples"),
    Sub(("--n-samples", "5000"), ("--n-samples", "4"), "size"),
    Sub(("--n-samples", "8000"), ("--n-samples", "5"), "size: grows the store by one"),
    Sub(("--demo", "-o"), ("--demo", "small", "-o"), "size: the full demo takes minutes"),
    Sub(("--shape", "61", "512", "512"), ("--shape", "5", "64", "64"), "size"),
    Sub(("--angles", "-60:60:2"), ("--angles", "-60:60:30"), "size: 5 tilts, not 61"),
    Sub(("--thickness", "90"), ("--thickness", "8"), "size: the 16-voxel tiny volume, binned 2"),
    Sub(
        ("--override", "tilts.shape=[256,256]"),
        # the example's own sizes scaled down with it (tests/examples/test_examples.py's TINY)
        ("--override", "tilts.shape=[64,64]", "--override", "tilts.angles=-60:60:30",
         "--override", "tilts.pixel_spacing=40", "--override", "sample.thickness=24",
         "--override", "reconstruction.thickness=12", "--override", "sample.fiducials.count=1",
         "--override", "sample.membranes.vesicles=1"),
        "size",
    ),
    Sub(("tcp://host:8786",), ("{scheduler}",), "address: the session's running cluster"),
    Sub(("tcp://HOST:8786",), ("{scheduler}",), "address: the session's running cluster"),
    Sub(("/shared/",), ("{dir}/shared/",), "path", prefix=True),
    Sub(("$SHARED/",), ("{dir}/shared/",), "path", prefix=True),
    Sub(("/config/",), ("{dir}/config/",), "path: the pod's config map", prefix=True),
    Sub(("/data/",), ("{dir}/data/",), "path: the pod's volume", prefix=True),
    Sub(
        ("--weights", "imagenet"),
        ("--weights", "{weights}"),
        "path: ImageNet weights cannot be downloaded here; a VGG-19 state dict saved by the "
        "test is loaded the same way once the cache has the file",
    ),
)

_SLURM = (
    "submits SLURM jobs (sbatch); there is no SLURM here (tests/test_deploy.py renders this "
    "profile's job script through dask-jobqueue's job_script())"
)
_FETCH = (
    "downloads 548 MB from download.pytorch.org; there is no internet here "
    "(tests/stages/test_weights.py fetches and hash-checks through a file:// URL)"
)
_PROFILE = "--cluster-profile deploy/slurm/profile-gpu.yaml"

#: ``(page, command)`` -> why it cannot run here. Printed by the test.
SKIP: dict[tuple[str, str], str] = {
    ("README.md", f"faket-dask generate -c config.yaml -o dataset.zarr {_PROFILE}"): _SLURM,
    ("docs/clusters.md", f"faket-dask generate -c config.yaml -o /shared/dataset.zarr {_PROFILE} "
     "--resume"): _SLURM,
    ("README.md", "faket-dask weights fetch"): _FETCH,
    ("docs/clusters.md", "faket-dask weights fetch"): _FETCH,
    ("deploy/slurm/scheduler-file/README.md", "faket-dask weights fetch"): _FETCH,
}

#: ``generate`` lines that start their own embedded local cluster, as written (the others use
#: the warm one through $DASK_SCHEDULER_ADDRESS).
EMBEDDED = {"faket-dask generate --demo small -o demo.zarr"}

#: Python snippets: ``(old, new, why)`` text replacements (paths only).
SNIPPET_SUBS = (('"samples/000042/', '"samples/000004/', "path: the tiny store's sample 4"),)

#: ``(page, command)`` -> the exit code the docs give when it is not 0.
EXIT: dict[tuple[str, str], int] = {}

# one demo run per session, reused by later identical lines
_DEMO: dict[str, Path] = {}


def test_the_docs_show_many_commands():
    pages = {d.page for d in LINES}
    assert {"README.md", "docs/generate.md", "docs/index.md", "docs/clusters.md"} <= pages
    assert len(LINES) >= 40
    assert any(d.prefix.startswith("kubectl exec") for d in LINES)
    assert {s.page for s in SNIPPETS} >= {"docs/index.md", "docs/generate.md"}


def test_every_substitution_and_skip_is_used():
    """The tables stay reviewed: no entry for a line that is gone."""
    unused = [s.old for s in SUBSTITUTIONS if not any(matches(s, d.argv) for d in LINES)]
    assert not unused, f"substitutions that match no documented line: {unused}"
    documented = {(d.page, d.command) for d in LINES}
    stale = [k for k in SKIP if k not in documented]
    assert not stale, f"SKIP entries that match no documented line: {stale}"
    codes = [s.old for s in SNIPPET_SUBS if not any(s[0] in p.code for p in SNIPPETS)]
    assert not codes


@pytest.mark.parametrize("line", LINES, ids=[d.where for d in LINES])
def test_documented_command_parses(line: DocLine):
    """Every line (the skipped ones too) is accepted by the real click command tree."""
    from faket_dask_cli.main import command

    args = list(line.argv)
    cmd, path = command(), ["faket-dask"]
    while getattr(cmd, "commands", None) and args and not args[0].startswith("-"):
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"{line.where}: `{' '.join(path)} {args[0]}` is not a command"
        path.append(args.pop(0))
        cmd = sub
    if args == ["--version"] or getattr(cmd, "commands", None):
        return  # the root's eager options, a group's --help
    try:
        cmd.make_context(" ".join(path), list(args))
    except Exception as err:  # click's UsageError / BadParameter, vendored by typer
        pytest.fail(f"{line.where}: `{line.command}` does not parse: {err}")


# ---------------------------------------------------------------------------------------------
# the files the docs assume


def _synth(out: Path, *args: object) -> None:
    proc = run_cli("reference", "synth", "-o", out, *args)  # in-process: inputs only
    assert proc.returncode == 0, proc.stderr


def _mdoc(angles: list[float], pixel_spacing: float) -> str:
    rows = [f"PixelSpacing = {pixel_spacing}", "[T = Tilt axis angle = 85.0, binning = 1]", ""]
    for k, a in enumerate(angles):
        rows += [f"[ZValue = {k}]", f"TiltAngle = {a}", ""]
    return "\n".join(rows)


def _phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A density volume: a few balls of contrast 1 on 0, and a little noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    for _ in range(4):
        c = rng.uniform(0.3, 0.7, 3) * shape
        vol[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < 16] = 1.0
    return vol + rng.normal(0, 0.05, shape).astype(np.float32)


@pytest.fixture(scope="session")
def doc_inputs(tmp_path_factory) -> Path:
    """The files the docs' lines read, made once: configs, MRC files, an mdoc, weights."""
    import torch

    from faket_dask.io import Volume, write_mrc, write_volume
    from faket_dask.stages.style.weights import resolve_weights

    d = tmp_path_factory.mktemp("doc-inputs")
    (d / "config.yaml").write_text(json.dumps(_tiny(n_samples=4)))
    write_volume(d / "volume.mrc", Volume(_phantom((16, 32, 32), 0), 10.0))
    write_volume(d / "real.rec", Volume(_phantom((16, 32, 32), 1), 10.0))
    _synth(d / "reference.mrc", "--shape", 5, 32, 32, "--pixel-spacing", 10, "--seed", 4)
    rng = np.random.default_rng(2)
    write_mrc(d / "real.st", rng.normal(size=(5, 32, 32)).astype(np.float32), 5.0)
    (d / "real.st.mdoc").write_text(_mdoc([0.0, 30.0, -30.0, 60.0, -60.0], 5.0))
    # the tiny store's microscope (16 x 16 at 20 A): a series to calibrate, held-out ones
    tiny = ("--pixel-spacing", 20, "--defocus", 4, "--dose", 60)
    _synth(d / "ref_A.mrc", "--shape", 64, 64, "--angles=-40:40:20", *tiny, "--seed", 2)
    for name, seed in (("ref_B.mrc", 3), ("ref2.mrc", 5)):
        _synth(d / name, "--shape", 16, 16, "--angles=-40:40:40", *tiny, "--seed", seed)
    torch.save(resolve_weights("random", seed=3).state_dict, d / "vgg19-features.pth")
    return d


def _tiny(**over) -> dict:
    """The docs' config.yaml: the tests' tiny config (4 samples of 3 tilts at 16^2)."""
    return tiny_dict(
        reconstruction={"enabled": True, "bin": 2},
        output={"modalities": ["styled", "noisy", "baseline", "noiseless"]},
        **over,
    )


@pytest.fixture(scope="session")
def doc_cluster(dask_cluster, tmp_path_factory) -> dict[str, str]:
    """The session's real cluster, as the docs' lines reach one: its address, a scheduler file
    (what ``dask scheduler --scheduler-file`` writes: the scheduler's identity)."""
    from distributed import Client

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    sched_file = tmp_path_factory.mktemp("doc-cluster") / "scheduler.json"
    sched_file.write_text(json.dumps(dask_cluster.scheduler.identity(), default=str))
    return {"scheduler": dask_cluster.scheduler_address, "scheduler_file": str(sched_file)}


def _workdir(page: str, where: Path, inputs: Path, cluster: dict[str, str]) -> Path:
    """The page's working directory: the inputs, examples/, the cluster's scheduler file at
    shared/, the pod's config/ and data/; realism.md's config is the calibrated one."""
    shutil.copytree(inputs, where)
    (where / "examples").symlink_to(ROOT / "examples")
    (where / "deploy").symlink_to(ROOT / "deploy")
    for sub in ("shared", "config", "data"):
        (where / sub).mkdir()
    shutil.copy(cluster["scheduler_file"], where / "shared" / "scheduler.json")
    shutil.copy(inputs / "config.yaml", where / "config" / "config.yaml")
    if page == "docs/realism.md":  # its config: noise: {model: calibrated, calibration: micro.json}
        calibrated = _tiny(n_samples=4, noise={"model": "calibrated", "calibration": "micro.json"})
        (where / "config.yaml").write_text(json.dumps(calibrated))
    return where


def _interrupted_store(where: Path, env: dict[str, str]) -> None:
    """guarantees.md starts from a crashed run: a store whose last sample was never written."""
    store = where / "dataset.zarr"
    argv = [*CLI, "generate", "-c", "config.yaml", "-o", str(store), "--no-progress"]
    outcome = run(argv, where, env, timeout=300)
    assert outcome.code == 0, outcome.tail
    shutil.rmtree(store / "samples" / "000003")


# ---------------------------------------------------------------------------------------------
# the walk

PAGE_ORDER = list(dict.fromkeys([*(d.page for d in LINES), *(s.page for s in SNIPPETS)]))
CLUSTER_OPTIONS = {"--scheduler", "--scheduler-file", "--cluster-profile"}


@pytest.mark.parametrize("page", PAGE_ORDER)
def test_documented_page_runs(page, doc_inputs, doc_cluster, tmp_path):
    """Each line of the page, in document order, exits as documented (0 unless :data:`EXIT`)."""
    where = _workdir(page, tmp_path / "work", doc_inputs, doc_cluster)
    values = {
        "dir": str(where),
        "scheduler": doc_cluster["scheduler"],
        "weights": str(doc_inputs / "vgg19-features.pth"),
    }
    envs = {"plain": base_env(), "warm": base_env(DASK_SCHEDULER_ADDRESS=values["scheduler"])}
    if page == "docs/guarantees.md":
        _interrupted_store(where, envs["warm"])
    items: list[DocLine | DocSnippet] = [d for d in LINES if d.page == page]
    items = sorted([*items, *(s for s in SNIPPETS if s.page == page)], key=lambda i: i.line)
    print(f"\n{page}:")
    failures = []
    for item in items:
        if isinstance(item, DocSnippet):
            shown, expected = f"```python block ({item.code.count(chr(10))} lines)", 0
            outcome = _run_snippet(item, where, envs["plain"])
        elif (page, item.command) in SKIP:
            print(f"{item.where} SKIPPED `{item.command}`: {SKIP[page, item.command]}")
            continue
        else:
            shown, expected = f"`{item.command}`", EXIT.get((page, item.command), 0)
            outcome = _run_line(item, where, values, envs, tmp_path.parent)
        status = "ok" if outcome.code == expected else f"FAILED (exit {outcome.code})"
        print(f"{item.where} {status} {outcome.seconds:.1f} s {shown}", flush=True)
        for note in outcome.notes:
            print(f"    {note}")
        if outcome.code != expected:
            failures.append(f"{item.where} {shown}: exit {outcome.code}, expected {expected}:\n"
                            f"{outcome.tail}")
    assert not failures, "\n\n".join(failures)


def _run_line(
    line: DocLine, where: Path, values: dict[str, str], envs: dict[str, dict[str, str]],
    cache: Path,
) -> Outcome:
    """Run one documented line (substituted) in ``where``; notes say what the walk did."""
    argv = substitute(line.argv, SUBSTITUTIONS, values)
    command = shlex.join(["faket-dask", *argv])
    notes = [f"ran `{command}`"] if list(line.argv) != argv else []
    if line.prefix:
        notes.append(f"as `{line.prefix}` runs it: $DASK_SCHEDULER_ADDRESS set")
    out = option_value(argv, "-o", "--output")
    target = where / out if out is not None else None
    writes = target is not None and not {"--resume", "--dry-run"} & set(argv)
    if writes and target.exists():
        remove_output(target)
        notes.append(f"replaced the {out} of an earlier line (the docs list alternatives)")
    existed = target is not None and target.exists()
    demo = argv[0] == "generate" and "--demo" in argv
    if demo and command in _DEMO:
        shutil.copytree(_DEMO[command], target)
        return Outcome(0, "", 0.0, [*notes, "the same demo ran before: its store is reused"])
    warm = argv[0] == "generate" and command not in EMBEDDED
    outcome = run([*CLI, *argv], where, envs["warm" if warm else "plain"], timeout=400)
    outcome.notes[:0] = notes
    if outcome.code == 0 and target is not None:
        # a run leaves its output; a dry run leaves the folder as it found it
        expected = existed if "--dry-run" in argv else True
        if target.exists() != expected:
            outcome.code = 99
            outcome.tail = f"exit 0, but {out} exists: {not expected}\n{outcome.tail}"
    if demo and outcome.code == 0:
        _DEMO[command] = cache / f"demo-{len(_DEMO)}.zarr"
        shutil.copytree(target, _DEMO[command])
    return outcome


def _run_snippet(snippet: DocSnippet, where: Path, env: dict[str, str]) -> Outcome:
    """Run a ``python`` block in a fresh interpreter in ``where``."""
    code = snippet.code
    for old, new, _why in SNIPPET_SUBS:
        code = code.replace(old, new)
    t0 = time.perf_counter()
    outcome = run([CLI[0], "-c", code], where, env, timeout=300)
    outcome.seconds = time.perf_counter() - t0
    if code != snippet.code:
        outcome.notes.append("paths substituted (SNIPPET_SUBS)")
    return outcome
