import os

# Tests never reach a model hub; loading code must be exercised with local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# Reranking caches local features in a per-user folder by default; tests keep it out of the user's home.
if "REID_LIGHTNING_CACHE" not in os.environ:
    import tempfile

    os.environ["REID_LIGHTNING_CACHE"] = tempfile.mkdtemp(prefix="reid-lightning-test-cache-")


import pytest


@pytest.fixture(autouse=True)
def run_in_a_temporary_folder(tmp_path, monkeypatch):
    """Every test runs in its own folder: a run without a logger writes its files (data summary, checkpoints) to the
    current folder, which must never be the repository."""
    monkeypatch.chdir(tmp_path)
