"""VGG-19 weights: torchvision's ImageNet file (cached, hash-checked), a local file, or random.

A weights *spec* is one of:

``"imagenet"``
    torchvision's ``vgg19-dcbb9e9d.pth`` (IMAGENET1K_V1, 548 MB, FakET's FAKET modality). It is
    looked up in the cache directory (``$FAKET_DASK_WEIGHTS_DIR``, else torch hub's
    ``checkpoints`` directory, where torchvision keeps it too) and downloaded there when
    missing. The download is checked against the 8 hex digits of SHA-256 in the file name
    (torchvision's convention). With ``FAKET_DASK_OFFLINE=1`` (or ``offline=True``) nothing is
    downloaded: a missing file is an immediate error that says how to supply it.
``"random"``
    :func:`faket_dask.stages.style.vgg.random_init` under ``seed`` (FakET's FAKET_RANDOM ablation).
a path
    A local state dict (torchvision's ``vgg19-*.pth`` or any file with the same
    ``features.N.weight``/``features.N.bias`` keys, plain or nested under ``"state_dict"``),
    for clusters without internet. Classifier keys are ignored. Loaded with
    ``weights_only=True``, so a file cannot run code.

Every failure is an :class:`~faket_dask.errors.InputError` with a one-line message; a
download never hangs longer than ``timeout`` seconds per network operation.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import re
import socket
import threading
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from faket_dask.errors import InputError
from faket_dask.stages.style.vgg import VGG19Features, random_init

__all__ = [
    "IMAGENET_HASH_PREFIX",
    "IMAGENET_URL",
    "WeightsInfo",
    "clear_model_cache",
    "default_cache_dir",
    "expected_shapes",
    "fetch_imagenet",
    "load_vgg19",
    "resolve_weights",
    "weights_info",
]

IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_HASH_PREFIX = "dcbb9e9d"  # first 8 hex digits of the file's SHA-256 (torchvision's rule)

ENV_DIR = "FAKET_DASK_WEIGHTS_DIR"
ENV_OFFLINE = "FAKET_DASK_OFFLINE"

_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub.HASH_REGEX


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a model carries, and the weights themselves.

    Attributes
    ----------
    name
        ``"imagenet"``, ``"random"`` or ``"file"``.
    path
        The file the weights came from (``None`` for random).
    sha256
        SHA-256 of that file (``None`` for random).
    state_dict
        ``features.N.weight``/``features.N.bias`` for N < 30 only, float32 on the CPU.
    seed
        The seed of random weights (``None`` otherwise).
    """

    name: str
    path: str | None
    sha256: str | None
    state_dict: dict[str, torch.Tensor]
    seed: int | None = None

    @property
    def weights_id(self) -> str:
        """Short identity of the weights: ``random:SEED`` or ``NAME:SHA256``."""
        if self.name == "random":
            return f"random:{self.seed}"
        return f"{self.name}:{self.sha256}"

    def to_attrs(self) -> dict[str, Any]:
        """JSON-able record of the weights, for store metadata (no tensors)."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "seed": self.seed}


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Return the state-dict keys VGG-19 ``features[:30]`` needs, with their shapes."""
    model = VGG19Features(seed=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def default_cache_dir() -> Path:
    """``$FAKET_DASK_WEIGHTS_DIR``, else ``torch.hub.get_dir()/checkpoints`` (torchvision's)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _url_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def _hash_prefix(file_name: str) -> str | None:
    m = _HASH_IN_NAME.search(file_name)
    return m.group(1) if m else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped where the format allows it.

    torchvision's 2017 file is in the legacy (non-zip) format, which cannot be memory-mapped;
    it is read normally.
    """
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception:
        return torch.load(path, weights_only=True, map_location="cpu")


def _features_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Validate a loaded object and return its ``features.N`` (N < 30) tensors as float32."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise InputError(
            f"not a VGG-19 state dict: {source} holds a {type(obj).__name__}; pass a VGG-19 "
            "state dict (torchvision's vgg19 file) or use 'imagenet' or 'random'"
        )
    missing = [k for k in expected_shapes() if k not in obj]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"not a VGG-19 state dict: missing {missing[0]}{more} in {source}; pass a VGG-19 "
            "state dict (torchvision's vgg19 file) or use 'imagenet' or 'random'"
        )
    out: dict[str, torch.Tensor] = {}
    for key, shape in expected_shapes().items():
        value = obj[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise InputError(f"not a VGG-19 state dict: {key} in {source} is not a float tensor")
        if tuple(value.shape) != shape:
            raise InputError(
                f"not a VGG-19 state dict: {key} in {source} has shape "
                f"{tuple(value.shape)}, expected {shape}"
            )
        # A copy, so that a memory-mapped 548 MB file is not kept open for 52 MB of features.
        out[key] = value.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
        if not torch.isfinite(out[key]).all():
            raise InputError(f"not usable VGG-19 weights: {key} in {source} is not finite")
    return out


def _load_file(path: Path, name: str, hash_prefix: str | None = None) -> WeightsInfo:
    if not path.is_file():
        raise InputError(
            f"weights file not found: {path} (use 'imagenet', 'random' or a VGG-19 state dict)"
        )
    try:
        digest = _sha256(path)
    except OSError as err:
        raise InputError(f"cannot read weights file {path}: {_first_line(err)}") from None
    # The hash first: a corrupt download should be named corrupt, not "unreadable".
    if hash_prefix and not digest.startswith(hash_prefix):
        raise InputError(
            f"cached VGG-19 weights {path} are corrupt (SHA-256 {digest[:12]}..., "
            f"expected {hash_prefix}...): delete the file to download it again"
        )
    try:
        obj = _torch_load(path)
    except Exception as err:
        raise InputError(
            f"cannot read weights file {path} ({_first_line(err)[:120]}): not a plain PyTorch "
            "state dict; pass a VGG-19 state dict file, 'imagenet' or 'random'"
        ) from None
    state = _features_state_dict(obj, str(path))
    return WeightsInfo(name=name, path=str(path), sha256=digest, state_dict=state)


def fetch_imagenet(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 10.0,
    url: str = IMAGENET_URL,
) -> Path:
    """Return the path of the cached ImageNet VGG-19 file, downloading it first if needed.

    The download uses ``torch.hub.download_url_to_file`` with the hash prefix taken from the
    file name, exactly what ``torch.hub.load_state_dict_from_url(..., check_hash=True)`` does
    before it loads (it writes to a temporary file and renames it only when the hash matches).
    Loading is left to :func:`resolve_weights`, which reads the file with ``weights_only=True``.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    file_name = _url_file_name(url)
    if not file_name:
        raise InputError(f"weights URL has no file name: {url}")
    target = cache / file_name
    if target.is_file():
        return target
    if _offline(offline):
        raise InputError(
            f"VGG-19 ImageNet weights are not in {cache} and offline mode is on "
            f"({ENV_OFFLINE}=1): download {url} on a machine with internet and put it in that "
            f"directory (or set {ENV_DIR}), or pass a local file or 'random' as the weights"
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the weights cache {cache}: {_first_line(err)}") from None
    prefix = _hash_prefix(file_name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=False)
    except RuntimeError as err:  # the hash check
        raise InputError(
            f"downloaded VGG-19 weights from {url} failed the hash check: {_first_line(err)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", None) or _first_line(err)
        raise InputError(
            f"cannot download VGG-19 weights from {url} ({reason}); without internet, fetch the "
            f"file elsewhere and put it in {cache} (or set {ENV_DIR}), or pass a local file"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target


def resolve_weights(
    spec: str,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 10.0,
    url: str = IMAGENET_URL,
) -> WeightsInfo:
    """Turn a weights spec (``'imagenet'``, ``'random'`` or a path) into :class:`WeightsInfo`."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("weights must be 'imagenet', 'random' or a path to a VGG-19 state dict")
    key = spec.strip()
    if key.lower() == "random":
        model = random_init(VGG19Features(seed=None), seed)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return WeightsInfo(name="random", path=None, sha256=None, state_dict=state, seed=int(seed))
    if key.lower() == "imagenet":
        path = fetch_imagenet(cache_dir=cache_dir, offline=offline, timeout=timeout, url=url)
        return _load_file(path, "imagenet", _hash_prefix(path.name))
    return _load_file(Path(key).expanduser().resolve(), "file")


def weights_info(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Describe the weights cache: its directory, the ``.pth`` files in it, sizes, SHA-256."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    files = []
    if cache.is_dir():
        for p in sorted(cache.glob("*.pth")):
            if p.is_file():
                files.append({"name": p.name, "size": p.stat().st_size, "sha256": _sha256(p)})
    imagenet = _url_file_name(IMAGENET_URL)
    return {
        "cache_dir": str(cache),
        "imagenet_url": IMAGENET_URL,
        "imagenet_cached": any(f["name"] == imagenet for f in files),
        "offline": _offline(None),
        "files": files,
    }


_MODELS: dict[tuple[Any, ...], tuple[VGG19Features, WeightsInfo]] = {}
_MODELS_LOCK = threading.Lock()


def load_vgg19(
    spec: str,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 10.0,
    url: str = IMAGENET_URL,
) -> tuple[VGG19Features, WeightsInfo]:
    """Return ``(model in eval mode without gradients, WeightsInfo)``, loaded once per process.

    Models are cached per (spec, seed, device, cache dir, URL) behind a lock, so the threads
    of a Dask worker share one copy. Do not modify the returned model.
    """
    dev = torch.device(device)
    name = spec.strip().lower() if isinstance(spec, str) else spec
    if name not in ("random", "imagenet") and isinstance(spec, str):
        name = str(Path(spec.strip()).expanduser().resolve())
    key = (
        name,
        int(seed) if name == "random" else None,
        str(dev),
        str(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
        if name == "imagenet"
        else None,
        url if name == "imagenet" else None,
    )
    with _MODELS_LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            return hit
        info = resolve_weights(
            spec, seed=seed, cache_dir=cache_dir, offline=offline, timeout=timeout, url=url
        )
        model = VGG19Features(seed=None)
        model.load_state_dict(info.state_dict)
        model.weights_id = info.weights_id
        model = model.to(dev).eval().requires_grad_(False)
        _MODELS[key] = (model, info)
        return model, info


def clear_model_cache() -> None:
    """Forget the models :func:`load_vgg19` has loaded in this process (for tests)."""
    with _MODELS_LOCK:
        _MODELS.clear()
