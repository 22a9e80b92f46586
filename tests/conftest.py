import os

# Tests never reach a model hub; loading code must be exercised with local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
