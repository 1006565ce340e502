"""CLI commands: ``sample build`` (a labeled volume and its particle table, no tilts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OverwriteOpt, echo_done

sample_app = typer.Typer(help="Labeled samples: volumes with class/instance masks and particles.")


def build(
    config: Annotated[Path, typer.Option("-c", "--config", help="Simulation config (YAML).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Sample store to write (.zarr).")],
    seed: Annotated[int | None, typer.Option(help="Dataset seed (default: the config's).")] = None,
    sample_id: Annotated[
        int, typer.Option("--sample-id", help="Sample id within the dataset.")
    ] = 0,
    export_star: Annotated[
        Path | None, typer.Option(help="Also write the particles as a RELION STAR file.")
    ] = None,
    star_frame: Annotated[
        str, typer.Option(help="STAR coordinates: volume, tomogram (binned) or relion5 (Å).")
    ] = "volume",
    export_csv: Annotated[
        Path | None, typer.Option(help="Also write the whole table (all objects) as CSV.")
    ] = None,
    export_shrec: Annotated[
        Path | None, typer.Option(help="Also write SHREC-style particle_locations.txt.")
    ] = None,
    density: Annotated[bool, typer.Option(help="Store the density (masks always).")] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build one sample (volume, class mask, instance mask, particle table) into a Zarr store."""
    from faket_dask.config import load_config
    from faket_dask.errors import InputError
    from faket_dask.stages.particles import STAR_FRAMES

    if output.suffix.lower() != ".zarr":
        raise InputError(f"{output}: a sample store must end in .zarr")
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite or choose another output")
    if star_frame not in STAR_FRAMES:
        raise InputError(f"--star-frame {star_frame!r} is not known; use {', '.join(STAR_FRAMES)}")
    if (seed is not None and seed < 0) or sample_id < 0:
        raise InputError("--seed and --sample-id must be non-negative")
    for extra in (export_star, export_csv, export_shrec):
        if extra is not None:
            if extra.exists() and not overwrite:
                raise InputError(f"{extra} exists; pass --overwrite or choose another path")
            if not extra.parent.is_dir():
                raise InputError(f"output folder {extra.parent} does not exist; create it first")
    cfg = load_config(config)

    from faket_dask import __version__
    from faket_dask.ops.sample_build import write_sample_store
    from faket_dask.stages.particles import StarGeometry, to_csv, to_shrec, to_star
    from faket_dask.stages.sample import BuildSpec, build_layout

    spec = BuildSpec.from_config(cfg, sample_id, seed=seed, base_dir=config.resolve().parent)
    layout = build_layout(spec)
    attrs = {
        "version": __version__,
        "seed": spec.seed,
        "sample_id": spec.sample_id,
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
    }
    write_sample_store(output, layout, attrs=attrs, save_density=density, overwrite=overwrite)
    table = layout.particles
    n_part = int((table["kind"] == "particle").sum())
    echo_done(output, f"{'x'.join(map(str, layout.shape))} volume, {n_part} particles")
    if export_star is not None:
        where = StarGeometry(
            layout.shape,
            layout.pixel_spacing,
            star_frame,
            bin=cfg.reconstruction.bin,
            tomogram_thickness=cfg.reconstruction.thickness,
            tomo_name=f"sample_{spec.sample_id:06d}",
        )
        to_star(table, export_star, where)
        echo_done(export_star, f"STAR ({star_frame} frame), {n_part} particles")
    if export_csv is not None:
        to_csv(table, export_csv)
        echo_done(export_csv, f"CSV, {len(table)} objects")
    if export_shrec is not None:
        to_shrec(table, export_shrec)
        echo_done(export_shrec, f"particle_locations, {len(table)} objects")


def register(app: typer.Typer) -> None:
    """Add ``sample build`` to the app."""
    sample_app.command("build")(build)
    app.add_typer(sample_app, name="sample")
