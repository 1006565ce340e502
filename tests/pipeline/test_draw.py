"""The per-sample draw: keyed by (seed, sample id), covering the options, stored as JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
from _generate_helpers import tiny_config

from faket_dask import pipeline as pl
from faket_dask.angles import parse_angles

pytestmark = pytest.mark.timeout(60)


def _spec(cfg, inputs, sid):
    return pl.SampleSpec(cfg.seed, sid, cfg, "x", inputs)


def test_draws_are_keyed_recorded_and_cover_the_options():
    cfg = tiny_config(
        tilts={
            "angle_choices": ["-40:40:40", "-30:30:15"],
            "misalignment_px": 1.0,
            "tilt_axis_deg": [-2.0, 3.0],
        },
        noise={"snr": [0.1, 0.5]},
    )
    inputs = pl.SharedInputs(style_references=({}, {}, {}), noise_models=({}, {}))
    draws = [pl.draw(_spec(cfg, inputs, i)) for i in range(40)]
    assert draws[3] == pl.draw(_spec(cfg, inputs, 3))  # a pure function of (seed, id)
    assert draws[3] != draws[4]
    assert {d.angles_choice for d in draws} == {0, 1}
    assert {d.style_reference for d in draws} == {0, 1, 2}
    assert {d.noise_model for d in draws} == {0, 1}
    assert all(0.1 <= d.snr <= 0.5 and -2 <= d.tilt_axis_deg <= 3 for d in draws)
    assert all(len(d.shifts_px) == len(d.angles) for d in draws)
    other_seed = cfg.model_copy(update={"seed": 8})
    assert pl.draw(_spec(other_seed, inputs, 3)) != draws[3]
    # the stored record: JSON as it is, fields in order, the angles those of the chosen spec
    record = draws[3].to_dict()
    assert json.loads(json.dumps(record)) == record
    assert list(record) == [f.name for f in dataclasses.fields(pl.SampleDraw)]
    assert record["angles"] == parse_angles(record["angles_spec"]).tolist()
    with pytest.raises(dataclasses.FrozenInstanceError):
        draws[3].snr = 1.0
