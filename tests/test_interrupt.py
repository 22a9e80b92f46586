"""reid_lightning.interrupt: SIGTERM/SIGINT recorded during a phase, handed on to the previous handler, raised as
Interrupted at the next check(); handlers restored; nothing outside the main thread."""

from __future__ import annotations

import signal
import threading

import pytest
import torch
from helpers import single_thread  # noqa: F401 (autouse fixture)
from test_pair_scorer import images

from reid_lightning.eval.embedding import embed_loader
from reid_lightning.features import SiftExtractor
from reid_lightning.interrupt import Interrupted, check, current_phase, interruptible, label
from reid_lightning.similarity import PairScorer
from reid_lightning.similarity.pairwise import CollectCounts, MatchDescriptors


@pytest.fixture
def previous():
    """A harmless SIGTERM handler (the test process must never get the default one's SIGTERM) that records calls;
    the original SIGTERM/SIGINT handlers come back after the test."""
    originals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    calls = []

    def record(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGTERM, record)
    yield record, calls
    for signum, handler in originals.items():
        signal.signal(signum, handler)


def test_check_raises_only_after_a_signal_and_chains_to_the_previous_handler(previous):
    record, calls = previous
    with interruptible("extraction") as title:
        assert title == "extraction" and current_phase() == "extraction"
        assert signal.getsignal(signal.SIGTERM) is not record
        check()  # nothing received: nothing raised
        signal.raise_signal(signal.SIGTERM)  # recorded and handed on, not raised here
        assert calls == [signal.SIGTERM]
        with pytest.raises(Interrupted) as raised:
            check()
        check()  # raised once
    assert isinstance(raised.value, KeyboardInterrupt)  # Lightning's graceful-shutdown path
    assert raised.value.signal == signal.SIGTERM and raised.value.phase == "extraction"
    assert str(raised.value) == "SIGTERM received: stopped at a safe point during extraction"
    assert signal.getsignal(signal.SIGTERM) is record and current_phase() is None  # restored
    check()  # outside a phase: never raises


def test_sigint_is_deferred_to_the_safe_point_and_its_handler_restored(previous):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(Interrupted) as raised, interruptible("matching"):
        try:
            signal.raise_signal(signal.SIGINT)  # Python's handler would raise KeyboardInterrupt right here
        except KeyboardInterrupt:
            pytest.fail("SIGINT raised before the safe point")
        check()
    assert raised.value.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_phases_label_and_install_once(previous):
    record, calls = previous
    with interruptible("calibration (validation)") as outer:
        handler = signal.getsignal(signal.SIGTERM)
        with interruptible("ALIKED features") as inner:
            assert (outer, inner) == ("calibration (validation)", "calibration (validation): ALIKED features")
            assert label("batch") == "calibration (validation): ALIKED features: batch"
            assert signal.getsignal(signal.SIGTERM) is handler  # the outer phase's handler records already
        assert signal.getsignal(signal.SIGTERM) is handler  # the inner phase did not restore the outer's
        with pytest.raises(Interrupted) as raised, interruptible("LightGlue pairs"):
            signal.raise_signal(signal.SIGTERM)
            check()
        assert raised.value.phase == "calibration (validation): LightGlue pairs"
        check()  # consumed
    assert calls == [signal.SIGTERM]  # handed on once
    assert signal.getsignal(signal.SIGTERM) is record and label("x") == "x"


def test_a_signal_after_the_last_check_stops_at_the_end_of_the_phase(previous):
    expected = "SIGTERM received: stopped at a safe point during pairs"
    with pytest.raises(Interrupted, match=expected), interruptible("pairs"):
        check()
        signal.raise_signal(signal.SIGTERM)
    check()
    with interruptible("next"):  # the signal was raised: a later phase starts afresh
        check()


def test_a_phase_ending_on_another_error_forgets_the_signal(previous):
    with pytest.raises(ValueError), interruptible("pairs"):
        signal.raise_signal(signal.SIGTERM)
        raise ValueError("boom")
    with interruptible("next"):
        check()


def test_second_signal_stops_at_once(previous):
    with pytest.raises(Interrupted) as raised, interruptible("matching"):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # a second Ctrl-C does not wait for the safe point
        pytest.fail("the second signal did not raise")
    assert "stopped at once" in str(raised.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_received_elsewhere_before_the_phase(previous):
    received = [False]
    with interruptible("test", sigterm_received=lambda: received[0]):
        check()
        received[0] = True  # e.g. Lightning's trainer.received_sigterm, set before this phase began
        with pytest.raises(Interrupted) as raised:
            check()
    assert raised.value.signal == signal.SIGTERM and raised.value.phase == "test"


def test_ignored_signals_stay_ignored(previous):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interruptible("pairs"):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        check()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_other_threads_name_phases_but_install_and_raise_nothing(previous):
    record, _ = previous
    seen = {}

    def work():
        with interruptible("thread phase") as title:
            seen["title"], seen["handler"] = title, signal.getsignal(signal.SIGTERM)
            try:
                check()
            except Interrupted:
                seen["raised"] = True

    with interruptible("main"):
        signal.raise_signal(signal.SIGTERM)  # pending in the main thread
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert seen == {"title": "thread phase", "handler": signal.getsignal(signal.SIGTERM)}  # own label, no raise
        with pytest.raises(Interrupted):
            check()
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen["handler"] is record  # no handler installed from another thread


def test_one_signal_through_two_phases_handlers_is_one_signal(previous):
    """A handler installed between two phases (e.g. Lightning's, which calls the one it found) passes the signal
    from the inner phase's handler to the outer's: recorded once, not taken for a second signal."""
    _, calls = previous
    theirs = []
    with interruptible("library phase"):
        outer = signal.getsignal(signal.SIGTERM)

        def lightning_like(signum, frame):
            theirs.append(signum)
            outer(signum, frame)

        signal.signal(signal.SIGTERM, lightning_like)
        with interruptible("inner"):
            assert signal.getsignal(signal.SIGTERM) is not lightning_like  # installed again: it records
            signal.raise_signal(signal.SIGTERM)
            with pytest.raises(Interrupted):
                check()
        assert signal.getsignal(signal.SIGTERM) is lightning_like
        signal.signal(signal.SIGTERM, outer)
    assert theirs == [signal.SIGTERM] and calls == [signal.SIGTERM]


# ---------------------------------------------------------------- caches after an interrupted PairScorer
class SignallingMatcher(MatchDescriptors):
    """Counts the pairs it matches and, with ``signal_at``, sends itself SIGTERM while matching that batch."""

    def __init__(self, signal_at: int | None = None) -> None:
        super().__init__(collector=CollectCounts([0.0]), batch_size=2, device="cpu", progress=False)
        self.signal_at, self.batches, self.matched = signal_at, 0, 0

    def match(self, prepared, pairs):
        self.batches += 1
        self.matched += len(pairs)
        if self.batches == self.signal_at:
            signal.raise_signal(signal.SIGTERM)
        return super().match(prepared, pairs)


class SignallingExtractor(SiftExtractor):
    """SIFT (one image per batch on the CPU) that counts its images and, with ``signal_at``, sends itself SIGTERM
    while extracting that one."""

    def __init__(self, signal_at: int | None = None) -> None:
        super().__init__(max_num_keypoints=64, device="cpu", progress=False)
        self.signal_at, self.extracted = signal_at, 0

    def detect(self, images):
        self.extracted += len(images)
        if self.extracted == self.signal_at:
            signal.raise_signal(signal.SIGTERM)
        return super().detect(images)


def scorer(cache_dir, matcher=None, extractor=None, **options) -> PairScorer:
    return PairScorer(matcher or SignallingMatcher(), extractor or SignallingExtractor(), image_size=96,
                      cache_dir=cache_dir, **options)


def leftovers(cache_dir) -> list:
    """Partial files an interrupted write could have left."""
    return [path for path in cache_dir.rglob("*") if path.name.endswith((".tmp", "-journal"))]


@pytest.fixture
def dataset(tmp_path):
    return images(tmp_path / "images", [1, 2, 3])  # 6 images, two views of 3 patterns


EVERY = torch.cartesian_prod(torch.arange(6), torch.arange(6))
EVERY = EVERY[EVERY[:, 0] != EVERY[:, 1]]  # 30 ordered pairs: 15 distinct (symmetric) ones to match


def test_interrupted_matching_then_a_new_run_gives_the_uninterrupted_scores(previous, dataset, tmp_path):
    reference = scorer(None, cache_features=False).score(dataset, dataset, EVERY)
    cache = tmp_path / "cache"
    scorer(cache).score(dataset, dataset, EVERY[:6])  # an earlier call: its scores are committed

    matcher = SignallingMatcher(signal_at=3)
    with pytest.raises(Interrupted) as raised, interruptible("test"):
        scorer(cache, matcher).score(dataset, dataset, EVERY)
    assert raised.value.phase == "test: SignallingMatcher pairs"
    assert matcher.batches == 3  # stopped after the batch the signal came in, at the next safe point
    assert not leftovers(cache)

    # a new run (a new scorer: a new process's view) reads only whole entries, extracts nothing again
    # and matches only what no finished call committed
    extractor, matcher = SignallingExtractor(), SignallingMatcher()
    resumed = scorer(cache, matcher, extractor).score(dataset, dataset, EVERY)
    assert extractor.extracted == 0
    committed = len({tuple(sorted(pair)) for pair in EVERY[:6].tolist()})
    assert matcher.matched == 15 - committed
    assert resumed.keys() == reference.keys()
    for name, values in reference.items():
        assert torch.equal(resumed[name], values), name


def test_interrupted_extraction_keeps_every_finished_feature_file(previous, dataset, tmp_path):
    reference = scorer(None, cache_features=False).score(dataset, dataset, EVERY)
    cache = tmp_path / "cache"
    extractor, matcher = SignallingExtractor(signal_at=3), SignallingMatcher()
    with pytest.raises(Interrupted) as raised, interruptible("calibration (validation)"):
        scorer(cache, matcher, extractor).score(dataset, dataset, EVERY)
    assert raised.value.phase == "calibration (validation): SIFT features"
    assert extractor.extracted == 3 and matcher.matched == 0
    assert len(list(cache.rglob("*.pt"))) == 3 and not leftovers(cache)  # the image in progress was finished

    extractor = SignallingExtractor()
    resumed = scorer(cache, SignallingMatcher(), extractor).score(dataset, dataset, EVERY)
    assert extractor.extracted == 3  # only the images the interrupted run did not reach
    for name, values in reference.items():
        assert torch.equal(resumed[name], values), name


def test_embedding_loop_stops_between_batches(previous):
    batches = []

    def forward(model, images):
        batches.append(len(images))
        if len(batches) == 2:
            signal.raise_signal(signal.SIGTERM)
        return model(images)

    loader = [torch.rand(2, 3, 4, 4) for _ in range(5)]
    with pytest.raises(Interrupted) as raised, interruptible("predict"):
        embed_loader(torch.nn.Flatten(), loader, forward=forward, progress=False,
                     description="embedding gallery")
    assert raised.value.phase == "predict: embedding gallery" and len(batches) == 2
    batches.clear()
    with pytest.raises(Interrupted, match="during embedding$"):  # its own phase, without an enclosing one
        embed_loader(torch.nn.Flatten(), loader, forward=forward, progress=False)


def test_progress_bars_name_the_phase(previous, dataset, capsys):
    extractor = SiftExtractor(max_num_keypoints=64, device="cpu")
    matcher = MatchDescriptors(device="cpu")
    with interruptible("calibration (validation)"):
        PairScorer(matcher, extractor, image_size=96, cache_features=False).score(dataset, dataset, EVERY[:4])
    bars = capsys.readouterr().err
    assert "calibration (validation): SIFT features:   0%|          | 0/5 " in bars  # 5 images to extract
    assert "calibration (validation): Descriptors pairs:   0%|          | 0/1 " in bars  # 1 batch of pairs


def test_interrupted_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(Interrupted("test: LightGlue pairs", signal.SIGINT, immediately=True)))
    assert (error.phase, error.signal, error.immediately) == ("test: LightGlue pairs", signal.SIGINT, True)
    assert str(error) == "SIGINT received: stopped at once (second signal) during test: LightGlue pairs"
