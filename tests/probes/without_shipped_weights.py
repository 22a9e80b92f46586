"""``train.py`` as on a machine where no pip package ships local-feature weights and nothing is cached: the weights
resolver sees no installed package (the torch hub cache is an empty folder, set by the caller's TORCH_HOME)."""

import sys

from reid_lightning.features import weights

weights.package_dir = lambda package: None

from reid_lightning.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
