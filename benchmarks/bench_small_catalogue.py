"""Decisions on small catalogues: is the "new individual" threshold and the grouping cut chosen on validation
still right on test when the catalogue holds 35 animals?

    python benchmarks/bench_small_catalogue.py --out /tmp/small-catalogue            # zebra + 5 draws of 35 dogs
    python benchmarks/bench_small_catalogue.py --out /tmp/small-catalogue --draws 0   # zebra only

The user's path on each data set: ``train.py fit --config configs/finetune_pretrained.yaml --data.split open
--data.val_unseen_ratio 0.1`` (``--image_size``, ``--epochs``), its last checkpoint kept in ``<out>/<name>``
(a rerun reuses it: only the evaluation runs again). Data sets: ``../shared/data/zebra`` (35 zebras) and
``--draws`` random draws of ``--individuals`` dogfaces dogs (a metadata CSV of the draw in ``<out>``; the photos
are read where they are).

For each, on the checkpoint: the validation split (its queries of identities kept out of training are the
unknowns) chooses each rule's threshold and cut; the test split (1 - ... of the identities never seen) shows what
they give, against the best value on test (the oracle, which needs the test answers):

- threshold rules: ``unseen`` (what ``fit`` does: validation identities kept out of training), ``held-out``
  (trained validation identities removed from the gallery), and the library's ``fit_open_set`` as it stands;
- grouping: what ``predict`` does (``fit_open_set``: the top-10 graph, or all pairs when a validation animal has
  more than 20 photos; with fewer than 10 unseen validation animals the cut is the cosine only 20 % (all pairs:
  2 %) of pairs of different validation animals reach, and the graph's groups are joined on all pairs at the 2 %
  cosine), each of the two graphs with its best-AMI cut, and the best single cut of each graph on test;
- candidate rules for both (``threshold_candidates``, ``cut_candidates``), on validation only.

Prints one Markdown row per data set, the mean and spread over the dog draws, and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

from reid_lightning.data import ReIDDataModule
from reid_lightning.inference import (
    choose_discovery_threshold,
    choose_threshold,
    decision_inputs,
    different_identity_floor,
    fit_open_set,
    held_out_gallery_identities,
)
from reid_lightning.metrics import open_set_metrics
from reid_lightning.models import ReIDModule
from reid_lightning.runtime.grouping import dendrogram_of, group_new_photos

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def data_sets(args) -> dict[str, dict]:
    """name -> {root, metadata (or None)}; the dog draws' metadata CSVs are written to ``<out>``."""
    sets = {"zebra": {"root": str(SHARED / "zebra"), "metadata": None}}
    dogs = pd.read_csv(SHARED / "dogfaces" / "metadata.csv", dtype=str)
    counts = dogs["identity"].value_counts()
    eligible = sorted(counts[counts >= args.min_photos].index)
    for draw in range(args.draws):
        chosen = np.random.default_rng(draw).choice(eligible, size=args.individuals, replace=False)
        csv = Path(args.out) / f"dogs{args.individuals}-draw{draw}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        dogs[dogs["identity"].isin(chosen)].to_csv(csv, index=False)
        sets[f"dogs-draw{draw}"] = {"root": str(SHARED / "dogfaces"), "metadata": str(csv)}
    return sets


def data_arguments(spec: dict, args) -> list[str]:
    arguments = ["--data.root", spec["root"], "--data.split", "open", "--data.val_unseen_ratio",
                 str(args.val_unseen_ratio), "--data.image_size", str(args.image_size)]
    return arguments + (["--data.metadata", spec["metadata"]] if spec["metadata"] else [])


def train(name: str, spec: dict, args) -> Path:
    folder = Path(args.out) / name
    found = sorted(folder.rglob("last.ckpt"))
    if found:
        return found[0]
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" /
               "finetune_pretrained.yaml"), *data_arguments(spec, args), "--trainer.max_epochs", str(args.epochs),
               "--trainer.default_root_dir", str(folder), "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(folder)]
    print(" ".join(command), flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True, cwd=folder)
    return min(folder.rglob("last.ckpt"))


def best_cut_ari(embeddings: torch.Tensor, labels: np.ndarray, *, k: int | None) -> float:
    """The highest ARI of any cut of the dendrogram of these photos (the oracle cut)."""
    dendrogram = dendrogram_of(embeddings.numpy(), k=k)
    return max(adjusted_rand_score(labels, dendrogram.groups_after(m)) for m in range(dendrogram.num_merges + 1))


def ari_cut(photos: torch.Tensor, labels: np.ndarray) -> float:
    """The cut of the all-pairs dendrogram with the highest ARI (midpoint of its levels)."""
    dendrogram = dendrogram_of(photos.numpy())
    levels = np.concatenate([[dendrogram.levels[0] + 1] if len(dendrogram.levels) else [1.0], dendrogram.levels,
                             [dendrogram.levels[-1] - 1] if len(dendrogram.levels) else [-1.0]])
    scores = [adjusted_rand_score(labels, dendrogram.groups_after(m)) for m in range(dendrogram.num_merges + 1)]
    best = int(np.argmax(scores))
    return float((levels[best] + levels[best + 1]) / 2)


def threshold_rules(validation, val_inputs) -> dict[str, float]:
    """Candidate rules for the open-set threshold, all on validation only."""
    rng = np.random.default_rng(0)
    known, labels = val_inputs["known"], val_inputs["query_labels"].numpy()
    unseen, _ = choose_threshold(**val_inputs)
    bagged = []
    known_ids, unknown_ids = np.unique(labels[known.numpy()]), np.unique(labels[~known.numpy()])
    for _ in range(100):
        drawn = np.concatenate([rng.choice(known_ids, len(known_ids)), rng.choice(unknown_ids, len(unknown_ids))])
        mask = torch.from_numpy(np.isin(labels, drawn))
        if (~known[mask]).any() and known[mask].any():
            bagged.append(choose_threshold(**{n: v[mask] for n, v in val_inputs.items()})[0])
    held = []
    for seed in range(5):  # unseen identities plus trained ones held out of the gallery, 5 draws
        keep = held_out_gallery_identities(query_labels=validation.query_labels,
                                           gallery_labels=validation.gallery_labels, fraction=0.2, seed=seed)
        held.append(decision_inputs(validation, keep_gallery=keep))
    pooled, _ = choose_threshold(**{n: torch.cat([h[n] for h in held]) if n != "query_labels" else torch.cat(
        [h[n] + 100000 * i for i, h in enumerate(held)]) for n in held[0]})
    return {"unseen": unseen, "unseen, bagged median": float(np.median(bagged)),
            "unseen + held-out (5 draws)": pooled}


def cut_rules(val_photos, val_truth, all_val_photos, all_val_truth) -> dict[str, float]:
    rng = np.random.default_rng(0)
    identities = np.unique(val_truth)
    bagged = []
    for _ in range(50):
        keep = np.isin(val_truth, rng.choice(identities, len(identities)))
        if len(np.unique(val_truth[keep])) >= 2:
            bagged.append(choose_discovery_threshold(val_photos[torch.from_numpy(keep)],
                                                     true_labels=val_truth[keep])[0])
    return {"AMI unseen, no floor": choose_discovery_threshold(val_photos, true_labels=val_truth)[0],
            "ARI unseen": ari_cut(val_photos, val_truth),
            "AMI unseen, bagged median": float(np.median(bagged)),
            "AMI all validation photos": choose_discovery_threshold(all_val_photos, true_labels=all_val_truth)[0],
            "ARI all validation photos": ari_cut(all_val_photos, all_val_truth)}


def evaluate(checkpoint: Path, spec: dict, args) -> dict:
    cache = checkpoint.parent / "evaluation.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)  # our own file, written below
    else:
        model = ReIDModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
        data = ReIDDataModule(root=spec["root"], metadata=spec["metadata"], split="open",
                              image_size=args.image_size, val_unseen_ratio=args.val_unseen_ratio, batch_size=64)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            default_root_dir=str(checkpoint.parent))
        trainer.validate(model, datamodule=data, verbose=False)
        validation = model.evaluation_results()
        val_embeddings = model.embed(data.eval_loader(data.dataset("val")))[0]
        trainer.test(model, datamodule=data, verbose=False)
        saved = {"validation": validation, "val_embeddings": val_embeddings, "test": model.evaluation_results(),
                 "test_embeddings": model.embed(data.eval_loader(data.dataset("test")))[0],
                 "score": f"top-1 {model.hparams.metric} score"}
        torch.save(saved, cache)
    validation, test = saved["validation"], saved["test"]
    val_embeddings, test_embeddings = saved["val_embeddings"].float(), saved["test_embeddings"].float()

    val_inputs, test_inputs = decision_inputs(validation), decision_inputs(test)
    val_unknown, test_unknown = ~val_inputs["known"], ~test_inputs["known"]
    fitted = {"unseen": fit_open_set(validation, score=saved["score"], embeddings=val_embeddings),
              "held-out": fit_open_set(validation.select(val_inputs["known"]), score=saved["score"])}
    _, oracle_gmean = choose_threshold(**test_inputs)
    report = {
        "val_unseen_individuals": len(torch.unique(val_inputs["query_labels"][val_unknown])),
        "val_unknown_queries": int(val_unknown.sum()),
        "test_unseen_individuals": len(torch.unique(test_inputs["query_labels"][test_unknown])),
        "test_unknown_queries": int(test_unknown.sum()),
        "oracle_gmean": oracle_gmean, "threshold": {}, "threshold_candidates": {}, "cut_candidates": {},
    }
    for name, rule in fitted.items():
        metrics = open_set_metrics(**test_inputs, threshold=rule.threshold)
        report["threshold"][name] = {"threshold": rule.threshold, "val_gmean": rule.validation_gmean,
                                     "interval": rule.threshold_interval,
                                     "test_gmean": metrics["gmean"], "BAKS": metrics["BAKS"], "BAUS": metrics["BAUS"]}
    for name, threshold in threshold_rules(validation, val_inputs).items():
        report["threshold_candidates"][name] = {
            "threshold": threshold, "test_gmean": open_set_metrics(**test_inputs, threshold=threshold)["gmean"]}
    photos = test_embeddings[test_unknown]
    truth = test_inputs["query_labels"][test_unknown].numpy()
    val_photos = val_embeddings[val_unknown]
    val_truth = val_inputs["query_labels"][val_unknown].numpy()
    report["grouping"] = {"best_cut_ari": best_cut_ari(photos, truth, k=None),
                          "best_cut_ari_top10": best_cut_ari(photos, truth, k=10),
                          "interval": fitted["unseen"].discovery_interval}
    model = fitted["unseen"]
    grouped = model.group(photos)  # what predict does: fit_open_set's graph and cut
    report["grouping"]["library"] = {"cut": model.discovery_threshold, "graph": model.discovery_k,
                                     "ARI": adjusted_rand_score(truth, grouped.groups),
                                     "groups": grouped.num_groups, "individuals": len(set(truth.tolist()))}
    floor = different_identity_floor(val_embeddings, true_labels=val_inputs["query_labels"].numpy())
    for name, k, lowest in (("all pairs, floor", None, floor), ("top-10 graph", 10, None)):
        cut = choose_discovery_threshold(val_photos, true_labels=val_truth, k=k, lowest=lowest)[0]
        grouped = group_new_photos(photos, threshold=cut, k=k)
        report["grouping"][name] = {"cut": cut, "ARI": adjusted_rand_score(truth, grouped.groups),
                                    "groups": grouped.num_groups, "individuals": len(set(truth.tolist()))}
    for name, cut in cut_rules(val_photos, val_truth, val_embeddings,
                               val_inputs["query_labels"].numpy()).items():
        grouped = group_new_photos(photos, threshold=cut)
        report["cut_candidates"][name] = {"cut": cut, "ARI": adjusted_rand_score(truth, grouped.groups)}
    return report


def summary(results: dict) -> None:
    print("\n| data set | val unseen ids | threshold | test gmean | oracle gmean | held-out rule gmean | graph | cut "
          "| ARI (library) | ARI all pairs + floor | ARI top-10 graph, best AMI | best-cut ARI (all pairs) | "
          "best-cut ARI (top-10 graph) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        t, g = r["threshold"], r["grouping"]
        graph = "all pairs" if g["library"]["graph"] is None else f"top-{g['library']['graph']}"
        print(f"| {name} | {r['val_unseen_individuals']} | {t['unseen']['threshold']:.3f} | "
              f"{t['unseen']['test_gmean']:.3f} | {r['oracle_gmean']:.3f} | {t['held-out']['test_gmean']:.3f} | "
              f"{graph} | {g['library']['cut']:.3f} | {g['library']['ARI']:.3f} | {g['all pairs, floor']['ARI']:.3f} | "
              f"{g['top-10 graph']['ARI']:.3f} | {g['best_cut_ari']:.3f} | {g['best_cut_ari_top10']:.3f} |")
    draws = [r for name, r in results.items() if name.startswith("dogs")]
    if len(draws) > 1:
        def spread(values):
            return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

        print(f"\ndog draws ({len(draws)}): test gmean {spread([r['threshold']['unseen']['test_gmean'] for r in draws])}"
              f" vs oracle {spread([r['oracle_gmean'] for r in draws])}; ARI (library) "
              f"{spread([r['grouping']['library']['ARI'] for r in draws])} vs best cut "
              f"{spread([r['grouping']['best_cut_ari'] for r in draws])} (all pairs), "
              f"{spread([r['grouping']['best_cut_ari_top10'] for r in draws])} (top-10 graph)")
    every = list(results.values())
    print(f"all {len(every)}: test gmean {statistics.mean(r['threshold']['unseen']['test_gmean'] for r in every):.3f} vs "
          f"oracle {statistics.mean(r['oracle_gmean'] for r in every):.3f}; ARI (library) "
          f"{statistics.mean(r['grouping']['library']['ARI'] for r in every):.3f} vs best cut "
          f"{statistics.mean(r['grouping']['best_cut_ari'] for r in every):.3f} (all pairs), "
          f"{statistics.mean(r['grouping']['best_cut_ari_top10'] for r in every):.3f} (top-10 graph)")


def candidate_summary(results: dict) -> None:
    for key, metric, reference in (("threshold_candidates", "test_gmean", "oracle_gmean"),
                                   ("cut_candidates", "ARI", None)):
        names = next(iter(results.values()))[key].keys()
        print(f"\n| {key} | " + " | ".join(results) + " | mean |")
        print("|---|" + "---:|" * (len(results) + 1))
        for name in names:
            values = [r[key][name][metric] for r in results.values()]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {statistics.mean(values):.3f} |")
        best = [r[reference] if reference else r["grouping"]["best_cut_ari"] for r in results.values()]
        print("| oracle | " + " | ".join(f"{v:.3f}" for v in best) + f" | {statistics.mean(best):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--individuals", type=int, default=35)
    parser.add_argument("--min_photos", type=int, default=5, help="dogs with fewer photos are not drawn")
    parser.add_argument("--val_unseen_ratio", type=float, default=0.1)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--only", nargs="*", help="data set names to run (default: all)")
    args = parser.parse_args()
    results_file = Path(args.out) / "results.json"
    results = {}
    for name, spec in data_sets(args).items():
        if args.only and name not in args.only:
            continue
        results[name] = evaluate(train(name, spec, args), spec, args)
        print(name, json.dumps(results[name], default=float), flush=True)
        results_file.write_text(json.dumps(results, indent=2, default=float))
    summary(results)
    candidate_summary(results)


if __name__ == "__main__":
    main()
