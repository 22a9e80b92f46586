"""Reading weight files a user passes, without running code they might carry."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor


def load_state_dict_file(path: str | Path, *, what: str) -> dict[str, Tensor]:
    """The state dict in a ``.safetensors`` file, a Lightning ``.ckpt`` or a ``torch.save``-d state dict.

    Pickled files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
    file carrying code (a pickle payload) is refused before anything in it runs.

    Args:
        path: the file.
        what: the argument it came from, for messages (e.g. ``"init_ckpt"``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{what} '{path}' holds more than tensors and plain values (e.g. pickled objects or code), so it "
            f"was not loaded; only weights are read from files you pass. Re-save the weights with "
            f"torch.save(model.state_dict(), ...) or as .safetensors. Details: {str(error).splitlines()[0]}"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise TypeError(f"{what} '{path}' holds a {type(state).__name__}, not a state dict")
    return state


def load_backbone_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Initialise ``model``'s ``backbone.*`` and ``neck.*`` weights from a checkpoint or state dict (``init_ckpt``):
    a Lightning ``.ckpt`` of a ``ReIDModule``, or a bare backbone state dict (e.g. timm weights). The loss head is
    not loaded, so a new species with new identities can be fine-tuned."""
    checkpoint_path = Path(path).expanduser()
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"init_ckpt {path!r} does not exist; give a Lightning .ckpt or a state dict")
    state = load_state_dict_file(checkpoint_path, what="init_ckpt")
    wanted = {k: v for k, v in state.items() if k.startswith(("backbone.", "neck."))}
    if not wanted:
        wanted = {f"backbone.{k}": v for k, v in state.items()}
    own = model.state_dict()
    mismatched = [k for k, v in wanted.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"init_ckpt {path!r}: shapes differ for {mismatched[:5]}; is it the same backbone?")
    result = model.load_state_dict(wanted, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(("backbone.", "neck."))]
    if missing:
        raise ValueError(f"init_ckpt {path!r} lacks {len(missing)} backbone/neck weights, e.g. {missing[:5]}")
