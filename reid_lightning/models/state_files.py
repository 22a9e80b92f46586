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
