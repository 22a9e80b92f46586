"""From ``predict`` to a reviewed catalogue and back: the catalogue trains, and predict names the reviewed animal."""

import shutil

import lightning as L
import pandas as pd

from reid_lightning.callbacks import PredictionWriter
from reid_lightning.data import ReIDDataModule
from reid_lightning.data.synthetic import make_synthetic_individuals
from reid_lightning.models import ReIDModule
from reid_lightning.review import Decision, Review, ReviewRun, SimulatedReviewer


def run_predict(folder, data: ReIDDataModule, model: ReIDModule) -> PredictionWriter:
    writer = PredictionWriter(output=str(folder / "predictions.csv"))
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False, default_root_dir=folder, callbacks=[writer]).predict(model, datamodule=data)
    return writer


def test_reviewed_catalogue_trains_and_names_the_new_animal(tmp_path):
    root = tmp_path / "data"
    metadata = pd.read_csv(make_synthetic_individuals(root, num_individuals=7, images_per_individual=8,
                                                      image_size=32))
    metadata[metadata["identity"] != "ind_006"].to_csv(root / "known.csv", index=False)
    new = tmp_path / "season"
    new.mkdir()
    for shot in range(4):  # an animal the catalogue does not know ...
        shutil.copy(root / "images" / "ind_006" / f"00{shot}.jpg", new / f"unseen{shot}.jpg")
    shutil.copy(root / "images" / "ind_002" / "001.jpg", new / "known.jpg")  # ... and a known one
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, open_set_threshold=0.999)
    writer = run_predict(tmp_path / "predict", ReIDDataModule(root=str(root), metadata="known.csv", image_size=32,
                                                              batch_size=4, predict_dir=str(new)), model)
    pairs = pd.read_csv(tmp_path / "predict" / "predictions_pairs.csv")
    photos = pd.read_csv(tmp_path / "predict" / "predictions_photos.csv", keep_default_na=False)
    # every photo's 4 nearest other new photos and its 5 best known individuals
    assert (pairs["kind"] == "photo").sum() == 5 * 4 and (pairs.groupby("row")["kind"].count() == 4 + 5).all()
    assert photos["set"].tolist() == ["new"] * 5 + ["gallery"] * (6 * 8)
    assert photos.loc[photos["set"] == "new", "image_id"].tolist() == writer.predictions["image_id"].tolist()

    run = ReviewRun.load(tmp_path / "predict")
    truth = ["ind_002" if name == "known.jpg" else "ind_006" for name in run.predictions["image_id"]]
    review = Review(run, tmp_path / "review")
    SimulatedReviewer(truth).review(review, max_decisions=50)
    first_new = truth.index("ind_006")
    review.answer(f"name|photo:{first_new}", [Decision("name", f"photo:{first_new}", name="Zed")], reviewer="ann")
    assert [name for name, animal in zip(review.partition(), truth, strict=True) if animal == "ind_006"] == ["Zed"] * 4
    catalogue = review.write_catalogue(with_unsettled=True)

    # the next season's fit takes the catalogue as it is: the reviewed animal is a training identity
    data = ReIDDataModule(root=str(catalogue.parent), metadata="metadata.csv", image_size=32, batch_size=4,
                          val_ratio=0.0, test_ratio=0.0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, max_epochs=1, limit_train_batches=2,
                        default_root_dir=tmp_path / "fit")
    trainer.fit(ReIDModule(backbone="resnet10t", pretrained=False), datamodule=data)
    assert trainer.state.finished and "Zed" in set(data.dataset("train").labels_string)
    # and predict with it as gallery names the reviewed animal
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(new / "unseen3.jpg", again / "later.jpg")
    answer = run_predict(tmp_path / "predict2", ReIDDataModule(
        root=str(root), metadata="known.csv", image_size=32, batch_size=4, predict_dir=str(again),
        gallery_csv=str(catalogue)), model).predictions
    assert answer["identity"].tolist() == ["Zed"]
