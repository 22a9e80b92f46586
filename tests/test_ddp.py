"""Lightning DDP on CPU (gloo, 2 real processes) gives the single-process numbers, on a data set whose splits do not
divide by 2 (padding samplers): validate, test with and without reranking, and the checkpoint monitored on val/mAP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
PROBES = Path(__file__).resolve().parent / "probes"

pytestmark = pytest.mark.slow


def run_cli(workdir: Path, *args: str, devices: int, metrics_dir: Path | None = None) -> str:
    subcommand, *options = args
    command = [
        sys.executable, str(REPO / "train.py"), subcommand, "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.backbone", "resnet10t", "--data.synthetic_dir", str(workdir / "data"), "--data.synthetic", "true",
        "--data.synthetic_individuals", "6", "--data.synthetic_images_per_individual", "9",
        "--data.synthetic_image_size", "32", "--data.image_size", "32", "--data.batch_size", "4",
        "--data.eval_batch_size", "4", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices), *options, "--trainer.callbacks+=ddp_probe.DumpRankMetrics",
    ]
    if devices > 1:
        command += ["--trainer.strategy", "ddp"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBES), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RANK_METRICS_DIR": str(metrics_dir or workdir / "rank_metrics"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def rank_metrics(folder: Path, stage: str, world_size: int) -> dict:
    """The metrics every rank logged; they must be identical on all ranks (wall-clock timings aside)."""
    per_rank = [json.loads((folder / f"{stage}-rank{r}.json").read_text()) for r in range(world_size)]
    for other in per_rank[1:]:
        for name, value in per_rank[0].items():
            assert name.endswith("seconds") or other[name] == value, f"ranks logged different {name}"
        assert other.keys() == per_rank[0].keys()
    return per_rank[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-process fit with m-per-class batches; returns the work dir (checkpoints/last.ckpt inside)."""
    workdir = tmp_path_factory.mktemp("ddp")
    run_cli(workdir, "fit", "--trainer.max_epochs", "1", "--data.m_per_class", "2", devices=2,
            metrics_dir=workdir / "fit_metrics")
    return workdir


def test_splits_do_not_divide_by_two(trained):
    from reid_lightning.data import ReIDDataModule

    data = ReIDDataModule(synthetic_dir=str(trained / "data"), synthetic=True, synthetic_individuals=6,
                          synthetic_images_per_individual=9, synthetic_image_size=32, image_size=32,
                          test_ratio=0.3, val_ratio=0.15)
    data.setup()
    assert len(data.dataset("val")) % 2 == 1 and len(data.dataset("test")) % 2 == 1


def test_validate_in_two_processes_equals_one_and_the_monitored_checkpoint(trained):
    checkpoint = trained / "checkpoints" / "last.ckpt"
    single = rank_metrics_of(trained, "validate", checkpoint, devices=1)
    double = rank_metrics_of(trained, "validate", checkpoint, devices=2)
    names = [n for n in single if n.startswith("val/")]
    assert {"val/top1", "val/mAP", "val/maxF1", "val/num_queries"} <= set(names)
    for name in names:
        assert double[name] == pytest.approx(single[name], abs=1e-6), name
    # the value the DDP fit logged (and monitored) for its last epoch is the single-process one
    logged = pd.read_csv(min((trained / "logs").rglob("metrics.csv"))).dropna(subset=["val/mAP"])
    assert logged["val/mAP"].iloc[-1] == pytest.approx(single["val/mAP"], abs=1e-6)
    fit_last = rank_metrics(trained / "fit_metrics", "validate", 2)
    assert fit_last["val/mAP"] == pytest.approx(single["val/mAP"], abs=1e-6)


@pytest.mark.parametrize("rerank", [False, True])
def test_test_in_two_processes_equals_one(trained, rerank):
    checkpoint = trained / "checkpoints" / "last.ckpt"
    extra = ["--config", str(REPO / "configs" / "rerank" / "sift_mnn.yaml")] if rerank else []
    single = rank_metrics_of(trained, "test", checkpoint, *extra, devices=1)
    double = rank_metrics_of(trained, "test", checkpoint, *extra, devices=2)
    names = [n for n in single if n.startswith("test/") and not n.endswith("seconds")]
    assert ("test/reranked/top1" in names) == rerank
    for name in names:
        assert double[name] == pytest.approx(single[name], abs=1e-6), name


def rank_metrics_of(workdir: Path, stage: str, checkpoint: Path, *extra: str, devices: int) -> dict:
    folder = workdir / f"{stage}-{devices}-{len(extra)}"
    run_cli(workdir, stage, "--ckpt_path", str(checkpoint), *extra, devices=devices, metrics_dir=folder)
    return rank_metrics(folder, stage, devices)


def test_reranking_matches_each_pair_once_over_the_processes(trained):
    """Under DDP the processes split a stage's pairs: in total each pair is matched once (not once per process),
    the pairs that widen the shortlist (one image of every identity per query) included."""
    matched = {}
    for widen in (False, True):
        config = (REPO / "configs" / "rerank" / "sift_mnn.yaml").read_text()
        config = config.replace("reid_lightning.similarity.pairwise.MatchDescriptors",
                                "ddp_probe.CountingMatchDescriptors")
        config = config.replace("cache_features: true", "cache_features: false")  # nothing may come from a cache
        if widen:
            config = config.replace("        shortlist: 10\n", "        shortlist: 10\n        widening:\n"
                                    "          class_path: reid_lightning.similarity.IdentityWidening\n"
                                    "          init_args: {keep: 3}\n")
        assert "CountingMatchDescriptors" in config and "cache_features: false" in config
        assert ("IdentityWidening" in config) == widen
        counting = trained / f"counting_sift_{widen}.yaml"
        counting.write_text(config)
        checkpoint = trained / "checkpoints" / "last.ckpt"
        metrics, pairs = {}, {}
        for devices in (1, 2):
            folder = trained / f"counted-{devices}-{widen}"
            run_cli(trained, "test", "--ckpt_path", str(checkpoint), "--config", str(counting),
                    *(["--model.candidates", "100000"] if widen else []), devices=devices, metrics_dir=folder)
            metrics[devices] = rank_metrics(folder, "test", devices)
            per_process = [sum(map(int, path.read_text().split())) for path in sorted(folder.glob("pairs-*.txt"))]
            assert len(per_process) == devices
            pairs[devices] = per_process
        # calibration (validation) and test pairs: the same total, shared by the two processes
        assert sum(pairs[2]) == sum(pairs[1]) > 0 and min(pairs[2]) > 0
        for name, value in metrics[1].items():
            if name.startswith("test/") and not name.endswith("seconds"):
                assert metrics[2][name] == pytest.approx(value, abs=1e-6), name
        matched[widen] = sum(pairs[1])
    # widening matched every query with one image of every identity, on top of the shortlists
    assert matched[True] > matched[False]
