"""The retrieval report: streamed score histograms, PR and CMC curves, query picking, per-query table (hand-made
results with hand-computed expectations), and the PNG + report.html fallback of the RetrievalReport callback."""

import os
import re
import stat
from dataclasses import replace
from html import escape

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import single_thread  # noqa: F401 (autouse fixture: one intra-op thread on the shared cores)
from PIL import Image

from reid_lightning.callbacks import LocalFeatureReranking, RetrievalReport
from reid_lightning.data import ReIDDataModule
from reid_lightning.features import SiftExtractor
from reid_lightning.models import ReIDModule
from reid_lightning.report import (
    PANELS,
    Caption,
    Curve,
    GalleryLayout,
    ReportInputs,
    ReportSettings,
    build_report,
    cmc_curve,
    embedding_sample,
    pick_queries,
    query_frame,
    register_panel,
    score_distributions,
)
from reid_lightning.report.gallery import CORRECT, QUERY, WRONG
from reid_lightning.retrieval import Exclusion, RetrievalResults, search
from reid_lightning.similarity import MatchDescriptors, PairScorer

NAMES = {0: "a", 1: "b", 2: "c", 3: "d"}


def two_query_results(**kwargs) -> RetrievalResults:
    """Query 0 (individual 0) and query 1 (individual 1) against gallery [0, 0, 1, 2]; pair (1, 3) excluded."""
    scores = torch.tensor([[1.00, 0.35, 0.65, 0.00],
                           [0.15, 0.85, 0.45, 0.55]])
    excluded = torch.zeros(2, 4, dtype=torch.bool)
    excluded[1, 3] = True
    return RetrievalResults.from_scores(scores, gallery_labels=torch.tensor([0, 0, 1, 2]),
                                        query_labels=torch.tensor([0, 1]), exclude=Exclusion.from_mask(excluded),
                                        **kwargs)


def test_score_distributions_count_every_pair_but_excluded_ones():
    distributions = score_distributions(two_query_results(), bins=10)
    # range [0, 1] in 10 bins; positives 1.0, 0.35 (query 0), 0.45 (query 1); negatives 0.65, 0.0, 0.15, 0.85
    assert torch.allclose(distributions.edges, torch.linspace(0, 1, 11, dtype=torch.float64))
    assert distributions.positive.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 1]
    assert distributions.negative.tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 1, 0]
    assert distributions.full_ranking and distributions.num_queries == 2


def test_score_distributions_stream_in_blocks(monkeypatch):
    import reid_lightning.report.distributions as module

    monkeypatch.setattr(module, "BLOCK_SCORES", 1)  # one query row per block
    distributions = score_distributions(two_query_results(), bins=10)
    assert distributions.positive.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 1]
    assert distributions.negative.tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 1, 0]


def test_score_distributions_without_source_count_candidates_only():
    results = replace(two_query_results(k=2), source=None)
    distributions = score_distributions(results, bins=4)
    # candidates: query 0 -> 1.0 (same), 0.65; query 1 -> 0.85, 0.45 (same)
    assert int(distributions.positive.sum()) == 2 and int(distributions.negative.sum()) == 2
    assert not distributions.full_ranking
    assert distributions.edges[0].item() == pytest.approx(0.45) and distributions.edges[-1].item() == 1.0


def test_score_distributions_sample_queries():
    distributions = score_distributions(two_query_results(), bins=10, max_queries=1)
    assert distributions.num_queries == 1
    # query 0 has 4 gallery pairs, query 1 three (one excluded)
    assert int(distributions.positive.sum() + distributions.negative.sum()) in (3, 4)


def test_pr_curve_at_every_threshold():
    precision, recall, thresholds = score_distributions(two_query_results(), bins=10).pr_curve()
    # pairs admitted at threshold t: score >= t; 3 positives in all (hand count from the matrix above)
    assert thresholds.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert precision.tolist() == pytest.approx([1, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 2 / 4, 3 / 5, 3 / 5, 3 / 6, 3 / 7])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1, 1])


def three_query_results() -> RetrievalResults:
    """Query 0: first correct at rank 1; query 1: at rank 3; query 2: individual absent from the gallery."""
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                           [0.9, 0.5, 0.8, 0.1],
                           [0.2, 0.7, 0.4, 0.3]])
    return RetrievalResults.from_scores(scores, gallery_labels=torch.tensor([0, 1, 2, 3]),
                                        query_labels=torch.tensor([0, 1, 5]), identity_names=NAMES)


def test_cmc_curve_counts_queries_without_positive_as_misses():
    assert cmc_curve(three_query_results(), 4).tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_pick_queries_worst_first_then_random_others():
    results = three_query_results()  # AP: query 0 -> 1, query 1 -> 1/3, query 2 -> no positive
    picked = pick_queries(results, worst=1, random=5, seed=0)
    assert picked[0].item() == 1
    assert sorted(picked.tolist()) == [0, 1, 2]
    assert pick_queries(results, worst=5, random=0).tolist() == [1, 0]  # never a query without positive


def test_query_frame_rows_lowest_ap_first():
    frame = query_frame(three_query_results())
    assert frame["query_index"].tolist() == [2, 1, 0]
    assert frame["query"].tolist() == ["2", "1", "0"]  # no dataset to name the images by: their positions
    assert frame["top1"].tolist() == ["1", "0", "0"]
    assert frame["first_correct_rank"].tolist() == [0, 3, 1]  # 0: no gallery image of the individual
    assert frame["ap"].tolist() == pytest.approx([0.0, 1 / 3, 1.0])
    assert frame["identity"].tolist() == ["5", "b", "a"]
    assert frame["top1_identity"].tolist() == ["b", "a", "a"]
    assert frame["top1_score"].tolist() == pytest.approx([0.7, 0.9, 0.9])
    assert len(query_frame(three_query_results(), max_rows=2)) == 2


def test_embedding_sample_is_bounded_and_keeps_rows():
    query, gallery = torch.randn(7, 3), torch.randn(11, 3)
    results = search(query, gallery, k=2, query_labels=torch.arange(7) % 3, gallery_labels=torch.arange(11) % 3)
    vectors, frame = embedding_sample(results, max_points=6, seed=0)
    assert vectors.shape == (6, 3) and frame["role"].tolist() == ["query"] * 3 + ["gallery"] * 3
    for vector, (role, index) in zip(vectors, frame[["role", "index"]].itertuples(index=False)):
        source = query if role == "query" else gallery
        assert np.allclose(vector, source[index].numpy())
    assert embedding_sample(RetrievalResults.from_scores(torch.rand(2, 3), gallery_labels=[0, 1, 2])) is None


def test_register_panel_adds_a_panel_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr("reid_lightning.report.panels.PANELS", dict(PANELS))
    from reid_lightning.report import panels

    @register_panel("thresholds", captions={"thresholds": Caption("Open-set thresholds", "BAKS per threshold.")})
    def thresholds(inputs, settings):
        return {"thresholds": Curve(pd.DataFrame({"t": [0.0, 1.0], "baks": [1.0, 0.5]}), "t", "baks", "BAKS")}

    report = build_report(ReportInputs(three_query_results(), None, None), ReportSettings(),
                          panels=["cmc", "thresholds"])
    assert set(report.curves) == {"thresholds", "cmc_curve_data"} and set(report.figures) == {"cmc_curve"}
    assert report.caption("thresholds") == Caption("Open-set thresholds", "BAKS per threshold.")
    assert "thresholds" in panels.PANELS
    with pytest.raises(ValueError, match="already registered"):
        register_panel("thresholds", captions={"thresholds": Caption("t", "c")})(thresholds)
    with pytest.raises(ValueError, match="needs a caption"):
        register_panel("uncaptioned", captions={})
    with pytest.raises(ValueError, match="unknown report panels"):
        build_report(ReportInputs(three_query_results(), None, None), ReportSettings(), panels=["nope"])


# ---------------------------------------------------------------------------------------------- callback
class OracleScorer:
    """Scores a pair 1 when both images show the same individual."""

    name = "oracle"

    def score(self, query_dataset, gallery_dataset, pairs):
        same = query_dataset.labels[pairs[:, 0].numpy()] == gallery_dataset.labels[pairs[:, 1].numpy()]
        return {"oracle": torch.as_tensor(same, dtype=torch.float32)}


def datamodule(tmp_path):
    return ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=6,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32,
                          val_ratio=0.2, test_ratio=0.3, batch_size=8)


def declared_caption(item: str) -> Caption:
    """The caption the registered panels declare for report item ``item`` (exactly one must)."""
    (caption,) = [c for c in (panel.caption(item) for panel in PANELS.values()) if c is not None]
    return caption


def test_report_files_after_reranked_test(tmp_path):
    torch.manual_seed(0)
    top_k = 3
    old_umask = os.umask(0o027)  # neither mkstemp's 0600 nor the usual 0644: the mode must follow the umask
    try:
        report, reranking, model, data = reranked_test_report(tmp_path, top_k)
    finally:
        os.umask(old_umask)

    html_path = report.last_html
    assert html_path == tmp_path / "report" / "test-epoch000" / "report.html"
    html = html_path.read_text()
    pngs = sorted(path.name for path in html_path.parent.glob("*.png"))
    assert pngs == sorted(["retrieval_gallery.png", "score_histograms.png", "pr_curve.png", "cmc_curve.png",
                           "reliability_global.png", "reliability_oracle.png",
                           "reliability_sift_MatchDescriptors.png", "matches_sift_MatchDescriptors.png"])
    for name in pngs:
        with Image.open(html_path.parent / name) as image:
            image.verify()
            assert image.format == "PNG"
        assert f'href="{name}"' in html
    # every figure is embedded too: the page needs no neighbouring file
    assert len(re.findall(r'<a href="[^"]+\.png"><img src="data:image/png;base64,', html)) == len(pngs)
    # reranked order beside the global one: every candidate framed green when it shows the query's individual
    results, reranked = model.evaluation_results(), reranking.test_evaluation.reranked
    queries = pick_queries(results, worst=2, random=1, seed=0).tolist()
    layout = GalleryLayout(rankings=2, top_k=top_k, thumbnail_size=96)
    with Image.open(html_path.parent / "retrieval_gallery.png") as gallery:
        gallery = gallery.convert("RGB")
    assert gallery.size == layout.size(len(queries))
    frames = []
    for row, query in enumerate(queries):
        assert gallery.getpixel(layout.frame_box(row, 0)[:2]) == QUERY
        for block, ranking in enumerate((results, reranked)):
            for slot in range(top_k):
                left, top, right, bottom = layout.frame_box(row, 1 + block * top_k + slot)
                colors = {gallery.getpixel(point) for point in ((left, top), (right, bottom), (left + 1, bottom))}
                frames.append(colors == {CORRECT if ranking.hits[query, slot] else WRONG})
    assert all(frames)
    assert results.hits[queries, :top_k].tolist() != reranked.hits[queries, :top_k].tolist()  # orders differ
    # the match picture: one row (query | reranked top-1) for each of the first match_pairs shown queries
    with Image.open(html_path.parent / "matches_sift_MatchDescriptors.png") as picture:
        assert picture.size == (700, round(100 * (2 * 3.2 + 0.4)))  # at 100 dpi: 7 inches wide, 3.2 per row + title

    frame = pd.read_csv(html_path.parent / "queries.csv")
    assert len(frame) == results.num_queries
    expected_rank = (results.stats.best_rank.cpu() + 1).clamp(min=0)[torch.tensor(frame["query_index"].tolist())]
    assert frame["first_correct_rank"].tolist() == expected_rank.tolist()
    assert frame["ap"].is_monotonic_increasing
    cmc = pd.read_csv(html_path.parent / "cmc_curve_data.csv")
    # the oracle puts a positive first wherever the shortlist holds one: reranked top-1 = global top-4
    assert cmc["top_k_reranked"][0] == pytest.approx(cmc["top_k_global"][3])

    # readable: every item under its panel's plain title and caption, never under its bare name
    items = ["retrieval_gallery", "score_histograms", "pr_curve", "cmc_curve", "reliability/global",
             "reliability/oracle", "reliability/sift_MatchDescriptors", "matches/sift_MatchDescriptors", "queries"]
    for item in items:
        caption = declared_caption(item)
        assert f"<h2>{escape(caption.title)}</h2>" in html and escape(caption.text) in html
        assert f"<h2>{item}</h2>" not in html
    assert "sift_MatchDescriptors" in declared_caption("matches/sift_MatchDescriptors").title
    # counts are whole numbers; rates keep 4 decimals
    assert f"<td>test/num_queries</td><td>{results.num_queries}</td>" in html
    assert re.search(r"<td>test/mAP</td><td>\d\.\d{4}</td>", html)
    # queries are named by image_id (and file), their top-1 by the gallery image's image_id, not by position
    query_data, gallery_data = data.eval_datasets("test")[0], data.eval_datasets("test")[-1]
    rows = frame["query_index"].tolist()
    assert frame["query"].tolist() == query_data.metadata["image_id"].iloc[rows].tolist()
    assert frame["query_file"].tolist() == query_data.metadata["path"].iloc[rows].tolist()
    top1 = results.candidate_indices[rows, 0].tolist()
    assert frame["top1"].tolist() == gallery_data.metadata["image_id"].iloc[top1].tolist()
    assert all(name.startswith("ind_") for name in frame["query"])  # the synthetic set's image_ids
    # every written file is as readable as any other the user writes (0666 less the umask 0027)
    for path in html_path.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


def reranked_test_report(tmp_path, top_k: int):
    """A test run with reranking by the oracle and SIFT and a RetrievalReport writing its files."""
    # a real local scorer (its matches are drawn) beside the oracle, which outweighs it in the fusion
    sift = PairScorer(extractor=SiftExtractor(max_num_keypoints=64, progress=False),
                      matcher=MatchDescriptors(progress=False), image_size=48, cache_dir=tmp_path / "cache")
    reranking = LocalFeatureReranking(scorers=[OracleScorer(), sift], shortlist=4, weights={"oracle": 10.0},
                                      save_dir=str(tmp_path / "cal"))
    report = RetrievalReport(top_k=top_k, worst_queries=2, random_queries=1, match_pairs=2, write_files=True)
    model = ReIDModule(backbone="resnet10t", pretrained=False)
    trainer = L.Trainer(callbacks=[report, reranking], logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    data = datamodule(tmp_path)
    trainer.test(model, datamodule=data)
    return report, reranking, model, data


def test_report_every_n_validation_epochs_and_the_last(tmp_path):
    torch.manual_seed(0)
    report = RetrievalReport(every_n_val_epochs=2, on_test=False, panels=["cmc"])
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    trainer = L.Trainer(max_epochs=3, callbacks=[report], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu",
                        limit_train_batches=1, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule(tmp_path))
    folders = sorted(path.name for path in (tmp_path / "report").iterdir())
    assert folders == ["val-epoch001", "val-epoch002"]  # epochs 2 and 3 (last); never the sanity check
    assert sorted(path.name for path in (tmp_path / "report" / "val-epoch001").iterdir()) == [
        "cmc_curve.png", "cmc_curve_data.csv", "report.html"]
    trainer.validate(model, datamodule=datamodule(tmp_path))  # a validate run is always reported
    assert report.last_html.parent.name == "val-epoch003"


def test_open_split_test_report_shows_the_proposed_new_individuals(tmp_path):
    """With unknown test queries and a discovery cut, the test report draws one contact-sheet row per group."""
    torch.manual_seed(0)
    data = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=10,
                          synthetic_images_per_individual=6, synthetic_image_size=32, image_size=32, split="open",
                          open_ratio=0.3, val_ratio=0.2, test_ratio=0.3, batch_size=16)
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, open_set_threshold=0.9,
                       discovery_threshold=0.5)
    report = RetrievalReport(write_files=True)
    trainer = L.Trainer(callbacks=[report], logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        accelerator="cpu")
    trainer.test(model, datamodule=data)
    found = model.discovery
    assert found is not None and len(found.queries) > 0
    html = report.last_html.read_text()
    assert escape(declared_caption("new_individuals").title) in html
    assert (report.last_html.parent / "new_individuals.png").stat().st_size > 1000
    # the metrics logged from the same grouping
    truth, groups = found.true_labels.numpy(), found.discovery.groups
    assert trainer.callback_metrics["test/discovery/num_groups"] == len(set(groups.tolist()))
    assert trainer.callback_metrics["test/discovery/num_individuals"] == len(set(truth.tolist()))
