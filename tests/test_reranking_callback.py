"""LocalFeatureReranking end to end on tiny synthetic data: calibration, fusion, logging, saved calibrators."""

import json

import lightning as L
import pytest
import torch

from reid_lightning.callbacks import LocalFeatureReranking
from reid_lightning.data import ReIDDataModule
from reid_lightning.features import SiftExtractor
from reid_lightning.models import ReIDModule
from reid_lightning.similarity import PairScorer
from reid_lightning.similarity.calibration import Calibration
from reid_lightning.similarity.pairwise import CollectCounts, MatchDescriptors
from reid_lightning.similarity.shortlist import loss_upper_bound

SHORTLIST = 4


class OracleScorer:
    """Scores a pair 1 when both images show the same individual: reranking must then put a positive first
    whenever the shortlist holds one."""

    name = "oracle"

    def __init__(self):
        self.calls = []

    def score(self, query_dataset, gallery_dataset, pairs):
        self.calls.append(len(pairs))
        same = query_dataset.labels[pairs[:, 0].numpy()] == gallery_dataset.labels[pairs[:, 1].numpy()]
        return {"oracle": torch.as_tensor(same, dtype=torch.float32)}


class PairRecorder:
    """Records the pairs it is asked to score (and the images behind them); scores every pair 0."""

    name = "recorder"

    def __init__(self):
        self.calls, self.datasets = [], []

    def score(self, query_dataset, gallery_dataset, pairs):
        self.calls.append(pairs.clone())
        self.datasets.append(set(query_dataset.metadata["path"]))
        return {"recorder": torch.zeros(len(pairs))}


def datamodule(tmp_path, protocol="database"):
    return ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=6,
                          synthetic_images_per_individual=8, synthetic_image_size=48, image_size=32,
                          val_ratio=0.2, test_ratio=0.3, batch_size=8, protocol=protocol)


def run_test(tmp_path, callback, protocol="database"):
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, top_k=(1, SHORTLIST))
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.test(model, datamodule=datamodule(tmp_path, protocol))
    return trainer, model


@pytest.mark.parametrize("protocol", ["database", "leave_one_out"])
def test_oracle_reranking_reaches_shortlist_recall(tmp_path, protocol):
    scorer = OracleScorer()
    callback = LocalFeatureReranking(scorers=[scorer], shortlist=SHORTLIST, include_global=False,
                                     save_dir=str(tmp_path / "calibration"))
    trainer, _ = run_test(tmp_path, callback, protocol)
    metrics = trainer.callback_metrics
    # the untrained backbone is weak, the oracle fixes the order inside the shortlist
    assert metrics["test/reranked/top1"].item() == pytest.approx(metrics[f"test/top{SHORTLIST}"].item())
    assert metrics["test/reranked/top1"] > metrics["test/top1"]
    assert metrics["test/reranked/mAP"] >= metrics["test/mAP"]
    assert len(scorer.calls) == 2  # calibration pairs (validation; also choose the threshold), then test pairs
    saved = json.loads((tmp_path / "calibration" / "threshold.json").read_text())
    assert saved["open_set_threshold"] == pytest.approx(callback.open_set.threshold)
    assert saved["score"] == "fused calibrated probability"
    assert metrics["test/reranked/open/threshold"].item() == pytest.approx(callback.open_set.threshold)

    index = json.loads((tmp_path / "calibration" / "index.json").read_text())
    calibrator = Calibration.load(tmp_path / "calibration" / index["calibrators"]["oracle"])
    low, high = calibrator.predict([0.0, 1.0])
    assert 0.0 <= low < high <= 1.0
    # held-out calibration quality: the oracle is perfectly separable, so its calibrated ECE is small
    assert metrics["test/reranked/ece/oracle"].item() < 0.2
    assert (tmp_path / "calibration" / "reliability_oracle.png").stat().st_size > 1000


def test_calibration_pairs_are_never_self_pairs(tmp_path):
    scorer = PairRecorder()
    callback = LocalFeatureReranking(scorers=[scorer], shortlist=SHORTLIST, include_global=True,
                                     save_dir=str(tmp_path / "c"))
    trainer, _ = run_test(tmp_path, callback, protocol="leave_one_out")
    calibration_pairs = scorer.calls[0]
    assert len(calibration_pairs) > 0
    # leave-one-out: query and gallery index the same validation images; a self-pair has equal indices
    assert not (calibration_pairs[:, 0] == calibration_pairs[:, 1]).any()
    val_paths = set(trainer.datamodule.dataset("val").metadata["path"])
    test_paths = set(trainer.datamodule.dataset("test").metadata["path"])
    assert scorer.datasets[0] == val_paths and not val_paths & test_paths


def test_fusion_is_weighted_mean_of_available_probabilities():
    callback = LocalFeatureReranking(scorers=[], shortlist=2, weights={"b": 3.0}).reranker

    class Fixed:
        def __init__(self, scale):
            self.scale = scale

        def predict(self, scores):
            return torch.as_tensor(scores).double().numpy() * self.scale

    callback.calibrators = {"a": Fixed(1.0), "b": Fixed(0.5)}
    fused = callback.fuse(callback.calibrate({"a": torch.tensor([[0.2, 0.4]]),
                                               "b": torch.tensor([[1.0, float("nan")]])}))
    assert fused[0, 0].item() == pytest.approx((0.2 + 3 * 0.5) / 4)
    assert fused[0, 1].item() == pytest.approx(0.4)  # b unscored: only a counts
    with pytest.raises(RuntimeError, match="no calibrator"):
        callback.calibrate({"c": torch.zeros(1, 2)})


def test_sift_reranking_runs_offline_and_separates_individuals(tmp_path):
    scorer = PairScorer(extractor=SiftExtractor(max_num_keypoints=64, progress=False),
                        matcher=MatchDescriptors(collector=CollectCounts(thresholds=[0.2]), progress=False),
                        image_size=48)
    callback = LocalFeatureReranking(scorers=[scorer], shortlist=SHORTLIST, save_dir=str(tmp_path / "c"))
    trainer, model = run_test(tmp_path, callback)
    assert {"test/reranked/top1", "test/reranked/mAP", "test/reranked/seconds"} <= set(trainer.callback_metrics)
    assert set(callback.reranker.calibrators) == {"global", scorer.name}
    # SIFT match counts on the test shortlist: same-individual pairs score higher on average
    results = model.evaluation_results()
    datasets = trainer.datamodule.eval_datasets("test")
    scores = callback.reranker.pair_scores(results, datasets[0], datasets[1])[scorer.name]
    same = results.hits[:, :SHORTLIST]
    assert same.any() and (~same).any()
    assert scores[same].mean() > scores[~same].mean()


def test_shortlist_above_100_is_honoured_at_calibration_and_test(tmp_path):
    scorer = PairRecorder()
    callback = LocalFeatureReranking(scorers=[scorer], shortlist=150, include_global=False,
                                     save_dir=str(tmp_path / "c"))
    module = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=22,
                            synthetic_images_per_individual=12, synthetic_image_size=32, image_size=16,
                            val_ratio=0.1, test_ratio=0.2, batch_size=64)
    model = ReIDModule(backbone="resnet10t", pretrained=False, top_k=(1,), candidates=150)
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.test(model, datamodule=module)
    assert len(module.dataset("train")) > 150
    calibration_pairs, test_pairs = scorer.calls
    for pairs, stage in ((calibration_pairs, "val"), (test_pairs, "test")):
        per_query = torch.bincount(pairs[:, 0])
        assert len(per_query) == len(module.dataset(stage))
        assert (per_query == 150).all(), stage
    assert model.evaluation_results().num_candidates == 150


def test_calibration_scores_match_test_time_scores_under_bf16(tmp_path):
    """The calibrator must be fitted on the global scores the module computes under the trainer's precision."""
    callback = LocalFeatureReranking(scorers=[], shortlist=SHORTLIST, include_global=True,
                                     save_dir=str(tmp_path / "c"))
    fitted = []  # the results whose shortlist pairs are scored: validation's first, then the test's
    original = callback.reranker.pair_scores

    def recording(results, *args, **kwargs):
        fitted.append(results)
        return original(results, *args, **kwargs)

    callback.reranker.pair_scores = recording
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, top_k=(1,))
    data = datamodule(tmp_path)
    options = {"logger": False, "enable_progress_bar": False, "accelerator": "cpu", "default_root_dir": tmp_path}
    L.Trainer(callbacks=[callback], precision="bf16-mixed", **options).test(model, datamodule=data)

    def validation_scores(precision):
        L.Trainer(precision=precision, **options).validate(model, datamodule=data)
        return model.evaluation_results().candidate_scores[:, :SHORTLIST]

    bf16, fp32 = validation_scores("bf16-mixed"), validation_scores("32-true")
    assert torch.equal(fitted[0].candidate_scores[:, :SHORTLIST], bf16)
    assert (bf16 - fp32).abs().max() > 1e-4, "bf16 and fp32 scores must differ for this test to mean anything"


def test_library_reranker_equals_the_callback(tmp_path):
    from reid_lightning.features import DeepFeatures
    from reid_lightning.retrieval import search
    from reid_lightning.similarity import PairwiseReranker

    callback = LocalFeatureReranking(scorers=[OracleScorer()], shortlist=SHORTLIST, include_global=True,
                                     save_dir=str(tmp_path / "calibration"))
    trainer, model = run_test(tmp_path, callback)
    logged = trainer.callback_metrics

    # the same chain in plain Python: embed -> search -> fit on validation -> rerank test
    data = trainer.datamodule
    embed = DeepFeatures(model, batch_size=8, progress=False)
    gallery_dataset = data.dataset("train")
    gallery = embed(gallery_dataset)

    def results_of(split):
        dataset = data.dataset(split)
        return dataset, search(embed(dataset), gallery, k=SHORTLIST, query_labels=dataset.labels,
                               gallery_labels=gallery_dataset.labels)

    reranker = PairwiseReranker([OracleScorer()], shortlist=SHORTLIST, include_global=True)
    reranker.fit(results_of("val")[1], data.dataset("val"), gallery_dataset)
    test_dataset, test_results = results_of("test")
    reranked = reranker(test_results, test_dataset, gallery_dataset).metrics(top_k=(1, SHORTLIST))
    for name in ("top1", f"top{SHORTLIST}", "mAP", "maxF1"):
        assert reranked[name] == pytest.approx(logged[f"test/reranked/{name}"].item(), abs=1e-6), name
    # the saved calibrators load into a fresh reranker and give the same probabilities
    loaded = PairwiseReranker([OracleScorer()], shortlist=SHORTLIST).load(tmp_path / "calibration")
    probe = {"global": torch.tensor([[0.1, 0.5, 0.9]]), "oracle": torch.tensor([[0.0, 1.0, 1.0]])}
    for name, values in loaded.calibrate(probe).items():
        torch.testing.assert_close(values, reranker.calibrate(probe)[name])
    # and the fusion rule chosen on validation with them: same rule, same fused probabilities
    assert loaded.fusion_report.chosen == reranker.fusion_report.chosen
    torch.testing.assert_close(loaded.fuse(loaded.calibrate(probe)), reranker.fuse(reranker.calibrate(probe)))
    # the library reranker's own save/load gives identical fused scores
    again = PairwiseReranker([OracleScorer()], shortlist=SHORTLIST).load(reranker.save(tmp_path / "library"))
    assert torch.equal(again.fuse(again.calibrate(probe)), reranker.fuse(reranker.calibrate(probe)))


def test_auto_shortlist_keeps_every_candidate_until_validation_certifies_a_shorter_list(tmp_path):
    callback = LocalFeatureReranking(scorers=[OracleScorer()], shortlist="auto", include_global=False,
                                     save_dir=str(tmp_path / "calibration"))
    trainer, model = run_test(tmp_path, callback)
    recall, chosen = callback.validation_recall, callback.reranker.shortlist
    largest = max(recall)
    assert largest == min(model.hparams.candidates, len(trainer.datamodule.dataset("train")))
    # no shorter list is certified by these validation queries: each loses more than 2 % of the recall at the
    # largest size, as measured or at 95 % confidence (the bound checked against its definition in test_fusion)
    queries = len(trainer.datamodule.dataset("val"))
    for size in (size for size in recall if size < chosen):
        lost = round((recall[largest] - recall[size]) * queries)
        assert loss_upper_bound(lost, queries, 0.95) > 0.02 * recall[largest]
    assert chosen == largest  # a handful of queries (0 lost of 11 bounds the loss by 24 %) certify no cut
    metrics = trainer.callback_metrics
    assert metrics["test/reranked/shortlist"].item() == chosen
    assert metrics[f"test/reranked/val_recall@{chosen}"].item() == pytest.approx(recall[chosen])
    # the reranked test results rescore exactly the chosen shortlist: the oracle reaches its recall
    assert metrics["test/reranked/top1"].item() == pytest.approx(
        model.evaluation_results().hits[:, :chosen].any(dim=1).float().mean().item())


def test_new_photos_are_grouped_by_the_fused_probability_with_a_cut_chosen_on_validation(tmp_path):
    """With an oracle local score and every pair of new photos linked, the fused grouping of the test queries of
    identities absent from the gallery is exact, at a cut chosen on validation identities kept out of training;
    predict groups the photos it answers new the same way."""
    data = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=12,
                          synthetic_images_per_individual=6, synthetic_image_size=32, image_size=32, split="open",
                          open_ratio=0.3, val_unseen_ratio=0.3, val_ratio=0.2, test_ratio=0.3, batch_size=16)
    callback = LocalFeatureReranking(scorers=[OracleScorer()], shortlist=SHORTLIST, include_global=True,
                                     save_dir=str(tmp_path / "calibration"), discovery_k=40)
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, top_k=(1, SHORTLIST))
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        accelerator="cpu")
    trainer.test(model, datamodule=data)
    cut = callback.open_set.discovery_threshold
    assert cut is not None and callback.open_set.discovery_ami == pytest.approx(1.0)
    saved = json.loads((tmp_path / "calibration" / "threshold.json").read_text())
    assert saved["discovery_threshold"] == cut
    metrics = trainer.callback_metrics
    assert metrics["test/reranked/discovery/ARI"].item() == pytest.approx(1.0)
    assert metrics["test/reranked/discovery/count_error"].item() == 0

    from reid_lightning.callbacks import PredictionWriter

    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"))
    predicting = LocalFeatureReranking(scorers=[OracleScorer()], shortlist=SHORTLIST, include_global=True,
                                       calibration_dir=str(tmp_path / "calibration"), discovery_k=40)
    L.Trainer(callbacks=[predicting, writer], logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
              accelerator="cpu").predict(model, datamodule=data)
    assert writer.discovery is not None and writer.discovery.threshold == cut


def test_widening_lets_local_matching_find_individuals_outside_the_global_shortlist(tmp_path):
    """An oracle local score and a 6-image shortlist (each individual has about 4 training images): without widening, reranking finds the individual only when the
    untrained global model shortlisted it; widened by matching each query with one image of every individual, every
    test query finds its individual, and predict widens the same way."""
    from reid_lightning.callbacks import PredictionWriter
    from reid_lightning.similarity import IdentityWidening

    data = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=12,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32, val_ratio=0.2,
                          test_ratio=0.3, batch_size=16)
    top1, recall = {}, {}
    for widen in (False, True):
        callback = LocalFeatureReranking(scorers=[OracleScorer()], shortlist=6, include_global=False,
                                         save_dir=str(tmp_path / f"calibration-{widen}"),
                                         widening=IdentityWidening(keep=0) if widen else None)
        torch.manual_seed(0)
        model = ReIDModule(backbone="resnet10t", pretrained=False, top_k=(1, 6), candidates=1000)
        trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                            accelerator="cpu")
        trainer.test(model, datamodule=data)
        top1[widen] = trainer.callback_metrics["test/reranked/top1"].item()
        recall[widen] = model.evaluation_results().hits[:, :6].any(dim=1).float().mean().item()
    assert top1[False] == pytest.approx(recall[False]) and recall[False] < 1.0
    assert top1[True] == 1.0

    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"))
    predicting = LocalFeatureReranking(scorers=[OracleScorer()], shortlist=6, include_global=False,
                                       calibration_dir=str(tmp_path / "calibration-True"),
                                       widening=IdentityWidening(keep=0))
    L.Trainer(callbacks=[predicting, writer], logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
              accelerator="cpu").predict(model, datamodule=data)
    answers = writer.predictions
    truth = answers["image_id"].str.rsplit("_", n=1).str[0]
    named = ~answers["is_new"]
    assert named.any() and (answers.loc[named, "identity"] == truth[named]).all()
