"""copick export: our own writer, verified by copick itself in a separate venv (zarr < 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from _ext_venv import run_script, venv_python
from _tiny_store import make_store

from faket_dask.errors import InputError
from faket_dask.read.export_copick import export_copick, run_name

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("copick"), n=2)


def test_layout_config_and_picks_are_written(store, tmp_path):
    res = export_copick(store, tmp_path / "proj", sample_ids=[1])
    cfg = json.loads(res["config"].read_text())
    assert cfg["config_type"] == "filesystem" and "runs" not in cfg
    names = {o["name"]: o for o in cfg["pickable_objects"]}
    assert {"ball", "rod"} <= set(names) and names["ball"]["is_particle"]
    assert len({o["label"] for o in names.values()}) == len(names)
    run = tmp_path / "proj" / "ExperimentRuns" / run_name(1)
    vs = xr.open_zarr(store, group="samples/000001/tomogram", consolidated=False).attrs[
        "pixel_spacing"
    ]
    tomo = run / f"VoxelSpacing{vs:.3f}" / "wbp.zarr"
    zattrs = json.loads((tomo / ".zattrs").read_text())
    assert (
        zattrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [vs] * 3
    )
    assert json.loads((tomo / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    picks = sorted(p.name for p in (run / "Picks").iterdir())
    assert picks == ["faket-dask_0_ball.json", "faket-dask_0_rod.json"]
    assert res["runs"] == 1 and res["picks"] == 2
    with pytest.raises(InputError, match="not empty"):
        export_copick(store, tmp_path / "proj")
    with pytest.raises(InputError, match="not a complete sample"):
        export_copick(store, tmp_path / "other", sample_ids=[7])


_READ = """
import json, sys
import copick
import numpy as np
root = copick.from_file(sys.argv[1])
out = {"objects": {o.name: o.label for o in root.pickable_objects}, "runs": {}}
for run in root.runs:
    vs = run.voxel_spacings[0]
    data = vs.get_tomograms("wbp")[0].numpy()
    mask = run.get_segmentations(is_multilabel=True)[0].numpy()
    picks = {}
    for p in run.get_picks(user_id="faket-dask"):
        picks[p.pickable_object_name] = [
            [pt.location.z, pt.location.y, pt.location.x, pt.instance_id] for pt in p.points
        ]
    out["runs"][run.name] = {
        "voxel_size": vs.voxel_size,
        "shape": list(data.shape),
        "sum": float(np.asarray(data, dtype=np.float64).sum()),
        "mask_sum": int(mask.astype(np.int64).sum()),
        "picks": picks,
    }
print(json.dumps(out))
"""


@pytest.mark.slow
def test_copick_opens_the_project_and_reads_tomograms_and_picks(store, tmp_path):
    python = venv_python("copick", ["copick"], "copick")
    res = export_copick(store, tmp_path / "proj")
    got = json.loads(run_script(python, _READ, str(res["config"])).strip().splitlines()[-1])
    from faket_dask.read.access import open_dataset

    ds = open_dataset(store)
    assert set(got["runs"]) == {run_name(i) for i in ds.ids}
    for sid in ds.ids:
        r = got["runs"][run_name(sid)]
        tomo = ds.sample(sid, "tomogram")
        vs = tomo.attrs["pixel_spacing"]
        assert r["voxel_size"] == pytest.approx(vs)
        assert r["shape"] == list(tomo.tomogram.shape)
        assert r["sum"] == pytest.approx(float(tomo.tomogram.astype("f8").sum()), rel=1e-5)
        assert r["mask_sum"] == int(tomo.class_mask.astype("i8").sum())
        # pick locations: the binned-voxel centre of each particle, re-derived here from the
        # volume-frame table (independent of faket_dask.stages.particles.star_coordinates)
        table = ds.particles(sid)
        b = int(tomo.attrs["bin"])
        nz = int(ds.sample(sid, "volume").sizes["z"])
        zoff = (nz / b - tomo.sizes["z"]) / 2
        for name in ("ball", "rod"):
            sel = table[(table.class_name == name) & (table.kind == "particle")]
            pts = sorted(r["picks"].get(name, []), key=lambda p: p[3])
            assert [p[3] for p in pts] == sorted(sel["id"].tolist())
            sel = sel.sort_values("id")
            expect = (
                np.stack(
                    [
                        (sel.z + 0.5) / b - 0.5 - zoff,
                        (sel.y + 0.5) / b - 0.5,
                        (sel.x + 0.5) / b - 0.5,
                    ],
                    1,
                )
                * vs
            )
            np.testing.assert_allclose(np.array(pts)[:, :3], expect, atol=1e-6)


def test_cli_export_copick(store, tmp_path):
    from faket_dask_cli.main import app
    from typer.testing import CliRunner

    out = tmp_path / "p"
    res = CliRunner().invoke(app, ["export-copick", str(store), "--sample", "0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 runs" in res.output and (out / "copick_config.json").is_file()
    assert sorted(p.name for p in (out / "ExperimentRuns").iterdir()) == [run_name(0)]
