"""The teaching features under streamlit.testing's AppTest: targeted attacks (sidebar, URL, the
Attack Lab), the 8-bit check in tables and downloads, transfer (Attack Lab and Compare & Sweeps),
the source × target grid, and your own weights — each shown number checked against soae_core on
the same inputs, and bad input giving a message while the rest of the session stays as it was.

Models are untrained checkpoints (seed 0) in a temporary SOAE_MODELS_DIR (conftest.models_dir).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import assert_clean
from safetensors.torch import save as safetensors_bytes
from streamlit.testing.v1 import AppTest

from soae_core.analysis.attack_lab import run_attack
from soae_core.analysis.how_soae_works import loss_landscape
from soae_core.analysis.jobs import image_order
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.analysis.target_grid import one_image_per_class, source_target_grid
from soae_core.data import load_samples
from soae_core.eight_bit import EIGHT_BIT_COLUMN, verdict_8bit
from soae_core.models import build_model, load_model, save_state_dict
from soae_core.targets import TargetRule, choose_targets
from soae_core.transfer import transfer_matrix, transfer_verdicts

GRID = "app_pages/target_grid.py"  # relative to app.py
COMPARE = "app_pages/compare_sweeps.py"
KRYLOV = "app_pages/krylov_inspector.py"
ANATOMY = "app_pages/perturbation_anatomy.py"
HOW = "app_pages/how_soae_works.py"
NAMES = load_samples("fashion_mnist").class_names
pytestmark = pytest.mark.usefixtures("models_dir")


def start(query: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    app = AppTest.from_file("../app.py", default_timeout=600)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.run()
    return app.switch_page(page).run() if page else app


def first_sample() -> tuple[torch.Tensor, int]:
    samples = load_samples("fashion_mnist")
    index = int(np.flatnonzero(samples.labels.numpy() == 0)[0])
    return samples.images[index:index + 1], int(samples.labels[index])


def lab_table(app: AppTest):
    return app.dataframe[0].value


# ---------------------------------------------------------------------------------- targets
def test_least_likely_target_aims_every_attack_and_leaves_autoattack_out():
    app = start({"target": "least likely", "cmp": ["FGSM", "PGD", "AutoAttack"], "eps": "25.5/255"})
    assert_clean(app)
    table = lab_table(app)
    assert list(table.index) == ["SOAE", "FGSM", "PGD"]
    image, label = first_sample()
    with torch.no_grad():
        logits = load_model("fmnist-cnn-std")(image)[0]
    logits[label] = torch.inf
    target = NAMES[int(logits.argmin())]
    assert (table["Target"] == target).all()
    assert (table["Success"] == (table["Prediction"] == target)).all()
    assert any("AutoAttack" in info.value and "untargeted" in info.value for info in app.info)
    assert any(f"target **{target}**" in m.value for m in app.markdown)


def test_target_is_bound_to_the_url_and_uses_the_attacks_targeted_mode():
    app = start({"target": "chosen class", "tcls": "Sneaker", "cmp": ["PGD"], "eps": "25.5/255"})
    assert_clean(app)
    assert app.sidebar.segmented_control(key="target").value == "chosen"
    assert app.sidebar.selectbox(key="tcls").value == 7
    table = lab_table(app)
    assert (table["Target"] == NAMES[7]).all()
    image, label = first_sample()
    settings = DEFAULT_SETTINGS.__class__(eps=25.5 / 255, baselines=("PGD",), target_mode="chosen", target_class=7)
    outcome, _ = run_attack(load_model("fmnist-cnn-std"), image, label, "PGD",
                            settings.attack_kwargs("PGD", "fashion_mnist"), target=7)
    assert table.loc["PGD", "Prediction"] == NAMES[outcome.prediction]
    assert table.loc["PGD", "Success"] == (outcome.prediction == 7)


def test_a_target_equal_to_the_true_class_is_refused_and_nothing_else_changes():
    app = start({"eps": "16/255", "N": "2"})
    app.sidebar.segmented_control(key="target").set_value("chosen").run()
    assert_clean(app)
    assert app.sidebar.selectbox(key="tcls").value == 1  # the first class other than the true one
    app.sidebar.selectbox(key="tcls").set_value(0).run()  # the first sample is a T-shirt/top
    assert not app.exception
    assert any("'T-shirt/top' (0) is the true class of the image" in e.value for e in app.error)
    assert len(app.dataframe) == 0
    assert app.sidebar.select_slider(key="eps").value == 16.0 and app.sidebar.slider(key="N").value == 2
    assert app.sidebar.selectbox(key="model").value == "fmnist-cnn-std"
    app.sidebar.selectbox(key="tcls").set_value(3).run()
    assert_clean(app)
    assert (lab_table(app)["Target"] == NAMES[3]).all()


# ---------------------------------------------------------------------------------- 8-bit check
def test_lab_says_for_each_example_whether_it_survives_8bit_rounding():
    app = start()
    assert_clean(app)
    table = lab_table(app)
    image, label = first_sample()
    model = load_model("fmnist-cnn-std")
    for name in ("SOAE", "FGSM", "PGD"):
        outcome, _ = run_attack(model, image, label, name, DEFAULT_SETTINGS.attack_kwargs(name, "fashion_mnist"))
        assert table.loc[name, EIGHT_BIT_COLUMN] == verdict_8bit(outcome.success, outcome.success_8bit)
    labels = [button.label for button in app.get("download_button")]
    assert labels == ["Adversarial image (PNG)", "8-bit-safe PNG", "Perturbation δ (.npy)",
                      "Parameters & versions (JSON)"]


# ---------------------------------------------------------------------------------- transfer
def test_lab_shows_how_every_other_model_classifies_the_example():
    app = start({"cmp": ["FGSM"]})
    assert_clean(app)
    app.selectbox(key="lab::transfer").set_value("FGSM").run()
    transfer = app.dataframe[1].value
    assert list(transfer.index) == ["fmnist-cnn-std (attacked)", "fmnist-cnn-smooth-std"]
    image, label = first_sample()
    models = {name: load_model(name) for name in ("fmnist-cnn-std", "fmnist-cnn-smooth-std")}
    outcome, _ = run_attack(models["fmnist-cnn-std"], image, label, "FGSM", {"eps": 8 / 255})
    verdicts = transfer_verdicts(models, image, torch.from_numpy(outcome.adv)[None], label)
    assert transfer["Fooled"].tolist() == [v.fooled for v in verdicts]
    assert transfer["On the adversarial image"].tolist() == [NAMES[v.prediction] for v in verdicts]


def test_compare_shows_accuracy_after_rounding_and_a_transfer_matrix():
    app = start({"eps": "25.5/255"}, page=COMPARE)
    assert_clean(app)
    assert "Accuracy after 8-bit rounding" in app.dataframe[0].value.columns
    app.button(key="transfer::run").click().run()
    assert_clean(app)
    matrix = next(frame.value for frame in app.dataframe if "(clean images)" in frame.value.index)
    assert list(matrix.columns) == ["fmnist-cnn-std", "fmnist-cnn-smooth-std"]
    samples = load_samples("fashion_mnist")
    order = image_order(samples.labels)[:20]
    models = {name: load_model(name) for name in matrix.columns}
    kwargs = DEFAULT_SETTINGS.__class__(eps=25.5 / 255).attack_kwargs("PGD", "fashion_mnist")
    direct = transfer_matrix(models, samples.images[order], samples.labels[order], "PGD", kwargs)
    np.testing.assert_allclose(matrix.drop(index="(clean images)").to_numpy(), direct.accuracy * 100)
    assert "Transfer matrix (CSV)" in [button.label for button in app.get("download_button")]


def test_targeted_compare_transfer_matrix_counts_target_hits():
    app = start({"eps": "25.5/255", "target": "least likely"}, page=COMPARE)
    assert_clean(app)
    app.button(key="transfer::run").click().run()
    assert_clean(app)
    matrix = next(frame.value for frame in app.dataframe if "fmnist-cnn-smooth-std" in frame.value.columns)
    assert list(matrix.index) == ["fmnist-cnn-std", "fmnist-cnn-smooth-std"]  # no clean-accuracy row
    samples = load_samples("fashion_mnist")
    order = image_order(samples.labels)[:20]
    images, labels = samples.images[order], samples.labels[order]
    models = {name: load_model(name) for name in matrix.columns}
    targets = choose_targets(TargetRule("least_likely"), models["fmnist-cnn-std"], images, labels)
    kwargs = DEFAULT_SETTINGS.__class__(eps=25.5 / 255).attack_kwargs("PGD", "fashion_mnist")
    direct = transfer_matrix(models, images, labels, "PGD", kwargs, targets=targets)
    np.testing.assert_allclose(matrix.to_numpy(), direct.hit_rate * 100)
    assert not np.allclose(direct.hit_rate, 1 - direct.accuracy)  # hits are not "any wrong class"
    assert any("Targeted at each image's least likely class" in caption.value for caption in app.caption)


def test_targeted_anatomy_reports_target_success_and_the_8bit_verdict():
    app = start({"target": "chosen class", "tcls": "Sneaker", "cmp": ["FGSM"], "eps": "25.5/255"}, page=ANATOMY)
    assert_clean(app)
    verdicts = app.dataframe[0].value
    assert list(verdicts.columns) == ["Target", "Prediction", "Success", EIGHT_BIT_COLUMN]
    assert (verdicts["Target"] == "Sneaker").all()
    assert verdicts["Success"].tolist() == (verdicts["Prediction"] == "Sneaker").tolist()
    image, label = first_sample()
    model = load_model("fmnist-cnn-std")
    kwargs = DEFAULT_SETTINGS.__class__(eps=25.5 / 255, target_mode="chosen", target_class=7).attack_kwargs(
        "FGSM", "fashion_mnist")
    outcome, _ = run_attack(model, image, label, "FGSM", kwargs, target=7)
    assert verdicts.loc["FGSM", EIGHT_BIT_COLUMN] == verdict_8bit(outcome.success, outcome.success_8bit)
    assert any("Targeted at **Sneaker**" in caption.value for caption in app.caption)


def test_krylov_inspector_with_a_target_analyses_the_target_loss():
    app = start({"target": "chosen class", "tcls": "Bag", "hvp": "exact"}, page=KRYLOV)
    assert_clean(app)
    assert any("Targeted at **Bag**" in info.value for info in app.info)
    assert any("The target class, **Bag**" in m.value for m in app.markdown)
    assert len(app.get("plotly_chart")) == 5


def test_how_soae_works_with_a_target_draws_the_target_loss():
    app = start({"target": "chosen class", "tcls": "Bag"}, page=HOW)
    assert_clean(app)
    messages = [info.value for info in app.info]
    assert any("three classes of its own" in m for m in messages)  # the toy says why it is untargeted
    assert any("Targeted at **Bag**" in m for m in messages)
    summary = next(frame.value for frame in app.dataframe if "slope gᵀu" in frame.value.columns)
    image, label = first_sample()
    settings = DEFAULT_SETTINGS.__class__(target_mode="chosen", target_class=8)
    expected = loss_landscape(load_model("fmnist-cnn-std"), image, label, settings.soae_kwargs(), 1.0, target=8)
    assert summary.loc["gradient g", "slope gᵀu"] == pytest.approx(expected.along_gradient.slope, rel=1e-4)


# ---------------------------------------------------------------------------------- grid
def test_grid_page_counts_equal_the_library_grid():
    app = start({"eps": "25.5/255"}, page=GRID)
    assert_clean(app)
    assert [t.value for t in app.title] == ["Source × target grid"]
    samples = load_samples("fashion_mnist")
    picked = one_image_per_class(samples.labels, 10)
    kwargs = DEFAULT_SETTINGS.__class__(eps=25.5 / 255).attack_kwargs("PGD", "fashion_mnist")
    grid = source_target_grid(load_model("fmnist-cnn-std"), samples.images[picked], samples.labels[picked],
                              "PGD", kwargs)
    reached, kept, _ = (metric.value for metric in app.metric)
    assert reached == f"{int(grid.success.sum())} of 90" and kept == f"{int(grid.success_8bit.sum())} of 90"
    assert len(app.main.image) == 1
    app.segmented_control(key="grid::attack").set_value("FGSM").run()
    assert_clean(app)
    assert app.metric[2].value == "1"


# ---------------------------------------------------------------------------------- your own weights
def upload_weights(app: AppTest, name: str, data: bytes, architecture: str = "small-cnn") -> AppTest:
    app.sidebar.selectbox(key="weights_arch").set_value(architecture).run()
    app.sidebar.file_uploader(key="weights_upload").upload(name, data, "application/octet-stream")
    return app.run()


def test_uploaded_weights_become_a_model_of_every_page():
    # Weights other than the session's fmnist-cnn-std, so the page must be using the upload.
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_model("fmnist-cnn-std").state_dict().items()}
    data = safetensors_bytes({k: v.contiguous() for k, v in state.items()})
    app = upload_weights(start(), "mine.safetensors", data)
    assert_clean(app)
    chosen = app.sidebar.selectbox(key="model").value
    assert chosen.startswith("mine.safetensors (small-cnn, ")
    assert list(lab_table(app).index) == ["SOAE", "FGSM", "PGD"]
    image, _ = first_sample()
    with torch.no_grad():
        probabilities = torch.softmax(build_and_load(state)(image), 1)[0]
    assert f"({probabilities.max():.0%}) on the original" in " ".join(m.value for m in app.markdown)
    app.switch_page(KRYLOV).run()
    assert_clean(app)
    assert app.sidebar.selectbox(key="model").value == chosen


def build_and_load(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model("fmnist-cnn-std")
    model.load_state_dict(state)
    return model.eval()


def _pickle_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(build_model("fmnist-cnn-std").state_dict(), buffer)
    return buffer.getvalue()


def _metadata_bytes(tmp_path, architecture: str) -> bytes:
    path = tmp_path / "w.safetensors"
    save_state_dict(build_model("fmnist-cnn-std"), path, metadata={"architecture": architecture})
    return path.read_bytes()


@pytest.mark.parametrize("name, content, architecture, message", [
    ("weights.pt", "pickle", "small-cnn", "was refused: it is a PyTorch pickle, and unpickling a file can run"),
    ("notes.png", "png", "small-cnn", "is not a .safetensors file"),
    ("wrong.safetensors", "wrong shapes", "small-cnn", "shape mismatches: classifier.3.weight: file (7, 128)"),
    ("plain.safetensors", "plain cnn", "resnet18-cifar", "do not fit the resnet18-cifar architecture; missing keys"),
    ("cnn.safetensors", "cnn", "resnet18-cifar", "holds weights for the 'small-cnn' architecture"),
    ("smooth.safetensors", "smooth", "small-cnn", "holds weights for the 'small-cnn-smooth' architecture"),
])
def test_bad_weights_give_a_message_and_change_nothing_else(name, content, architecture, message, tmp_path):
    wrong = {k: v.contiguous() for k, v in build_model("fmnist-cnn-std").state_dict().items()}
    wrong["classifier.3.weight"] = torch.zeros(7, 128)
    data = {"pickle": _pickle_bytes(), "png": b"\x89PNG\r\n\x1a\n", "wrong shapes": safetensors_bytes(wrong),
            "cnn": _metadata_bytes(tmp_path, "small-cnn"),
            "plain cnn": safetensors_bytes({k: v.contiguous()
                                            for k, v in build_model("fmnist-cnn-std").state_dict().items()}),
            "smooth": _metadata_bytes(tmp_path, "small-cnn-smooth")}[content]
    app = start({"eps": "16/255"})
    before = lab_table(app)
    app = upload_weights(app, name, data, architecture)
    assert not app.exception
    assert any(name in e.value and message in e.value for e in app.sidebar.error), [e.value for e in app.sidebar.error]
    assert app.sidebar.selectbox(key="model").value == "fmnist-cnn-std"
    assert [o for o in app.sidebar.selectbox(key="model").options if "safetensors" in o] == []
    assert app.sidebar.select_slider(key="eps").value == 16.0
    assert lab_table(app).index.tolist() == before.index.tolist()


def test_uploaded_weights_join_the_models_page_and_its_table_one():
    data = safetensors_bytes({k: v.contiguous() for k, v in build_model("fmnist-cnn-std").state_dict().items()})
    app = upload_weights(start(), "mine.safetensors", data)
    app.switch_page("app_pages/models.py").run()
    assert_clean(app)
    chosen = app.sidebar.selectbox(key="model").value
    assert chosen in app.dataframe[0].value.index
    assert app.dataframe[0].value.loc[chosen, "Architecture"] == "small-cnn"


def test_architectures_too_large_to_upload_say_so():
    app = start()
    app.sidebar.selectbox(key="weights_arch").set_value("wrn-34-10").run()
    assert_clean(app)
    assert any("more than the 50 MB" in w.value for w in app.sidebar.warning)
    app.sidebar.selectbox(key="weights_arch").set_value("resnet18-cifar").run()
    assert not [w for w in app.sidebar.warning if "50 MB" in w.value]
