"""Fusion rules chosen out of fold on validation shortlists, saved with the calibrators; shortlist helpers.

Synthetic shortlists: every query has one positive at a random slot (90 % of queries; the others none), a global
score N(0, 1) raised by ``global_signal`` on the positive, and local match counts at two confidence levels
(``lg@0.5 ~ Poisson(8 + local_signal * hit)``, ``lg@0.8 ~ Binomial(lg@0.5, 0.3 + high_signal * hit)``), as
``CollectCounts(thresholds=[0.5, 0.8])`` gives. Columns are sorted by the global score (a shortlist is in global
order), so the global part's top-1 is ``hits[:, 0]``. Validation and test are independent draws.
"""

import json

import numpy as np
import pytest
import scipy.stats
import torch

from reid_lightning.retrieval import RetrievalResults
from reid_lightning.similarity import (
    FusionRule,
    LogisticFusion,
    MeanFusion,
    PairwiseReranker,
    SingleScore,
    choose_fusion,
    choose_shortlist,
    fusion_ceiling,
    shortlist_recall,
)
from reid_lightning.similarity.fusion import reranked_top1
from reid_lightning.similarity.shortlist import loss_upper_bound

SHORTLIST = 10
QUERIES = 300


class NamedScorer:
    """Stands for a PairScorer named ``lg`` (score names ``lg@0.5``, ``lg@0.8``); the tests pass its scores."""

    name = "lg"

    def score(self, query_dataset, gallery_dataset, pairs):
        raise AssertionError("the tests give the pair scores directly")


def shortlists(seed, *, global_signal, local_signal, high_signal=0.0, names=("global", "lg@0.5"),
               num_queries=QUERIES):
    """``({name: (Q, B) raw scores}, hits (Q, B))`` of one synthetic split (see the module docstring)."""
    rng = np.random.default_rng(seed)
    hits = np.zeros((num_queries, SHORTLIST), bool)
    has = rng.random(num_queries) < 0.9
    hits[np.flatnonzero(has), rng.integers(0, SHORTLIST, num_queries)[has]] = True
    raw = {"global": rng.normal(size=hits.shape) + global_signal * hits}
    raw["lg@0.5"] = rng.poisson(8 + local_signal * hits)
    raw["lg@0.8"] = rng.binomial(raw["lg@0.5"], 0.3 + high_signal * hits)
    order = np.argsort(-raw["global"], axis=1, kind="stable")
    scores = {name: torch.tensor(np.take_along_axis(raw[name], order, 1), dtype=torch.float32) for name in names}
    return scores, torch.tensor(np.take_along_axis(hits, order, 1))


def results_of(scores, hits):
    """RetrievalResults whose candidates are the shortlist pairs: gallery item ``q * B + j`` is slot j of query q,
    of the query's identity where ``hits`` says so, of an identity of its own otherwise."""
    num_queries = len(hits)
    indices = torch.arange(num_queries * SHORTLIST).view(num_queries, SHORTLIST)
    labels = torch.where(hits, torch.arange(num_queries)[:, None], num_queries + indices).flatten()
    order_scores = scores.get("global", -torch.arange(SHORTLIST, dtype=torch.float32).expand(num_queries, -1))
    return RetrievalResults(candidate_indices=indices, candidate_scores=order_scores.float(), gallery_labels=labels,
                            query_labels=torch.arange(num_queries))


def reranked_hits(reranker, scores, hits) -> int:
    """Held-out queries whose top-1 after reranking (through ``RetrievalResults.rerank``) is a hit."""
    reranked = reranker.rerank(results_of(scores, hits), reranker.calibrate(scores))
    return int(reranked.hits[:, 0].sum())


def part_hits(values, hits) -> int:
    """Queries whose highest raw score of one part is a hit (ties: the earlier, i.e. global, slot)."""
    first = np.argmax(values.numpy(), axis=1)
    return int(hits.numpy()[np.arange(len(hits)), first].sum())


def fitted(scores, hits, **kwargs) -> PairwiseReranker:
    scorers = [NamedScorer()] if any(name.startswith("lg") for name in scores) else []
    return PairwiseReranker(scorers, shortlist=SHORTLIST, **kwargs).fit_calibrators(scores, hits=hits)


# ---------------------------------------------------------------------------------------- rule choice


def test_noisy_local_part_leaves_the_global_ranking():
    options = {"global_signal": 3.0, "local_signal": 0.0}
    validation, test = shortlists(4, **options), shortlists(5, **options)
    reranker = fitted(*validation)
    assert reranker.fusion_report.chosen != "lg@0.5"
    global_top1 = int(test[1][:, 0].sum())  # the shortlist is in global order
    assert reranked_hits(reranker, *test) == global_top1 == 241
    # the scenario matters: the equal-weight mean of the two parts loses to the global part here
    assert reranked_hits(fitted(*validation, fusion="mean"), *test) < global_top1


def test_noisy_global_part_leaves_the_local_ranking():
    options = {"global_signal": 0.0, "local_signal": 20.0}
    validation, test = shortlists(18, **options), shortlists(19, **options)
    reranker = fitted(*validation)
    assert reranker.fusion_report.chosen != "global"
    local_top1 = part_hits(test[0]["lg@0.5"], test[1])
    assert reranked_hits(reranker, *test) == local_top1
    assert local_top1 > 3 * part_hits(test[0]["global"], test[1])  # the local part is the informative one
    assert reranked_hits(fitted(*validation, fusion="mean"), *test) < local_top1


@pytest.mark.parametrize("seed", [0, 2])
def test_learned_fusion_of_complementary_parts_beats_each_part(seed):
    options = {"global_signal": 1.5, "local_signal": 4.0, "high_signal": 0.2, "names": ("global", "lg@0.5", "lg@0.8")}
    validation, test = shortlists(seed, **options), shortlists(seed + 1, **options)
    reranker = fitted(*validation)
    assert reranker.fusion_report.chosen == "logistic"
    assert isinstance(reranker.fusion_rule, LogisticFusion)
    fused = reranked_hits(reranker, *test)
    parts = {name: part_hits(values, test[1]) for name, values in test[0].items()}
    assert fused > max(parts.values()) + 0.03 * QUERIES, (fused, parts)
    # and it beats the mean of calibrated probabilities, which weighs the weak count level like the strong one
    assert fused > reranked_hits(fitted(*validation, fusion="mean"), *test)


SCENARIOS = [
    {"global_signal": 3.0, "local_signal": 0.0},
    {"global_signal": 0.0, "local_signal": 20.0},
    {"global_signal": 1.5, "local_signal": 4.0, "high_signal": 0.2, "names": ("global", "lg@0.5", "lg@0.8")},
    {"global_signal": 1.0, "local_signal": 6.0, "high_signal": 0.2, "names": ("global", "lg@0.5", "lg@0.8")},
]


@pytest.mark.parametrize("options", SCENARIOS)
def test_out_of_fold_choice_is_never_below_another_rule(options):
    scores, hits = shortlists(6, **options)
    report = fitted(scores, hits).fusion_report
    assert list(report.top1) == [*scores, "mean", "logistic"]  # simplest first
    assert report.folds == 5 and report.queries == QUERIES
    best = max(report.top1.values())
    assert report.top1[report.chosen] == best
    assert report.chosen == next(name for name, top1 in report.top1.items() if top1 == best)  # ties: simplest
    # the global part alone keeps the global order in every fold: its out-of-fold top-1 is hits[:, 0]
    assert report.top1["global"] == pytest.approx(hits[:, 0].float().mean().item())


class Memorizer(FusionRule):
    """Scores 1 the pairs it saw as matches while fitting (by their exact global score), 0 all others: perfect on
    the queries it was fitted on, no better than the global order on any other."""

    complexity = 5

    def __init__(self):
        self.seen: set[float] = set()

    @property
    def name(self):
        return "memorizer"

    @property
    def score_names(self):
        return ["global"]

    def fit(self, probabilities, hits):
        self.seen = set(probabilities["global"][hits[:, :SHORTLIST]].tolist())
        return self

    def __call__(self, probabilities):
        values = probabilities["global"]
        return torch.tensor([[float(v in self.seen) for v in row] for row in values.tolist()], dtype=torch.float64)


def uncalibrated(train_scores, train_hits):
    """Calibrators that leave the scores as they are: raw scores serve as probabilities, only the rules are
    compared."""
    return lambda values: dict(values)


def test_rules_are_measured_on_queries_they_were_not_fitted_on():
    scores, hits = shortlists(6, global_signal=1.0, local_signal=0.0, names=("global",))

    report = choose_fusion(scores, hits, [SingleScore("global"), Memorizer()], uncalibrated, folds=4)
    # out of fold the memorizer knows no held-out pair: it keeps the global order, whose top-1 is hits[:, 0]
    assert report.top1 == {"global": pytest.approx(hits[:, 0].float().mean().item()),
                           "memorizer": pytest.approx(hits[:, 0].float().mean().item())}
    assert report.chosen == "global" and report.folds == 4 and report.queries == QUERIES


def test_ties_go_to_the_simpler_rule():
    scores, hits = shortlists(6, global_signal=2.0, local_signal=0.0, names=("global",))
    report = fitted(scores, hits).fusion_report
    assert report.top1["mean"] == report.top1["global"]  # the mean of one part is that part
    assert report.chosen == "global"


def test_fixed_fusion_is_kept_and_still_reported():
    scores, hits = shortlists(6, global_signal=3.0, local_signal=0.0)
    reranker = fitted(scores, hits, fusion="lg@0.5")
    assert reranker.fusion_report.chosen == "lg@0.5"
    assert isinstance(reranker.fusion_rule, SingleScore) and reranker.fusion_rule.score == "lg@0.5"
    assert reranker.fusion_report.top1["global"] > reranker.fusion_report.top1["lg@0.5"]
    with pytest.raises(ValueError, match="fusion='boosted'"):
        fitted(scores, hits, fusion="boosted")


def test_mean_fusion_keeps_its_weights():
    scores, hits = shortlists(6, global_signal=2.0, local_signal=6.0)
    reranker = fitted(scores, hits, fusion="mean", weights={"lg@0.5": 3.0})
    probabilities = reranker.calibrate(scores)
    expected = (probabilities["global"] + 3 * probabilities["lg@0.5"]) / 4
    torch.testing.assert_close(reranker.fuse(probabilities), expected)


def test_learned_fusion_is_a_probability_and_nan_only_where_nothing_scored():
    scores, hits = shortlists(6, global_signal=1.5, local_signal=4.0, high_signal=0.2,
                              names=("global", "lg@0.5", "lg@0.8"))
    failed = torch.rand(hits.shape, generator=torch.Generator().manual_seed(0)) < 0.2  # local matching failed
    for name in ("lg@0.5", "lg@0.8"):
        scores[name][failed] = float("nan")
    for values in scores.values():  # the last query's last two slots are empty
        values[-1, -2:] = float("nan")
    reranker = fitted(scores, hits, fusion="logistic")
    fused = reranker.fuse(reranker.calibrate(scores))
    assert fused.shape == hits.shape and fused.dtype == torch.float64
    nothing = torch.zeros_like(hits)
    nothing[-1, -2:] = True
    assert torch.equal(torch.isnan(fused), nothing)
    assert (fused[~nothing] > 0).all() and (fused[~nothing] < 1).all()
    # a probability of a match: on these pairs it averages to the rate of matches, and matches score higher
    assert fused[~nothing].mean().item() == pytest.approx(hits[~nothing].double().mean().item(), abs=0.01)
    assert fused[hits].mean() > 4 * fused[~hits & ~nothing].mean()


def test_folds_that_cannot_be_fitted_are_skipped_and_without_any_the_mean_is_kept():
    scores, hits = shortlists(6, global_signal=2.0, local_signal=6.0, num_queries=2)
    hits[:] = False
    hits[0, 3] = True  # only query 0 has a match: the fold that holds it out cannot fit a calibrator
    report = fitted(scores, hits).fusion_report
    assert report.folds == 1 and report.queries == 1
    assert report.top1["global"] == 0.0  # query 1 has no match in its shortlist

    single, single_hits = shortlists(6, global_signal=2.0, local_signal=6.0, num_queries=1)
    reranker = fitted(single, single_hits)  # one query: nothing to hold out
    assert reranker.fusion_report.chosen == "mean" and reranker.fusion_report.folds == 0
    assert reranker.fusion_report.top1 == {}
    assert isinstance(reranker.fusion_rule, MeanFusion)


# ---------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("fusion", ["auto", "mean", "global"])
def test_saved_rule_reloads_to_identical_fused_scores(fusion, tmp_path):
    options = {"global_signal": 1.5, "local_signal": 4.0, "high_signal": 0.2, "names": ("global", "lg@0.5", "lg@0.8")}
    validation, (test, _) = shortlists(0, **options), shortlists(1, **options)
    reranker = fitted(*validation, fusion=fusion, weights={"global": 2.0})
    reranker.save(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["fusion"]["type"] == type(reranker.fusion_rule).__name__
    assert index["fusion_report"]["chosen"] == reranker.fusion_report.chosen
    assert {path.suffix for path in tmp_path.iterdir()} == {".json"}

    loaded = PairwiseReranker([NamedScorer()], shortlist=SHORTLIST).load(tmp_path)  # default fusion, no weights
    assert loaded.fusion_report == reranker.fusion_report
    expected = reranker.fuse(reranker.calibrate(test))
    assert torch.equal(loaded.fuse(loaded.calibrate(test)), expected)
    assert not torch.equal(expected, MeanFusion()(reranker.calibrate(test)))  # the rule, not a default mean


def test_folder_saved_before_fusion_rules_fuses_by_the_weighted_mean(tmp_path):
    scores, hits = shortlists(6, global_signal=2.0, local_signal=6.0)
    reranker = fitted(scores, hits, fusion="logistic", weights={"global": 3.0})
    reranker.save(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    del index["fusion"], index["fusion_report"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    loaded = PairwiseReranker([NamedScorer()], shortlist=SHORTLIST).load(tmp_path)
    assert loaded.fusion_rule is None and loaded.fusion_report is None
    probabilities = loaded.calibrate(scores)
    torch.testing.assert_close(loaded.fuse(probabilities), (3 * probabilities["global"] + probabilities["lg@0.5"]) / 4)


def test_saved_rule_reading_an_uncalibrated_score_is_refused(tmp_path):
    scores, hits = shortlists(6, global_signal=2.0, local_signal=6.0)
    fitted(scores, hits, fusion="lg@0.5").save(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    index["fusion"] = SingleScore("lg@0.9").to_dict()
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"reads \['lg@0.9'\]"):
        PairwiseReranker([NamedScorer()], shortlist=SHORTLIST).load(tmp_path)


def test_rules_round_trip_through_json():
    scores, hits = shortlists(6, global_signal=1.5, local_signal=4.0)
    probabilities = fitted(scores, hits, fusion="mean").calibrate(scores)
    for rule in (SingleScore("lg@0.5"), MeanFusion({"global": 0.5}), LogisticFusion(C=0.3).fit(probabilities, hits)):
        copy = FusionRule.from_dict(json.loads(json.dumps(rule.to_dict())))
        assert type(copy) is type(rule) and copy.to_dict() == rule.to_dict()
        assert torch.equal(copy(probabilities), rule(probabilities))
    with pytest.raises(ValueError, match="unknown fusion rule"):
        FusionRule.from_dict({"type": "Boosted"})


def test_fusion_ceiling_by_hand():
    nan = float("nan")
    # two score types; columns in global order; the matching pair is marked by hits
    scores = {"a": torch.tensor([[0.8, 0.95, 0.9],    # hit (0.9, 5) vs (0.8, 6), (0.95, 1): neither dominates it
                                 [0.6, 0.5, 0.1],     # hit (0.5, 3) vs (0.6, 4): beaten on both
                                 [0.5, 0.5, 0.1],     # hit first, an identical pair after it: ties keep the hit
                                 [0.5, 0.5, nan]]),   # an identical pair before the hit wins the tie; empty slot
              "b": torch.tensor([[6.0, 1.0, 5.0],
                                 [4.0, 3.0, 1.0],
                                 [3.0, 3.0, 1.0],
                                 [3.0, 3.0, nan]])}
    hits = torch.tensor([[False, False, True], [False, True, False], [True, False, False], [False, True, False]])
    assert fusion_ceiling(scores, hits) == 2 / 4
    assert fusion_ceiling({"a": scores["a"]}, hits) == 1 / 4  # "a" alone: beaten by 0.95 and 0.6; ties as above
    assert fusion_ceiling({"a": scores["a"]}, hits, chunk=1) == fusion_ceiling({"a": scores["a"]}, hits)


def test_no_weighted_sum_of_the_scores_beats_the_fusion_ceiling():
    generator = torch.Generator().manual_seed(0)
    hits = torch.rand(200, 8, generator=generator) < 0.2
    scores = {"global": torch.rand(200, 8, generator=generator) + 0.3 * hits,
              "local": torch.rand(200, 8, generator=generator) + 0.3 * hits}
    ceiling = fusion_ceiling(scores, hits)
    best_per_query = torch.zeros(200, dtype=torch.bool)
    for weight in torch.linspace(0, 1, 41):
        fused = weight * scores["global"] + (1 - weight) * scores["local"]
        top1 = reranked_top1(fused, hits)
        assert top1.float().mean().item() <= ceiling
        best_per_query |= top1
    # each query's best weight reaches the bound whenever the query's undominated hit is on the convex hull
    assert best_per_query.float().mean().item() <= ceiling
    assert best_per_query.float().mean().item() >= ceiling - 0.05


# ---------------------------------------------------------------------------------------- shortlist helpers


def test_shortlist_recall_by_hand():
    # gallery items g0..g4 of identities 0 0 1 2 3; queries of identities 0, 1, 2, 9 (not in the gallery) and -1
    # (an unknown animal): the last two can have no positive in any shortlist and are left out
    scores = torch.tensor([
        [0.1, 0.8, 0.9, 0.5, 0.4],  # order g2 g1 ...: first positive (g1, identity 0) at rank 2
        [0.1, 0.2, 0.9, 0.5, 0.4],  # order g2 ...: identity 1 at rank 1
        [0.6, 0.2, 0.7, 0.5, 0.9],  # order g4 g2 g0 g3 g1: identity 2 (g3) at rank 4
        [0.9, 0.8, 0.7, 0.6, 0.5],
        [0.9, 0.8, 0.7, 0.6, 0.5],
    ])
    results = RetrievalResults.from_scores(scores, gallery_labels=torch.tensor([0, 0, 1, 2, 3]),
                                           query_labels=torch.tensor([0, 1, 2, 9, -1]), k=5)
    recalls = shortlist_recall(results, sizes=(5, 1, 2, 3, 4))
    assert list(recalls) == [1, 2, 3, 4, 5]
    assert recalls == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 4: 1.0, 5: 1.0}
    assert shortlist_recall(results.head(3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3),
                                                 3: pytest.approx(2 / 3)}  # default sizes: up to those held
    with pytest.raises(ValueError, match="k >= 4"):
        shortlist_recall(results.head(3), sizes=(1, 4))
    with pytest.raises(ValueError, match="query_labels"):
        shortlist_recall(RetrievalResults.from_scores(scores, gallery_labels=torch.tensor([0, 0, 1, 2, 3])))


def first_positive_results(first_positions: list[int], candidates: int) -> RetrievalResults:
    """Results whose query i has its one positive at position ``first_positions[i]`` (``candidates``: none)."""
    gallery = candidates + 1  # the last gallery image is never among the candidates
    scores = -torch.arange(gallery, dtype=torch.float32).expand(len(first_positions), gallery)
    return RetrievalResults.from_scores(scores, gallery_labels=torch.arange(gallery),
                                        query_labels=torch.tensor(first_positions), k=candidates)


def test_choose_shortlist_by_hand():
    # 100 queries: first positives at 0 (50), 4 (30), 9 (8), 19 (2), 49 (2), none among the 100 candidates (8);
    # recall 0.50 @1, 0.80 @5, 0.88 @10, 0.90 @20, 0.92 @50 and @100
    results = first_positive_results([0] * 50 + [4] * 30 + [9] * 8 + [19] * 2 + [49] * 2 + [100] * 8, 100)
    sizes = (1, 5, 10, 20, 50, 100)
    assert shortlist_recall(results, sizes=sizes) == {1: 0.5, 5: 0.8, 10: 0.88, 20: 0.9, 50: 0.92, 100: 0.92}
    # as measured (no confidence): 0.98 * 0.92 = 0.9016, so 20 (0.90, 2 queries lost) falls short, 50 loses none
    assert choose_shortlist(results, sizes=sizes, confidence=None) == 50
    assert choose_shortlist(results, sizes=sizes, fraction=0.95, confidence=None) == 10  # 4 lost <= 4.6
    # with 95 % confidence: losing 0 of 100 queries bounds the loss by 1 - 0.05 ** (1 / 100) = 0.0295 > 0.0184,
    # so nothing short of the largest is certified; at fraction 0.95 the budget is 0.046: 50 (0 lost) qualifies
    assert choose_shortlist(results, sizes=sizes) == 100
    assert choose_shortlist(results, sizes=sizes, fraction=0.95) == 50
    # 400 queries, the same recalls: 0 lost of 400 bounds the loss by 0.0075 <= 0.0184 (50 kept); 8 lost of 400
    # (at 20) by more than the measured 0.02 > 0.0184
    assert choose_shortlist(first_positive_results(
        [0] * 200 + [4] * 120 + [9] * 32 + [19] * 8 + [49] * 8 + [100] * 32, 100), sizes=sizes) == 50
    assert choose_shortlist(first_positive_results([10] * 5, 10)) == 1  # nothing found: the shortest loses nothing
    with pytest.raises(ValueError, match="fraction"):
        choose_shortlist(results, fraction=0.0)
    with pytest.raises(ValueError, match="confidence"):
        choose_shortlist(results, confidence=1.0)


def test_a_few_validation_queries_certify_no_shorter_shortlist():
    """32 queries all found in their top 5 of 200: the measured recall would cut the list at 5, but 32 queries
    bound the loss only by 1 - 0.05 ** (1 / 32) = 8.9 %; 300 such queries certify the cut (1.0 %)."""
    assert choose_shortlist(first_positive_results([0] * 16 + [4] * 16, 200), confidence=None) == 5
    assert choose_shortlist(first_positive_results([0] * 16 + [4] * 16, 200)) == 200
    assert choose_shortlist(first_positive_results([0] * 150 + [4] * 150, 200)) == 5


@pytest.mark.parametrize(("lost", "queries"), [(0, 32), (0, 400), (3, 400), (10, 150)])
def test_loss_upper_bound_is_the_clopper_pearson_bound(lost, queries):
    # the bound p solves P(Binomial(queries, p) <= lost) = 1 - confidence (its definition)
    bound = loss_upper_bound(lost, queries, 0.95)
    assert scipy.stats.binom.cdf(lost, queries, bound) == pytest.approx(0.05, abs=1e-9)
    if lost == 0:
        assert bound == pytest.approx(1 - 0.05 ** (1 / queries))
    assert loss_upper_bound(queries, queries, 0.95) == 1.0


def _switched_queries(switched):
    """40 queries, matches in slot 0 for queries 0-29 and slot 1 for 30-39; the global score (1, 0.5) always
    picks slot 0, the local score picks slot 1 for the ``switched`` queries. Returns ``(scores, hits)``."""
    hits = torch.zeros(40, 2, dtype=torch.bool)
    hits[:30, 0] = True
    hits[30:, 1] = True
    local = torch.tensor([[1.0, 0.0]] * 40, dtype=torch.float64)
    local[switched] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return {"global": torch.tensor([[1.0, 0.5]] * 40, dtype=torch.float64), "lg@0.5": local}, hits


@pytest.mark.parametrize("switched,chosen", [
    # the fusion picks slot 1 for these queries: queries 30-39 have their match there, queries 0-29 in slot 0
    (list(range(30, 36)) + [0, 1, 2], "global"),  # 6 gained, 3 lost: +3 <= 1.645 * sqrt(9) = 4.9, within noise
    (list(range(30, 40)), "mean"),  # 10 gained, 0 lost: +10 > 1.645 * sqrt(10) = 5.2
])
def test_a_fusion_replaces_the_best_single_score_only_beyond_the_out_of_fold_noise(switched, chosen):
    # the mean of (1, 0.5) and the local (0, 1) prefers slot 1 exactly where the local score does
    scores, hits = _switched_queries(switched)
    rules = [SingleScore("global"), MeanFusion()]
    report = choose_fusion(scores, hits, rules, uncalibrated, folds=4, baselines=["global"])
    assert report.top1["mean"] > report.top1["global"] == 30 / 40
    assert report.chosen == chosen
    gained, lost = sum(q >= 30 for q in switched), sum(q < 30 for q in switched)
    assert f"({gained} gained, {lost} lost)" in report.reason
    # without baselines the best out-of-fold top-1 wins, however small the margin
    assert choose_fusion(scores, hits, rules, uncalibrated, folds=4).chosen == "mean"


@pytest.mark.parametrize("switched,chosen", [
    (list(range(30, 36)) + [0, 1, 2], "global"),  # 6 gained, 3 lost: +3 <= 4.9, the reference stays
    (list(range(30, 40)), "lg@0.5"),  # 10 gained, 0 lost: +10 > 5.2
])
def test_a_local_score_replaces_the_global_score_only_beyond_the_out_of_fold_noise(switched, chosen):
    """The global score is the reference: a better local score alone must win by more than the noise too (a
    35-dog draw chose the local score on 23 of 24 validation queries against 21 and lost 3 test queries in 74)."""
    scores, hits = _switched_queries(switched)
    rules = [SingleScore("global"), SingleScore("lg@0.5")]
    report = choose_fusion(scores, hits, rules, uncalibrated, folds=4, baselines=["global", "lg@0.5"])
    assert report.top1["lg@0.5"] > report.top1["global"] == 30 / 40
    assert report.chosen == chosen
    gained, lost = sum(q >= 30 for q in switched), sum(q < 30 for q in switched)
    assert f"lg@0.5 {gained - lost:+d} queries out of fold against global ({gained} gained, {lost} lost)" in report.reason


@pytest.mark.parametrize("switched,chosen", [
    (list(range(30, 36)) + [0, 1, 2], "mean"),  # local +3 within the noise 4.9: undecided, the mean ties it: fused
    (list(range(30, 40)), "lg@0.5"),  # local +10 beyond the noise 5.2; the mean only ties it: the local score
])
def test_when_the_noise_cannot_tell_global_from_local_a_fusion_as_good_as_both_is_kept(switched, chosen):
    # the mean of (1, 0.5) and the local (1, 0) or (0, 1) picks the slot the local score picks
    scores, hits = _switched_queries(switched)
    rules = [SingleScore("global"), SingleScore("lg@0.5"), MeanFusion()]
    report = choose_fusion(scores, hits, rules, uncalibrated, folds=4, baselines=["global", "lg@0.5"])
    assert report.top1["mean"] == report.top1["lg@0.5"] > report.top1["global"]
    assert report.chosen == chosen
