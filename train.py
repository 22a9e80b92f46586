"""Train, validate, test and predict from the command line (LightningCLI).

    python train.py fit --config configs/demo.yaml
    python train.py test --config configs/demo.yaml --ckpt_path checkpoints/last.ckpt
    python train.py fit --config configs/megadescriptor_finetune.yaml --data.root D --data.metadata metadata.csv
"""

from reid_lightning.cli import main

if __name__ == "__main__":
    main()
