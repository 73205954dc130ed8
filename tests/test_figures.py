"""Figures built from plain dicts (soae_app.figures.common.figure_from_spec, built without plotly's
per-property validation for speed): each validates against plotly's schema and lays out its
panels as make_subplots would."""

import dataclasses
import json

import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from plotly.subplots import make_subplots

from soae_app.figures.attack_lab import loss_figure, perturbation_figure, top5_figure
from soae_app.figures.common import subplot_grid, subplot_row
from soae_core.analysis.attack_lab import run_lab
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.models import build_model

CLASSES = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = build_model("fmnist-cnn-std").eval().requires_grad_(False)
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    settings = dataclasses.replace(DEFAULT_SETTINGS, steps=3, hvp="exact", baselines=("FGSM", "PGD"))
    return run_lab(model, image, 3, settings, "fashion_mnist", CLASSES)


@pytest.mark.parametrize("rows, cols, row_titles", [(1, 3, None), (2, 3, ["a", "b"]), (4, 2, ["", "b", "c", "d"])])
def test_subplot_grid_matches_make_subplots(rows, cols, row_titles):
    col_titles = [f"column {i}" for i in range(cols)]
    references, entries = subplot_grid(rows, cols, col_titles, row_titles, spacing=(0.02, 0.04))
    reference = make_subplots(rows=rows, cols=cols, column_titles=col_titles, row_titles=row_titles,
                              horizontal_spacing=0.02, vertical_spacing=0.04).to_dict()["layout"]
    for r in range(rows):
        for c in range(cols):
            x, y = references[r][c]
            assert reference[f"xaxis{x[1:]}"]["anchor"] == y and reference[f"yaxis{y[1:]}"]["anchor"] == x
            for axis in (f"xaxis{x[1:]}", f"yaxis{y[1:]}"):
                assert entries[axis]["domain"] == pytest.approx(reference[axis]["domain"]), axis
    fields = ("text", "x", "y", "xanchor", "yanchor", "textangle")
    ours = sorted(tuple(str(round(a[f], 9)) if isinstance(a.get(f), float) else str(a.get(f)) for f in fields)
                  for a in entries["annotations"])
    theirs = sorted(tuple(str(round(a[f], 9)) if isinstance(a.get(f), float) else str(a.get(f)) for f in fields)
                    for a in reference["annotations"])
    assert ours == theirs


@pytest.mark.parametrize("n, spacing", [(1, 0.03), (3, 0.03), (4, 0.08)])
def test_subplot_row_matches_make_subplots(n, spacing):
    titles = [f"panel {i}" for i in range(n)]
    references, entries = subplot_row(titles, spacing)
    reference = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=spacing).to_dict()["layout"]
    assert references == [("x" if i == 0 else f"x{i + 1}", "y" if i == 0 else f"y{i + 1}") for i in range(n)]
    for i in range(n):
        suffix = "" if i == 0 else str(i + 1)
        assert entries[f"xaxis{suffix}"]["domain"] == pytest.approx(reference[f"xaxis{suffix}"]["domain"])
        assert entries[f"xaxis{suffix}"]["anchor"] == reference[f"xaxis{suffix}"]["anchor"]
        assert entries[f"yaxis{suffix}"]["anchor"] == reference[f"yaxis{suffix}"]["anchor"]
    ours = sorted((a["text"], round(a["x"], 9), a["y"]) for a in entries["annotations"])
    theirs = sorted((a["text"], round(a["x"], 9), a["y"]) for a in reference["annotations"])
    assert ours == theirs


def _validated(figure: go.Figure) -> dict:
    """The figure's dict, after plotly's full validation (raises ValueError on any bad property) —
    and the browser gets exactly that: validation also *converts* some values (a named colour scale
    such as "Magma" or "RdBu_r" becomes its list of colours; plotly.js knows neither name and would
    silently draw its default scale), so the unvalidated figure's JSON must equal the validated one's."""
    validated = go.Figure(figure.to_dict())
    assert json.loads(pio.to_json(figure, validate=False)) == json.loads(pio.to_json(validated, validate=False))
    return validated.to_dict()


def test_attack_lab_figures_validate_and_show_every_attack(run):
    perturbations = _validated(perturbation_figure(run, 0.1))
    assert [t["type"] for t in perturbations["data"]] == ["heatmap"] * len(run.outcomes)
    assert [a["text"] for a in perturbations["layout"]["annotations"]] == [o.name for o in run.outcomes]
    assert perturbations["data"][0]["zmax"] == pytest.approx(0.1 * 255)
    assert [t["showscale"] for t in perturbations["data"]] == [True] + [False] * (len(run.outcomes) - 1)
    assert perturbations["layout"]["yaxis2"]["scaleanchor"] == "x2"

    top5 = _validated(top5_figure(run))
    assert len(top5["data"]) == 1 + len(run.outcomes)
    assert [t["xaxis"] for t in top5["data"]] == ["x"] + [f"x{i}" for i in range(2, len(run.outcomes) + 2)]
    original = top5["data"][0]
    assert list(original["y"])[-1] == CLASSES[run.clean_prediction]  # most probable on top
    assert all(len(t["y"]) == 5 for t in top5["data"])

    loss = _validated(loss_figure(run.iterations, 1))
    assert list(loss["data"][0]["y"]) == pytest.approx([v.loss for v in run.iterations])
    assert list(loss["data"][1]["x"]) == [1]
    assert loss["layout"]["height"] == 280


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_display_png_is_the_enlarged_image_losslessly(shape):
    import io

    import numpy as np
    from PIL import Image

    from soae_app.figures.common import display_image, display_png

    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    decoded = Image.open(io.BytesIO(display_png(image)))
    assert decoded.format == "PNG"
    expected = (display_image(image) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(decoded), expected)
    assert min(expected.shape[:2]) >= 168


def test_perturbation_anatomy_figures_validate_and_show_every_attack():
    from conftest import tiny_cnn

    from soae_app.figures import perturbation_anatomy as figures
    from soae_core.analysis.perturbation_anatomy import distortion_table, perturbation_anatomy

    generator = torch.Generator().manual_seed(4)
    image = torch.rand(1, 1, 8, 8, generator=generator, dtype=torch.float64)
    noise = torch.rand(2, 1, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    advs = {"noise": (image + 0.05 * noise[:1]).clamp(0, 1), "sign": (image + 0.05 * noise[1:].sign()).clamp(0, 1)}
    anatomy = perturbation_anatomy(tiny_cnn(), image, 1, advs)

    edges = _validated(figures.edges_figure(anatomy, 0.05))
    assert [t["type"] for t in edges["data"]] == ["heatmap", "scatter"] * 4  # 2 attacks × (Canny, Sobel)
    assert [t["yaxis"] for t in edges["data"][::2]] == ["y", "y3", "y2", "y4"]  # column by column
    panels = {k: v for k, v in edges["layout"].items() if k.startswith("yaxis")}
    assert all(axis["scaleanchor"] == axis["anchor"] for axis in panels.values())  # each panel square on its own
    # and on the image's own extent (edge markers at the border would pad an autorange: unequal panels)
    assert all(axis["range"] == [7.5, -0.5] and axis["autorange"] is False for axis in panels.values())
    assert all(v["range"] == [-0.5, 7.5] for k, v in edges["layout"].items() if k.startswith("xaxis"))
    layer = next(iter(anatomy.channels))
    maps = _validated(figures.feature_maps_figure(anatomy, layer))
    assert len(maps["data"]) == 3 * len(anatomy.channels[layer])  # original + one change row per attack
    attributions = _validated(figures.attribution_figure(anatomy))
    assert len(attributions["data"]) == 2 * 3
    spectrum = _validated(figures.delta_spectrum_figure(anatomy))
    assert spectrum["layout"]["yaxis"]["autorange"] is True
    distortion = _validated(figures.distortion_figure(distortion_table(anatomy)))
    assert [t["name"] for t in distortion["data"]] == ["noise", "sign"]
