"""``predict`` with ``LocalFeatureReranking``: calibrators from a test run's folder (or fitted on validation), the
fused probability as the score decided on with ``threshold.json``, clear errors for unusable folders."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from reid_lightning.callbacks import LocalFeatureReranking, PredictionWriter
from reid_lightning.data import ReIDDataModule
from reid_lightning.data.synthetic import make_synthetic_individuals
from reid_lightning.features import DeepFeatures
from reid_lightning.inference import OpenSetModel, RankedAnswers, prediction_frame
from reid_lightning.models import ReIDModule
from reid_lightning.retrieval import RetrievalResults, search
from reid_lightning.similarity import PairwiseReranker

REPO = Path(__file__).resolve().parent.parent
SHORTLIST = 48  # the whole gallery of 6 known individuals x 8 photos: any gallery image can be reranked first


class FolderScorer:
    """Scores a pair 1 when both image files sit in folders of the same name. On the data set (one folder per
    individual) it is an oracle, so its calibrated probability is ~1 for matches and ~0 otherwise; a new photo
    filed under another individual's folder makes it contradict the embeddings, which reranking must follow."""

    name = "folder"

    def score(self, query_dataset, gallery_dataset, pairs):
        query = [query_dataset.image_path(i).parent.name for i in pairs[:, 0].tolist()]
        gallery = [gallery_dataset.image_path(i).parent.name for i in pairs[:, 1].tolist()]
        return {"folder": torch.tensor([float(a == b) for a, b in zip(query, gallery, strict=True)])}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """6 known individuals; new photos: a copy of ind_000's photo filed as ind_000, a copy of another ind_000
    photo filed as ind_003 (embeddings say ind_000, the folder scorer ind_003), and a photo of the unseen ind_006."""
    root = tmp_path_factory.mktemp("rerank_predict")
    metadata = pd.read_csv(make_synthetic_individuals(root / "data", num_individuals=7, images_per_individual=8,
                                                      image_size=32))
    metadata[metadata["identity"] != "ind_006"].to_csv(root / "data" / "known.csv", index=False)
    images = root / "data" / "images"
    for source, target in (("ind_000/000.jpg", "ind_000/a.jpg"), ("ind_000/001.jpg", "ind_003/b.jpg"),
                           ("ind_006/000.jpg", "ind_006/c.jpg")):
        (root / "new" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images / source, root / "new" / target)
    return root


def data_of(root: Path) -> ReIDDataModule:
    return ReIDDataModule(root=str(root / "data"), metadata="known.csv", image_size=32, batch_size=8,
                          val_ratio=0.2, test_ratio=0.3, predict_dir=str(root / "new"))


def trainer(folder: Path, *callbacks) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=list(callbacks),
                     enable_checkpointing=False, enable_model_summary=False, default_root_dir=folder)


def predict(folder: Path, photos: Path, model: ReIDModule, *callbacks) -> pd.DataFrame:
    """``predictions.csv`` rows of a predict run on the new photos with ``callbacks`` and a prediction writer."""
    writer = PredictionWriter(output=str(folder / "predictions.csv"))
    trainer(folder, *callbacks, writer).predict(model, datamodule=data_of(photos))
    return writer.predictions


def reranking(**kwargs) -> LocalFeatureReranking:
    return LocalFeatureReranking(scorers=[FolderScorer()], shortlist=SHORTLIST, **kwargs)


def by_name(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index(frame["path"].map(lambda p: Path(p).name))


def test_reranked_predict_answers_with_the_calibrators_a_test_run_saved(photos, tmp_path):
    # raw pixels as embeddings: no training; copies of gallery photos have cosine 1 with their original. The raw
    # score threshold (0.9) would answer b.jpg's reranked top-1 (probability ~0.57) new: predict must use threshold.json
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, open_set_threshold=0.9)
    calibration = tmp_path / "calibration"
    trainer(tmp_path, reranking(save_dir=str(calibration))).test(model, datamodule=data_of(photos))
    threshold = json.loads((calibration / "threshold.json").read_text())["open_set_threshold"]

    reranked = predict(tmp_path, photos, model, reranking(calibration_dir=str(calibration)))
    saved = OpenSetModel.load(calibration / "threshold.json")
    assert saved.score == "fused calibrated probability" and saved.threshold == threshold

    # the same answers in plain Python: embed -> search -> PairwiseReranker.load + __call__ -> threshold.json
    data = data_of(photos)
    data.setup("predict")
    inputs, gallery = data.predict_dataset(), data.predict_gallery()
    embed = DeepFeatures(model, batch_size=8, progress=False)
    results = search(embed(inputs), embed(gallery), k=SHORTLIST, gallery_labels=gallery.labels_string)
    library = PairwiseReranker([FolderScorer()], shortlist=SHORTLIST).load(calibration)(results, inputs, gallery)
    fused = library.candidate_scores[:, 0].double()
    assert reranked["score"].tolist() == pytest.approx(fused.tolist(), abs=1e-6)
    assert reranked["is_new"].tolist() == (fused < threshold).tolist()
    is_new = torch.tensor(reranked["is_new"].tolist())
    assert reranked["confidence"].tolist() == pytest.approx(saved.confidence(fused, is_new).tolist(), abs=1e-6)
    identities = library.candidate_identities
    expected = [name if known else "new_individual"
                for name, known in zip(identities[:, 0], (fused >= threshold).tolist(), strict=True)]
    assert reranked["identity"].tolist() == expected
    for row, listed in enumerate(reranked["top5"]):  # distinct identities in the reranked order
        order = list(dict.fromkeys(identities[row].tolist()))[:5]
        assert [name for name, _ in json.loads(listed)] == order

    # a shortlist shorter than the gallery: top5 lists the reranked shortlist only (the tail has no probability)
    short = LocalFeatureReranking(scorers=[FolderScorer()], shortlist=4, calibration_dir=str(calibration))
    shortlisted = predict(tmp_path, photos, model, short)
    library = PairwiseReranker([FolderScorer()], shortlist=4).load(calibration)(results, inputs, gallery)
    for row, listed in enumerate(shortlisted["top5"]):
        assert [name for name, _ in json.loads(listed)] == list(dict.fromkeys(library.candidate_identities[row, :4]))

    # by name: the contradicted photo follows the reranker, the unseen individual is new
    answers = by_name(reranked)
    assert answers.loc["a.jpg", "identity"] == "ind_000"
    assert answers.loc["b.jpg", "identity"] == "ind_003"
    assert answers.loc["c.jpg", "identity"] == "new_individual"
    assert answers.loc["b.jpg", "gallery_image"].split("/")[-2] == "ind_003"
    # without reranking the embeddings answer ind_000 for b.jpg (its exact copy is in the gallery)
    plain = by_name(predict(tmp_path, photos, model))
    assert plain.loc["b.jpg", "identity"] == "ind_000"
    assert plain.loc["b.jpg", "score"] == pytest.approx(1.0, abs=1e-5)

    # no calibration_dir: fitted on validation exactly as the test run did, saved the same way, same answers
    refit = tmp_path / "refit"
    pd.testing.assert_frame_equal(predict(tmp_path, photos, model, reranking(save_dir=str(refit))), reranked)
    for name in ("index.json", "threshold.json", "folder.json", "global.json"):
        assert (refit / name).read_text() == (calibration / name).read_text(), name


def test_unusable_calibration_dir_is_a_clear_error(photos, tmp_path):
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False)

    def predict_with(folder: Path) -> None:
        predict(tmp_path, photos, model, reranking(calibration_dir=str(folder)))

    missing = tmp_path / "nothing_here"
    with pytest.raises(ValueError, match=r"calibration_dir '.*nothing_here'.*index\.json.*train\.py test"):
        predict_with(missing)

    def saved(folder: Path, scorer_names: list[str]) -> Path:
        scores = {name: torch.tensor([[0.9, 0.1], [0.8, 0.2]]) for name in ["global", *scorer_names]}
        reranker = PairwiseReranker(shortlist=2).fit_calibrators(scores, hits=torch.tensor([[True, False]] * 2))
        return reranker.save(folder)

    # calibrators of other score types (e.g. a SIFT config's) for this folder-scorer config
    other = saved(tmp_path / "sift_calibration", ["sift_MatchDescriptors@0.2"])
    with pytest.raises(ValueError, match=r"sift_calibration.*score types \['sift_MatchDescriptors@0.2'\].*"
                                         r"\['folder'\].*train\.py test"):
        predict_with(other)
    with pytest.raises(ValueError, match="calibration 'isotonic' saved, 'logistic' here"):
        PairwiseReranker([FolderScorer()], calibration="logistic").load(other)

    # the right score types but no threshold.json (the test run could choose no threshold)
    no_threshold = saved(tmp_path / "no_threshold", ["folder"])
    with pytest.raises(ValueError, match=r"no_threshold' holds no threshold\.json"):
        predict_with(no_threshold)


def test_unscored_top_candidate_is_new_and_listed_without_a_score():
    results = RetrievalResults.from_scores(torch.tensor([[0.9, 0.5, 0.1]]), gallery_labels=["x", "y", "z"])
    reranked = results.rerank(torch.tensor([[float("nan"), float("nan")]]))
    answers = RankedAnswers(reranked.head(2), OpenSetModel(0.5, "fused calibrated probability"))
    frame = prediction_frame(answers, image_ids=["q"], paths=["q.jpg"], gallery_paths=["x.jpg", "y.jpg", "z.jpg"])
    assert math.isnan(frame.loc[0, "score"]) and frame.loc[0, "is_new"]
    assert frame.loc[0, "identity"] == "new_individual"
    assert json.loads(frame.loc[0, "top5"]) == [["x", None], ["y", None]]  # valid JSON, tail left out


@pytest.mark.slow
def test_two_process_reranked_predict_from_the_sift_config(photos, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    command = [
        sys.executable, str(REPO / "train.py"), "predict", "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(REPO / "configs" / "rerank" / "sift_mnn.yaml"),
        "--model.backbone", "torch.nn.Flatten", "--model.pretrained", "false",
        "--data.synthetic", "false", "--data.root", str(photos / "data"), "--data.metadata", "known.csv",
        "--data.image_size", "32", "--data.val_ratio", "0.2", "--data.eval_batch_size", "1",
        "--data.predict_dir", str(photos / "new"),
        "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "false", "--predict_output", str(output),
    ]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on the fused calibrated probability" in done.stdout
    frame = pd.read_csv(output)
    # 3 inputs over 2 processes: each once, in input order; the calibrators were fitted and saved by rank 0
    assert frame["path"].tolist() == sorted(str(p) for p in (photos / "new").rglob("*.jpg"))
    threshold = json.loads((tmp_path / "calibration" / "threshold.json").read_text())["open_set_threshold"]
    assert frame["is_new"].tolist() == (frame["score"] < threshold).tolist()
    assert frame["score"].between(0, 1).all()
