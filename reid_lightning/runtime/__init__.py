"""The torch-free half of reid-lightning: what a deployed identifier needs (image decoding, the gallery search,
the open-set answer and its calibrated confidence, grouping of new photos) with numpy, Pillow and onnxruntime only.
The training side builds on the same functions, so an exported bundle answers as ``train.py predict`` does."""

from .identifier import Identifier

__all__ = ["Identifier"]
