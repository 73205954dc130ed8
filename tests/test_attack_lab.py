"""The Attack Lab's computation (soae_core.analysis.attack_lab): outcomes, metrics, iterate views, exports."""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import soae_core
from soae_core.analysis.attack_lab import metrics_table, npy_bytes, png_bytes, run_attack, run_bundle, run_lab, top_k
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.models import build_model

CLASSES = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("fmnist-cnn-std").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def run(model, image):
    settings = dataclasses.replace(DEFAULT_SETTINGS, steps=3, hvp="exact", baselines=("FGSM", "PGD"))
    return run_lab(model, image, 3, settings, "fashion_mnist", CLASSES)


def test_outcomes_come_in_order_and_respect_the_budget(run, image):
    assert [o.name for o in run.outcomes] == ["SOAE", "FGSM", "PGD"]
    for outcome in run.outcomes:
        assert outcome.adv.shape == (1, 28, 28)
        assert outcome.adv.min() >= 0 and outcome.adv.max() <= 1
        assert np.abs(outcome.perturbation).max() <= 8 / 255 + 1e-6
        np.testing.assert_allclose(outcome.perturbation, outcome.adv - image[0].numpy(), atol=1e-6)
        assert outcome.linf == pytest.approx(np.abs(outcome.perturbation).max(), abs=1e-6)
        assert outcome.prediction == int(np.argmax(outcome.probabilities))
        assert outcome.success == (outcome.prediction != 3)
        assert outcome.probabilities.sum() == pytest.approx(1.0)
    assert run.outcome("FGSM").grad_evals == 1
    assert run.outcome("PGD").grad_evals == 20


def test_iterate_views_follow_the_soae_trace(run, image):
    assert [v.index for v in run.iterations] == [0, 1, 2, 3]
    np.testing.assert_array_equal(run.iterations[0].image, image[0].numpy())
    np.testing.assert_allclose(run.iterations[-1].image, run.outcome("SOAE").adv, atol=1e-7)
    assert run.iterations[0].prediction == run.clean_prediction
    assert all(v.m >= 1 and v.stop_reason for v in run.iterations[1:])


def test_metrics_table_has_one_row_per_attack(run):
    table = metrics_table(run)
    assert list(table.index) == ["SOAE", "FGSM", "PGD"]
    for column in ("Prediction", "Success", "PSNR (dB)", "SSIM", "L2", "L∞ (×1/255)", "Gradient evals", "Time (ms)"):
        assert column in table.columns
    assert (table["L∞ (×1/255)"] <= 8 + 1e-4).all()
    assert table.loc["FGSM", "PSNR (dB)"] >= 20 * np.log10(255 / 8) - 1e-6  # L∞ ≤ 8/255 bounds PSNR below


def test_top_k_is_sorted_and_named(run):
    best = top_k(run.clean_probabilities, CLASSES, k=5)
    assert len(best) == 5
    assert [p for _, p in best] == sorted((p for _, p in best), reverse=True)
    assert best[0][0] == CLASSES[run.clean_prediction]


def test_bad_inputs_raise_value_errors(model, image):
    with pytest.raises(ValueError, match="label"):
        run_attack(model, image, 10, "FGSM", {"eps": 8 / 255})
    with pytest.raises(ValueError, match="exactly one image"):
        run_attack(model, image.repeat(2, 1, 1, 1), 3, "FGSM", {"eps": 8 / 255})
    with pytest.raises(ValueError, match="attack"):
        run_attack(model, image, 3, "CW", {})
    with pytest.raises(ValueError, match="class_names"):
        run_lab(model, image, 3, DEFAULT_SETTINGS, "fashion_mnist", CLASSES[:5])
    with pytest.raises(ValueError, match=r"label must be a class index in \[0, 9\]"):
        run_lab(model, image, 10, DEFAULT_SETTINGS, "fashion_mnist", CLASSES)


def test_png_export_round_trips_to_8_bits(run):
    adv = run.outcome("SOAE").adv
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(adv))), dtype=np.float64) / 255
    assert decoded.shape == (28, 28)
    assert np.abs(decoded - adv[0]).max() <= 0.5 / 255 + 1e-9
    rgb = np.random.default_rng(0).random((3, 5, 7))
    assert np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))).shape == (5, 7, 3)


def test_npy_export_is_exact(run):
    delta = run.outcome("PGD").perturbation
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_bytes(delta))), delta)


def test_bundle_records_what_reproduces_the_run(model, image):
    settings = dataclasses.replace(DEFAULT_SETTINGS, eps=0.0, steps=1, seed=7, baselines=("FGSM",))
    run = run_lab(model, image, 3, settings, "fashion_mnist", CLASSES)
    document = json.loads(run_bundle(run, settings, "fmnist-cnn-std", "sample 4"))
    assert document["model"] == "fmnist-cnn-std" and document["image"] == "sample 4"
    assert document["settings"]["seed"] == 7 and document["settings"]["steps"] == 1
    assert document["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert document["versions"]["soae_core"] == soae_core.__version__
    assert [r["attack"] for r in document["results"]] == ["SOAE", "FGSM"]
    assert document["results"][0]["psnr_db"] is None  # ε = 0: identical images, PSNR = inf → null


def test_soae_without_curvature_runs_as_a_baseline_with_the_soae_settings(model, image):
    settings = dataclasses.replace(DEFAULT_SETTINGS, steps=3, hvp="exact", baselines=("SOAE-g",))
    assert settings.baseline_kwargs("SOAE-g", "fashion_mnist") == settings.soae_kwargs()
    lab = run_lab(model, image, 3, settings, "fashion_mnist", CLASSES)
    assert [o.name for o in lab.outcomes] == ["SOAE", "SOAE-g"]
    no_curvature = lab.outcome("SOAE-g")
    assert no_curvature.grad_evals == 3  # one gradient per step, no Hessian-vector products
    assert np.abs(no_curvature.perturbation).max() <= 8 / 255 + 1e-6
    assert lab.outcome("SOAE").grad_evals > 3
    assert [v.index for v in lab.iterations] == [0, 1, 2, 3]  # the iterate views stay SOAE's


def test_transfer_table_classifies_the_example_on_every_model(model, run):
    from soae_core.analysis.attack_lab import transfer_table
    from soae_core.eight_bit import to_8bit
    from soae_core.metrics import predictions

    torch.manual_seed(5)
    other = build_model("fmnist-cnn-std").eval().requires_grad_(False)
    outcome = run.outcome("PGD")
    table = transfer_table({"source": model, "other": other}, run, outcome, "source")
    assert list(table.index) == ["source (attacked)", "other"]
    adv = torch.from_numpy(outcome.adv).unsqueeze(0)
    for row, net in zip(table.index, (model, other), strict=True):
        clean_p, adv_p, adv8_p = (int(p) for p in predictions(net, torch.cat(
            [torch.from_numpy(run.image).unsqueeze(0), adv, to_8bit(adv)])))
        assert table.loc[row, "On the original"] == CLASSES[clean_p]
        assert table.loc[row, "On the adversarial image"] == CLASSES[adv_p]
        assert table.loc[row, "Fooled"] == (adv_p != run.label)
        assert table.loc[row, "Fooled after rounding"] == (adv8_p != run.label)
    assert table.loc["source (attacked)", "On the adversarial image"] == CLASSES[outcome.prediction]
