"""`faket-dask reference calibrate`, `noise.model: calibrated` and `faket-dask realism`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import assert_one_line_exit_2, run_cli, run_cli_checked
from _tiny_store import make_store

from faket_dask.io.store import read_store_attrs
from faket_dask.stages.calibration import Calibration


def _synth(out: Path, *extra: object) -> None:
    proc = run_cli("reference", "synth", "-o", out, *extra)  # in-process: fixtures only
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    common = ("--shape", "128", "128", "--angles=-40:40:10", "--pixel-spacing", "6")
    _synth(d / "A.mrc", *common, "--defocus", "3", "--seed", "1")
    # for the tiny store (16 x 16 tilts at 20 Å/px): its calibration and a held-out series
    tiny = ("--pixel-spacing", "20", "--defocus", "4", "--dose", "60")
    _synth(d / "T.mrc", "--shape", "64", "64", "--angles=-40:40:20", *tiny, "--seed", "2")
    _synth(d / "H.mrc", "--shape", "16", "16", "--angles=-40:40:40", *tiny, "--seed", "3")
    return d


def test_calibrate_writes_the_microscope(refs, tmp_path):
    out = tmp_path / "micro.json"
    proc = run_cli_checked("reference", "calibrate", refs / "A.mrc", "-o", out, "--cs", "2.7")
    assert "defocus " in proc.stdout and "µm" in proc.stdout and "SNR" in proc.stdout
    cal = Calibration.load(out)
    assert cal.defocus_um == pytest.approx(3.0, rel=0.05)
    assert cal.pixel_spacing == pytest.approx(6.0)  # from the MRC header
    assert cal.given == ("voltage_kv", "cs_mm", "amplitude_contrast")
    assert len(cal.tilts) == 9
    record = json.loads((refs / "A.synth.json").read_text())
    truth = record["truth"]["snr"]
    assert all(abs(t.snr / s - 1) < 0.3 for t, s in zip(cal.tilts, truth, strict=True))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("-o", "micro.txt"), "name it .json"),
        (("-o", "m.json", "--amplitude-contrast", "1.5"), "--amplitude-contrast"),
        (("-o", "m.json", "--voltage", "-3"), "--voltage"),
    ],
)
def test_calibrate_bad_input_exits_2(refs, tmp_path, args, needle):
    args = tuple(str(tmp_path / a) if a.endswith(("json", "txt")) else a for a in args)
    assert_one_line_exit_2(run_cli("reference", "calibrate", refs / "A.mrc", *args), needle)


def test_calibrated_config_errors_are_one_line(refs, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("noise: {model: calibrated, snr: 2.0}\n")
    proc = run_cli("generate", "-c", cfg, "-o", tmp_path / "s.zarr")
    assert_one_line_exit_2(proc, "measures the SNR")
    cfg.write_text(f"noise: {{calibration: {refs / 'x.json'}}}\n")
    assert_one_line_exit_2(run_cli("generate", "-c", cfg, "-o", tmp_path / "s.zarr"), "calibrated")
    cfg.write_text("noise: {intensity_match: quantiles}\n")
    proc = run_cli("generate", "-c", cfg, "-o", tmp_path / "s.zarr")
    assert_one_line_exit_2(proc, "intensity_match needs noise.model: calibrated")


def test_realism_of_a_calibrated_store_on_held_out_tilts(refs, tmp_path_factory, tmp_path):
    micro = tmp_path / "tiny.json"
    assert run_cli("reference", "calibrate", refs / "T.mrc", "-o", micro).returncode == 0
    store = make_store(
        tmp_path_factory.mktemp("stores"),
        n=1,
        noise={"model": "calibrated", "calibration": str(micro)},
    )
    out = tmp_path / "realism.json"
    proc = run_cli_checked("realism", store, "--heldout", refs / "H.mrc", "--json", out)
    assert "d(A,B)" in proc.stdout and "texture" in proc.stdout
    rows = json.loads(out.read_text())
    mods = {r["modality"] for r in rows}
    assert {"styled", "noisy", "baseline", "noiseless"} <= mods
    assert {r["angle_deg"] for r in rows} == {-40.0, 0.0, 40.0}
    for r in rows:
        assert r["spectrum_ratio"] == pytest.approx(r["spectrum"] / r["spectrum_ref"])
    # noise model provenance: the calibration landed in the store's inputs
    model = read_store_attrs(store)["noise_models"][0]
    assert model["spec"] == "calibrated" and model["source"] == str(micro)
    stored = json.loads((Path(model["path"]) / "zarr.json").read_text())["attributes"]
    assert Calibration.model_validate(stored["calibration"]) == Calibration.load(micro)
    # which transfer was applied is recorded with the tilts: the detector last
    tilts = json.loads((store / "samples" / "000000" / "tilts" / "zarr.json").read_text())
    assert "last" in tilts["attributes"]["transfer"]["detector"]
    assert tilts["attributes"]["intensity_match"] == "quantiles"  # the calibrated default
    assert_one_line_exit_2(run_cli("realism", tmp_path, "--heldout", refs / "H.mrc"), "store")
    # the report's section: the same table
    page = tmp_path / "report.html"
    proc = run_cli("report", store, "-o", page, "--heldout", refs / "H.mrc")
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    assert "Realism on held-out reference tilts" in html
    first = next(r for r in rows if r["modality"] == "styled")
    assert f"{first['spectrum']:.3f}" in html
