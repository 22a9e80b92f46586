"""ReIDModule evaluation: both protocols against the functional API, de-duplication, init_ckpt."""

import pytest
import torch

from reid_lightning import eval as ev
from reid_lightning.models import ReIDModule


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
    scores = ev.pairwise_scores(query, gallery, "cosine")
    expected = ev.pr_metrics(scores, gallery_labels, query_labels, curves=False)
    assert metrics["mAP"].item() == pytest.approx(expected["mAP"].item())
    assert metrics["maxF1"].item() == pytest.approx(expected["maxF1"].mean().item())
    for k in (1, 3):
        assert metrics[f"top{k}"].item() == pytest.approx(
            ev.top_k_accuracy(scores, gallery_labels, query_labels, k).item())
    assert metrics["num_queries"].item() == 9
    assert metrics["queries_without_positives"].item() == int(
        (~(query_labels[:, None] == gallery_labels[None, :]).any(1)).sum())
    expected_scores, expected_indices = torch.sort(scores, dim=1, descending=True, stable=True)
    torch.testing.assert_close(results.candidate_scores, expected_scores)
    assert torch.equal(results.candidate_indices, expected_indices)


def test_leave_one_out_excludes_the_query_itself():
    gallery, gallery_labels, _, _ = problem(seed=1)
    module = flatten_module()
    _, metrics = run_eval(module, [batches(gallery, gallery_labels, torch.arange(20))])
    scores = ev.pairwise_scores(gallery, gallery, "cosine")
    aps, hits = [], []
    for i in range(20):
        others = torch.arange(20) != i
        row = scores[i : i + 1, others]
        aps.append(ev.pr_metrics(row, gallery_labels[others], gallery_labels[i : i + 1])["AP"].item())
        hits.append(ev.accuracy(row, gallery_labels[others], gallery_labels[i : i + 1]).item())
    assert metrics["mAP"].item() == pytest.approx(sum(aps) / 20)
    assert metrics["top1"].item() == pytest.approx(sum(hits) / 20)
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
    scores = ev.pairwise_scores(query, gallery, "cosine")
    aps = []
    for i in range(9):
        keep = ~same[i]
        aps.append(ev.pr_metrics(scores[i : i + 1, keep], gallery_labels[keep], query_labels[i : i + 1])["AP"].item())
    assert metrics["mAP"].item() == pytest.approx(sum(aps) / 9)
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
