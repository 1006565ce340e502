"""The stages: tensors and arrays in, tensors and arrays out; no Dask, Zarr or printing."""
