"""noise.model: calibrated through the real pipeline, scored on a held-out reference.

For each of three `reference synth` microscopes: reference A (style input, and the only thing
the calibration sees) and reference B (held out, another phantom and noise draw). One sample
is simulated by the calibrated model and one by FakET's exact model (its noise model fitted on
A alone at the calibrated SNR, FakET's best guess without a clean image); both are styled by
FakET's style step with random VGG weights, then scored against B beside d(A, B).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _microscopes import MICROSCOPES, synth

from faket_dask import pipeline as pl
from faket_dask.config import config_from_dict
from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io import write_tilt_series
from faket_dask.pipeline.worker_cache import _load_calibration
from faket_dask.read.access import open_dataset
from faket_dask.read.realism import format_table, store_realism, summarize
from faket_dask.stages.calibration import calibrate
from faket_dask.stages.noise import fit_noise_model_from_reference

SIZE = 128
REF_ANGLES = np.arange(-40.0, 41.0, 10.0)
ANGLES = "-40:40:20"


def _store(path: Path, ref: Path, noise: dict, ps: float) -> Path:
    """One sample written in-process the way `generate` writes it (no Dask)."""
    import torch

    cfg = config_from_dict(
        {
            "seed": 4,
            "n_samples": 1,
            "tilts": {"angles": ANGLES, "shape": [SIZE, SIZE], "pixel_spacing": ps},
            "sample": {"thickness": 96},
            "noise": noise,
            "style": {"reference": str(ref), "weights": "random", "batch_size": 3},
            "output": {"modalities": ["styled", "noisy", "noiseless"], "chunk": 64},
        }
    )
    inputs = pl.resolve_inputs(cfg, path)
    st.create_store(path, {"config": cfg.to_dict(), "n_samples": 1, **inputs.to_attrs()})
    inputs = pl.materialize_inputs(inputs, cfg, path)
    st.update_store_attrs(path, **inputs.to_attrs())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = [pl.simulate_sample(pl.SampleSpec(cfg.seed, 0, cfg, str(path), inputs))]
    finally:
        torch.set_num_threads(threads)
    st.write_manifest(path, rows)
    st.consolidate(path)
    return path


def test_without_a_calibration_file_the_style_reference_is_calibrated_at_the_start(tmp_path):
    """`noise: {model: calibrated}` alone: materialize_inputs calibrates style reference A."""
    a, _ = synth("df3", seed=5, size=96, angles=REF_ANGLES)
    write_tilt_series(tmp_path / "A.zarr", a, var="tilts")
    cfg = config_from_dict(
        {
            "tilts": {"angles": ANGLES, "shape": [32, 32], "pixel_spacing": 6.0},
            "noise": {"model": "calibrated"},
            "style": {"reference": str(tmp_path / "A.zarr"), "weights": "random"},
        }
    )
    path = tmp_path / "s.zarr"
    inputs = pl.resolve_inputs(cfg, path)
    assert inputs.noise_models == ({"spec": "calibrated", "source": None},)
    st.create_store(path, {"config": cfg.to_dict(), **inputs.to_attrs()})
    inputs = pl.materialize_inputs(inputs, cfg, path)
    stored = _load_calibration(inputs.noise_models[0]["path"])
    want = calibrate(a.data, a.angles_deg, 6.0)
    assert stored.defocus_um == want.defocus_um and stored.tilts == want.tilts
    assert stored.provenance["source"] == str(tmp_path / "A.zarr")
    off = config_from_dict(
        {
            "noise": {"model": "calibrated"},
            "style": {"enabled": False},
            "output": {"modalities": ["noisy"]},
        }
    )
    with pytest.raises(InputError, match="style is disabled"):
        pl.resolve_inputs(off, tmp_path / "t.zarr")


def _assert_style_histograms(store: Path, a) -> None:
    """FAKET's tilts hold exactly the values of A's tilt at their angle, in their own ranks."""
    tilts = open_dataset(store).sample(0, "tilts")
    assert tilts.attrs["intensity_match"] == "quantiles"
    styled = np.asarray(tilts["styled"].values)
    idx = np.abs(a.angles_deg[None, :] - tilts.tilt_angle.values[:, None]).argmin(axis=1)
    for t, i in enumerate(idx):
        ref = np.sort(np.asarray(a.data[i], dtype=np.float32).ravel())
        np.testing.assert_array_equal(np.sort(styled[t].ravel()), ref)


def _by(table, modality):
    return {r["angle_deg"]: r for r in table if r["modality"] == modality}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MICROSCOPES))
def test_calibrated_tilts_sit_near_a_held_out_reference(name, tmp_path):
    ps = MICROSCOPES[name]["pixel_spacing"]
    a, _ = synth(name, seed=21, size=SIZE, angles=REF_ANGLES)
    b, _ = synth(name, seed=22, size=SIZE, angles=REF_ANGLES)
    write_tilt_series(tmp_path / "A.zarr", a, var="tilts")
    calibration = calibrate(a.data, a.angles_deg, ps)
    cal = calibration.save(tmp_path / "micro.json")
    snr = float(np.median(calibration.snr))
    fit_noise_model_from_reference(a.data, a.angles_deg, snr).save(tmp_path / "noise.json")

    tables = {}
    for kind, noise in (
        ("calibrated", {"model": "calibrated", "calibration": str(cal)}),
        ("faket", {"model": str(tmp_path / "noise.json")}),
    ):
        store = _store(tmp_path / f"{kind}.zarr", tmp_path / "A.zarr", noise, ps)
        tables[kind] = summarize(store_realism(store, b.data, b.angles_deg))
        if kind == "calibrated":
            _assert_style_histograms(store, a)
        print(f"\n{name}, {kind} noise model (ratio = distance to B / d(A, B)):")
        print(format_table(tables[kind]))

    noisy, styled = _by(tables["calibrated"], "noisy"), _by(tables["calibrated"], "styled")
    faket_noisy, faket_styled = _by(tables["faket"], "noisy"), _by(tables["faket"], "styled")
    for angle, row in noisy.items():
        assert row["spectrum_ratio"] <= 1.5, (angle, row)
        assert row["histogram_ratio"] <= 2.0, (angle, row)
        # FakET's white noise cannot have the reference's CTF and MTF
        assert faket_noisy[angle]["spectrum_ratio"] > 2 * row["spectrum_ratio"]
    for angle, row in styled.items():
        # the style step is FakET's, unchanged, between the noise and the detector's MTF: at
        # most 2.5x d(A, B) in spectrum (FakET's exact path: 3-6x at this size), and always
        # less than 0.6x FakET's distance
        assert row["spectrum_ratio"] <= 2.5, (angle, row)
        assert row["spectrum"] < 0.6 * faket_styled[angle]["spectrum"], (angle, row)
        # histogram: FAKET's is style tilt A's (quantile match); the sample's angles are A's,
        # so its distance to B is d(A, B) itself (FakET's exact path: up to 2.2x at this size)
        assert row["histogram"] == pytest.approx(row["histogram_ref"], rel=1e-6), (angle, row)
    # typically as close as two references: the median over the angles within 1.5x
    assert np.median([r["spectrum_ratio"] for r in styled.values()]) <= 1.5
