"""torchmetrics wrappers equal the functional API, stream query chunks and reduce across processes."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reid_lightning import eval as ev
from reid_lightning.metrics import MaxF1, MeanAveragePrecision, RetrievalMetrics, TopKAccuracy


def problem(seed=0, num_queries=37, num_gallery=80):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 20, (num_queries, num_gallery), generator=g).float() / 20
    gallery = torch.randint(0, 9, (num_gallery,), generator=g)
    query = torch.randint(0, 12, (num_queries,), generator=g)
    query[0] = 11  # an open-set query
    return scores, gallery, query


def expected_values(scores, gallery, query):
    pr = ev.pr_metrics(scores, gallery, query, curves=False)
    return {
        "top1": ev.top_k_accuracy(scores, gallery, query, 1),
        "top5": ev.top_k_accuracy(scores, gallery, query, 5),
        "mAP": pr["mAP"],
        "maxF1": pr["maxF1"].mean(),
    }


def test_single_metrics_equal_functional_api_when_streamed():
    scores, gallery, query = problem()
    metrics = {"top1": TopKAccuracy(k=1), "top5": TopKAccuracy(k=5), "mAP": MeanAveragePrecision(),
               "maxF1": MaxF1()}
    for rows in (slice(0, 10), slice(10, 11), slice(11, None)):
        for metric in metrics.values():
            metric.update(scores[rows], gallery, query[rows])
    expected = expected_values(scores, gallery, query)
    for name, metric in metrics.items():
        torch.testing.assert_close(metric.compute(), expected[name].float(), msg=name)


def test_collection_counts_open_set_queries_and_can_ignore_them():
    scores, gallery, query = problem(seed=1)
    collection = RetrievalMetrics(top_k=(1, 5))
    collection.update(scores, gallery, query)
    result = collection.compute()
    expected = expected_values(scores, gallery, query)
    for name in expected:
        torch.testing.assert_close(result[name], expected[name].float())
    without_positive = int((~(query[:, None] == gallery[None, :]).any(1)).sum())
    assert result["queries_without_positives"].item() == without_positive >= 1
    assert result["num_queries"].item() == len(query)

    ignoring = RetrievalMetrics(top_k=(1,), ignore_queries_without_positives=True)
    ignoring.update(scores, gallery, query)
    kept = ev.pr_metrics(scores, gallery, query, curves=False, ignore_queries_without_positives=True)
    torch.testing.assert_close(ignoring.compute()["mAP"], kept["mAP"])


def test_operating_points_equal_pr_metrics():
    scores, gallery, query = problem(seed=2)
    metric = MaxF1()
    metric.update(scores, gallery, query)
    points = metric.compute_operating_points()
    pr = ev.pr_metrics(scores, gallery, query, curves=False)
    for key in ("P@maxF1", "R@maxF1", "T@maxF1", "maxF1"):
        torch.testing.assert_close(points[key], pr[key])


def test_string_labels():
    scores, gallery, query = problem(seed=3)
    names = np.array([f"dog{i}" for i in range(12)])
    metric = RetrievalMetrics()
    metric.update(scores[:20], names[gallery.numpy()], names[query[:20].numpy()])
    metric.update(scores[20:], list(names[gallery.numpy()]), list(names[query[20:].numpy()]))
    expected = expected_values(scores, gallery, query)
    torch.testing.assert_close(metric.compute()["mAP"], expected["mAP"].float())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    scores, gallery, query = problem(seed=4)
    metric = RetrievalMetrics(top_k=(1, 5))
    # each process updates a different, unevenly sized share of the queries
    rows = slice(0, 15) if rank == 0 else slice(15, None)
    metric.update(scores[rows], gallery, query[rows])
    result = {k: v.item() for k, v in metric.compute().items()}
    queue.put((rank, result))
    dist.destroy_process_group()


def test_ddp_reduction_equals_single_process():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    processes = [ctx.Process(target=_ddp_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    scores, gallery, query = problem(seed=4)
    single = RetrievalMetrics(top_k=(1, 5))
    single.update(scores, gallery, query)
    expected = {k: v.item() for k, v in single.compute().items()}
    for rank in (0, 1):
        assert results[rank] == pytest.approx(expected), f"rank {rank}"
