"""``make demo``: test an untrained backbone, fine-tune it, test again, on the embedded synthetic individuals.

    python -m reid_lightning.demo [--config configs/demo.yaml] [extra CLI arguments...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli import main as cli_main

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
REPORTED = ("top1", "top5", "mAP", "maxF1")


def _test_metrics(args: list[str]) -> dict[str, float]:
    cli = cli_main(["test", *args])
    return json.loads(Path(cli.last_results_path).read_text())["metrics"]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    args, extra = parser.parse_known_args(argv)
    common = ["--config", args.config, *extra]
    sys.argv = sys.argv[:1]  # the arguments reach each LightningCLI run through `args` only

    start = time.perf_counter()
    untrained = _test_metrics(common)
    fit = cli_main(["fit", *common])
    checkpoint = fit.trainer.checkpoint_callback.last_model_path
    trained = _test_metrics([*common, "--ckpt_path", checkpoint])
    minutes = (time.perf_counter() - start) / 60

    print(f"\nDemo: synthetic individuals, test split (queries) against training images (gallery), "
          f"{minutes:.1f} min")
    print(f"{'metric':<8} {'untrained':>10} {'fine-tuned':>11}")
    for name in REPORTED:
        print(f"{name:<8} {untrained[f'test/{name}']:>10.3f} {trained[f'test/{name}']:>11.3f}")
    print(f"checkpoint: {checkpoint}")
    return {"untrained": untrained, "trained": trained}


if __name__ == "__main__":
    main()
