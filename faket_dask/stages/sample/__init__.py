"""The sample builder: labeled crowded volumes ("grand models"), drawn once, rendered by slabs.

``spec`` (what a sample is a function of), ``objects`` (what it holds), ``rotation`` (rotated
particles as voxel lists, on the host or a device), ``placement`` (placing particles in batched
rounds on an occupancy grid), ``layout`` (drawing one), ``render``
(rendering rows, particles in batches), ``grand_model`` (importing one), ``slabs`` (rendering
by Y slabs).
"""

from faket_dask.stages.sample.grand_model import GrandModelLayout, import_grand_model
from faket_dask.stages.sample.layout import BUILDER_VERSION, SampleLayout, build_layout
from faket_dask.stages.sample.objects import OCCUPANCY_GRID_BYTES
from faket_dask.stages.sample.slabs import (
    Sample,
    build_sample,
    default_slab_size,
    iter_slabs,
    render_slab,
)
from faket_dask.stages.sample.spec import FIDUCIAL, MEMBRANE, BuildSpec, keyed_rng

__all__ = [
    "BUILDER_VERSION",
    "FIDUCIAL",
    "MEMBRANE",
    "OCCUPANCY_GRID_BYTES",
    "BuildSpec",
    "GrandModelLayout",
    "Sample",
    "SampleLayout",
    "build_layout",
    "build_sample",
    "default_slab_size",
    "import_grand_model",
    "iter_slabs",
    "keyed_rng",
    "render_slab",
]
