"""copick export: our own writer, verified by copick itself in a separate venv (zarr < 3)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _ext_venv import run_script, venv_python
from _tiny_store import make_store

from faket_dask.errors import InputError
from faket_dask.read.export_copick import export_copick, run_name
from faket_dask.stages.templates import example_path, load_template

pytestmark = pytest.mark.timeout(400)

PARTICLE_CLASSES = ("ball", "pep", "rod")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("copick")
    # the example peptide under a HEADER with an id code (columns 63-66): copick's pdb_id
    text = example_path("peptide.pdb").read_text().splitlines()
    text[0] = text[0].ljust(62) + "9XYZ"
    (root / "pep.pdb").write_text("\n".join(text) + "\n")
    particles = [
        {"name": "ball", "template": "builtin:sphere", "count": 2},
        {"name": "rod", "template": "builtin:rod:0.25", "count": 1},
        {"name": "pep", "template": str(root / "pep.pdb"), "count": 1},
    ]
    return make_store(root, n=2, sample={"thickness": 8, "particles": particles})


def test_layout_config_and_picks_are_written(store, tmp_path):
    from faket_dask.read.access import open_dataset

    res = export_copick(store, tmp_path / "proj", sample_ids=[1])
    cfg = json.loads(res["config"].read_text())
    assert cfg["config_type"] == "filesystem" and "runs" not in cfg
    # one root, relative: no static_root (copick would list every file twice)
    assert cfg["overlay_root"] == "local://." and "static_root" not in cfg
    names = {o["name"]: o for o in cfg["pickable_objects"]}
    classes = open_dataset(store).sample(1, "volume").attrs["classes"]
    assert {n: o["label"] for n, o in names.items()} == {v: int(k) for k, v in classes.items()}
    assert names["pep"]["pdb_id"] == "9XYZ" and "pdb_id" not in names["ball"]
    ball = load_template("builtin:sphere", 20.0)
    assert names["ball"]["radius"] == pytest.approx((ball.radius_px + 0.5) * 20.0, abs=1e-3)
    assert all(o["radius"] > 0 for o in names.values() if o["is_particle"])
    run = tmp_path / "proj" / "ExperimentRuns" / run_name(1)
    vs = open_dataset(store).sample(1, "tomogram").attrs["pixel_spacing"]
    tomo = run / f"VoxelSpacing{vs:.3f}" / "wbp.zarr"
    ms = json.loads((tomo / ".zattrs").read_text())["multiscales"][0]
    assert ms["version"] == "0.4" and [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [vs] * 3
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [4 * vs] * 3
    assert json.loads((tomo / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    picks = sorted(p.name for p in (run / "Picks").iterdir())
    assert picks == [f"faket-dask_0_{n}.json" for n in PARTICLE_CLASSES]
    assert res["runs"] == 1 and res["picks"] == 3 and res["points"] == 4
    with pytest.raises(InputError, match="not empty"):
        export_copick(store, tmp_path / "proj")
    with pytest.raises(InputError, match="not a complete sample"):
        export_copick(store, tmp_path / "other", sample_ids=[7])
    res = export_copick(store, tmp_path / "abs", sample_ids=[0], root="/data/proj")
    assert json.loads(res["config"].read_text())["overlay_root"] == "/data/proj"


_READ = """
import json, sys
import copick
import numpy as np
root = copick.from_file(sys.argv[1])
out = {"objects": {o.name: [o.label, o.radius, o.pdb_id] for o in root.pickable_objects},
       "runs": {}}
for run in root.runs:
    vss = run.voxel_spacings
    vs = vss[0]
    tomos = vs.tomograms
    data = tomos[0].numpy()
    segs = run.segmentations
    mask = segs[0].numpy()
    picks = {}
    for p in run.picks:
        picks.setdefault(p.pickable_object_name, []).append(
            [[pt.location.z, pt.location.y, pt.location.x, pt.instance_id,
              np.asarray(pt.transformation).tolist()] for pt in p.points]
        )
    out["runs"][run.name] = {
        "n_voxel_spacings": len(vss),
        "tomograms": [t.tomo_type for t in tomos],
        "segmentations": [[s.name, s.is_multilabel] for s in segs],
        "voxel_size": vs.voxel_size,
        "shape": list(data.shape),
        "sum": float(np.asarray(data, dtype=np.float64).sum()),
        "mask": np.asarray(mask).astype(int).tolist(),
        "picks": picks,
    }
print(json.dumps(out))
"""


def _read_with_copick(config: str, cwd=None) -> dict:
    python = venv_python("copick", ["copick"], "copick")
    script = _READ if cwd is None else f"import os; os.chdir({str(cwd)!r})\n" + _READ
    return json.loads(run_script(python, script, config).strip().splitlines()[-1])


@pytest.mark.slow
def test_copick_reads_one_of_everything_at_the_right_place(store, tmp_path):
    from faket_dask.read.access import open_dataset
    from faket_dask.stages.particles import matrices_from_table

    export_copick(store, tmp_path / "proj")
    # a copied project opens from its own folder (the config's root is relative)
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(tmp_path / "proj", copy)
    shutil.rmtree(tmp_path / "proj")
    got = _read_with_copick("copick_config.json", cwd=copy)
    ds = open_dataset(store)
    assert set(got["runs"]) == {run_name(i) for i in ds.ids}
    assert got["objects"]["pep"][2] == "9XYZ" and got["objects"]["ball"][1] > 0
    for sid in ds.ids:
        r = got["runs"][run_name(sid)]
        tomo = ds.sample(sid, "tomogram")
        vs = tomo.attrs["pixel_spacing"]
        assert r["n_voxel_spacings"] == 1 and r["tomograms"] == ["wbp"]
        assert r["segmentations"] == [["classes", True]]
        assert r["voxel_size"] == pytest.approx(vs)
        assert r["shape"] == list(tomo.tomogram.shape)
        assert r["sum"] == pytest.approx(float(tomo.tomogram.astype("f8").sum()), rel=1e-5)
        np.testing.assert_array_equal(np.array(r["mask"]), tomo.class_mask.values)
        # one pick file per class; positions re-derived here from the volume-frame table:
        # the centre of the binned voxel holding the particle, in the centred Z crop
        table = ds.particles(sid)
        mats = matrices_from_table(table)
        b = int(tomo.attrs["bin"])
        nz = int(ds.sample(sid, "volume").sizes["z"])
        zoff = (nz / b - tomo.sizes["z"]) / 2
        assert sorted(r["picks"]) == list(PARTICLE_CLASSES)
        for name in PARTICLE_CLASSES:
            assert len(r["picks"][name]) == 1  # one file (copick lists each once)
            pts = sorted(r["picks"][name][0], key=lambda p: p[3])
            sel = table[(table.class_name == name) & (table.kind == "particle")].sort_values("id")
            assert [p[3] for p in pts] == sel["id"].tolist()
            expect = np.stack(
                [(sel.z + 0.5) / b - 0.5 - zoff, (sel.y + 0.5) / b - 0.5, (sel.x + 0.5) / b - 0.5],
                1,
            )
            np.testing.assert_array_less(np.abs(np.array([p[:3] for p in pts]) / vs - expect), 0.5)
            for p, i in zip(pts, sel.index, strict=True):
                np.testing.assert_allclose(np.array(p[4])[:3, :3], mats[i], atol=1e-9)


def test_cli_export_copick(store, tmp_path):
    from faket_dask_cli.main import app
    from typer.testing import CliRunner

    out = tmp_path / "p"
    args = ["export-copick", str(store), "--sample", "0", "-o", str(out), "--root", "s3://b/p"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "copick_config.json").read_text())["overlay_root"] == "s3://b/p"
    assert "1 runs" in res.output and (out / "copick_config.json").is_file()
    assert sorted(p.name for p in (out / "ExperimentRuns").iterdir()) == [run_name(0)]
