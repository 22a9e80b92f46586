"""The review: decisions as graph edges, the queue, the SQLite store, the catalogue, the web app and bad input."""

import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from review_run import KNOWN, NEW_PHOTOS, make_review_run
from sklearn.metrics import adjusted_rand_score
from starlette.testclient import TestClient

from reid_lightning.review import (
    Decision,
    Evidence,
    Review,
    ReviewGraph,
    ReviewRun,
    SimulatedReviewer,
    TaskTaken,
    auto_decisions,
    open_tasks,
    queue,
)
from reid_lightning.review.__main__ import main, parser
from reid_lightning.review.app import create_app
from reid_lightning.review.graph import AUTOMATIC


@pytest.fixture
def run(tmp_path):
    folder, truth = make_review_run(tmp_path)
    return ReviewRun.load(folder), truth


def test_decisions_join_move_and_flag_by_hand():
    graph = ReviewGraph(["K1", "K1", "new_001", "new_001", "new_001", "new_002"], known=["K1", "K2"])
    assert list(graph.names()) == ["K1", "K1", "new_001", "new_001", "new_001", "new_002"]
    graph.apply(Decision("same", "group:new_002", "group:new_001"))  # two proposed groups: one animal
    assert set(graph.names()[2:]) == {"new_001"}
    graph.apply(Decision("different", "photo:4", "group:new_001"))  # moved out: alone now
    assert graph.names()[4] not in {"new_001", "K1"} and graph.names()[3] == "new_001"
    graph.apply(Decision("same", "photo:3", "individual:K2"), by="ann")  # a person's first look: moves alone
    names = graph.names()
    assert names[3] == "K2" and names[2] == names[5] == "new_001" and not graph.settled[3]
    graph.apply(Decision("same", "photo:3", "individual:K2"), by="ann")  # the second look places it
    assert graph.placed[3]
    graph.apply(Decision("name", "photo:2", name="Stripes"))
    assert graph.names()[2] == graph.names()[5] == "Stripes"
    assert graph.inconsistencies() == []
    graph.apply(Decision("same", "photo:4", "photo:0"), by=AUTOMATIC)  # joined by no person ...
    assert graph.names()[4] == "K1" and graph.settled[4] and not graph.placed[4]
    graph.apply(Decision("different", "photo:4", "individual:K1"), by="ann")  # ... so a person moves it out
    assert graph.names()[4] != "K1" and not graph.settled[4]
    graph.apply(Decision("same", "photo:4", "photo:0"), by="ann")
    assert graph.names()[4] == "K1" and not graph.placed[4]  # to be looked at again
    graph.apply(Decision("same", "photo:4", "photo:0"), by="ann")
    graph.apply(Decision("different", "photo:4", "individual:K1"), by="bob")  # placed by a person: flagged, kept
    assert graph.names()[4] == "K1" and graph.placed[4]
    graph.apply(Decision("same", "photo:0", "photo:5"), by="ann")  # photo 0 was placed: its groups join
    graph.apply(Decision("same", "photo:3", "photo:2"), by="ann")  # as do photo 3's (K2) and Stripes'
    assert graph.inconsistencies() == ["photo:4 and group:new_001 were decided different but are joined",
                                       "photo:4 and individual:K1 were decided different but are joined",
                                       "photo:4 and individual:K1 were decided different but are joined",
                                       "one group joins the known individuals K1, K2"]
    # photo 1 is K1's by the proposal only; every other photo was in a person's "same"
    assert graph.settled.tolist() == [True, False, True, True, True, True]
    assert graph.settled_by[4] == "ann"
    with pytest.raises(ValueError, match="no review node 'photo:9'"):
        graph.node("photo:9")
    with pytest.raises(ValueError, match="needs two nodes"):
        Decision("same", "photo:1")


def queue_run() -> tuple[ReviewGraph, Evidence]:
    """Photos 0-2 proposed new_001, photo 3 alone (new_002), photo 4 named K1; five candidate pairs."""
    graph = ReviewGraph(["new_001", "new_001", "new_001", "new_002", "K1"], known=["K1", "K2"])
    pairs = pd.DataFrame({"row": [0, 1, 3, 3, 4], "kind": ["photo", "photo", "photo", "individual", "individual"],
                          "candidate": ["1", "2", "0", "K2", "K1"], "score": [.9, .8, .5, .4, .7],
                          "probability": [0.9, 0.6, 0.7, 0.2, 0.8]})
    return graph, Evidence.from_pairs(pairs, graph)


def test_queue_priorities_by_hand():
    graph, evidence = queue_run()
    tasks = open_tasks(graph, evidence)
    assert [t.key for t in tasks[:2]] == ["animal|group:new_001", "animal|group:new_002"]
    tasks[2:] = sorted(tasks[2:], key=lambda t: t.key)  # both 0.2
    assert [t.key for t in tasks[2:]] == ["animal|individual:K1", "animal|individual:K2"]
    first = tasks[0]
    # its photos, least sure first: links 0.6 (photo 2), 0.9 (0: to 1), 0.9 (1: best of 0.9 and 0.6)
    assert first.members == ("photo:2", "photo:0", "photo:1")
    # photo 3 sits in new_002 by the proposal only: a candidate on its own, P 0.7
    assert (first.candidates, first.alone, first.probabilities) == (("photo:3",), (True,), (0.7,))
    assert first.evidence == ("photo:0|photo:3",)
    # (0.4 + 0.1 + 0.1) x (3 - 1) pairs, + 0.7 x 1 photo x 3 photos of new_001
    assert first.priority == pytest.approx(1.2 + 2.1)
    # photo 3: photo 0 (0.7); K2 (0.2) would join as a whole group (its catalogue) and is below the level
    lone = tasks[1]
    assert lone.members == ("photo:3",) and lone.candidates == ("photo:0",) and lone.alone == (True,)
    assert lone.priority == pytest.approx(0.7 * 1)
    assert tasks[2].members == ("photo:4",) and tasks[2].candidates == () and tasks[2].priority == pytest.approx(0.2)
    assert tasks[3].members == () and tasks[3].candidates == ("photo:3",) and tasks[3].priority == pytest.approx(0.2)


def test_a_likely_photo_needs_two_answers_against_it(monkeypatch):
    graph = ReviewGraph(["new_001", "new_001", "new_002", "new_003"], known=[])
    pairs = pd.DataFrame({"row": [0, 2, 3], "kind": ["photo"] * 3, "candidate": ["1", "0", "0"],
                          "score": [.9, .6, .1], "probability": [0.9, 0.6, 0.1]})
    evidence = Evidence.from_pairs(pairs, graph)

    def candidates() -> tuple[str, ...]:
        tasks = {t.key: t for t in open_tasks(graph, evidence)}
        return tasks["animal|group:new_001"].candidates if "animal|group:new_001" in tasks else ()

    assert candidates() == ("photo:2", "photo:3")
    for decision in open_tasks(graph, evidence)[0].decisions():  # new_001's page: neither is this animal
        graph.apply(decision, by="ann")
    # P 0.6 >= REASK_LEVEL (0.2): one "not this animal" may be a slip, photo 2 is offered again; P 0.1: settled
    assert candidates() == ("photo:2",)
    # ... worth only the chance that the answer was a slip: 0.6 x 0.03 / (0.6 x 0.03 + 0.4 x 0.97), x 2 photos
    again = next(t for t in open_tasks(graph, evidence) if t.key == "animal|group:new_001")
    assert again.probabilities == (0.6,) and again.priority == pytest.approx(2 * 0.018 / (0.018 + 0.388))
    monkeypatch.setattr(queue, "REASK_LEVEL", 0.7)
    assert candidates() == ()
    monkeypatch.setattr(queue, "REASK_LEVEL", 0.2)
    graph.apply(Decision("different", "photo:2", "photo:1"), by="bob")  # a second answer against it
    assert candidates() == ()


def test_a_photo_moved_out_after_a_first_look_goes_back_where_it_came_from():
    graph = ReviewGraph(["new_001", "new_001", "new_001", "new_002", "new_003"], known=[])
    graph.apply(Decision("same", "photo:1", "group:new_002"), by="ann")  # first look: moves to new_002
    graph.apply(Decision("same", "photo:1", "group:new_003"), by="ann")  # and on to new_003
    assert graph.names()[1] == "new_003" and not graph.settled[1]
    graph.apply(Decision("different", "photo:1", "group:new_003"), by="ann")  # the second look: not new_003
    assert graph.names()[1] == "new_001" and not graph.settled[1]  # back in the group it first left
    graph.apply(Decision("same", "photo:2", "group:new_002"), by="ann")
    graph.apply(Decision("different", "photo:2", "photo:0"), by="bob")  # a person keeps it apart from new_001 ...
    graph.apply(Decision("different", "photo:2", "group:new_002"), by="ann")
    names = graph.names()
    assert names[2] not in {"new_001", "new_002"} and list(names).count(names[2]) == 1  # ... so it stays alone
    graph.apply(Decision("same", "photo:0", "group:new_002"), by="ann")
    graph.apply(Decision("same", "photo:0", "group:new_002"), by="ann")  # placed in new_002 by a person
    graph.apply(Decision("different", "photo:0", "group:new_002"), by="bob")
    assert graph.names()[0] == "new_002"  # a person's placement is kept (and flagged), not sent back
    assert graph.inconsistencies() == ["photo:0 and group:new_002 were decided different but are joined"]


def test_one_answer_moves_out_gathers_and_settles_a_page(monkeypatch):
    graph, evidence = queue_run()
    task = open_tasks(graph, evidence)[0]
    decisions = task.decisions(moved_out={"photo:2"}, joined={"photo:3"}, name="Stripes")
    assert decisions == [Decision("different", "photo:2", "group:new_001"),
                         Decision("same", "photo:0", "group:new_001"), Decision("same", "photo:1", "group:new_001"),
                         Decision("same", "photo:3", "group:new_001"),
                         Decision("name", "group:new_001", name="Stripes")]
    for decision in decisions:
        graph.apply(decision, by="ann")
    names = graph.names()
    assert names[[0, 1, 3]].tolist() == ["Stripes"] * 3 and names[2] not in {"Stripes", "new_002"}
    assert graph.placed.tolist() == [True, True, False, False, False]
    tasks = {t.key: t for t in open_tasks(graph, evidence)}
    # photo 3 came from elsewhere: Stripes asks about it once more (a second look), (1 - 0.7) x 2 pairs; photo 2
    # (P 0.6 to photo 1) is offered again, one "not this animal" is not enough for it; it joins only if that answer
    # was a 3 % slip: + 0.6 x 0.03 / (0.6 x 0.03 + 0.4 x 0.97) x 1 photo x 3 photos
    second = tasks["animal|group:new_001"]
    assert second.members == ("photo:3",) and second.candidates == ("photo:2",)
    assert second.priority == pytest.approx(0.3 * 2 + 0.018 / (0.018 + 0.388) * 3)
    for decision in second.decisions():
        graph.apply(decision, by="ann")
    assert graph.placed.tolist() == [True, True, False, True, False]
    tasks = {t.key: t for t in open_tasks(graph, evidence)}
    # Stripes is settled and photo 2 is kept apart from it; Stripes and K2 (photo 3's link, 0.2) are whole groups
    # now, below the level for whole groups
    assert set(tasks) == {"animal|photo:2", "animal|individual:K1"} and tasks["animal|photo:2"].candidates == ()
    monkeypatch.setattr(queue, "GROUP_CANDIDATE_LEVEL", 0.1)
    tasks = {t.key: t for t in open_tasks(graph, evidence)}
    assert (tasks["animal|group:new_001"].members, tasks["animal|group:new_001"].candidates) == ((), ("individual:K2",))
    assert (tasks["animal|individual:K2"].candidates, tasks["animal|individual:K2"].alone) == (("group:new_001",),
                                                                                                (False,))
    for decision in tasks["animal|individual:K2"].decisions():  # not K2: neither question is asked again
        graph.apply(decision, by="ann")
    assert {t.key for t in open_tasks(graph, evidence)} == {"animal|photo:2", "animal|individual:K1"}
    lone = tasks["animal|photo:2"]
    assert lone.decisions() == [Decision("confirm", "photo:2")]
    with pytest.raises(ValueError, match="keep at least one photo"):
        lone.decisions(moved_out={"photo:2"})
    with pytest.raises(ValueError, match="'photo:4' is not a candidate"):
        lone.decisions(joined={"photo:4"})
    assert lone.cant_tell() == [Decision("cant_tell", "photo:2", "photo:2")]


def test_automatic_decisions_settle_and_place_lone_photos_but_never_join_groups():
    graph = ReviewGraph(["new_001", "new_001", "new_002", "new_002", "new_003", "K1"], known=["K1", "K2"])
    pairs = pd.DataFrame({"row": [0, 1, 4, 5, 5], "kind": ["photo", "photo", "photo", "individual", "individual"],
                          "candidate": ["1", "2", "3", "K1", "K2"], "score": [.9] * 5,
                          "probability": [0.99, 0.995, 0.99, 0.99, 0.99]})
    decisions = auto_decisions(graph, Evidence.from_pairs(pairs, graph), level=0.98)
    # 0-1 inside new_001 (settles), 4 alone joins new_002, 5 is K1 (settles); 1-2 would join two groups, 5-K2
    # two known individuals
    assert {(d.a, d.b) for d in decisions} == {("photo:0", "photo:1"), ("photo:4", "photo:3"),
                                               ("photo:5", "individual:K1")}
    assert auto_decisions(graph, Evidence.from_pairs(pairs, graph), level=1.5) == []


def test_simulated_review_reaches_the_truth_with_fewer_answers_than_photos(run, tmp_path):
    run, truth = run
    review = Review(run, tmp_path / "review")
    assert adjusted_rand_score(truth, review.partition()) < 0.8
    answers = SimulatedReviewer(truth).review(review, max_decisions=100)
    assert review.tasks() == []
    assert adjusted_rand_score(truth, review.partition()) == 1.0
    assert answers < len(truth)
    names = review.partition()
    assert list(names[[5, 6]]) == ["K2", "K2"] and list(names[[7, 8]]) == ["K4", "K4"]  # known, found again
    assert names[19] not in KNOWN  # the new animal named K1 is moved out
    # a fallible reviewer still ends with every question answered
    fallible = Review(run, tmp_path / "fallible")
    SimulatedReviewer(truth, error_rate=0.3, seed=1).review(fallible, max_decisions=100)
    assert fallible.tasks() == []


def test_store_resumes_and_keeps_one_answer_per_question(run, tmp_path):
    run, truth = run
    review = Review(run, tmp_path / "review")
    task = review.tasks()[0]
    seen = review.revision
    decisions = SimulatedReviewer(truth).answer(review, task)
    review.answer(task.key, decisions, reviewer="ann", seen_revision=seen)
    if review.task(task.key) is not None:  # still open (a group): a second tab's answer is refused
        with pytest.raises(TaskTaken, match="already answered by ann"):
            review.answer(task.key, decisions, reviewer="bob", seen_revision=seen)
    partition, settled = review.partition(), review.graph.settled.copy()
    review.close()
    resumed = Review(run, tmp_path / "review")  # a new process: the decisions are replayed
    assert list(resumed.partition()) == list(partition) and (resumed.graph.settled == settled).all()
    rows = sqlite3.connect(tmp_path / "review" / "decisions.sqlite").execute(
        "SELECT reviewer, task FROM decisions WHERE reviewer != 'auto'").fetchall()
    assert rows == [("ann", task.key)] * len(decisions)
    exported = pd.read_csv(pd.io.common.StringIO(resumed.store.to_csv()))
    assert list(exported.columns) == ["id", "answer", "time", "reviewer", "task", "kind", "a", "b", "name"]
    resumed.close()
    (run.predictions_csv).write_text(run.predictions_csv.read_text().replace("0.99", "0.98"))
    with pytest.raises(ValueError, match="holds the review of other predictions"):
        Review(ReviewRun.load(run.predictions_csv), tmp_path / "review")


def test_catalogue_holds_the_gallery_and_the_settled_photos(run, tmp_path):
    run, truth = run
    review = Review(run, tmp_path / "review")
    SimulatedReviewer(truth).review(review, max_decisions=100)
    path = review.write_catalogue()
    catalogue = pd.read_csv(path, keep_default_na=False)
    assert list(catalogue.columns) == ["image_id", "identity", "path", "bbox", "review"]
    gallery = catalogue[catalogue["review"] == "gallery"]
    assert len(gallery) == 2 * len(KNOWN)
    new = catalogue[catalogue["review"] != "gallery"].set_index("path")
    settled = [str(p) for p, s in zip(run.new_photos["path"], review.graph.settled, strict=True) if s]
    assert sorted(new.index) == sorted(settled)
    for path_, animal in zip(run.new_photos["path"], truth, strict=True):
        if path_ in new.index and animal in KNOWN:
            assert new.loc[path_, "identity"] == animal
    everything = pd.read_csv(review.write_catalogue(with_unsettled=True))
    assert len(everything) == 2 * len(KNOWN) + len(NEW_PHOTOS)
    assert (tmp_path / "review" / "decisions.csv").is_file()


def test_the_review_never_writes_among_the_photos(run, tmp_path):
    run, _ = run
    with pytest.raises(ValueError, match="holds photos of the run"):
        Review(run, tmp_path / "photos" / "new" / "review")
    with pytest.raises(ValueError, match="holds photos of the run"):
        Review(run, tmp_path / "photos")


def test_bad_run_folders_give_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        (f"error: the folder '{tmp_path / 'empty'}' holds no predictions.csv: pass the folder `train.py predict` "
         "wrote (its last line: 'predictions written to ...')")]
    folder, _ = make_review_run(tmp_path / "data")
    (tmp_path / "data" / "photos" / "new" / "003.png").unlink()
    assert main([str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "1 of 30 photos are missing" in error and "003.png" in error
    (folder / "predictions_pairs.csv").unlink()
    assert main([str(folder)]) == 2
    assert "predictions_pairs.csv' is missing" in capsys.readouterr().err


def test_export_from_the_command_line_and_local_only_by_default(run, tmp_path, capsys):
    run, _ = run
    assert parser().parse_args([str(run.predictions_csv)]).host == "127.0.0.1"
    assert main([str(run.predictions_csv.parent), "--export"]) == 0
    out = capsys.readouterr().out
    catalogue = run.predictions_csv.parent / "review" / "metadata.csv"
    assert f"catalogue written to {catalogue}" in out and catalogue.is_file()


def form_values(page: str) -> dict[str, str]:
    return {name: re.search(rf'name="{name}" value="([^"]*)"', page).group(1) for name in ("token", "task", "revision")}


def test_web_app_answers_tokens_photos_and_escaping(tmp_path):
    folder, _ = make_review_run(tmp_path, names={"K3": "<script>alert(1)</script>"})
    review = Review(ReviewRun.load(folder), tmp_path / "review")
    client = TestClient(create_app(review, reviewer="ann"))
    page = client.get("/")
    assert page.status_code == 200 and 'id="question"' in page.text
    catalogue = client.get("/catalogue").text
    assert "<script>alert(1)</script>" not in catalogue and "&lt;script&gt;alert(1)&lt;/script&gt;" in catalogue
    values = form_values(page.text)
    task = review.task(values["task"])
    assert task is not None
    answer = {**values, "action": "save"}
    assert client.post("/answer", data={k: v for k, v in answer.items() if k != "token"}).status_code == 403
    assert client.post("/answer", data={**answer, "token": "forged"}).status_code == 403
    assert TestClient(create_app(review, reviewer="eve")).post("/answer", data=answer).status_code == 403  # no cookie
    assert client.get("/answer").status_code == 405  # state changes only by POST
    done = client.post("/answer", data=answer, follow_redirects=False)
    assert done.status_code == 303 and review.store.decisions()[-1].reviewer == "ann"
    again = client.post("/answer", data=answer)  # the same question answered from a stale second tab
    assert again.status_code == 409 and "already answered by ann" in again.text
    photo = client.get("/photo/new/3")
    assert photo.status_code == 200 and photo.content == Path(review.run.new_photos["path"][3]).read_bytes()
    for request in ("/photo/new/99", "/photo/../../etc/passwd", "/photo/new/..%2F..%2Fetc%2Fpasswd",
                    "/photo//etc/passwd", "/etc/passwd", "/photo/gallery/-1"):
        assert client.get(request).status_code == 404, request
    assert client.get("/decisions.csv").text.count("\n") == len(review.store.decisions()) + 1
    np.testing.assert_array_equal(review.partition(), Review(review.run, tmp_path / "review").partition())


def test_web_page_moves_out_and_joins_what_is_ticked(tmp_path):
    folder, _ = make_review_run(tmp_path)
    review = Review(ReviewRun.load(folder), tmp_path / "review")
    client = TestClient(create_app(review, reviewer="ann"))
    task = next(t for t in review.tasks() if len(t.members) > 1 and t.candidates and t.a.startswith("group:"))
    page = client.get("/").text
    while form_values(page)["task"] != task.key:  # skip to the question with photos to move out and candidates
        client.post("/answer", data={**form_values(page), "action": "cant_tell"})
        page = client.get("/").text
    for member in task.members:
        assert f'name="out" value="{member}"' in page
    for candidate in task.candidates:
        assert f'name="join" value="{candidate}"' in page
    out, join = task.members[-1], task.candidates[0]
    answered = client.post("/answer", data={**form_values(page), "action": "save", "out": out, "join": join,
                                            "name": "Stripes"}, follow_redirects=False)
    assert answered.status_code == 303
    graph = review.graph
    group = graph.find(graph.node(task.a))
    assert graph.find(graph.node(out)) != group and graph.find(graph.node(join)) == group
    assert graph.names()[graph.members(graph.node(task.a))[0]] == "Stripes"
    kept = [graph.node(m) for m in task.members if m != out]
    assert all(graph.placed[photo] and graph.find(photo) == group for photo in kept)
    assert client.post("/answer", data={**form_values(client.get("/").text), "action": "save",
                                        "join": "photo:999"}).status_code == 400
