"""reid-lightning: re-identification of individual animals with PyTorch Lightning."""

__version__ = "0.1.0"
