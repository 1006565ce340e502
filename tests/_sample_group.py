"""One sample group written the way a worker writes it (tilts, volume, particles), for io tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faket_dask.io import store as st
from faket_dask.io import writers as wr


def write_sample(
    path: Path, sid: int, *, complete: bool = True, dtype: str = "float32"
) -> tuple[np.ndarray, dict[str, str]]:
    """Write sample ``sid`` (tilts 5 x 24 x 20, a volume, two particles); return data, checksums."""
    g = st.prepare_sample(path, sid, {"seed": 1})
    data = np.random.default_rng(sid).normal(size=(5, 24, 20)).astype("f4")
    tw = wr.TiltsWriter(
        g,
        ["styled", "noisy"],
        data.shape,
        np.linspace(-40, 40, 5),
        7.5,
        wr.TiltLayout(dtype=dtype, tilts_per_shard=2, chunk=16),
    )
    tw.write_all("styled", data)
    tw.write_all("noisy", -data)
    sums = tw.checksums()
    sums |= wr.write_grid(
        g,
        "volume",
        {"class_mask": np.zeros((4, 24, 20), "u1"), "instance_mask": np.ones((4, 24, 20), "u4")},
        7.5,
    )
    sums |= wr.write_particles(
        g, {"class_id": np.array([1, 2]), "position_px": np.ones((2, 3))}, star="data_\n"
    )
    if complete:
        st.mark_complete(g, {"checksums": sums})
    return data, sums
