"""The shipped examples/*.yaml run: each loads as written, plans at full size, and makes one
sample at a tiny size through the real CLI (``generate --override``) on a real cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _cli import run_cli_checked

import faket_dask
from faket_dask.config import load_config

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: Sizes only: a 64^2 detector at 40 A (so that the particles still fit), 5 tilts, 24 voxels of Z.
TINY = [
    "tilts.shape=[64, 64]",
    "tilts.angles=-60:60:30",
    "tilts.pixel_spacing=40",
    "sample.thickness=24",
]

#: Each example's own size overrides on top of TINY (counts of objects that would not fit).
PER_EXAMPLE = {
    "shrec21-like.yaml": [
        "reconstruction.thickness=12",
        "sample.fiducials.count=1",
        "sample.membranes.vesicles=1",
    ],
    "k3-binned.yaml": [
        "reconstruction.bin=2",
        "reconstruction.thickness=12",
        "sample.fiducials.count=1",
        "sample.membranes.vesicles=1",
    ],
    "membrane-rich-cell.yaml": [
        "sample.membranes.vesicles=2",
        "sample.membranes.planar=1",
        "sample.membranes.planar_radius=[300, 400]",
        "sample.fiducials.count=1",
    ],
    "two-microscopes.yaml": ['tilts.angle_choices=["-60:60:30", "-60:60:40"]'],
}


def test_every_example_is_covered_and_loads_as_written():
    shipped = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert shipped == sorted(PER_EXAMPLE)
    shrec = load_config(EXAMPLES / "shrec21-like.yaml")
    assert len(shrec.sample.particles) == 12
    assert shrec.tilts.shape == (1024, 1024) and shrec.tilts.angles == "-60:60:2"
    k3 = load_config(EXAMPLES / "k3-binned.yaml")
    assert k3.tilts.shape == (3500, 3500) and k3.tilts.pixel_spacing == 1.7
    # the comment's claim: bin 6 gives ~10 A tomograms
    assert abs(k3.tilts.pixel_spacing * k3.reconstruction.bin - 10.2) < 1e-9
    two = load_config(EXAMPLES / "two-microscopes.yaml")
    assert len(two.style.references) == len(two.noise.models) == len(two.tilts.angle_choices) == 2


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_example_plans_at_full_size(tmp_path, name):
    proc = run_cli_checked(
        "generate", "-c", EXAMPLES / name, "-o", tmp_path / "plan.zarr", "--dry-run"
    )
    cfg = load_config(EXAMPLES / name)
    h, w = cfg.tilts.shape
    assert f"of {h}x{w}" in proc.stderr + proc.stdout
    assert not (tmp_path / "plan.zarr").exists()


def _microscope_inputs(where: Path) -> None:
    """The two-microscope example's inputs, made as its comment says (stand-in references)."""
    for name, defocus, voltage in (("a", 2, 300), ("b", 4, 200)):
        d = where / f"microscope_{name}"
        d.mkdir()
        ref = d / "reference.mrc"
        run_cli_checked(
            "reference", "synth", "-o", ref, "--shape", "64", "64", "--angles=-60:60:30",
            "--defocus", defocus, "--voltage", voltage, "--pixel-spacing", 40,
        )
        run_cli_checked(
            "noise", "fit", "--reference", ref, "--snr", "0.1", "-o", d / "noise.json"
        )


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_example_makes_a_tiny_sample(tmp_path, name, dask_cluster, monkeypatch):
    shutil.copy(EXAMPLES / name, tmp_path / name)
    if name == "two-microscopes.yaml":
        _microscope_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # the example's input paths are relative to the working dir
    overrides = [a for o in TINY + PER_EXAMPLE[name] for a in ("--override", o)]
    store = tmp_path / "tiny.zarr"
    run_cli_checked(
        "generate", "-c", name, "-o", store, "--n-samples", 1, "--no-progress",
        "--scheduler", dask_cluster.scheduler_address, *overrides,
        timeout=240,
    )
    info = json.loads(run_cli_checked("info", store, "--json").stdout)
    assert info["complete"] == info["n_samples"] == 1
    ds = faket_dask.open_dataset(store)
    cfg = load_config(EXAMPLES / name, TINY + PER_EXAMPLE[name])
    assert ds.config == cfg  # the store keeps the overridden config
    tilts = ds.sample(0, "tilts")
    assert set(cfg.output.modalities) <= set(tilts.data_vars)
    assert tilts.sizes["y"] == tilts.sizes["x"] == 64
    styled = np.asarray(tilts["styled"], dtype=np.float64)
    assert np.isfinite(styled).all() and styled.std() > 0
    if cfg.reconstruction.enabled:
        tomo = ds.sample(0, "tomogram")
        assert tomo.sizes["x"] == 64 // cfg.reconstruction.bin
        assert int(tomo["class_mask"].max()) > 0  # the binned labels are there
    if name == "two-microscopes.yaml":
        refs = [r["spec"] for r in info["style_references"]]
        assert refs == ["microscope_a/reference.mrc", "microscope_b/reference.mrc"]
