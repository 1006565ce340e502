"""Realism on held-out references: the calibrated noise model beside FakET's exact model.

For each of three `reference synth` microscopes (tests/_microscopes.py: defocus 1.5/3/5 µm,
dose, pixel spacing, MTF, thickness): reference A (style input; the calibration sees only it)
and reference B (held out). One sample per noise model is simulated through the real pipeline
(in-process, no Dask) and styled by FakET's step with random VGG weights; each modality is
scored against B per tilt angle beside d(A, B) (faket_dask.read.realism). The calibrated model
runs twice: FAKET's intensities matched to the style tilts by quantiles (the default) and by
moments (mean and std, as FakET). Writes the JSON of
every row and, for one microscope, a PNG of the radially averaged spectra.

    python benchmarks/bench_realism.py [--size 256] [--json out.json] [--png spectra.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _microscopes import MICROSCOPES, synth

from faket_dask.config import config_from_dict
from faket_dask.io import store as st
from faket_dask.io import write_tilt_series
from faket_dask.pipeline import materialize_inputs, resolve_inputs, simulate_sample
from faket_dask.pipeline.draw import SampleSpec
from faket_dask.read.access import open_dataset
from faket_dask.read.metrics import radial_power_spectrum
from faket_dask.read.realism import format_table, store_realism, summarize
from faket_dask.stages.calibration import calibrate
from faket_dask.stages.noise import fit_noise_model_from_reference

REF_ANGLES = np.arange(-50.0, 51.0, 10.0)


def one_store(path: Path, ref: Path, noise: dict, ps: float, size: int) -> Path:
    """One sample written in-process the way `generate` writes it."""
    cfg = config_from_dict(
        {
            "seed": 4,
            "n_samples": 1,
            "tilts": {"angles": "-50:50:10", "shape": [size, size], "pixel_spacing": ps},
            "sample": {"thickness": 96},
            "noise": noise,
            "style": {"reference": str(ref), "weights": "random", "batch_size": 4},
            "output": {"modalities": ["styled", "noisy", "noiseless"], "chunk": 128},
        }
    )
    inputs = resolve_inputs(cfg, path)
    st.create_store(path, {"config": cfg.to_dict(), "n_samples": 1, **inputs.to_attrs()})
    inputs = materialize_inputs(inputs, cfg, path)
    st.update_store_attrs(path, **inputs.to_attrs())
    rows = [simulate_sample(SampleSpec(cfg.seed, 0, cfg, str(path), inputs))]
    st.write_manifest(path, rows)
    st.consolidate(path)
    return path


def microscope(name: str, size: int, tmp: Path) -> dict:
    """Both noise models for one microscope: rows, calibration figures, spectra at 0°."""
    ps = MICROSCOPES[name]["pixel_spacing"]
    a, truth = synth(name, seed=21, size=size, angles=REF_ANGLES)
    b, _ = synth(name, seed=22, size=size, angles=REF_ANGLES)
    write_tilt_series(tmp / f"{name}_A.zarr", a, var="tilts")
    cal = calibrate(a.data, a.angles_deg, ps)
    cal.save(tmp / f"{name}.json")
    snr = float(np.median(cal.snr))
    fit_noise_model_from_reference(a.data, a.angles_deg, snr).save(tmp / f"{name}_noise.json")
    out: dict = {
        "microscope": {"name": name, **MICROSCOPES[name]},
        "calibration": {
            "defocus_um": cal.defocus_um,
            "ring_score": cal.ring_score,
            "snr_over_truth": (cal.snr / truth["snr"]).tolist(),
            "thickness_mfp": cal.tilt_dependence["thickness_mfp"],
        },
        "tables": {},
        "spectra": {},
    }
    t0 = int(np.abs(REF_ANGLES).argmin())
    out["spectra"]["reference B"] = radial_power_spectrum(b.data[t0])[1].tolist()
    for kind, noise in (
        ("calibrated", {"model": "calibrated", "calibration": str(tmp / f"{name}.json")}),
        (
            "calibrated moments",
            {"model": "calibrated", "calibration": str(tmp / f"{name}.json"),
             "intensity_match": "moments"},
        ),
        ("faket", {"model": str(tmp / f"{name}_noise.json")}),
    ):
        t = time.perf_counter()
        store = one_store(tmp / f"{name}_{kind}.zarr", tmp / f"{name}_A.zarr", noise, ps, size)
        out["tables"][kind] = summarize(store_realism(store, b.data, b.angles_deg))
        tilts = open_dataset(store).sample(0, "tilts")
        # only FAKET differs between the two calibrated runs
        for m in ("styled",) if kind == "calibrated moments" else ("noisy", "styled"):
            out["spectra"][f"{kind} {m}"] = radial_power_spectrum(tilts[m].values[t0])[1].tolist()
        took = time.perf_counter() - t
        print(f"\n{name} {kind} ({took:.0f} s):\n" + format_table(out["tables"][kind]), flush=True)
    out["spectra"]["freq"] = radial_power_spectrum(b.data[t0])[0].tolist()
    return out


def plot(result: dict, png: Path) -> None:
    """The radially averaged spectra at 0° of one microscope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = result["spectra"]
    ps = result["microscope"]["pixel_spacing"]
    f = np.asarray(sp["freq"]) / ps
    fig, ax = plt.subplots(figsize=(8, 4.5))
    style = {
        "reference B": ("k", 2.0),
        "faket noisy": ("tab:red", 1.0),
        "faket styled": ("tab:orange", 1.0),
        "calibrated noisy": ("tab:blue", 1.0),
        "calibrated styled": ("tab:green", 1.0),
        "calibrated moments styled": ("tab:olive", 1.0),
    }
    label = {
        "reference B": "held-out reference B",
        "faket noisy": "NOISY (FakET exact)",
        "faket styled": "FAKET (FakET exact)",
        "calibrated noisy": "NOISY (calibrated)",
        "calibrated styled": "FAKET (calibrated, quantiles)",
        "calibrated moments styled": "FAKET (calibrated, moments)",
    }
    for k, (c, lw) in style.items():
        ax.semilogy(f[1:], np.asarray(sp[k])[1:], color=c, lw=lw, label=label[k])
    m = result["microscope"]
    ax.set_title(
        f"radially averaged power spectra at 0°: {m['defocus_um']} µm defocus, {ps:g} Å/px, "
        f"random VGG weights",
        fontsize=10,
    )
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("power")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--png-microscope", default="df3")
    args = p.parse_args()
    results = []
    with TemporaryDirectory() as tmp:
        for name in sorted(MICROSCOPES):
            results.append(microscope(name, args.size, Path(tmp)))
    if args.json:  # the tables and calibration figures; the spectra only go into the PNG
        slim = [{k: v for k, v in r.items() if k != "spectra"} for r in results]
        args.json.write_text(json.dumps(slim, indent=1) + "\n")
    if args.png:
        plot(next(r for r in results if r["microscope"]["name"] == args.png_microscope), args.png)


if __name__ == "__main__":
    main()
