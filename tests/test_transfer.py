"""Transfer: an attack made on one model, evaluated on every model (one image, and a matrix)."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import torch

from soae_core.attacks import PGD
from soae_core.attacks.counting import CountingModel
from soae_core.data import load_samples
from soae_core.eight_bit import to_8bit
from soae_core.models import load_model
from soae_core.transfer import transfer_matrix, transfer_verdicts

NAMES = ("fmnist-cnn-std", "fmnist-cnn-pgd", "fmnist-cnn-smooth-std")


@pytest.fixture(scope="module")
def zoo() -> dict[str, torch.nn.Module]:
    return {name: load_model(name) for name in NAMES}


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).double().mean())


def test_matrix_rows_are_sources_columns_targets_cells_accuracy(zoo):
    samples = load_samples("fashion_mnist")
    images, labels = samples.images[::10], samples.labels[::10]
    eps = 0.1
    seen = []
    result = transfer_matrix(zoo, images, labels, "PGD", {"eps": eps, "steps": 10, "alpha": eps / 4},
                             sources=("fmnist-cnn-std", "fmnist-cnn-pgd"),
                             progress=lambda done, total, name: seen.append((done, total, name)))
    assert seen == [(1, 2, "fmnist-cnn-std"), (2, 2, "fmnist-cnn-pgd")]
    assert result.sources == ("fmnist-cnn-std", "fmnist-cnn-pgd") and result.targets == NAMES
    assert result.n == 20 and result.attack == "PGD" and result.accuracy.shape == (2, 3)
    assert result.hit_rate is None
    # Recompute two cells independently.
    adv = PGD(zoo["fmnist-cnn-std"], eps=eps, steps=10, alpha=eps / 4)(images, labels).adv
    assert result.accuracy[0, 2] == pytest.approx(_accuracy(zoo["fmnist-cnn-smooth-std"], adv, labels))
    assert result.accuracy_8bit[0, 1] == pytest.approx(_accuracy(zoo["fmnist-cnn-pgd"], to_8bit(adv), labels))
    for j, name in enumerate(NAMES):
        assert result.clean_accuracy[j] == pytest.approx(_accuracy(zoo[name], images, labels))
    # White-box PGD hurts the standard model more than the transferred examples hurt the robust one.
    assert result.accuracy[0, 0] < result.accuracy[0, 1]
    table = result.table()
    assert list(table.index) == ["(clean images)", "fmnist-cnn-std", "fmnist-cnn-pgd"]
    assert table.loc["fmnist-cnn-pgd", "fmnist-cnn-std"] == pytest.approx(100 * result.accuracy[1, 0])
    csv = pd.read_csv(io.BytesIO(result.csv_bytes()))
    assert len(csv) == 6 and "accuracy after 8-bit rounding (%)" in csv.columns
    assert csv["accuracy (%)"].tolist() == pytest.approx((100 * result.accuracy).flatten().tolist())


def test_targeted_transfer_reports_target_hits(zoo):
    samples = load_samples("fashion_mnist")
    images, labels = samples.images[::20], samples.labels[::20]
    targets = (labels + 1) % 10
    result = transfer_matrix(zoo, images, labels, "PGD", {"eps": 0.2, "steps": 10, "alpha": 0.05},
                             targets=targets, sources=("fmnist-cnn-std",))
    assert result.hit_rate.shape == (1, 3) and result.hit_rate[0, 0] >= 0.8
    assert result.hit_rate[0, 0] <= 1 - result.accuracy[0, 0] + 1e-12
    assert "target hit (%)" in result.long_table().columns
    # The table a targeted matrix shows is the hit rate (success = predicts the target), not accuracy.
    shown = result.table()
    assert list(shown.index) == ["fmnist-cnn-std"] and list(shown.columns) == list(NAMES)
    assert shown.to_numpy().tolist() == (result.hit_rate * 100).tolist()
    assert result.table(after_rounding=True).to_numpy().tolist() == (result.hit_rate_8bit * 100).tolist()


def test_a_crafting_hook_replaces_the_attack(zoo):
    samples = load_samples("fashion_mnist")
    images, labels = samples.images[:10], samples.labels[:10]
    crafted = []
    result = transfer_matrix(zoo, images, labels, "PGD", {"eps": 0.1},
                             craft=lambda source: crafted.append(source) or images)
    assert crafted == list(NAMES)
    assert (result.accuracy == result.clean_accuracy[None]).all()


def test_verdicts_for_one_image_on_every_model(zoo):
    samples = load_samples("fashion_mnist")
    clean, label = samples.images[:1], int(samples.labels[0])
    adv = PGD(zoo["fmnist-cnn-std"], eps=0.2, steps=10, alpha=0.05)(clean, samples.labels[:1]).adv
    verdicts = transfer_verdicts(zoo, clean, adv, label)
    assert [v.model for v in verdicts] == list(NAMES)
    for verdict in verdicts:
        with torch.no_grad():
            assert verdict.prediction == int(zoo[verdict.model](adv).argmax())
            assert verdict.prediction_8bit == int(zoo[verdict.model](to_8bit(adv)).argmax())
        assert verdict.fooled == (verdict.prediction != label)
    assert verdicts[0].fooled
    targeted = transfer_verdicts(zoo, clean, adv, label, target=verdicts[0].prediction)
    assert targeted[0].fooled and targeted[0].fooled_8bit == (verdicts[0].prediction_8bit == verdicts[0].prediction)


def test_models_of_different_shapes_or_classes_are_refused(zoo):
    images = load_samples("fashion_mnist").images[:2]
    five_classes = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))
    with pytest.raises(ValueError, match="same classes"):
        transfer_matrix({"a": zoo["fmnist-cnn-std"], "b": five_classes}, images, torch.tensor([0, 1]), "PGD",
                        {"eps": 0.1})
    wrong_input = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    with pytest.raises(ValueError, match=r"model 'c' cannot classify images of shape \(1, 28, 28\)"):
        transfer_verdicts({"a": zoo["fmnist-cnn-std"], "c": wrong_input}, images[:1], images[:1], 0)
    with pytest.raises(ValueError, match="sources"):
        transfer_matrix(zoo, images, torch.tensor([0, 1]), "PGD", {"eps": 0.1}, sources=("nope",))


def test_each_model_sees_each_input_once(zoo):
    samples = load_samples("fashion_mnist")
    images, labels = samples.images[:6], samples.labels[:6]
    counting = {name: CountingModel(model) for name, model in zoo.items()}
    transfer_matrix(counting, images, labels, "PGD", {"eps": 0.1}, craft=lambda source: images.flip(0))
    # the clean images once, then each source's examples and their 8-bit rounding once
    assert [m.forward_images for m in counting.values()] == [6 + len(NAMES) * 2 * 6] * len(NAMES)
    counting = {name: CountingModel(model) for name, model in zoo.items()}
    transfer_verdicts(counting, images[:1], images[1:2], int(labels[0]))
    assert [m.forward_images for m in counting.values()] == [3] * len(NAMES)
