"""ReIDModule evaluation: both protocols against plain NumPy AP / maxF1 / top-k, de-duplication, init_ckpt."""

import numpy as np
import pytest
import torch

from reid_lightning.models import ReIDModule


def numpy_cosine(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    q = query.numpy() / np.linalg.norm(query.numpy(), axis=1, keepdims=True)
    g = gallery.numpy() / np.linalg.norm(gallery.numpy(), axis=1, keepdims=True)
    return q @ g.T


def numpy_row_metrics(scores: np.ndarray, hits: np.ndarray, ks=(1, 3)) -> dict[str, float]:
    """AP, maxF1 and top-k hit of one query (no tied scores): precision at every positive, averaged over the
    positives; F1 at every rank; a query without positives scores 0 everywhere."""
    order = np.argsort(-scores, kind="stable")
    ranked = hits[order].astype(float)
    positives = ranked.sum()
    if positives == 0:
        return {"AP": 0.0, "maxF1": 0.0, **{f"top{k}": 0.0 for k in ks}}
    found = np.cumsum(ranked)
    precision = found / np.arange(1, len(ranked) + 1)
    recall = found / positives
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return {"AP": float((precision * ranked).sum() / positives), "maxF1": float(f1.max()),
            **{f"top{k}": float(ranked[:k].any()) for k in ks}}


def numpy_metrics(scores: np.ndarray, hits: np.ndarray, keep: np.ndarray | None = None) -> dict[str, float]:
    rows = [numpy_row_metrics(scores[i][keep[i]] if keep is not None else scores[i],
                              hits[i][keep[i]] if keep is not None else hits[i]) for i in range(len(scores))]
    return {"mAP": np.mean([r["AP"] for r in rows]), "maxF1": np.mean([r["maxF1"] for r in rows]),
            "top1": np.mean([r["top1"] for r in rows]), "top3": np.mean([r["top3"] for r in rows])}


def flatten_module(**kwargs) -> ReIDModule:
    # images (B, 3, 1, 2) -> embeddings (B, 6): the evaluation sees exactly the embeddings we choose
    return ReIDModule(backbone="torch.nn.Flatten", pretrained=False, top_k=(1, 3), **kwargs)


def batches(embeddings, labels, order, batch_size=4):
    """Eval batches whose 'images' flatten to the given embeddings, visited in ``order``."""
    images = embeddings.reshape(-1, 3, 1, 2)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield {"image": images[idx], "label": labels[idx], "index": idx}


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randn(20, 6, generator=g)
    gallery_labels = torch.randint(0, 6, (20,), generator=g)
    query = torch.randn(9, 6, generator=g)
    query_labels = torch.randint(0, 8, (9,), generator=g)
    return gallery, gallery_labels, query, query_labels


def run_eval(module, loaders):
    module.on_validation_epoch_start()
    for loader_idx, loader in enumerate(loaders):
        for batch_idx, batch in enumerate(loader):
            module.validation_step(batch, batch_idx, dataloader_idx=loader_idx)
    results = module.evaluation_results()
    return results, {name: torch.tensor(value) for name, value in results.metrics(top_k=(1, 3)).items()}


def test_database_protocol_equals_functional_api():
    gallery, gallery_labels, query, query_labels = problem()
    module = flatten_module()
    # batches arrive out of order, and the padded distributed sampler repeats an item: both must not matter
    query_order = torch.tensor([3, 1, 0, 2, 8, 7, 6, 5, 4, 4])
    results, metrics = run_eval(module, [batches(query, query_labels, query_order),
                                         batches(gallery, gallery_labels, torch.arange(20).flip(0))])
    scores = numpy_cosine(query, gallery)
    expected = numpy_metrics(scores, (query_labels[:, None] == gallery_labels[None, :]).numpy())
    for name in ("mAP", "maxF1", "top1", "top3"):
        assert metrics[name].item() == pytest.approx(expected[name], abs=1e-6)
    assert metrics["num_queries"].item() == 9
    assert metrics["queries_without_positives"].item() == int(
        (~(query_labels[:, None] == gallery_labels[None, :]).any(1)).sum())
    expected_indices = np.argsort(-scores, axis=1, kind="stable")
    np.testing.assert_allclose(results.candidate_scores.numpy(), np.take_along_axis(scores, expected_indices, 1),
                               atol=1e-6)
    assert (results.candidate_indices.numpy() == expected_indices).all()


def test_leave_one_out_excludes_the_query_itself():
    gallery, gallery_labels, _, _ = problem(seed=1)
    module = flatten_module()
    _, metrics = run_eval(module, [batches(gallery, gallery_labels, torch.arange(20))])
    scores = numpy_cosine(gallery, gallery)
    expected = numpy_metrics(scores, (gallery_labels[:, None] == gallery_labels[None, :]).numpy(),
                             keep=~np.eye(20, dtype=bool))
    assert metrics["mAP"].item() == pytest.approx(expected["mAP"], abs=1e-6)
    assert metrics["top1"].item() == pytest.approx(expected["top1"], abs=1e-6)
    # without the exclusion every query would find itself first
    assert metrics["top1"].item() < 1.0


def test_missing_items_are_reported():
    gallery, gallery_labels, _, _ = problem()
    module = flatten_module()
    with pytest.raises(RuntimeError, match="exactly once"):
        run_eval(module, [batches(gallery, gallery_labels, torch.tensor([0, 1, 3]))])


def test_init_ckpt_loads_backbone_but_not_the_loss_head(tmp_path):
    source = ReIDModule(backbone="resnet10t", pretrained=False, num_classes=5)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = ReIDModule(backbone="resnet10t", pretrained=False, num_classes=7, init_ckpt=str(path))
    for name, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[name], value)
    assert target.loss_fn.pml_loss.W.shape[1] == 7
    with pytest.raises(FileNotFoundError, match="init_ckpt"):
        ReIDModule(backbone="resnet10t", pretrained=False, init_ckpt=str(tmp_path / "missing.ckpt"))
    other = ReIDModule(backbone="resnet18", pretrained=False)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="shapes differ"):
        ReIDModule(backbone="resnet10t", pretrained=False, init_ckpt=str(tmp_path / "other.ckpt"))


def test_same_sequence_gallery_images_are_excluded_from_candidates_and_metrics():
    gallery, gallery_labels, query, query_labels = problem(seed=2)
    g = torch.Generator().manual_seed(3)
    gallery_groups = torch.randint(-1, 4, (20,), generator=g)
    query_groups = torch.randint(-1, 4, (9,), generator=g)
    module = flatten_module()

    def grouped(embeddings, labels, groups, order):
        for batch in batches(embeddings, labels, order):
            yield {**batch, "group": groups[batch["index"]]}

    results, metrics = run_eval(module, [grouped(query, query_labels, query_groups, torch.arange(9)),
                                         grouped(gallery, gallery_labels, gallery_groups, torch.arange(20))])
    same = (query_groups[:, None] == gallery_groups[None, :]) & (query_groups[:, None] >= 0)
    assert same.any()
    valid = results.candidate_indices >= 0
    rows = torch.arange(9)[:, None].expand_as(valid)
    assert not same[rows[valid], results.candidate_indices[valid]].any()
    expected = numpy_metrics(numpy_cosine(query, gallery), (query_labels[:, None] == gallery_labels[None, :]).numpy(),
                             keep=~same.numpy())
    assert metrics["mAP"].item() == pytest.approx(expected["mAP"], abs=1e-6)
    assert metrics["excluded_pairs"].item() == int(same.sum())


def test_channels_last_and_compile_keep_embeddings_and_checkpoint_names():
    torch.manual_seed(0)
    plain = ReIDModule(backbone="torch.nn.Flatten", pretrained=False)
    fast = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, channels_last=True,
                      compile=True)
    fast.load_state_dict(plain.state_dict())
    images = torch.randn(3, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(fast(images), plain(images))
    assert isinstance(fast._compiled_backbone, torch._dynamo.eval_frame.OptimizedModule)
    # the compiled wrapper is not part of the module tree: checkpoints keep the plain names
    assert "_compiled_backbone" not in dict(fast.named_modules())
    assert list(fast.state_dict()) == list(plain.state_dict())
