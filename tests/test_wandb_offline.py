"""Acceptance: a tiny fit + test logged by a real offline W&B run; the run's ``.wandb`` transaction log is read
back record by record (the SDK's ``Record`` protobuf) to check what the RetrievalReport logged."""

import json
import struct
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import single_thread  # noqa: F401 (autouse fixture: one intra-op thread on the shared cores)

from reid_lightning.callbacks import RetrievalReport
from reid_lightning.data import ReIDDataModule
from reid_lightning.models import ReIDModule
from reid_lightning.report import PANELS

wandb = pytest.importorskip("wandb")

BLOCK_SIZE = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of 7-byte-header chunks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """Every ``wandb_internal.Record`` of an offline run's ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    position, chunks = 7, []
    while position + 7 <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < 7:  # block trailer padding
            position += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # zero padding up to the next block
            position += left_in_block
            continue
        chunks.append(data[position + 7:position + 7 + length])
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def complete_records(path: Path, timeout: float = 60.0) -> list:
    """The records of a finished run, once its exit record is on disk (the service may still be flushing)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_records(path))
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def history_values(records) -> dict[str, dict]:
    """Logged history values by top-level key, nested W&B media dicts reassembled from their leaf items."""
    values: dict[str, dict] = {}
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        for item in record.history.item:
            keys = list(item.nested_key) or [item.key]
            if len(keys) == 1:
                values.setdefault(keys[0], {})["value"] = json.loads(item.value_json)
            else:
                values.setdefault("/".join(keys[:-1]), {})[keys[-1]] = json.loads(item.value_json)
    return values


@pytest.mark.slow
def test_offline_wandb_run_holds_gallery_tables_and_curves(tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # conftest disables W&B; this test needs a real (offline) run
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-home").mkdir()
    from lightning.pytorch.loggers import WandbLogger

    torch.manual_seed(0)
    datamodule = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=6,
                                synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32,
                                val_ratio=0.2, test_ratio=0.3, batch_size=8)
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    logger = WandbLogger(project="reid-lightning-test", save_dir=str(tmp_path), offline=True)
    report = RetrievalReport(every_n_val_epochs=1, worst_queries=2, random_queries=1, top_k=3)
    trainer = L.Trainer(max_epochs=1, callbacks=[report], logger=logger, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu",
                        enable_model_summary=False)
    try:
        trainer.fit(model, datamodule=datamodule)
        trainer.test(model, datamodule=datamodule)
    finally:
        wandb.finish()
        wandb.teardown()  # stops the wandb-core service, which writes the transaction log

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = complete_records(run_file)
    values = history_values(records)
    assert "report/test/retrieval_gallery" in values, f"logged keys: {sorted(values)}"
    num_test_queries = model.evaluation_results().num_queries
    for stage in ("val", "test"):
        prefix = f"report/{stage}"
        panel_of = {"retrieval_gallery": "gallery", "score_histograms": "scores", "pr_curve": "scores",
                    "cmc_curve": "cmc"}
        for figure in panel_of:
            image = values[f"{prefix}/{figure}"]
            assert image["_type"] == "image-file" and image["format"] == "png"
            assert (run_file.parent / "files" / image["path"]).is_file()
            assert image["caption"].startswith(PANELS[panel_of[figure]].caption(figure).title)  # not the bare name
        for table in ("queries", "embeddings", "pr_curve_data_table", "cmc_curve_data_table"):
            assert values[f"{prefix}/{table}"]["_type"] == "table-file"
    assert values["report/test/queries"]["nrows"] == num_test_queries
    assert values["report/test/cmc_curve_data_table"]["nrows"] == min(model.evaluation_results().num_candidates, 50)
    assert "trainer/global_step" in values and "test/report_seconds" in values

    # the per-query table carries one query image per row (W&B logs table images through a run_table artifact)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    (queries,) = [a for a in artifacts if "reporttestqueries" in a.name]
    images = [entry for entry in queries.manifest.contents if entry.path.endswith(".png")]
    assert len(images) == num_test_queries

    # the curves are W&B line plots: one custom-chart spec per curve in the run config
    charts = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                if list(item.nested_key[:2]) == ["_wandb", "visualize"]:
                    charts[item.nested_key[2]] = json.loads(item.value_json)
    pr_chart = charts["report/test/pr_curve_data"]["panel_config"]
    assert pr_chart["fieldSettings"]["x"] == "recall" and pr_chart["fieldSettings"]["y"] == "precision"
    assert "report/test/cmc_curve_data" in charts


def run_config(records) -> dict:
    """The W&B run config: every config record's updates applied in order (nested ``_wandb`` keys aside)."""
    config: dict = {}
    for record in records:
        if record.WhichOneof("record_type") != "config":
            continue
        for item in record.config.update:
            keys = list(item.nested_key) or [item.key]
            if keys[0] == "_wandb":
                continue
            target = config
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
    return config


@pytest.mark.slow
def test_cli_run_config_is_the_resolved_cli_config(tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-home").mkdir()
    monkeypatch.chdir(tmp_path)
    from reid_lightning.cli import main

    configs = Path(__file__).resolve().parent.parent / "configs"
    try:
        main(["validate", "--config", str(configs / "demo.yaml"), "--config", str(configs / "logger" / "wandb.yaml"),
              "--trainer.logger.init_args.offline", "true", "--trainer.logger.init_args.tags", "[cli-test]",
              "--model.backbone", "resnet10t", "--optimizer.init_args.lr", "0.0123", "--data.synthetic_dir", str(tmp_path / "data"),
              "--data.synthetic_individuals", "5", "--data.synthetic_images_per_individual", "6",
              "--data.synthetic_image_size", "32", "--data.image_size", "32", "--data.batch_size", "8",
              "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    finally:
        wandb.finish()
        wandb.teardown()

    (run_file,) = (tmp_path / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    config = run_config(complete_records(run_file))
    # values given on the command line, from the two config files and from the CLI's own defaults, nested as in
    # config.yaml (the module's saved hparams alone hold none of data/trainer/checkpoint)
    assert config["model"]["backbone"] == "resnet10t" and config["optimizer"]["init_args"]["lr"] == 0.0123
    assert config["optimizer"]["class_path"] == "torch.optim.AdamW"  # demo.yaml
    assert config["data"]["synthetic_dir"] == str(tmp_path / "data") and config["data"]["synthetic_individuals"] == 5
    assert config["data"]["image_size"] == 32 and config["data"]["val_ratio"] == 0.15
    assert config["trainer"]["accelerator"] == "cpu" and config["trainer"]["enable_progress_bar"] is False
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert config["trainer"]["logger"]["init_args"]["tags"] == ["cli-test"]
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == ["reid_lightning.callbacks.RetrievalReport"]
    assert config["checkpoint"]["monitor"] == "val/mAP" and config["seed_everything"] == 0
    # config.yaml beside the run still holds the same config
    (saved,) = (tmp_path / "logs").rglob("config.yaml")
    # in the run's own folder (logs/<project>/<run id>), not in the logs/ folder every W&B run shares
    assert saved.parent.parent == tmp_path / "logs" / "reid-lightning"
    assert (saved.parent / "data_summary.txt").is_file() and (saved.parent / "results.json").is_file()
    import yaml

    assert yaml.safe_load(saved.read_text())["model"] == config["model"]
