"""Open-set metrics (BAKS, BAUS, gmean, AUROC) against hand computations and scikit-learn; the open-set model
(threshold choice, held-out identities, calibrated confidence, saving) of ``reid_lightning.inference.open_set``."""

import itertools
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reid_lightning.inference import (
    OpenSetModel,
    choose_threshold,
    decision_inputs,
    fit_open_set,
    held_out_gallery_identities,
    open_set_log_values,
)
from reid_lightning.inference.open_set import SMALL_VALIDATION_IDENTITIES
from reid_lightning.inference.threshold import THRESHOLD_SMOOTHING
from reid_lightning.metrics import OpenSetMetrics, open_set_metrics
from reid_lightning.retrieval import RetrievalResults
from reid_lightning.similarity.calibration import IsotonicCalibration

# gallery identities 0 (A), 1 (B), 2 (C); queries: A x3 (several images), B x1 (one image), unknown D (3) x2,
# unknown E (4) x1
QUERY = torch.tensor([0, 0, 0, 1, 3, 3, 4])
KNOWN = torch.tensor([True, True, True, True, False, False, False])
TOP1 = torch.tensor([0, 1, 0, 1, 0, 2, 1])
SCORES = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.6, 0.1])


def test_metrics_equal_a_hand_computation():
    values = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES, threshold=0.5)
    # A: q0 right, q1 wrong identity, q2 answered new -> 1/3; B: right -> 1; BAKS = (1/3 + 1) / 2
    assert values["BAKS"] == pytest.approx(2 / 3)
    # D: q4 new (right), q5 accepted (wrong) -> 1/2; E: new -> 1; BAUS = 3/4
    assert values["BAUS"] == pytest.approx(3 / 4)
    assert values["gmean"] == pytest.approx(math.sqrt(2 / 3 * 3 / 4))
    assert values["acc_known"] == pytest.approx(2 / 4)
    assert values["acc_unknown"] == pytest.approx(2 / 3)
    # unknown scores {.2, .6, .1} below known {.9, .8, .3, .7} in 4 + 3 + 4 of 12 pairs
    assert values["auroc"] == pytest.approx(11 / 12)


def test_auroc_equals_sklearn_with_ties_and_empty_rows():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (60,), generator=generator).double() / 4  # many ties
    scores[:3] = -math.inf  # queries without any candidate
    known = torch.rand(60, generator=generator) < 0.5
    values = open_set_metrics(query_labels=torch.arange(60), known=known, top1_labels=torch.arange(60),
                              scores=scores, threshold=None)
    expected = roc_auc_score((~known).numpy(), -np.nan_to_num(scores.numpy(), neginf=-10))
    assert values["auroc"] == pytest.approx(expected)
    assert math.isnan(values["BAKS"])


def test_trivial_rules_score_zero():
    always_known = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES,
                                    threshold=-math.inf)
    always_new = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES,
                                  threshold=math.inf)
    assert always_known["BAUS"] == 0 and always_known["gmean"] == 0
    assert always_new["BAKS"] == 0 and always_new["gmean"] == 0 and always_new["BAUS"] == 1


def _reference_gmean(threshold: float) -> float:
    """Plain-Python BAKS x BAUS geometric mean of the hand case."""
    per_identity: dict[int, list[bool]] = {}
    for label, known, top1, score in zip(QUERY.tolist(), KNOWN.tolist(), TOP1.tolist(), SCORES.tolist()):
        new = score < threshold
        per_identity.setdefault(label, []).append((not new and top1 == label) if known else new)
    known_ids = {label for label, known in zip(QUERY.tolist(), KNOWN.tolist()) if known}
    baks = np.mean([np.mean(v) for k, v in per_identity.items() if k in known_ids])
    baus = np.mean([np.mean(v) for k, v in per_identity.items() if k not in known_ids])
    return math.sqrt(baks * baus)


def test_chosen_threshold_maximises_gmean_between_scores():
    threshold, gmean = choose_threshold(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES)
    grid = np.linspace(0, 1, 1001)
    best = max(_reference_gmean(t) for t in grid)
    assert gmean == pytest.approx(best)
    assert _reference_gmean(threshold) == pytest.approx(best)
    assert not torch.isclose(SCORES.double(), torch.tensor(threshold, dtype=torch.float64)).any()
    with pytest.raises(ValueError, match="both queries"):
        choose_threshold(query_labels=QUERY, known=torch.ones(7, dtype=torch.bool), top1_labels=TOP1, scores=SCORES)


def test_torchmetric_chunks_equal_the_whole():
    metric = OpenSetMetrics(threshold=0.5)
    for part in (slice(0, 3), slice(3, 7)):
        metric.update(query_labels=QUERY[part], known=KNOWN[part], top1_labels=TOP1[part], scores=SCORES[part])
    values = metric.compute()
    # the hand computation of test_metrics_equal_a_hand_computation
    assert values["BAKS"] == pytest.approx(2 / 3) and values["BAUS"] == pytest.approx(3 / 4)
    assert values["gmean"] == pytest.approx(math.sqrt(2 / 3 * 3 / 4))
    assert values["acc_known"] == pytest.approx(2 / 4) and values["acc_unknown"] == pytest.approx(2 / 3)


def test_decision_inputs_from_results():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.1, 0.4]])
    results = RetrievalResults.from_scores(scores, gallery_labels=["a", "b", "c"], query_labels=["a", "a", "z"])
    inputs = decision_inputs(results)
    assert inputs["known"].tolist() == [True, True, False]
    assert inputs["scores"].tolist() == pytest.approx([0.9, 0.8, 0.4])
    assert inputs["top1_labels"].tolist() == [results.gallery_labels[i].item() for i in (0, 1, 2)]


def test_held_out_identities_leave_their_queries_unknown():
    gallery = torch.tensor(list(itertools.chain.from_iterable([[i] * 3 for i in range(10)])))
    query = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
    keep = held_out_gallery_identities(query_labels=query, gallery_labels=gallery, fraction=0.3, seed=1)
    held = torch.unique(gallery[~keep])
    assert len(held) == 3 and not torch.isin(held, gallery[keep]).any()


def test_held_out_gallery_skips_candidates_and_makes_queries_unknown():
    # gallery a, a, b, c; query 0 (a) ranks a first, query 1 (b) ranks b then c, query 2 (c) ranks a then c
    scores = torch.tensor([[0.9, 0.8, 0.3, 0.1], [0.2, 0.1, 0.7, 0.6], [0.5, 0.1, 0.2, 0.4]])
    results = RetrievalResults.from_scores(scores, gallery_labels=["a", "a", "b", "c"], query_labels=["a", "b", "c"])
    keep = torch.tensor([True, True, False, True])  # identity b held out
    inputs = decision_inputs(results, keep_gallery=keep)
    assert inputs["known"].tolist() == [True, False, True]
    # query 1's b candidate is skipped: its top-1 is c at 0.6; the others keep their first candidate
    assert inputs["scores"].tolist() == pytest.approx([0.9, 0.6, 0.5])
    names = results.names(inputs["top1_labels"]).tolist()
    assert names == ["a", "c", "a"]
    nothing = decision_inputs(results, keep_gallery=torch.zeros(4, dtype=torch.bool))
    assert torch.isinf(nothing["scores"]).all() and not nothing["known"].any()


def _validation_results():
    """20 queries of identities 0..4 against a gallery of 0..4: queries of odd positions find their identity
    first with high scores (0.8-0.99), the others a wrong one with lower scores (0.3-0.5)."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(20) % 5
    scores = torch.rand(20, 5, generator=generator) * 0.2
    for q in range(20):
        right = int(labels[q])
        if q % 2:
            scores[q, right] = 0.8 + 0.19 * q / 20
        else:
            scores[q, (right + 1) % 5] = 0.3 + 0.2 * q / 20
    return RetrievalResults.from_scores(scores, gallery_labels=torch.arange(5), query_labels=labels)


def test_fit_open_set_holds_out_identities_and_calibrates_the_confidence(tmp_path):
    results = _validation_results()
    model = fit_open_set(results, score="top-1 cosine score", holdout=0.4, seed=0)
    assert "2 validation identities held out" in model.held_out
    inputs = decision_inputs(results, keep_gallery=held_out_gallery_identities(
        query_labels=results.query_labels, gallery_labels=results.gallery_labels, fraction=0.4, seed=0))
    # 2 identities held out: fewer than SMALL_VALIDATION_IDENTITIES, so the smoothed rule
    expected, gmean = choose_threshold(**inputs, smoothing=window(inputs["scores"]))
    assert model.threshold == pytest.approx(expected) and model.validation_gmean == pytest.approx(gmean)
    # named answers with high scores were all right on validation, low ones all wrong
    high, low = torch.tensor([0.97]), torch.tensor([0.31])
    is_new = torch.tensor([False])
    assert model.confidence(high, is_new).item() > 0.9 and model.confidence(low, is_new).item() < 0.25
    # the same file content for checkpoints and threshold.json, and identical answers after loading
    loaded = OpenSetModel.load(model.save(tmp_path / "threshold.json"))
    assert loaded.to_dict() == OpenSetModel.from_dict(model.to_dict()).to_dict() == model.to_dict()
    probe = torch.linspace(0, 1, 50).double()
    assert torch.equal(loaded.confidence(probe, loaded.is_new(probe)), model.confidence(probe, model.is_new(probe)))


def test_confidence_ece_is_logged_against_answer_correctness():
    # two known queries answered right at 0.9 and one unknown answered "new" at 0.2: with a confidence of 1 for
    # named answers at 0.9 and 1 for "new" at 0.2 every answer is right at full confidence: ECE 0
    scores = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.2, 0.1]])
    results = RetrievalResults.from_scores(scores, gallery_labels=["a", "b"], query_labels=["a", "b", "z"])
    named, new = IsotonicCalibration(), IsotonicCalibration()
    named.fit([0.2, 0.9], [0, 1])
    new.fit([-0.9, -0.2], [0, 1])
    model = OpenSetModel(0.5, "score", named_right=named, new_right=new)
    values = open_set_log_values(results, model)
    assert values["confidence_ece"] == pytest.approx(0.0, abs=1e-6)
    assert values["open/BAKS"] == 1 and values["open/BAUS"] == 1
    # a threshold calling everything new: the two known queries' "new" answers are wrong at confidence ~0
    everything_new = OpenSetModel(0.95, "score", named_right=named, new_right=new)
    assert open_set_log_values(results, everything_new)["confidence_ece"] == pytest.approx(0.0, abs=1e-6)


def test_threshold_interval_spans_the_choices_of_resampled_identities():
    # known queries answered right at 0.8 (identities 0-3); unknown identity 10 tops out at 0.3, identity 11 at 0.6.
    # A resample holding only 10 chooses (0.3 + 0.8) / 2 = 0.55, one holding 11 (0.6 + 0.8) / 2 = 0.7, both: 0.7
    from reid_lightning.inference.choice_intervals import threshold_interval

    inputs = {"query_labels": torch.tensor([0, 1, 2, 3, 10, 10, 11, 11]),
              "known": torch.tensor([True] * 4 + [False] * 4),
              "top1_labels": torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
              "scores": torch.tensor([0.8, 0.8, 0.8, 0.8, 0.3, 0.2, 0.6, 0.5], dtype=torch.float64)}
    assert choose_threshold(**inputs)[0] == pytest.approx(0.7)
    low, high = threshold_interval(inputs, resamples=200, level=0.9)
    assert low == pytest.approx(0.55) and high == pytest.approx(0.7)
    # one unknown identity only: every resample chooses the same threshold
    one = {name: value[:6] for name, value in inputs.items()}
    assert threshold_interval(one) == pytest.approx((0.55, 0.55))


def test_fit_open_set_reports_its_intervals_and_keeps_them_through_saving(tmp_path):
    results = _validation_results()
    model = fit_open_set(results, score="top-1 cosine score", holdout=0.4, seed=0,
                         embeddings=torch.nn.functional.one_hot(results.query_labels.long(), 5).float())
    low, high = model.threshold_interval
    assert low <= model.threshold <= high
    assert model.unseen_identities == 2
    assert f"[{low:.4f}, {high:.4f}] (90% over resampled identities)" in model.summary(results.num_queries)
    assert OpenSetModel.load(model.save(tmp_path / "threshold.json")).threshold_interval == (low, high)
    overridden = model.with_overrides(threshold=0.5)
    assert overridden.threshold_interval is None
    assert overridden.summary(10).startswith("open-set threshold 0.5000 (top-1 cosine score) given")


# known identities 0-4 answered right at 0.9 .. 0.7; unknown identity 10 tops out at 0.5, identity 11 at 0.66.
# gmean by threshold t (a score >= t is accepted): 0.707 (= sqrt(1 * 0.5)) for 0.5 < t <= 0.66, 1 for
# 0.66 < t <= 0.7, 0.894 (= sqrt(0.8)) for 0.7 < t <= 0.75, 0.775 (= sqrt(0.6)) for 0.75 < t <= 0.8. The best
# single cut is the midpoint (0.66 + 0.7) / 2 = 0.68. Smoothed over +-0.05 on the grid of 0.005 steps, the 21
# thresholds around 0.715 hold 8 x 1 + 10 x 0.894 + 3 x 0.775 = 19.27, around 0.71 0.707 + 8 + 8.94 + 2 x 0.775
# = 19.20, around 0.72 7 + 8.94 + 4 x 0.775 = 19.04: the smoothed threshold is 0.715.
def window(scores):
    """THRESHOLD_SMOOTHING of the 5th-95th percentile spread of the finite scores, with numpy."""
    finite = scores.numpy()[np.isfinite(scores.numpy())]
    return THRESHOLD_SMOOTHING * float(np.quantile(finite, 0.95) - np.quantile(finite, 0.05))


SMALL = {"query_labels": torch.tensor([0, 1, 2, 3, 4, 10, 11]),
         "known": torch.tensor([True] * 5 + [False] * 2),
         "top1_labels": torch.tensor([0, 1, 2, 3, 4, 0, 1]),
         "scores": torch.tensor([0.9, 0.85, 0.8, 0.75, 0.7, 0.5, 0.66], dtype=torch.float64)}


def test_smoothed_threshold_is_the_centre_of_the_best_window():
    assert choose_threshold(**SMALL) == pytest.approx((0.68, 1.0))
    threshold, gmean = choose_threshold(**SMALL, smoothing=0.05)
    assert threshold == pytest.approx(0.715, abs=1e-9)
    assert gmean == pytest.approx(math.sqrt(0.8))


def test_two_unseen_validation_identities_give_the_caution_and_the_smoothed_threshold():
    gallery_labels = torch.arange(5)
    scores = torch.full((7, 5), 0.1, dtype=torch.float64)
    scores[torch.arange(7), SMALL["top1_labels"]] = SMALL["scores"]
    results = RetrievalResults.from_scores(scores, gallery_labels=gallery_labels, query_labels=SMALL["query_labels"])
    model = fit_open_set(results, score="top-1 cosine score")
    assert model.unseen_identities == 2 < SMALL_VALIDATION_IDENTITIES
    # 9 % of the 5th-95th percentile spread of the 7 scores (0.548 .. 0.885): a window of +-0.0303
    assert window(SMALL["scores"]) == pytest.approx(0.09 * (0.885 - 0.548), abs=1e-9)
    assert model.threshold == pytest.approx(choose_threshold(**SMALL, smoothing=window(SMALL["scores"]))[0])
    assert model.threshold != pytest.approx(choose_threshold(**SMALL)[0])
    caution = model.caution()
    assert "\n" not in caution and caution.startswith("only 2 validation identities were kept out of training")
    assert "--data.val_unseen_ratio" in caution
    # held out of the gallery instead: the caution names that rule's bias
    held = fit_open_set(results.select(torch.arange(5)), score="top-1 cosine score", holdout=0.4)
    assert "held out of the gallery" in held.caution()


def test_validation_with_two_unseen_identities_warns_once_in_one_line_and_logs_the_intervals(tmp_path):
    import lightning as L

    from reid_lightning.data import ReIDDataModule
    from reid_lightning.models import ReIDModule

    data = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=12,
                          synthetic_images_per_individual=6, synthetic_image_size=32, image_size=32, split="open",
                          open_ratio=0.3, val_unseen_ratio=0.2, val_ratio=0.2, test_ratio=0.3, batch_size=16)
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path, accelerator="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning recorded: a repeated caution would show
        trainer.validate(model, datamodule=data)
        trainer.validate(model, datamodule=data)  # a second validation (a fit's next epoch) says it no more
    cautions = [str(w.message) for w in caught if "validation identities were kept out" in str(w.message)]
    assert len(cautions) == 1 and "\n" not in cautions[0]
    assert cautions[0].startswith("only 2 validation identities were kept out of training")
    inputs = decision_inputs(model.evaluation_results())
    expected, _ = choose_threshold(**inputs, smoothing=window(inputs["scores"]))
    assert model.open_set.threshold == pytest.approx(expected)
    metrics = trainer.callback_metrics
    low, high = metrics["val/open/threshold_low"].item(), metrics["val/open/threshold_high"].item()
    assert low <= model.open_set.threshold + 1e-6 and high >= model.open_set.threshold - 1e-6


@pytest.mark.parametrize("photos_of_the_big_one,expected_k", [(8, 10), (21, None)])
def test_new_photos_are_grouped_on_all_pairs_when_a_validation_animal_has_more_than_20_photos(
        photos_of_the_big_one, expected_k):
    # gallery animals 0-2; unknown validation animals 10 (big), 11 and 12 (3 photos each); one-hot-like embeddings
    sizes = {10: photos_of_the_big_one, 11: 3, 12: 3}
    labels = torch.tensor([0, 1, 2] + [a for a, n in sizes.items() for _ in range(n)])
    scores = torch.full((len(labels), 3), 0.1, dtype=torch.float64)
    scores[torch.arange(3), torch.arange(3)] = 0.9
    scores[3:, 0] = 0.3
    results = RetrievalResults.from_scores(scores, gallery_labels=torch.arange(3), query_labels=labels)
    generator = torch.Generator().manual_seed(0)
    centres = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    embeddings = centres[labels % 16] + 0.05 * torch.randn(len(labels), 16, generator=generator)
    model = fit_open_set(results, score="top-1 cosine score", embeddings=embeddings)
    assert model.discovery_k == expected_k
    pairs = "all pairs" if expected_k is None else "each photo's 10 nearest"
    assert f"new photos grouped on {pairs} at cosine" in model.summary(len(labels))
    # the three unknown animals are recovered either way
    grouped = model.group(embeddings[3:])
    assert grouped.num_groups == 3


def five_known_then_unknown(labels: torch.Tensor) -> RetrievalResults:
    """Validation results over a gallery of animals 0-4: the first five queries are those animals (top-1 right at
    0.9), the others unknown (top-1 animal 0 at 0.3)."""
    scores = torch.full((len(labels), 5), 0.1, dtype=torch.float64)
    scores[torch.arange(5), torch.arange(5)] = 0.9
    scores[5:, 0] = 0.3
    return RetrievalResults.from_scores(scores, gallery_labels=torch.arange(5), query_labels=labels)


def different_animal_cosines(embeddings: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The cosine of every pair of photos of different animals, by hand."""
    unit = embeddings.numpy() / np.linalg.norm(embeddings.numpy(), axis=1, keepdims=True)
    first, second = np.triu_indices(len(labels), 1)
    different = labels.numpy()[first] != labels.numpy()[second]
    return np.einsum("ij,ij->i", unit[first], unit[second])[different]


def test_two_unseen_identities_cut_at_the_floor_of_different_animals_and_group_sixty_photos_of_a_new_one():
    """Too few unseen validation animals to choose a cut on: the cut is the cosine only 2 % of pairs of different
    validation animals reach (all pairs: an unseen animal has 22 photos), the caution says so in one line, and
    60 photos of one new animal end in one proposed individual."""
    generator = torch.Generator().manual_seed(3)
    centres = torch.linalg.qr(torch.randn(32, 32, generator=generator))[0]

    def photos(labels):
        labels = torch.as_tensor(labels)
        return centres[labels] + 0.15 * torch.randn(len(labels), 32, generator=generator)

    labels = torch.tensor([0, 1, 2, 3, 4] + [10] * 22 + [11] * 3)
    embeddings = photos(labels)
    model = fit_open_set(five_known_then_unknown(labels), score="top-1 cosine score", embeddings=embeddings)
    assert model.unseen_identities == 2 and model.discovery_k is None
    cosines = different_animal_cosines(embeddings, labels)
    assert model.discovery_threshold == pytest.approx(np.quantile(cosines, 0.98), abs=1e-5)
    caution = model.caution()
    assert "\n" not in caution and caution.startswith("only 2 validation identities were kept out of training")
    assert "the cut is the cosine that only 2% of pairs of different validation animals reach" in caution
    assert ("the cosine only 2% of pairs of different validation animals reach: 2 unknown validation identities "
            "are too few to choose on") in model.summary(len(labels))
    low, high = model.discovery_interval
    assert low <= model.discovery_threshold <= high
    new = torch.tensor([20] * 60 + [21] * 5 + [22] * 4)
    grouped = model.group(photos(new))
    assert grouped.sizes.tolist() == [60, 5, 4]
    assert len(set(grouped.groups[:60].tolist())) == 1


def test_with_small_validation_animals_the_top_10_graph_groups_are_joined_so_sixty_photos_of_a_new_one_form_one():
    """Unseen validation animals of 4-6 photos: the grouping runs on the top-10 graph, which cannot hold 60 photos
    together; its groups are joined on all pairs at the cosine only 2 % of pairs of different validation animals
    reach (computed here by hand), so the 60 photos of one new animal end in one group and the others stay apart."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=generator))[0]
    centres = 0.6 * basis[63] + 0.8 * basis[:63]  # every two animals at cosine 0.36, as a species' photos

    def photos(labels):
        labels = torch.as_tensor(labels)
        return centres[labels] + 0.08 * torch.randn(len(labels), 64, generator=generator)

    labels = torch.tensor([0, 1, 2, 3, 4] + [10] * 6 + [11] * 5 + [12] * 4)
    embeddings = photos(labels)
    model = fit_open_set(five_known_then_unknown(labels), score="top-1 cosine score", embeddings=embeddings)
    assert model.discovery_k == 10
    cosines = different_animal_cosines(embeddings, labels)
    assert model.discovery_join_cut == pytest.approx(np.quantile(cosines, 0.98), abs=1e-5)
    assert model.discovery_join_cut > model.discovery_threshold
    assert "groups joined where all their pairs average cosine" in model.summary(len(labels))
    assert OpenSetModel.from_dict(model.to_dict()).discovery_join_cut == model.discovery_join_cut
    new = photos(torch.tensor([20] * 60 + [21] * 5 + [22] * 4 + [23] * 3))
    assert model.group(new).sizes.tolist() == [60, 5, 4, 3]
    graph_only = replace(model, discovery_join_cut=None).group(new)
    assert len(set(graph_only.groups[:60].tolist())) > 1  # what the graph alone does with them
