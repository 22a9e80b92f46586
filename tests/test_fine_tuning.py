"""Fine-tuning helpers: a frozen-backbone start, the zero-shot baseline and its end-of-fit warning, optimizer
parameter groups and the warmup-cosine schedule."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from reid_lightning.callbacks import FreezeBackbone, ZeroShotBaseline
from reid_lightning.data import ReIDDataModule
from reid_lightning.models import ReIDModule, WarmupCosineLR
from reid_lightning.models.optim import build_optimizer, parameter_groups


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ReIDDataModule(synthetic_dir=str(tmp_path_factory.mktemp("synthetic")), synthetic_individuals=6,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32, batch_size=8,
                          val_ratio=0.2)


class Watch(Callback):
    """Records, at the first training batch of every epoch, the backbone's weights and its batch norms' modes."""

    def __init__(self):
        self.weights, self.norms_training = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            epoch = trainer.current_epoch
            self.weights[epoch] = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}
            self.norms_training[epoch] = {m.training for m in pl_module.backbone.modules()
                                          if isinstance(m, torch.nn.BatchNorm2d)}

    def on_train_end(self, trainer, pl_module):
        self.weights["end"] = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}


def fit(model, data, *callbacks, epochs=3):
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        accelerator="cpu", callbacks=list(callbacks), num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return trainer


def test_frozen_epochs_leave_the_backbone_alone_then_train_it(data):
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    watch = Watch()
    fit(model, data, FreezeBackbone(epochs=1), watch, epochs=3)
    parameters = [name for name, _ in model.backbone.named_parameters()]
    # epoch 0 changed no backbone weight or statistic (epoch 1 starts with the initial weights)
    for name, value in watch.weights[0].items():
        assert torch.equal(watch.weights[1][name], value), name
    assert watch.norms_training[0] == {False}
    # afterwards the backbone trains, its batch norms in training mode again (after Lightning's validation too)
    assert watch.norms_training[1] == {True} and watch.norms_training[2] == {True}
    assert any(not torch.equal(watch.weights["end"][name], watch.weights[1][name]) for name in parameters)


class CollapseBeforeLastValidation(Callback):
    """Zeroes the backbone before the last validation: every image then gets the same embedding, so every gallery
    item ties and the ranking metrics fall to what ties give, below those of any informative embedding."""

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.current_epoch == trainer.max_epochs - 1:
            with torch.no_grad():
                for tensor in [*pl_module.backbone.parameters(), *pl_module.backbone.buffers()]:
                    if tensor.is_floating_point():
                        tensor.zero_()


def test_zero_shot_metrics_are_logged_before_training_and_a_worse_end_warns(data):
    torch.manual_seed(0)
    baseline = ZeroShotBaseline()
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    reference = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    reference.load_state_dict(model.state_dict(), strict=False)
    with pytest.warns(UserWarning, match="ends below its zero-shot start"):
        trainer = fit(model, data, baseline, CollapseBeforeLastValidation(), epochs=2)
    # the zero-shot metrics are those of validating the untouched model
    L.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu").validate(reference, datamodule=data)
    expected = reference.evaluation_results().metrics(top_k=(1, 5))
    assert baseline.metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert trainer.callback_metrics["val/zero_shot/mAP"].item() == pytest.approx(expected["mAP"], abs=1e-6)
    assert trainer.callback_metrics["val/mAP"].item() < baseline.metrics["mAP"]


def test_a_diverged_fit_stops_with_advice_instead_of_logging_meaningless_metrics(data):
    torch.manual_seed(0)
    # SGD at lr 1e4 blows the weights up within an epoch: embeddings overflow to inf/NaN
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax",
                       optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 1e4}})
    with pytest.raises(ValueError, match=r"embeddings are not finite .*lower the learning rate"):
        fit(model, data, epochs=1)


@pytest.mark.parametrize("progress_bar", [True, False])
def test_zero_shot_progress_follows_the_trainers_progress_bar(data, capsys, progress_bar):
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax")
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress_bar, accelerator="cpu", callbacks=[ZeroShotBaseline()],
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    assert ("zero-shot (validation): embedding queries" in capsys.readouterr().err) == progress_bar


def test_parameter_groups_scale_the_backbone_and_spare_norms_and_biases():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    head = torch.nn.Linear(4, 2)
    groups = parameter_groups(backbone=backbone, head=[head], backbone_lr_scale=0.1, weight_decay_norm_bias=False)
    optimizer = build_optimizer({"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 0.05}},
                                groups)
    by_tensor = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    conv, norm, linear = backbone[0], backbone[1], head
    assert by_tensor[id(conv.weight)]["lr"] == pytest.approx(0.001)
    assert by_tensor[id(conv.weight)]["weight_decay"] == 0.05
    for tensor in (conv.bias, norm.weight, norm.bias):
        assert by_tensor[id(tensor)]["lr"] == pytest.approx(0.001) and by_tensor[id(tensor)]["weight_decay"] == 0
    assert by_tensor[id(linear.weight)]["lr"] == pytest.approx(0.01)
    assert by_tensor[id(linear.weight)]["weight_decay"] == 0.05 and by_tensor[id(linear.bias)]["weight_decay"] == 0


def test_warmup_cosine_follows_the_formula():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = WarmupCosineLR(optimizer, total_steps=20, warmup_steps=4, warmup_start=0.0, min_lr_ratio=0.1)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])  # linear warmup
    for step in range(4, 20):  # cosine from 1 to 0.1 over the 16 remaining steps
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 16))
        assert rates[step] == pytest.approx(expected)


def test_class_mean_head_points_each_class_centre_at_its_training_images(data):
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="subcenter_arcface", sub_centers=2)

    class Capture(Callback):
        def on_train_start(self, trainer, pl_module):
            self.centres = pl_module.loss_fn.pml_loss.W.detach().clone()  # (D, C * sub_centers)

    capture = Capture()
    initial = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    from reid_lightning.callbacks import ClassMeanHead

    fit(model, data, ClassMeanHead(enabled=True), capture, epochs=1)
    # the class means of the untrained backbone, image by image (eval mode, evaluation transform)
    reference = ReIDModule(backbone="resnet10t", pretrained=False, loss="subcenter_arcface", sub_centers=2)
    reference.backbone.load_state_dict(initial)
    reference.eval()
    train = data.dataset("train")
    sums = {}
    with torch.no_grad():
        for index in range(len(train)):
            image, code = train[index]
            vector = torch.nn.functional.normalize(reference(image[None]), dim=1)[0]
            sums[code] = sums.get(code, 0) + vector
    for column, code in enumerate(data.class_codes.tolist()):
        expected = torch.nn.functional.normalize(sums[code], dim=0)
        for sub in range(2):
            torch.testing.assert_close(capture.centres[:, 2 * column + sub], expected, atol=1e-5, rtol=1e-4)
