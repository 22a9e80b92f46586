"""A report a biologist can read: every item under a plain title and caption (on the page and on W&B), counts as
integers, images named by image_id or file instead of dataset positions, files readable like any other."""

import os
import stat
from html import escape

import pandas as pd
import pytest
import torch
from helpers import single_thread  # noqa: F401 (autouse fixture: one intra-op thread on the shared cores)
from PIL import Image

import reid_lightning.report.gallery as gallery_module
from reid_lightning.data.dataset import ImageDataset
from reid_lightning.inference.gallery_cache import GalleryCache
from reid_lightning.report import (
    PANELS,
    Caption,
    Report,
    ReportInputs,
    ReportSettings,
    build_report,
    gallery_image,
    image_names,
    log_report_to_wandb,
    query_frame,
    write_report_files,
)
from reid_lightning.report.files import format_metric
from reid_lightning.retrieval import RetrievalResults
from reid_lightning.rundir import write_new_file


def photo_dataset(folder, names: list[str], identities: str, image_ids: bool = True) -> ImageDataset:
    """One flat 16 x 16 image per name, in ``<folder>/<identity>/<name>.png``; ``image_id`` = ``id-<name>``."""
    rows = []
    for name, identity in zip(names, identities, strict=True):
        (folder / identity).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * len(rows), 90, 160)).save(folder / identity / f"{name}.png")
        rows.append({"path": f"{identity}/{name}.png", "identity": identity} | ({"image_id": f"id-{name}"}
                                                                              if image_ids else {}))
    return ImageDataset(pd.DataFrame(rows), root=folder)


def three_queries(tmp_path, image_ids: bool = True) -> ReportInputs:
    """Queries q0 (a), q1 (b), q2 (e, absent from the gallery) against gallery g0..g3 of a, b, c, d. Top-1:
    q0 -> g0 (right), q1 -> g0 (wrong; g1 third), q2 -> g1."""
    query = photo_dataset(tmp_path / "query", ["q0", "q1", "q2"], "abe", image_ids)
    gallery = photo_dataset(tmp_path / "gallery", ["g0", "g1", "g2", "g3"], "abcd", image_ids)
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                           [0.9, 0.5, 0.8, 0.1],
                           [0.2, 0.7, 0.4, 0.3]])
    results = RetrievalResults.from_scores(scores, gallery_labels=torch.tensor([0, 1, 2, 3]),
                                           query_labels=torch.tensor([0, 1, 4]),
                                           identity_names={0: "a", 1: "b", 2: "c", 3: "d", 4: "e"})
    return ReportInputs(results, query, gallery)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


# ---------------------------------------------------------------------------------------------- names
def test_images_are_named_by_image_id_then_file_then_index(tmp_path):
    inputs = three_queries(tmp_path)
    assert image_names(inputs.gallery_dataset, [2, 0, -1]) == ["id-g2", "id-g0", ""]  # -1: no candidate
    without_ids = photo_dataset(tmp_path / "plain", ["p0", "p1"], "ab", image_ids=False)
    assert image_names(without_ids, [1, 0]) == ["b/p1.png", "a/p0.png"]
    assert image_names(object(), [3, 1]) == ["3", "1"]  # a dataset without metadata


def test_query_table_names_queries_and_top1_by_image_id(tmp_path):
    inputs = three_queries(tmp_path)
    frame = build_report(inputs, ReportSettings(), panels=["queries"]).tables["queries"]
    # lowest AP first: q2 (no positive), q1 (first correct at rank 3), q0
    assert frame["query"].tolist() == ["id-q2", "id-q1", "id-q0"]
    assert frame["query_file"].tolist() == ["e/q2.png", "b/q1.png", "a/q0.png"]
    assert frame["top1"].tolist() == ["id-g1", "id-g0", "id-g0"]
    assert frame["query_index"].tolist() == [2, 1, 0]
    # the file is no second column when it already is the name
    plain = query_frame(three_queries(tmp_path / "plain", image_ids=False).results,
                        query_dataset=three_queries(tmp_path / "plain2", image_ids=False).query_dataset)
    assert plain["query"].tolist() == ["e/q2.png", "b/q1.png", "a/q0.png"] and "query_file" not in plain


def test_gallery_titles_name_query_and_candidates(tmp_path, monkeypatch):
    captions = []

    def record(canvas, draw, font, box, image, caption, color, layout, *, name_line):
        captions.append(caption)

    monkeypatch.setattr(gallery_module, "_cell", record)
    inputs = three_queries(tmp_path)
    gallery_image([1], {"global": inputs.results}, query_dataset=inputs.query_dataset,
                  gallery_dataset=inputs.gallery_dataset, top_k=2)
    # query q1 (b, AP 1/3), then its top-2: g0 (a, 0.9), g2 (c, 0.8)
    assert captions == [["id-q1", "b", "AP=0.33"], ["#1: 0.900", "a", "id-g0"], ["#2: 0.800", "c", "id-g2"]]


def test_long_names_keep_their_end_in_the_gallery(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(gallery_module.ImageDraw.ImageDraw, "multiline_text",
                        lambda self, xy, text, **kwargs: drawn.append(text))
    inputs = three_queries(tmp_path)
    inputs.query_dataset.metadata["image_id"] = ["site_A/camera_07/2021-06-03/IMG_0042.JPG"] * 3
    gallery_image([0], {"global": inputs.results}, query_dataset=inputs.query_dataset,
                  gallery_dataset=inputs.gallery_dataset, top_k=1)
    first_line = drawn[0].split("\n")[0]
    assert first_line.startswith("…") and first_line.endswith("IMG_0042.JPG")


# ---------------------------------------------------------------------------------------------- captions
def test_every_built_in_item_has_a_declared_caption(tmp_path):
    report = build_report(three_queries(tmp_path), ReportSettings())
    items = [*report.figures, *report.curves, *report.tables]
    assert set(items) == {"retrieval_gallery", "score_histograms", "pr_curve", "pr_curve_data", "cmc_curve",
                          "cmc_curve_data", "queries"}
    for item in items:
        caption = report.caption(item)
        assert caption is not None and caption.title and caption.text and item not in caption.title
    assert report.caption("cmc_curve") == Caption(
        "How often the right animal is in the top k (CMC curve)",
        "Fraction of queries whose first correct match is at rank k or better; k = 1 is top-1 accuracy. Queries "
        "whose animal is not in the gallery count as misses.")


def test_caption_fields_are_filled_from_the_item_name():
    caption = PANELS["reliability"].caption("reliability/lightglue")
    assert "lightglue" in caption.title and "{score}" not in caption.title + caption.text
    assert PANELS["reliability"].caption("cmc_curve") is None


def test_report_page_shows_titles_captions_and_counts_as_integers(tmp_path):
    report = build_report(three_queries(tmp_path / "data"), ReportSettings())
    metrics = {"test/num_queries": 154.0, "test/queries_without_positives": 3.0, "test/mAP": 0.5, "test/top1": 1.0}
    page = write_report_files(tmp_path / "report", report, title="t", metrics=metrics).read_text()
    for item in ("retrieval_gallery", "score_histograms", "pr_curve", "cmc_curve", "queries"):
        caption = report.caption(item)
        assert f"<h2>{escape(caption.title)}</h2><p class=\"caption\">{escape(caption.text)}</p>" in page
        assert f"<h2>{item}</h2>" not in page
    assert "<td>test/num_queries</td><td>154</td>" in page
    assert "<td>test/queries_without_positives</td><td>3</td>" in page
    assert "<td>test/mAP</td><td>0.5000</td>" in page and "<td>test/top1</td><td>1.0000</td>" in page
    # each curve's data is linked under its figure
    assert page.index('href="pr_curve_data.csv"') > page.index('href="pr_curve.png"')
    assert page.index('href="cmc_curve_data.csv"') > page.index('href="cmc_curve.png"')
    # the per-query table: names, and ranks as whole numbers
    assert "<td>id-q1</td>" in page and "<td>3</td>" in page


def test_metric_format():
    assert format_metric("val/num_queries", 154.0) == "154"
    assert format_metric("test/reranked/queries_without_positives", 0.0) == "0"
    assert format_metric("test/excluded_pairs", 4233.0) == "4233"
    assert format_metric("val/top1", 1.0) == "1.0000"  # a rate stays a rate, even when whole
    assert format_metric("val/num_queries", float("nan")) == "nan"


def test_integer_columns_stay_integers_in_an_all_numeric_table(tmp_path):
    report = Report(tables={"ranks": pd.DataFrame({"rank": [1, 12], "ap": [0.5, 0.25]})})
    page = write_report_files(tmp_path, report, title="t").read_text()
    assert "<td>12</td><td>0.250</td>" in page and "12.000" not in page
    assert "<h2>ranks</h2>" in page  # an undeclared item keeps its name as title


def test_wandb_pictures_and_plots_carry_titles_and_captions(tmp_path):
    class Run:
        def log(self, data):
            self.data = data

    run = Run()
    report = build_report(three_queries(tmp_path), ReportSettings(), panels=["gallery", "cmc"])
    log_report_to_wandb(run, report, prefix="report/val")
    assert set(run.data) == {"report/val/retrieval_gallery", "report/val/cmc_curve", "report/val/cmc_curve_data"}
    for name in ("retrieval_gallery", "cmc_curve"):
        caption = report.caption(name)
        assert run.data[f"report/val/{name}"]._caption == f"{caption.title}. {caption.text}"
    plot = run.data["report/val/cmc_curve_data"]
    assert plot.spec.string_fields["title"] == report.caption("cmc_curve_data").title


# ---------------------------------------------------------------------------------------------- file modes
def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_mode_of_a_new_file(tmp_path, umask):
    expected = 0o666 & ~umask
    reference = tmp_path / "reference.txt"
    with open(reference, "w") as file:
        file.write("x")
    assert mode(reference) == expected
    first = write_new_file(tmp_path / "results.json", b"{}")
    second = write_new_file(tmp_path / "results.json", b"{}")  # the -1 copy of an existing name
    assert second.name == "results-1.json" and mode(first) == mode(second) == expected
    report = Report(figures={"picture": Image.new("RGB", (4, 4))},
                    tables={"table": pd.DataFrame({"a": [1]})})
    write_report_files(tmp_path / "report", report, title="t")
    assert {path.name: mode(path) for path in (tmp_path / "report").iterdir()} == {
        "picture.png": expected, "table.csv": expected, "report.html": expected}
    cached = GalleryCache(tmp_path / "cache").save("key", torch.zeros(2, 3))
    assert mode(cached) == expected
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [cached.name]  # no temp file left
