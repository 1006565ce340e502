"""simulate_sample without Dask: draws, the stored sample, determinism, options."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from _generate_helpers import tiny_config

from faket_dask import pipeline as pl
from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io.writers import array_checksum
from faket_dask.pipeline import simulate as sim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Compute like the workers do (one torch thread each), so the bytes compare across runs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _setup(cfg, path):
    inputs = pl.resolve_inputs(cfg, path)
    st.create_store(path, {"config": cfg.to_dict()})
    return pl.materialize_inputs(inputs, cfg, path)


def _spec(cfg, path, inputs, sid=0):
    return pl.SampleSpec(cfg.seed, sid, cfg, str(path), inputs)


def test_sample_written_checksummed_and_not_recomputed(tmp_path):
    cfg = tiny_config(
        output={
            "modalities": ["styled", "noisy", "content", "baseline", "noiseless"],
            "dtype": "float16",
            "save_density": True,
        },
        reconstruction={"enabled": True, "bin": 2},
    )
    path = tmp_path / "p.zarr"
    inputs = _setup(cfg, path)
    summary = pl.simulate_sample(_spec(cfg, path, inputs, 2))
    assert summary["status"] == "ok" and st.is_complete(path, 2)
    g = f"samples/{2:06d}"
    tilts = xr.open_zarr(path, group=f"{g}/tilts", consolidated=False)
    assert tilts.styled.dtype == np.float16
    for m in ("styled", "noisy", "content", "baseline", "noiseless"):
        assert summary["checksums"][f"tilts/{m}"] == array_checksum(tilts[m].values)
    vol = xr.open_zarr(path, group=f"{g}/volume", consolidated=False)
    assert summary["checksums"]["volume/instance_mask"] == array_checksum(
        vol.instance_mask.values
    )
    assert vol.density.shape == (8, 16, 16)
    tomo = xr.open_zarr(path, group=f"{g}/tomogram", consolidated=False)
    assert tomo.tomogram.shape == tomo.class_mask.shape == (4, 8, 8)
    assert tomo.attrs["pixel_spacing"] == 40.0 and tomo.attrs["source"] == "styled"
    # the sample's attrs hold the summary; a second run returns it without recomputing
    again = pl.simulate_sample(_spec(cfg, path, inputs, 2))
    assert again["reused"] is True and again["checksums"] == summary["checksums"]


def test_same_sample_same_bytes_in_two_stores_and_incomplete_replaced(tmp_path):
    cfg = tiny_config(tilts={"misalignment_px": 0.7, "tilt_axis_deg": 4.0})
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    ia, ib = _setup(cfg, a), _setup(cfg, b)
    sa = pl.simulate_sample(_spec(cfg, a, ia, 1))
    # stray partial state from a dead worker is removed before the sample is written
    g = st.prepare_sample(b, 1, {"seed": 0})
    g.create_group("tilts")
    (b / "samples" / "000001" / "x.abc.partial").write_text("torn")
    sb = pl.simulate_sample(_spec(cfg, b, ib, 1))
    assert sa["checksums"] == sb["checksums"]
    assert not (b / "samples" / "000001" / "x.abc.partial").exists()
    tilts = xr.open_zarr(b, group="samples/000001/tilts", consolidated=False)
    np.testing.assert_allclose(tilts.shift_x_px.values, np.array(sb["drew"]["shifts_px"])[:, 1])
    assert tilts.attrs["tilt_axis_deg"] == 4.0


def test_snr_override_and_reference_tilt_matching():
    from faket_dask.stages.noise import fit_noise_model_from_reference

    angles = np.array([-40.0, 0.0, 40.0])
    ref = np.random.default_rng(0).normal(size=(3, 16, 16)) + 5
    model = fit_noise_model_from_reference(ref, angles, 1.0)
    r, sigma, mean, _ = sim._with_snr(model, 3.0).curves(angles)
    np.testing.assert_allclose(r, np.sqrt(3 / 4))
    np.testing.assert_allclose(sigma, np.sqrt(1 / 4))
    np.testing.assert_allclose(mean, model.curves(angles)[2])
    _, idx = sim._style_stack(ref, np.array([-45.0, -1.0, 2.0]), np.array([-40.0, 0.0, 3.0]))
    assert idx.tolist() == [0, 1, 2]
    _, idx = sim._style_stack(ref, np.array([-45.0, -1.0, 2.0]), np.array([1.5, 1.5, -50.0]))
    assert idx.tolist() == [2, 2, 0]
    with pytest.raises(InputError, match="no angles"):
        sim._style_stack(ref, None, np.array([0.0, 1.0]))


def test_fault_hook(tmp_path):
    cfg = tiny_config()
    spec = pl.SampleSpec(0, 4, cfg, str(tmp_path), fault="fail:4,5")
    with pytest.raises(RuntimeError, match="injected failure of sample 4"):
        pl.simulate_sample(spec)


def test_slab_by_slab_equals_whole_rendering(tmp_path):
    import torch

    from faket_dask.stages.projection import project
    from faket_dask.stages.sample import BuildSpec, build_sample

    cfg = tiny_config(
        tilts={"shape": [260, 32]},
        sample={"thickness": 8, "slab_size": 130},  # slabs of 128 rows: 128 + 128 + 4
        style={"enabled": False},
        output={"modalities": ["noiseless"], "save_density": True},
    )
    path = tmp_path / "s.zarr"
    inputs = _setup(cfg, path)
    summary = pl.simulate_sample(_spec(cfg, path, inputs, 0))
    whole = build_sample(BuildSpec.from_config(cfg, 0, seed=cfg.seed))
    vol = xr.open_zarr(path, group="samples/000000/volume", consolidated=False)
    np.testing.assert_array_equal(vol.instance_mask.values, whole.instance_mask)
    np.testing.assert_array_equal(vol.density.values, whole.density)
    assert summary["checksums"]["volume/class_mask"] == array_checksum(whole.class_mask)
    tilts = xr.open_zarr(path, group="samples/000000/tilts", consolidated=False)
    angles = np.array(summary["drew"]["angles"])
    expected = project(torch.from_numpy(whole.density), angles, detector_width=32).numpy()
    np.testing.assert_array_equal(tilts.noiseless.values, expected)


def test_particle_mixes_are_drawn_recorded_and_applied(tmp_path):
    """Each sample draws one particle mix; counts follow it and class ids stay the same."""
    mixes = [{"ball": 3, "rod": 0}, {"ball": 0, "rod": 2}]
    cfg = tiny_config(sample={"mixes": mixes})
    inputs = pl.SharedInputs(style_references=({},), noise_models=({},))
    draws = [pl.draw(_spec(cfg, "x", inputs, i)) for i in range(12)]
    assert {d.particle_mix for d in draws} == {0, 1}
    without = tiny_config()
    assert pl.draw(_spec(without, "x", inputs, 5)).particle_mix is None
    path = tmp_path / "m.zarr"
    real_inputs = _setup(cfg, path)
    for sid in (draws.index(next(d for d in draws if d.particle_mix == m)) for m in (0, 1)):
        summary = pl.simulate_sample(_spec(cfg, path, real_inputs, sid))
        mix = mixes[summary["drew"]["particle_mix"]]
        table = xr.open_zarr(path, group=f"samples/{sid:06d}/particles", consolidated=False)
        cats = table["class_name"].attrs["categories"]  # strings are stored as codes
        names = [cats[code] for code in table["class_name"].values]
        vol = xr.open_zarr(path, group=f"samples/{sid:06d}/volume", consolidated=False)
        ids = set(np.unique(vol.instance_mask.values)) - {0}
        assert len(ids) == sum(mix.values()), (mix, ids)
        assert names.count("ball") == mix["ball"] and names.count("rod") == mix["rod"]


def test_deterministic_switch_is_recorded_and_harmless_on_cpu(tmp_path):
    """``style.deterministic`` only changes CUDA kernels: on CPU the bytes stay the same."""
    plain, strict = tiny_config(), tiny_config(style={"deterministic": True})
    assert plain.digest() != strict.digest()
    sums = []
    for name, cfg in (("a", plain), ("b", strict)):
        path = tmp_path / f"{name}.zarr"
        sums.append(pl.simulate_sample(_spec(cfg, path, _setup(cfg, path), 1))["checksums"])
    assert sums[0] == sums[1]
    with pl.deterministic_mode(True, "cpu"):
        import torch

        assert not torch.are_deterministic_algorithms_enabled()


def test_samples_in_threads_of_one_process_match_the_serial_bytes(tmp_path):
    """A worker with several threads runs samples side by side; its bytes are the serial ones."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = tiny_config(
        # slabs are whole multiples of 128 rows: 3 slabs, for read-ahead and queued writes
        tilts={"shape": [384, 16]},
        sample={"thickness": 8, "slab_size": 128},
        style={"deterministic": True},  # on a GPU: the contract's bit-for-bit mode
        output={"save_volume": True},
        reconstruction={"enabled": True, "bin": 2},
    )
    serial, threaded = tmp_path / "serial.zarr", tmp_path / "threads.zarr"
    i_serial, i_threaded = _setup(cfg, serial), _setup(cfg, threaded)
    ids = range(4)
    expected = {sid: pl.simulate_sample(_spec(cfg, serial, i_serial, sid)) for sid in ids}

    def run(sid: int) -> dict:
        return pl.simulate_sample(_spec(cfg, threaded, i_threaded, sid))

    with ThreadPoolExecutor(3) as pool:
        got = dict(zip(ids, pool.map(run, ids), strict=True))
    for sid in ids:
        assert got[sid]["checksums"] == expected[sid]["checksums"]
        assert got[sid]["stats"] == expected[sid]["stats"]
        assert list(got[sid]["stats"]) == list(cfg.output.modalities)
        assert st.is_complete(threaded, sid)
        assert got[sid]["timings"]["writer_busy"] > 0


def test_a_failed_background_write_fails_the_sample_unmarked(tmp_path, monkeypatch):
    cfg = tiny_config()
    path = tmp_path / "w.zarr"
    inputs = _setup(cfg, path)
    real = sim._save_stack

    def disk_full(writer, name, data):
        if name == "noisy":
            raise OSError(28, "No space left on device")
        return real(writer, name, data)

    monkeypatch.setattr(sim, "_save_stack", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pl.simulate_sample(_spec(cfg, path, inputs, 0))
    assert not st.is_complete(path, 0)
    monkeypatch.setattr(sim, "_save_stack", real)
    again = pl.simulate_sample(_spec(cfg, path, inputs, 0))  # a retry rewrites it whole
    assert again["status"] == "ok" and st.is_complete(path, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sample_repeats_bit_for_bit_when_deterministic_and_tracks_the_cpu(tmp_path):
    cfg = tiny_config(
        tilts={"shape": [64, 64]},
        sample={"thickness": 16},
        style={"device": "cuda", "deterministic": True},
    )
    runs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.zarr"
        runs.append(pl.simulate_sample(_spec(cfg, path, _setup(cfg, path), 3)))
    assert runs[0]["device"] == "cuda"
    assert runs[0]["checksums"] == runs[1]["checksums"]
    cpu_cfg = cfg.model_copy(update={"style": cfg.style.model_copy(update={"device": "cpu"})})
    path = tmp_path / "cpu.zarr"
    cpu = pl.simulate_sample(_spec(cpu_cfg, path, _setup(cpu_cfg, path), 3))
    assert cpu["checksums"]["particles/id"] == runs[0]["checksums"]["particles/id"]
    a = xr.open_zarr(tmp_path / "a.zarr", group="samples/000003/tilts", consolidated=False)
    c = xr.open_zarr(path, group="samples/000003/tilts", consolidated=False)
    np.testing.assert_allclose(a.noiseless.values, c.noiseless.values, rtol=1e-4, atol=1e-4)
    diff = np.abs(a.styled.values - c.styled.values).mean() / c.styled.values.std()
    assert diff <= 0.015  # the TF32-level target
