"""CLI verbs for FakET's stages: project, noise fit/apply, style, weights fetch/info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

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
    check_tilt_counts,
    echo_done,
    require_zarr,
    resolve_angles,
)

noise_app = typer.Typer(help="Fit FakET's tilt-dependent noise model and apply it.")
weights_app = typer.Typer(help="VGG-19 weights: download into the cache, show what is there.")


def project(
    volume: Annotated[Path, typer.Argument(help="Volume (Z, Y, X): MRC or Zarr group.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Tilt-series out (MRC/Zarr).")],
    angles: AnglesOpt = None,
    angles_file: AnglesFileOpt = None,
    detector_width: Annotated[
        int | None, typer.Option(help="Detector width W in pixels (default: the volume's X).")
    ] = None,
    pixel_spacing: Annotated[
        float | None, typer.Option(help="Pixel spacing in Å (default: the volume's header).")
    ] = None,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    rows_per_block: Annotated[
        int, typer.Option(help="On a cluster: Y rows of the volume per task.")
    ] = 64,
) -> None:
    """Project a volume to noiseless tilts (FakET's NOISELESS: negated line integrals about Y).

    With a cluster option and Zarr input/output, every Y-slab is projected by its own task.
    """
    from faket_dask.io import TiltSeries, read_volume, write_tilt_series

    tilt_angles = resolve_angles(angles, angles_file, required=True)
    check_output(output, overwrite)
    if scheduler or scheduler_file or cluster_profile:
        require_zarr("projecting", volume, output)
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import project_zarr

        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = project_zarr(
                volume,
                output,
                tilt_angles,
                client,
                detector_width=detector_width,
                pixel_spacing=pixel_spacing,
                rows_per_block=rows_per_block,
                device=device,
                var=var,
                overwrite=overwrite,
            )
        echo_done(output, f"NOISELESS on the cluster in {result['n_blocks']} slabs")
        return
    vol = read_volume(volume, var=var)

    import torch

    from faket_dask.stages.projection import project as project_volume

    from ._common import pick_device

    tensor = torch.from_numpy(vol.data.astype("float32")).to(pick_device(device))
    tilts = project_volume(tensor, tilt_angles, detector_width=detector_width)
    spacing = pixel_spacing if pixel_spacing is not None else vol.pixel_spacing
    series = TiltSeries(tilts.cpu().numpy(), tilt_angles, spacing)
    write_tilt_series(output, series, var="noiseless", overwrite=overwrite)
    echo_done(output, f"{len(tilt_angles)} tilts of {tilts.shape[1]}x{tilts.shape[2]}")


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
    from faket_dask.errors import InputError
    from faket_dask.io import read_tilt_series

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
        ref = read_tilt_series(reference, var=var)
        tilt_angles = resolve_angles(angles, angles_file, fallback=ref.angles_deg, required=True)
        check_tilt_counts({str(reference): ref.data.shape[0], "angles": len(tilt_angles)})

        from faket_dask.stages.noise import fit_noise_model_from_reference

        model = fit_noise_model_from_reference(ref.data, tilt_angles, snr, degree=degree)
    else:
        if not clean or len(clean) != len(noisy):
            raise InputError(
                f"noise fit needs matching --clean/--noisy pairs (got {len(clean)} clean, "
                f"{len(noisy)} noisy), or --reference with --snr"
            )
        pairs = []
        fallback = None
        for c, n in zip(clean, noisy, strict=True):
            cs, ns = read_tilt_series(c, var=var), read_tilt_series(n, var=var)
            check_tilt_counts({str(c): cs.data.shape[0], str(n): ns.data.shape[0]})
            fallback = fallback if fallback is not None else cs.angles_deg
            pairs.append((cs.data, ns.data))
        tilt_angles = resolve_angles(angles, angles_file, fallback=fallback, required=True)
        check_tilt_counts({str(clean[0]): pairs[0][0].shape[0], "angles": len(tilt_angles)})

        from faket_dask.stages.noise import fit_noise_model

        provenance = {"clean": [str(c) for c in clean], "noisy": [str(n) for n in noisy]}
        model = fit_noise_model(pairs, tilt_angles, degree=degree, provenance=provenance)
    model.save(output)
    echo_done(output, f"noise model over {len(tilt_angles)} tilts, degree {degree}")


@noise_app.command("apply")
def noise_apply(
    noiseless: Annotated[Path, typer.Argument(help="Noiseless tilt-series (MRC/Zarr).")],
    model: Annotated[Path, typer.Option("--model", help="noise.json from `noise fit`.")],
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
    """Add FakET's tilt-dependent Gaussian noise: NOISY, CONTENT and BASELINE.

    With a cluster option and Zarr input/outputs, every block of tilts is one task.
    """
    from faket_dask.errors import InputError
    from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series

    if rng not in ("keyed", "faket"):
        raise InputError(f"--rng {rng!r} is not known; use 'keyed' or 'faket'")
    check_output(output, overwrite)
    if content_out is not None:
        check_output(content_out, overwrite)
    main = "baseline" if baseline else "noisy"
    if scheduler or scheduler_file or cluster_profile:
        if rng != "keyed":
            raise InputError("--rng faket draws the whole series in order; use --rng keyed")
        outs = {main: output} | ({"content": content_out} if content_out is not None else {})
        require_zarr("adding noise", noiseless, *outs.values())
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import noise_zarr
        from faket_dask.stages.noise import NoiseModel

        explicit = resolve_angles(angles, angles_file) if (angles or angles_file) else None
        noise_model = NoiseModel.load(model)
        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = noise_zarr(
                noiseless,
                noise_model,
                outs,
                client,
                angles_deg=explicit,
                seed=seed,
                sample_id=sample_id,
                tilts_per_block=tilts_per_block,
                device=device,
                var=var,
                overwrite=overwrite,
            )
        echo_done(output, f"{main.upper()} on the cluster in {result['n_blocks']} blocks")
        return
    series = read_tilt_series(noiseless, var=var)
    tilt_angles = resolve_angles(angles, angles_file, fallback=series.angles_deg, required=True)
    check_tilt_counts({str(noiseless): series.data.shape[0], "angles": len(tilt_angles)})

    import torch

    from faket_dask.stages.noise import NoiseModel, apply_noise

    from ._common import pick_device

    noise_model = NoiseModel.load(model)
    wanted = (main, "content") if content_out is not None else (main,)
    tensor = torch.from_numpy(series.data).to(pick_device(device))
    out = apply_noise(
        tensor,
        noise_model,
        tilt_angles,
        seed=seed,
        sample_id=sample_id,
        rng=rng,
        modalities=wanted,
    )
    for name, path in ((main, output), ("content", content_out)):
        if path is not None:
            result = TiltSeries(out[name].cpu().numpy(), tilt_angles, series.pixel_spacing)
            write_tilt_series(path, result, var=name, overwrite=overwrite)
            echo_done(path, name.upper())


def style(
    content: Annotated[Path, typer.Argument(help="CONTENT tilt-series (MRC/Zarr).")],
    style_ref: Annotated[Path, typer.Option("--style", help="Style reference tilt-series.")],
    init: Annotated[Path, typer.Option("--init", help="Initial image: the NOISY tilt-series.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FAKET tilt-series out.")],
    weights: Annotated[
        str, typer.Option(help="'imagenet' (cached/downloaded), 'random', or a state-dict path.")
    ] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 (exact), tf32 or bf16.")] = "fp32",
    batch: Annotated[int, typer.Option("--batch", help="Tilts per GPU batch.")] = 4,
    content_var: Annotated[str | None, typer.Option(help="Zarr array of CONTENT.")] = None,
    style_var: Annotated[str | None, typer.Option(help="Zarr array of the style.")] = None,
    init_var: Annotated[str | None, typer.Option(help="Zarr array of INIT.")] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    tilts_per_block: TiltsPerBlockOpt = 8,
) -> None:
    """Apply FakET's one-step neural style transfer so the tilts take on the reference's noise.

    With --scheduler, --scheduler-file or --cluster-profile and Zarr inputs, the series is
    styled as a Dask graph over tilt blocks across the cluster (global min/max first).
    """
    from faket_dask.errors import InputError
    from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series

    if precision not in ("fp32", "tf32", "bf16"):
        raise InputError(f"--precision {precision!r} is not known; use fp32, tf32 or bf16")
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1")
    check_output(output, overwrite)
    if scheduler or scheduler_file or cluster_profile:
        require_zarr("styling", content, style_ref, init, output)
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import style_zarr

        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = style_zarr(
                content,
                style_ref,
                init,
                output,
                client,
                weights=weights,
                weights_seed=seed,
                precision=precision,
                batch_size=batch,
                device=device,
                tilts_per_block=tilts_per_block,
                content_var=content_var,
                style_var=style_var,
                init_var=init_var,
                overwrite=overwrite,
            )
        echo_done(output, f"FAKET on the cluster in {result.get('n_blocks', '?')} blocks")
        return
    c = read_tilt_series(content, var=content_var)
    s = read_tilt_series(style_ref, var=style_var)
    i = read_tilt_series(init, var=init_var)
    check_tilt_counts(
        {str(content): c.data.shape[0], str(style_ref): s.data.shape[0], str(init): i.data.shape[0]}
    )
    if c.data.shape != i.data.shape:
        raise InputError(
            f"{content} is {c.data.shape} but {init} is {i.data.shape}; "
            "CONTENT and INIT must have the same shape"
        )

    import torch

    from faket_dask.stages.style import style_transfer
    from faket_dask.stages.style.weights import load_vgg19

    from ._common import pick_device

    dev = pick_device(device)
    model, info = load_vgg19(weights, seed=seed, device=dev)
    out = style_transfer(
        torch.from_numpy(c.data).to(dev),
        torch.from_numpy(s.data).to(dev),
        torch.from_numpy(i.data).to(dev),
        model,
        precision=precision,
        batch_size=batch,
    )
    series = TiltSeries(out.cpu().numpy(), c.angles_deg, c.pixel_spacing)
    write_tilt_series(output, series, var="styled", overwrite=overwrite)
    echo_done(
        output,
        f"FAKET with {info.name} weights" + (f" ({info.sha256[:12]})" if info.sha256 else ""),
    )


@weights_app.command("fetch")
def weights_fetch(
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: torch hub).")
    ] = None,
) -> None:
    """Download torchvision's VGG-19 ImageNet weights (hash-checked) into the cache."""
    from faket_dask.stages.style.weights import IMAGENET_URL, fetch_imagenet

    path = fetch_imagenet(url=url or IMAGENET_URL, cache_dir=cache_dir)
    echo_done(path, "VGG-19 ImageNet weights")


@weights_app.command("info")
def weights_info(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: torch hub).")
    ] = None,
) -> None:
    """Show where the weights cache is and what it holds."""
    from faket_dask.stages.style.weights import weights_info as info

    typer.echo(json.dumps(info(cache_dir=cache_dir), indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add the stage verbs to the app."""
    app.command("project")(project)
    app.command("style")(style)
    app.add_typer(noise_app, name="noise")
    app.add_typer(weights_app, name="weights")
