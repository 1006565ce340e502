"""The one JSON conversion: NumPy and torch values keep their values, other objects become str."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from faket_dask.io.jsonable import jsonable


def test_values_survive_and_objects_become_text():
    record = {
        1: np.float32(0.5),
        "a": np.arange(3, dtype=np.int64),
        "t": (torch.tensor(2.0), torch.tensor([1, 2])),
        "p": Path("/x/y"),
        "nan": float("nan"),
        "nested": [{"u": np.uint8(7)}, None, True],
    }
    out = jsonable(record)
    assert out["1"] == 0.5 and out["a"] == [0, 1, 2] and out["t"] == [2.0, [1, 2]]
    assert out["p"] == "/x/y" and math.isnan(out["nan"])
    assert out["nested"] == [{"u": 7}, None, True]
    assert type(out["nested"][0]["u"]) is int
    assert jsonable(json.loads(json.dumps(out, allow_nan=True)))["1"] == 0.5
