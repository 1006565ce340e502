"""CLI commands: ``noise fit`` (the tilt-dependent noise model) and ``noise apply``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import (
    AnglesFileOpt,
    AnglesOpt,
    DeviceOpt,
    OverwriteOpt,
    ProfileOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    TiltsPerBlockOpt,
    VarOpt,
    check_output,
    echo_done,
    on_cluster,
    require_zarr,
    resolve_angles,
)

noise_app = typer.Typer(help="Fit FakET's tilt-dependent noise model and apply it.")


@noise_app.command("fit")
def noise_fit(
    output: Annotated[Path, typer.Option("-o", "--output", help="noise.json to write.")],
    clean: Annotated[
        list[Path] | None, typer.Option(help="Noiseless projections of a sample (repeatable).")
    ] = None,
    noisy: Annotated[
        list[Path] | None,
        typer.Option(help="The reference tilt-series of the same sample (pairs with --clean)."),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference-only mode: a real tilt-series (with --snr).")
    ] = None,
    snr: Annotated[
        float | None, typer.Option(help="Reference-only mode: signal-to-noise ratio per tilt.")
    ] = None,
    degree: Annotated[int, typer.Option(help="Polynomial degree over tilt index (FakET: 2).")] = 2,
    angles: AnglesOpt = None,
    angles_file: AnglesFileOpt = None,
    var: VarOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit the tilt-dependent noise model from (clean, reference) pairs or a reference alone."""
    clean, noisy = clean or [], noisy or []
    check_output(output, overwrite)
    if degree < 0:
        raise InputError(f"--degree {degree} is negative; use 0 (BASELINE) or 2 (FakET)")
    if reference is not None:
        if clean or noisy:
            raise InputError(
                "give either --clean/--noisy pairs or --reference with --snr, not both"
            )
        if snr is None:
            raise InputError("--reference needs --snr (the signal-to-noise ratio to assume)")
    elif not clean or len(clean) != len(noisy):
        raise InputError(
            f"noise fit needs matching --clean/--noisy pairs (got {len(clean)} clean, "
            f"{len(noisy)} noisy), or --reference with --snr"
        )
    explicit = resolve_angles(angles, angles_file)
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops import noise

    if reference is not None:
        assert snr is not None
        model = noise.fit_from_reference(
            reference, output, snr, angles_deg=explicit, degree=degree, var=var
        )
    else:
        model = noise.fit_from_pairs(
            clean, noisy, output, angles_deg=explicit, degree=degree, var=var
        )
    echo_done(output, f"noise model over {len(model.angles_deg)} tilts, degree {degree}")


@noise_app.command("apply")
def noise_apply(
    noiseless: Annotated[Path, typer.Argument(help="Noiseless tilt-series (MRC/Zarr).")],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            help="noise.json from `noise fit`, or micro.json from `reference calibrate` "
            "(the calibrated model).",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="NOISY tilt-series out.")],
    content_out: Annotated[
        Path | None, typer.Option(help="Also write CONTENT (same draw at 0.25x sigma) here.")
    ] = None,
    baseline: Annotated[
        bool, typer.Option(help="Write BASELINE (tilt-independent statistics) to -o instead.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the noise draw.")] = 0,
    sample_id: Annotated[int, typer.Option(help="Sample id (keys the random stream).")] = 0,
    rng: Annotated[
        str, typer.Option(help="'keyed' (per-tilt streams) or 'faket' (the reference's draw).")
    ] = "keyed",
    angles: AnglesOpt = None,
    angles_file: AnglesFileOpt = None,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    tilts_per_block: TiltsPerBlockOpt = 8,
) -> None:
    """Add FakET's tilt-dependent Gaussian noise, or the calibrated model: NOISY, CONTENT, BASELINE.

    With a cluster option and Zarr input/outputs, every block of tilts is one task.
    """
    # numpy: loaded when the command runs, so that --help stays fast
    from faket_dask.options import NoiseOptions

    if rng not in ("keyed", "faket"):
        raise InputError(f"--rng {rng!r} is not known; use 'keyed' or 'faket'")
    check_output(output, overwrite, tilts=True)
    if content_out is not None:
        check_output(content_out, overwrite, tilts=True)
    main = "baseline" if baseline else "noisy"
    outs = {main: output} | ({"content": content_out} if content_out is not None else {})
    cluster = on_cluster(scheduler, scheduler_file, cluster_profile)
    if cluster:
        if rng != "keyed":
            raise InputError("--rng faket draws the whole series in order; use --rng keyed")
        require_zarr("adding noise", noiseless, *outs.values())
    opts = NoiseOptions(
        noiseless,
        model,
        outs,
        angles_deg=resolve_angles(angles, angles_file),
        seed=seed,
        sample_id=sample_id,
        rng=rng,
        var=var,
        device=device,
        overwrite=overwrite,
        tilts_per_block=tilts_per_block,
    )
    if cluster:
        # dask: loaded only for a cluster run
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import noise_zarr
        from faket_dask.stages.calibrated_noise import load_noise_model

        load_noise_model(model)  # a bad model is bad input (exit 2) before any cluster is reached
        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = noise_zarr(opts, client)
        echo_done(output, f"{main.upper()} on the cluster in {result['n_blocks']} blocks")
        return
    # torch: loaded only when the command runs
    from faket_dask.ops.noise import apply

    for name, path in apply(opts).items():
        echo_done(path, name.upper())


def register(app: typer.Typer) -> None:
    """Add ``noise fit`` and ``noise apply`` to the app."""
    app.add_typer(noise_app, name="noise")
