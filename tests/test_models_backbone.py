"""Backbone loading (timm / transformers folders, class paths, hub errors), embedding_dim, data config."""

from __future__ import annotations

import json
import sys
import textwrap

import huggingface_hub.constants
import pytest
import timm
import torch
import torch.nn.functional as F
import transformers.dynamic_module_utils
from timm.models import save_for_hf
from torch import nn
from transformers import ViTConfig, ViTImageProcessor, ViTModel
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

from reid_lightning.models.backbone import HFBackbone, backbone_data_config, create_backbone, embedding_dim
from reid_lightning.models.neck import ProjectionNeck

TINY_VIT_DIM = 16


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """A tiny timm ViT with a 5-class head, saved in the Hugging Face hub layout."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=5).eval()
    folder = tmp_path_factory.mktemp("timm_vit")
    save_for_hf(model, folder, safe_serialization=True)
    return folder, model


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A tiny transformers ViTModel plus its image processor, written by save_pretrained."""
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=TINY_VIT_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    model = ViTModel(config).eval()
    folder = tmp_path_factory.mktemp("hf_vit")
    model.save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 48, "width": 40}, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]
    ).save_pretrained(folder)
    return folder, model


@pytest.fixture
def hub_offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_timm_local_dir_loads_saved_weights(timm_folder):
    folder, saved = timm_folder
    backbone = create_backbone(f"local-dir:{folder}", pretrained=True).eval()
    saved_state = saved.state_dict()
    loaded_state = backbone.state_dict()
    # The classifier is dropped (num_classes=0); every other tensor comes from model.safetensors.
    assert set(saved_state) - set(loaded_state) == {"head.weight", "head.bias"}
    for key, value in loaded_state.items():
        torch.testing.assert_close(value, saved_state[key], rtol=0, atol=0)
    images = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        embeddings = backbone(images)
        expected = saved.forward_head(saved.forward_features(images), pre_logits=True)
    assert embeddings.shape == (2, saved.num_features)
    torch.testing.assert_close(embeddings, expected)


def test_timm_local_dir_without_pretrained_gives_random_weights(timm_folder):
    folder, saved = timm_folder
    backbone = create_backbone(f"local-dir:{folder}", pretrained=False)
    saved_state = saved.state_dict()
    assert type(backbone) is type(saved)
    assert not torch.equal(backbone.patch_embed.proj.weight, saved_state["patch_embed.proj.weight"])


def test_bare_timm_folder_is_loaded_with_timm(timm_folder):
    folder, saved = timm_folder
    backbone = create_backbone(str(folder))
    torch.testing.assert_close(
        backbone.patch_embed.proj.weight, saved.patch_embed.proj.weight, rtol=0, atol=0
    )


def test_timm_embedding_dim_and_data_config(timm_folder):
    folder, saved = timm_folder
    backbone = create_backbone(f"local-dir:{folder}")
    assert embedding_dim(backbone) == saved.num_features == 64
    assert backbone_data_config(backbone) == {
        "size": (160, 160),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }


def test_timm_embedding_dim_uses_head_hidden_size():
    # mambaout's pooled features pass a head MLP: num_features (64) is not the embedding size (256).
    backbone = create_backbone("test_mambaout", pretrained=False).eval()
    with torch.no_grad():
        embeddings = backbone(torch.zeros(1, 3, 64, 64))
    assert backbone.num_features != embeddings.shape[1]
    assert embedding_dim(backbone) == embeddings.shape[1]


def test_timm_num_classes_in_init_args_is_refused(timm_folder):
    folder, _ = timm_folder
    with pytest.raises(ValueError, match="num_classes=0"):
        create_backbone(f"local-dir:{folder}", init_args={"num_classes": 3})


def test_transformers_folder_returns_pooled_output(vit_folder):
    folder, saved = vit_folder
    backbone = create_backbone(f"hf:{folder}").eval()
    assert isinstance(backbone, HFBackbone)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        embeddings = backbone(images)
        expected = saved(images).pooler_output
    assert embeddings.shape == (3, TINY_VIT_DIM)
    torch.testing.assert_close(embeddings, expected)
    assert embedding_dim(backbone, image_size=32) == TINY_VIT_DIM


def test_transformers_data_config_from_image_processor(vit_folder):
    folder, _ = vit_folder
    backbone = create_backbone(f"transformers:{folder}")
    assert backbone_data_config(backbone) == {
        "size": (48, 40),
        "mean": (0.1, 0.2, 0.3),
        "std": (0.4, 0.5, 0.6),
    }


def test_transformers_without_processor_falls_back_to_config_size(tmp_path, vit_folder):
    _, saved = vit_folder
    saved.save_pretrained(tmp_path)
    backbone = create_backbone(str(tmp_path))
    config = backbone_data_config(backbone)
    assert config["size"] == (32, 32)
    assert config["mean"] == pytest.approx(timm.data.IMAGENET_DEFAULT_MEAN)


def test_transformers_without_pretrained_gives_random_weights(vit_folder):
    folder, saved = vit_folder
    backbone = create_backbone(f"hf:{folder}", pretrained=False)
    assert isinstance(backbone.model, ViTModel)
    assert not torch.equal(backbone.model.pooler.dense.weight, saved.pooler.dense.weight)


class _ReturnsFixed(nn.Module):
    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def forward(self, images: torch.Tensor):
        return self.output


def test_hf_backbone_output_rule():
    tokens = torch.arange(24.0).reshape(2, 3, 4)
    feature_map = torch.arange(16.0).reshape(2, 2, 2, 2)
    images = torch.zeros(2, 3, 8, 8)
    pooled = HFBackbone(
        _ReturnsFixed(BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens[:, 0]))
    )
    torch.testing.assert_close(pooled(images), tokens[:, 0])
    by_token_mean = HFBackbone(_ReturnsFixed(BaseModelOutput(last_hidden_state=tokens)))
    torch.testing.assert_close(
        by_token_mean(images), torch.tensor([[4.0, 5.0, 6.0, 7.0], [16.0, 17.0, 18.0, 19.0]])
    )
    by_spatial_mean = HFBackbone(_ReturnsFixed(BaseModelOutputWithPooling(pooler_output=feature_map)))
    torch.testing.assert_close(by_spatial_mean(images), torch.tensor([[1.5, 5.5], [9.5, 13.5]]))
    plain = torch.randn(2, 7)
    assert HFBackbone(_ReturnsFixed(plain))(images) is plain
    with pytest.raises(TypeError, match="pooler_output"):
        HFBackbone(_ReturnsFixed((plain,)))(images)


@pytest.fixture
def custom_code_folder(tmp_path, monkeypatch):
    """A transformers model folder whose architecture lives in its own Python files (like MiewID)."""
    folder = tmp_path / "custom_model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "reid_test_custom",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModel": "modeling_custom.CustomModel",
                },
                "width": 5,
            }
        )
    )
    (folder / "configuration_custom.py").write_text(
        textwrap.dedent("""
        from transformers import PretrainedConfig

        class CustomConfig(PretrainedConfig):
            model_type = "reid_test_custom"

            def __init__(self, width=5, **kwargs):
                self.width = width
                super().__init__(**kwargs)
    """)
    )
    (folder / "modeling_custom.py").write_text(
        textwrap.dedent("""
        import torch
        from transformers import PreTrainedModel
        from .configuration_custom import CustomConfig

        class CustomModel(PreTrainedModel):
            config_class = CustomConfig

            def __init__(self, config):
                super().__init__(config)
                self.linear = torch.nn.Linear(3, config.width)
                self.post_init()

            def forward(self, images):
                return self.linear(images.mean(dim=(2, 3)))
    """)
    )
    # transformers copies remote code into its modules cache and imports it from there: keep it in tmp_path.
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules_before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - modules_before:
        if name.startswith("transformers_modules"):
            del sys.modules[name]


def test_custom_code_needs_explicit_trust(custom_code_folder):
    with pytest.raises(ValueError, match="ships its own Python code.*trust_remote_code=True"):
        create_backbone(f"hf:{custom_code_folder}", pretrained=False)
    assert not (
        custom_code_folder.parent / "modules"
    ).exists()  # refused before any of its code was copied or run
    backbone = create_backbone(f"hf:{custom_code_folder}", pretrained=False, trust_remote_code=True)
    images = torch.rand(2, 3, 8, 8)
    expected = backbone.model.linear(images.mean(dim=(2, 3)))
    torch.testing.assert_close(backbone(images), expected)
    assert embedding_dim(backbone, image_size=8) == 5


def test_class_path_with_init_args_and_training_flags_restored():
    backbone = create_backbone("torchvision.models.resnet18", init_args={"num_classes": 12})
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 12)
    backbone.train()
    backbone.bn1.eval()  # a caller's frozen BatchNorm must stay frozen
    running_mean = backbone.bn1.running_mean.clone()
    assert embedding_dim(backbone, image_size=32) == 12
    assert backbone.training and backbone.layer1.training and not backbone.bn1.training
    torch.testing.assert_close(backbone.bn1.running_mean, running_mean, rtol=0, atol=0)


def test_user_class_path(tmp_path, monkeypatch):
    (tmp_path / "reid_test_user_nets.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        class PooledConv(nn.Module):
            def __init__(self, width: int = 4) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, width, kernel_size=3)

            def forward(self, images):
                return self.conv(images).mean(dim=(2, 3))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backbone = create_backbone("reid_test_user_nets.PooledConv", init_args={"width": 6})
    assert backbone.conv.out_channels == 6
    assert embedding_dim(backbone) == 6
    assert backbone_data_config(backbone)["size"] == (224, 224)
    with pytest.raises(TypeError, match="depth"):
        create_backbone("reid_test_user_nets.PooledConv", init_args={"depth": 3})
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        create_backbone("collections.OrderedDict")


def test_embedding_dim_rejects_unpooled_backbone():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        embedding_dim(nn.Conv2d(3, 4, kernel_size=1), image_size=8)


def test_unknown_names_give_clear_errors():
    with pytest.raises(ValueError, match="Unknown backbone 'reid_no_such_pkg.Net'.*timm model name"):
        create_backbone("reid_no_such_pkg.Net")
    with pytest.raises(ValueError, match="Unknown backbone 'torch.nn.NoSuchLayer'"):
        create_backbone("torch.nn.NoSuchLayer")
    with pytest.raises(ValueError, match="'hf-hub:someone/model'.*'hf:someone/model'"):
        create_backbone("someone/model")


def test_missing_local_folder_and_files(tmp_path, timm_folder):
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match="absent.*does not exist"):
        create_backbone(f"local-dir:{missing}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(f"hf:{missing}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(str(missing))
    (tmp_path / "no_config").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_backbone(f"local-dir:{tmp_path / 'no_config'}")
    folder, _ = timm_folder
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no weights.*pretrained=False"):
        create_backbone(f"local-dir:{config_only}", pretrained=True)
    assert create_backbone(f"local-dir:{config_only}", pretrained=False).num_features == 64


@pytest.mark.parametrize(
    ("name", "local_form"),
    [
        ("hf-hub:reid-lightning-tests/no-such-model", "local-dir:"),
        ("test_vit", "local-dir:"),  # timm registry weights come from the hub too
        ("transformers:reid-lightning-tests/no-such-model", "hf:"),
    ],
)
def test_unreachable_hub_error_says_what_to_do(hub_offline, name, local_form):
    with pytest.raises(ConnectionError) as info:
        create_backbone(name, pretrained=True)
    message = str(info.value)
    assert f"'{name}'" in message and "unreachable" in message
    assert local_form in message and "pretrained=False" in message


def test_projection_neck_matches_linear_then_batch_norm():
    torch.manual_seed(0)
    neck = ProjectionNeck(6, 3)
    embeddings = torch.randn(5, 6)
    projected = embeddings @ neck.linear.weight.T
    expected = (projected - projected.mean(0)) / torch.sqrt(
        projected.var(0, unbiased=False) + neck.batch_norm.eps
    )
    torch.testing.assert_close(neck(embeddings), expected)
    normalized = ProjectionNeck(6, 3, normalize=True, batch_norm=False)
    output = normalized(embeddings)
    torch.testing.assert_close(output, F.normalize(normalized.linear(embeddings), dim=1))
    torch.testing.assert_close(output.norm(dim=1), torch.ones(5))


def test_projection_neck_errors():
    neck = ProjectionNeck(6, 3)
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        neck(torch.randn(4, 5))
    with pytest.raises(ValueError, match="drop_last"):
        neck(torch.randn(1, 6))
    assert neck.eval()(torch.randn(1, 6)).shape == (1, 3)
