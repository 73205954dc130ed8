"""The Streamlit app under streamlit.testing's AppTest: every page with defaults and with changed
settings, presets, URL parameters, model switching and uploads — never an exception.

The models are untrained checkpoints written to a temporary folder (SOAE_MODELS_DIR), so the
tests do not depend on the bundled training runs; the bundled Fashion-MNIST samples are used.
"""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean
from PIL import Image
from streamlit.testing.v1 import AppTest

import soae_core
from soae_core.defaults import TAU_CHOICES
from soae_core.models import build_model, get_model_info

KRYLOV_PAGE = "app_pages/krylov_inspector.py"  # relative to app.py


pytestmark = pytest.mark.usefixtures("models_dir")


def start(query: dict[str, str] | None = None) -> AppTest:
    app = AppTest.from_file("../app.py", default_timeout=300)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    return app.run()


def metric_rows(app: AppTest) -> list[str]:
    assert len(app.dataframe) >= 1  # the metrics first (then the transfer table when other models exist)
    return list(app.dataframe[0].value.index)


def test_attack_lab_with_defaults():
    app = start()
    assert_clean(app)
    assert [t.value for t in app.title] == ["Attack Lab"]
    assert metric_rows(app) == ["SOAE", "FGSM", "PGD"]
    table = app.dataframe[0].value
    assert (table["L∞ (×1/255)"] <= 8 + 1e-3).all()
    assert table.loc["FGSM", "Gradient evals"] == 1
    main_images = [img for img in app.main.image]
    assert len(main_images) >= 4  # original + 3 attacks (+ the scrubber's iterate)
    assert len(app.get("download_button")) == 4  # PNG, 8-bit-safe PNG, δ, JSON bundle
    assert len(app.get("plotly_chart")) == 3  # perturbations, top-5, loss along the iterations
    assert len(app.dataframe) == 2  # the metrics and the transfer table (two models in models_dir)
    assert f"SOAE Lab {soae_core.__version__}" in [c.value for c in app.sidebar.caption]


def test_attack_lab_with_changed_settings():
    app = start()
    app.sidebar.select_slider(key="eps").set_value(16.0)
    app.sidebar.slider(key="N").set_value(2)
    app.sidebar.radio(key="hvp").set_value("exact")
    app.sidebar.multiselect(key="cmp").set_value(["FGSM", "ASOD"])
    app.sidebar.radio(key="step").set_value("linf")
    app.run()
    assert_clean(app)
    assert metric_rows(app) == ["SOAE", "FGSM", "ASOD"]
    table = app.dataframe[0].value
    assert table.loc["FGSM", "L∞ (×1/255)"] == pytest.approx(16, abs=1e-3)
    assert (table["L∞ (×1/255)"] <= 16 + 1e-3).all()
    assert app.slider(key="lab::scrub::2").value == 2  # N = 2 outer iterations


def test_raw_step_rule_shows_its_own_alpha():
    app = start()
    app.sidebar.radio(key="step").set_value("raw").run()
    assert_clean(app)
    assert app.sidebar.select_slider(key="alpha_raw").value == 1.0
    assert metric_rows(app) == ["SOAE", "FGSM", "PGD"]


def test_preset_buttons_set_the_widgets():
    app = start()
    app.sidebar.pills(key="preset").set_value("fast classroom").run()
    assert_clean(app)
    assert app.sidebar.slider(key="N").value == 2
    assert app.sidebar.radio(key="hvp").value == "exact"
    assert metric_rows(app) == ["SOAE", "FGSM"]
    assert any("fast classroom" in c.value for c in app.sidebar.caption)
    assert app.sidebar.pills(key="preset").value is None  # the pills act as buttons
    app.sidebar.slider(key="N").set_value(3).run()
    assert any(c.value == "Custom settings." for c in app.sidebar.caption)


def test_url_query_reproduces_a_view():
    app = start({"eps": "4/255", "N": "2", "hvp": "exact", "cls": "Sneaker", "ex": "3", "prec": "float32"})
    assert_clean(app)
    assert app.sidebar.radio(key="prec").value == "float32"
    assert app.sidebar.select_slider(key="eps").value == 4.0
    assert app.sidebar.slider(key="N").value == 2
    assert app.sidebar.radio(key="hvp").value == "exact"
    assert "Sneaker" in app.markdown[1].value  # "True class **Sneaker** · ..."
    assert (app.dataframe[0].value["L∞ (×1/255)"] <= 4 + 1e-3).all()


def test_invalid_url_values_fall_back_to_defaults():
    app = start({"eps": "banana", "N": "-3", "model": "no-such-model", "hvp": "newton", "prec": "float16"})
    assert_clean(app)
    assert app.sidebar.radio(key="prec").value == "float64"
    assert app.sidebar.select_slider(key="eps").value == 8.0
    assert app.sidebar.radio(key="hvp").value == "finite_difference"
    assert metric_rows(app) == ["SOAE", "FGSM", "PGD"]


def test_switching_models():
    app = start()
    app.sidebar.selectbox(key="model").set_value("fmnist-cnn-smooth-std").run()
    assert_clean(app)
    assert metric_rows(app) == ["SOAE", "FGSM", "PGD"]
    app.sidebar.selectbox(key="model").set_value("cifar10-resnet18").run()
    assert not app.exception
    assert any("unavailable" in w.value for w in app.sidebar.warning)
    assert any("unavailable" in i.value for i in app.main.info)
    assert len(app.dataframe) == 0


def test_imagenet_model_offers_photographs(tmp_path, monkeypatch):
    # Untrained ResNet-18 weights where torchvision's would be cached (TORCH_HOME), so the
    # ImageNet branch of the sidebar runs offline; one cheap SOAE iteration keeps it quick.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = Path(get_model_info("imagenet-resnet18").weights_path)
    assert weights.is_relative_to(tmp_path), f"would overwrite real ImageNet weights at {weights}"
    weights.parent.mkdir(parents=True)
    torch.save(build_model("imagenet-resnet18").state_dict(), weights)
    app = start({"model": "imagenet-resnet18", "N": "1", "m": "2", "cmp": "FGSM", "photo": "chelsea"})
    assert_clean(app)
    assert app.sidebar.segmented_control(key="src").value == "Photos"
    assert app.sidebar.selectbox(key="photo").value == "chelsea"
    # model, your own weights' architecture, photograph, true label (1000 ImageNet classes)
    assert len(app.sidebar.selectbox) == 4
    assert metric_rows(app) == ["SOAE", "FGSM"]
    app.sidebar.selectbox(key="model").set_value("fmnist-cnn-std").run()  # no photographs there
    assert_clean(app)
    assert metric_rows(app) == ["SOAE", "FGSM"]


def test_iteration_scrubber_steps_back_to_the_original():
    app = start()
    app.slider(key="lab::scrub::4").set_value(0).run()
    assert_clean(app)
    captions = [c for img in app.main.image for c in img.captions]
    assert any(c.startswith("n = 0:") for c in captions)


def test_krylov_inspector_with_defaults_and_changes():
    app = start()
    app.switch_page(KRYLOV_PAGE).run()
    assert_clean(app)
    assert [t.value for t in app.title] == ["Krylov Inspector"]
    assert len(app.get("plotly_chart")) == 5  # residuals, m, margins per class, Ritz values, FD accuracy
    table = app.dataframe[0].value
    assert len(table) == len(TAU_CHOICES)
    assert (table["m (exact)"] <= 60).all()
    # Sidebar widgets stay usable on this page.
    app.sidebar.radio(key="hvp").set_value("exact")
    app.sidebar.slider(key="N").set_value(2)
    app.sidebar.select_slider(key="eta").set_value(1e-3)
    app.run()
    assert_clean(app)
    assert [t.value for t in app.title] == ["Krylov Inspector"]
    app.selectbox(key="krylov::compare").set_value("(none)").run()
    assert_clean(app)


def test_krylov_inspector_draws_each_wrong_class_gain_along_g_and_delta():
    import json

    app = start({"hvp": "exact"})
    app.switch_page(KRYLOV_PAGE).run()
    assert_clean(app)
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    margins = [spec for spec in specs if any("SOAE without curvature" in str(t.get("name")) for t in spec["data"])]
    assert len(margins) == 1
    bars = [t for t in margins[0]["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["step along g (SOAE without curvature)", "step along δ̃ (SOAE)"]
    classes = bars[0]["x"]
    assert len(classes) == 9 and sum(c.startswith("★") for c in classes) == 1  # nine wrong classes, one nearest
    assert bars[0]["y"] != bars[1]["y"]
    assert any("The nearest wrong class" in m.value for m in app.markdown)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels (the pixel data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def upload(app: AppTest, name: str, content: bytes) -> AppTest:
    app.sidebar.segmented_control(key="src").set_value("Upload").run()
    app.sidebar.file_uploader(key="upload").upload(name, content, "image/png")
    return app.run()


def test_upload_of_a_valid_png_is_attacked():
    rng = np.random.default_rng(0)
    app = upload(start(), "shirt.png", png((rng.random((40, 30, 3)) * 255).astype(np.uint8)))
    assert_clean(app)
    assert metric_rows(app) == ["SOAE", "FGSM", "PGD"]
    assert len(app.sidebar.selectbox) == 3  # model, your own weights' architecture, the upload's true label


@pytest.mark.parametrize("name, content", [
    ("notes.png", b"this is a text file, not an image\n"),
    ("truncated.png", png(np.zeros((64, 64), dtype=np.uint8) + 7)[:60]),
    ("huge.png", huge_png_header(100_000, 100_000)),
])
def test_invalid_uploads_give_an_error_not_a_traceback(name, content):
    app = upload(start(), name, content)
    assert not app.exception
    assert any(name in e.value for e in app.sidebar.error)
    assert len(app.dataframe) == 0
    app.switch_page(KRYLOV_PAGE).run()
    assert not app.exception
    assert len(app.dataframe) == 0
