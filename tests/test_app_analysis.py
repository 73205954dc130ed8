"""The analysis pages (Perturbation Anatomy, Compare & Sweeps, Models, How SOAE works) under
streamlit.testing's AppTest: defaults and changed inputs without exceptions, tables with the
expected rows and columns, and per page one check that the numbers shown equal what soae_core
computes for the same inputs.

Models are untrained checkpoints (fixed seed) in a temporary SOAE_MODELS_DIR with a hand-written
model card, so the tests do not depend on the bundled training runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_clean
from streamlit.testing.v1 import AppTest

from soae_app.batch_runner import run_id
from soae_app.figures.common import NOT_APPLICABLE
from soae_core import metrics
from soae_core.analysis import compare_sweeps as compare
from soae_core.analysis.attack_lab import run_attack
from soae_core.analysis.how_soae_works import loss_landscape, second_order_step, toy_classifier
from soae_core.analysis.jobs import image_order
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.attacks import FGSM
from soae_core.data import load_samples
from soae_core.eight_bit import EIGHT_BIT_COLUMN, rounding_check, verdict_8bit
from soae_core.models import get_model_info, load_model, model_names

ANATOMY = "app_pages/perturbation_anatomy.py"  # relative to app.py
COMPARE = "app_pages/compare_sweeps.py"
MODELS = "app_pages/models.py"
HOW = "app_pages/how_soae_works.py"
# A hand-written card for the models_dir fixture (conftest.py).
MODEL_CARDS = {"fmnist-cnn-std": {
    "name": "fmnist-cnn-std", "method": "std", "epochs": 3, "clean_accuracy": 0.873, "test_images": 10000,
    "hyperparameters": {"optimizer": "adam", "lr": 0.001, "objective": {"method": "std"}},
    "robust_accuracy": [{"attack": "PGD-20", "eps": 8 / 255, "accuracy": 0.123},
                        {"attack": "SOAE", "eps": 8 / 255, "accuracy": 0.456}]}}
pytestmark = pytest.mark.usefixtures("models_dir")


def open_page(page: str) -> AppTest:
    app = AppTest.from_file("../app.py", default_timeout=600)
    app.run()
    return app.switch_page(page).run()


def first_sample() -> tuple[torch.Tensor, int]:
    """The sidebar's default image: the first example of the first class."""
    samples = load_samples("fashion_mnist")
    index = int(np.flatnonzero(samples.labels.numpy() == 0)[0])
    return samples.images[index:index + 1], int(samples.labels[index])


def fgsm_accuracies(model_name: str, n: int) -> tuple[float, float]:
    """Clean and FGSM (ε = 8/255) accuracy of the model on the first n class-balanced bundled images,
    computed directly with the attack."""
    samples = load_samples("fashion_mnist")
    order = image_order(samples.labels)[:n]
    x, y = samples.images[order], samples.labels[order]
    model = load_model(model_name)
    adv = FGSM(model, eps=8 / 255)(x, y).adv
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean()), float((model(adv).argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------------- anatomy
def test_anatomy_with_defaults_shows_every_attack_and_layer():
    app = open_page(ANATOMY)
    assert_clean(app)
    assert [t.value for t in app.title] == ["Perturbation Anatomy"]
    verdicts, location, distortion = (frame.value for frame in app.dataframe)
    assert list(verdicts.index) == list(location.index) == list(distortion.index) == ["SOAE", "FGSM", "PGD"]
    assert list(verdicts.columns) == ["Prediction", "Success", EIGHT_BIT_COLUMN]
    assert list(location.columns) == ["Edge alignment (Canny)", "Edge alignment (Sobel)", "High-frequency share",
                                      "Saliency similarity", "IG similarity"]
    assert list(distortion.columns) == ["features.0", "features.3", "classifier.1", "classifier.3"]
    # edges, distortion, two feature-map layers, attributions, spectrum
    assert len(app.get("plotly_chart")) == 6


def test_anatomy_numbers_equal_the_library_on_the_same_attack():
    app = open_page(ANATOMY)
    verdicts, location, distortion = (frame.value for frame in app.dataframe)
    model = load_model("fmnist-cnn-std")
    image, label = first_sample()
    outcome, _ = run_attack(model, image, label, "FGSM", DEFAULT_SETTINGS.attack_kwargs("FGSM", "fashion_mnist"))
    adv = torch.from_numpy(outcome.adv).unsqueeze(0)
    check = rounding_check(model, adv, torch.tensor([label]))
    assert verdicts.loc["FGSM", EIGHT_BIT_COLUMN] == verdict_8bit(bool(check.adversarial[0]),
                                                                   bool(check.adversarial_8bit[0]))
    assert verdicts.loc["FGSM", "Success"] == bool(check.adversarial[0])
    assert location.loc["FGSM", "Edge alignment (Canny)"] == pytest.approx(metrics.edge_alignment(image, adv)[0])
    assert location.loc["FGSM", "High-frequency share"] == pytest.approx(metrics.high_frequency_share(image, adv)[0])
    expected = metrics.feature_distortion(model, image, adv)
    assert distortion.loc["FGSM", "classifier.3"] == pytest.approx(expected["classifier.3"][0], rel=1e-5)


def test_anatomy_with_changed_inputs():
    app = open_page(ANATOMY)
    app.sidebar.multiselect(key="cmp").set_value(["ASOD"])
    app.sidebar.select_slider(key="eps").set_value(16.0)
    app.sidebar.radio(key="hvp").set_value("exact")
    app.multiselect(key="anatomy::layers").set_value(["features.3"])
    app.slider(key="anatomy::channels").set_value(2)
    app.radio(key="anatomy::target").set_value("label")
    app.run()
    assert_clean(app)
    location = app.dataframe[1].value
    assert list(location.index) == ["SOAE", "ASOD"]
    assert len(app.get("plotly_chart")) == 5  # one feature-map layer


# ---------------------------------------------------------------------------------- compare
def test_compare_with_defaults_runs_fgsm_pgd_soae_and_soae_without_curvature():
    app = open_page(COMPARE)
    assert_clean(app)
    accuracy, quality = (frame.value for frame in app.dataframe)
    assert list(accuracy.index) == [compare.CLEAN_ROW, "FGSM", "PGD", "SOAE", "SOAE-g"]
    assert accuracy.loc["SOAE-g", "Gradient evals / image"] == 4  # N = 4 gradients, no Hessian-vector products
    assert list(accuracy.columns) == ["Images", "Accuracy", "Accuracy after 8-bit rounding", "Fooled",
                                      EIGHT_BIT_COLUMN, "Gradient evals / image", "Time (s)"]
    assert (accuracy[EIGHT_BIT_COLUMN].iloc[1:] <= accuracy["Fooled"].iloc[1:]).all()
    assert EIGHT_BIT_COLUMN in quality.columns
    assert (accuracy["Images"] == 20).all()
    assert accuracy.loc["PGD", "Gradient evals / image"] == 20
    # the clean row has no Fooled or Time: the tables show a dash there, not "None"
    assert accuracy.loc[compare.CLEAN_ROW, ["Fooled", "Time (s)"]].isna().all()
    assert [frame.proto.placeholder for frame in app.dataframe] == [NOT_APPLICABLE] * 2
    assert list(quality.index) == ["FGSM", "PGD", "SOAE", "SOAE-g"]
    assert (quality["L∞ (×1/255)"] <= 8 + 1e-3).all()
    assert len(app.get("download_button")) == 4
    assert [b.label for b in app.button] == ["Run PGD on 2 models", "Run the η sweep", "Run the τ sweep",
                                             "Run the N sweep"]


def test_compare_accuracy_equals_fgsm_run_directly():
    app = open_page(COMPARE)
    app.select_slider(key="compare::n").set_value(10)
    app.multiselect(key="compare::attacks").set_value(["FGSM"])
    app.run()
    assert_clean(app)
    accuracy = app.dataframe[0].value
    clean, expected = fgsm_accuracies("fmnist-cnn-std", 10)
    assert accuracy.loc["FGSM", "Accuracy"] == pytest.approx(expected)
    assert accuracy.loc[compare.CLEAN_ROW, "Accuracy"] == pytest.approx(clean)


def test_compare_sweep_runs_and_a_stopped_run_resumes():
    app = open_page(COMPARE)
    app.sidebar.radio(key="hvp").set_value("exact")
    app.select_slider(key="compare::n").set_value(10)
    app.multiselect(key="compare::attacks").set_value(["FGSM", "ASOD"])
    app.run()
    assert_clean(app)
    assert list(app.dataframe[0].value.index) == [compare.CLEAN_ROW, "FGSM", "ASOD"]
    app.button(key="sweep::tau::run").click().run()
    assert_clean(app)
    tau_table = app.dataframe[-1].value
    assert tau_table["τ"].tolist() == list(compare.DEFAULT_SWEEP_VALUES["tau"])
    assert (tau_table["m mean"] <= 9).all()  # exact products on a 10-class ReLU net: m ≤ C − 1
    # A run stopped before its first batch shows the Stop notice and a Resume button; Resume completes it.
    info = get_model_info("fmnist-cnn-std")
    settings = app.session_state["soae_lab_selection"].settings
    jobs = compare.sweep_jobs("eta", settings.soae_kwargs(), settings.attack_kwargs("PGD", "fashion_mnist"))
    app.session_state["sweep::eta::stopped"] = run_id([(info, job) for job in jobs], 10, 25)
    app.run()
    assert_clean(app)
    assert any("Stopped after 0 of" in w.value for w in app.warning)
    app.button(key="sweep::eta::resume").click().run()
    assert_clean(app)
    eta_table = next(f.value for f in app.dataframe if "η" in f.value.columns)
    assert eta_table["η"].tolist() == list(compare.DEFAULT_SWEEP_VALUES["eta"])


# ---------------------------------------------------------------------------------- models
def test_models_page_shows_the_zoo_from_the_cards():
    app = open_page(MODELS)
    assert_clean(app)
    zoo = app.dataframe[0].value
    assert list(zoo.index) == model_names()
    assert zoo.loc["fmnist-cnn-std", "Clean accuracy"] == MODEL_CARDS["fmnist-cnn-std"]["clean_accuracy"]
    assert zoo.loc["fmnist-cnn-std", "PGD-20 @ 8/255"] == 0.123
    assert zoo.loc["fmnist-cnn-std", "SOAE @ 8/255"] == 0.456
    assert bool(zoo.loc["fmnist-cnn-std", "Available"]) and not bool(zoo.loc["fmnist-cnn-pgd", "Available"])
    assert [b.label for b in app.button] == ["Compute Table I"]


def test_models_table_one_equals_direct_accuracies():
    app = open_page(MODELS)
    app.select_slider(key="models::n").set_value(10)
    app.multiselect(key="models::attacks").set_value(["FGSM", "PGD"]).run()
    app.button(key="models::table1::run").click().run()
    assert_clean(app)
    table = app.dataframe[-1].value
    assert list(table.index) == ["fmnist-cnn-std", "fmnist-cnn-smooth-std"]
    assert list(table.columns) == ["Architecture", "Training method", "Images", "Clean", "FGSM", "PGD"]
    clean, expected = fgsm_accuracies("fmnist-cnn-smooth-std", 10)
    assert table.loc["fmnist-cnn-smooth-std", "FGSM"] == pytest.approx(expected)
    assert table.loc["fmnist-cnn-smooth-std", "Clean"] == pytest.approx(clean)


# ---------------------------------------------------------------------------------- how it works
def candidate_frame(app: AppTest):
    return next(f.value for f in app.dataframe if "Q predicts" in f.value.columns)


def test_how_soae_works_with_defaults_matches_the_toy_library():
    app = open_page(HOW)
    assert_clean(app)
    candidates = candidate_frame(app)
    model = toy_classifier("tanh").model
    predicted = int(second_order_step(model, (0.42, 0.42), 0).probabilities.argmax())
    step = second_order_step(model, (0.42, 0.42), predicted, eps=0.1)
    assert list(candidates.index) == [c.name for c in step.candidates]
    np.testing.assert_allclose(candidates["true loss L"], [c.loss for c in step.candidates])
    np.testing.assert_allclose(candidates["Q predicts"], [c.quadratic for c in step.candidates])
    summary = next(f.value for f in app.dataframe if "slope gᵀu" in f.value.columns)
    assert list(summary.index) == ["gradient g", "SOAE H⁻¹g"]
    image, label = first_sample()
    model = load_model("fmnist-cnn-std")
    landscape = loss_landscape(model, image, label, DEFAULT_SETTINGS.soae_kwargs())
    for row, line in (("gradient g", landscape.along_gradient), ("SOAE H⁻¹g", landscape.along_soae)):
        assert summary.loc[row, "slope gᵀu"] == pytest.approx(line.slope, rel=1e-4)
        assert summary.loc[row, "curvature uᵀHu"] == pytest.approx(line.curvature, rel=1e-3)
    assert len(app.get("plotly_chart")) == 3  # the toy, the lines, the plane


def test_how_soae_works_with_changed_inputs():
    app = open_page(HOW)
    app.radio(key="toy::activation").set_value("relu")
    app.slider(key="toy::x").set_value(0.8)
    app.slider(key="toy::y").set_value(0.3)
    app.selectbox(key="toy::class").set_value(2)
    app.slider(key="toy::eps").set_value(0.05)
    app.checkbox(key="toy::quadratic").set_value(False)
    app.select_slider(key="landscape::range").set_value(0.5)
    app.run()
    assert_clean(app)
    step = second_order_step(toy_classifier("relu").model, (0.8, 0.3), 2, eps=0.05)
    np.testing.assert_allclose(candidate_frame(app)["true loss L"], [c.loss for c in step.candidates])
    assert min(step.eigenvalues) >= -1e-9  # ReLU: positive semidefinite
