"""Tests of stages.style.weights: local files, the hash-checked download path, offline, random."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
import torch

from faket_dask.errors import InputError
from faket_dask.stages.style.vgg import VGG19Features
from faket_dask.stages.style.weights import (
    IMAGENET_HASH_PREFIX,
    IMAGENET_URL,
    clear_model_cache,
    default_cache_dir,
    expected_shapes,
    fetch_imagenet,
    load_vgg19,
    resolve_weights,
    weights_info,
)

pytestmark = pytest.mark.timeout(60)

ALL = (1, 6, 8, 11, 20, 29)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    clear_model_cache()
    yield
    clear_model_cache()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vgg_state(seed: int = 3) -> dict[str, torch.Tensor]:
    state = dict(VGG19Features(seed=seed).state_dict())
    state["classifier.0.weight"] = torch.randn(4, 8)  # a full vgg19 file also has these
    return state


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    path = tmp_path / "my-vgg.pth"
    torch.save(vgg_state(), path)
    return path


def hashed_copy(src_dir: Path, state: dict, prefix: str | None = None) -> Path:
    """Save ``state`` as ``feat-<first 8 hex of its SHA-256>.pth`` (torchvision's naming)."""
    tmp = src_dir / "tmp.pth"
    torch.save(state, tmp)
    digest = sha256(tmp)
    dst = src_dir / f"feat-{prefix or digest[:8]}.pth"
    tmp.rename(dst)
    return dst


def test_constants():
    assert IMAGENET_URL == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert IMAGENET_HASH_PREFIX == "dcbb9e9d"
    assert len(expected_shapes()) == 26


def test_local_state_dict_loads_and_gives_identical_outputs(state_file):
    info = resolve_weights(str(state_file))
    assert info.name == "file" and info.path == str(state_file.resolve())
    assert info.sha256 == sha256(state_file)
    assert set(info.state_dict) == set(expected_shapes())  # classifier key dropped
    model, info2 = load_vgg19(str(state_file))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.weights_id == f"file:{info2.sha256}"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = VGG19Features(seed=3).eval()
    with torch.no_grad():
        got, want = model(x, ALL), ref(x, ALL)
    for k in ALL:
        assert torch.equal(got[k], want[k])


def test_nested_and_legacy_format_files(tmp_path):
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": vgg_state(), "epoch": 3}, nested)
    legacy = tmp_path / "legacy.pth"  # torchvision's 2017 file uses the legacy format
    torch.save(vgg_state(), legacy, _use_new_zipfile_serialization=False)
    want = VGG19Features(seed=3).state_dict()
    for path in (nested, legacy):
        info = resolve_weights(str(path))
        for k, v in want.items():
            assert torch.equal(info.state_dict[k], v), (path, k)


def test_missing_key_wrong_shape_garbage(tmp_path):
    state = vgg_state()
    del state["features.28.bias"]
    missing = tmp_path / "missing.pth"
    torch.save(state, missing)
    with pytest.raises(InputError, match=r"not a VGG-19 state dict: missing features\.28\.bias"):
        resolve_weights(str(missing))

    state = vgg_state()
    state["features.5.weight"] = torch.zeros(128, 64, 1, 1)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(InputError, match=r"features\.5\.weight .* has shape \(128, 64, 1, 1\)"):
        resolve_weights(str(wrong))

    resnet_like = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet_like)
    with pytest.raises(InputError, match=r"missing features\.0\.weight \(and 25 more\)"):
        resolve_weights(str(resnet_like))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="cannot read weights file"):
        resolve_weights(str(garbage))

    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(InputError, match="holds a Tensor"):
        resolve_weights(str(tensor_only))

    with pytest.raises(InputError, match="weights file not found"):
        resolve_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(InputError, match="'imagenet', 'random' or a path"):
        resolve_weights("  ")


class NotWeights:
    """Pickled into a file: weights_only loading must refuse to build it."""


def test_file_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    state = vgg_state()
    state["extra"] = NotWeights()
    torch.save(state, path)
    with pytest.raises(InputError, match="cannot read weights file"):
        resolve_weights(str(path))


def test_error_messages_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(InputError) as err:
        resolve_weights(str(garbage))
    assert "\n" not in str(err.value)


def test_download_through_a_file_url_into_an_empty_cache(tmp_path):
    src = tmp_path / "server"
    src.mkdir()
    cache = tmp_path / "cache"
    path = hashed_copy(src, vgg_state(seed=4))
    url = path.as_uri()
    info = resolve_weights("imagenet", url=url, cache_dir=cache, offline=False)
    cached = cache / path.name
    assert info.name == "imagenet" and info.path == str(cached)
    assert cached.is_file() and info.sha256 == sha256(path)
    assert info.sha256.startswith(path.name.split("-")[1][:8])
    assert [p.name for p in cache.iterdir()] == [path.name]  # no partial files left
    want = VGG19Features(seed=4).state_dict()
    for k, v in want.items():
        assert torch.equal(info.state_dict[k], v)
    # The second time it comes from the cache, even offline and with the source gone.
    path.unlink()
    again = resolve_weights("imagenet", url=url, cache_dir=cache, offline=True)
    assert again.sha256 == info.sha256
    assert fetch_imagenet(url=url, cache_dir=cache, offline=True) == cached


def test_download_with_a_wrong_hash_is_refused(tmp_path):
    src = tmp_path / "server"
    src.mkdir()
    cache = tmp_path / "cache"
    path = hashed_copy(src, vgg_state(), prefix="deadbeef")
    with pytest.raises(InputError, match="failed the hash check"):
        resolve_weights("imagenet", url=path.as_uri(), cache_dir=cache, offline=False)
    assert list(cache.iterdir()) == []  # nothing half-written stays behind


def test_corrupt_cached_file_is_reported(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(vgg_state(), cache / "feat-00000000.pth")
    with pytest.raises(InputError, match="are corrupt"):
        resolve_weights("imagenet", url="file:///x/feat-00000000.pth", cache_dir=cache)


def test_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="offline mode is on") as err:
        resolve_weights("imagenet", cache_dir=cache, offline=True)
    assert time.perf_counter() - t0 < 1.0
    assert IMAGENET_URL in str(err.value) and "FAKET_DASK_WEIGHTS_DIR" in str(err.value)
    monkeypatch.setenv("FAKET_DASK_OFFLINE", "1")
    with pytest.raises(InputError, match="offline mode is on"):
        load_vgg19("imagenet", cache_dir=cache)
    assert not cache.exists()


def test_unreachable_url_is_one_line_error(tmp_path):
    cache = tmp_path / "cache"
    # A closed local port: connection refused at once, no outside network involved.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/vgg19-dcbb9e9d.pth"
    with pytest.raises(InputError, match="cannot download VGG-19 weights") as err:
        fetch_imagenet(url=url, cache_dir=cache, offline=False)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="cannot download"):
        fetch_imagenet(
            url=(tmp_path / "absent-12345678.pth").as_uri(), cache_dir=cache, offline=False
        )


def test_silent_server_times_out_instead_of_hanging(tmp_path):
    """A server that accepts the connection but never answers: the timeout ends the wait."""
    before = socket.getdefaulttimeout()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/vgg19-dcbb9e9d.pth"
        t0 = time.perf_counter()
        with pytest.raises(InputError, match="cannot download"):
            fetch_imagenet(url=url, cache_dir=tmp_path / "cache", offline=False, timeout=0.5)
        assert time.perf_counter() - t0 < 10
    assert socket.getdefaulttimeout() == before  # restored


def test_cache_dir_env_and_weights_info(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKET_DASK_WEIGHTS_DIR", str(tmp_path / "w"))
    assert default_cache_dir() == tmp_path / "w"
    monkeypatch.delenv("FAKET_DASK_WEIGHTS_DIR")
    assert default_cache_dir() == Path(torch.hub.get_dir()) / "checkpoints"

    src = tmp_path / "server"
    src.mkdir()
    path = hashed_copy(src, vgg_state())
    report = weights_info(src)
    assert report["cache_dir"] == str(src) and report["imagenet_cached"] is False
    assert report["files"] == [
        {"name": path.name, "size": path.stat().st_size, "sha256": sha256(path)}
    ]
    assert weights_info(tmp_path / "missing")["files"] == []


def test_random_weights_reproducible_by_seed():
    a = resolve_weights("random", seed=1)
    b = resolve_weights("RANDOM", seed=1)
    c = resolve_weights("random", seed=2)
    assert a.name == "random" and a.path is None and a.sha256 is None and a.seed == 1
    assert a.weights_id == "random:1"
    assert a.to_attrs() == {"name": "random", "path": None, "sha256": None, "seed": 1}
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])
    assert not torch.equal(a.state_dict["features.0.weight"], c.state_dict["features.0.weight"])


def test_load_vgg19_loads_once_per_key():
    m1, i1 = load_vgg19("random", seed=1)
    m2, _ = load_vgg19("random", seed=1)
    m3, _ = load_vgg19("random", seed=2)
    assert m1 is m2 and m1 is not m3
    assert m1.weights_id == "random:1" and i1.seed == 1
    assert str(next(m1.parameters()).device) == "cpu"
