"""Figures of the Perturbation Anatomy page (pure functions of
:mod:`soae_core.analysis.perturbation_anatomy`'s results). Image panels keep pixels square and rows top-down."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from soae_app.figures.common import attack_colour, delta_limit, figure_from_spec, image_axes, subplot_grid
from soae_core.analysis.perturbation_anatomy import Anatomy

# |δ|: white where δ = 0, vermilion at |δ| = ε.
DELTA_SCALE = [[0.0, "#ffffff"], [1.0, "#D55E00"]]


def _image_grid(rows: int, cols: int, row_titles: list[str] | None,
                col_titles: list[str]) -> tuple[list[list[tuple[str, str]]], dict[str, Any]]:
    """A grid of image panels (:func:`~soae_app.figures.common.subplot_grid`): no ticks or grid
    lines, square pixels, rows top-down. Returns the panels' axis references and layout entries."""
    references, entries = subplot_grid(rows, cols, col_titles, row_titles)
    image_axes(entries)
    return references, entries


def _panel_height(rows: int, cols: int, width: int = 1100, title: int = 90) -> int:
    return int(rows * min(260, width / max(cols, 1)) + title)


def _edge_marker_size(shape: tuple[int, ...], cols: int, width: int = 1100) -> float:
    """Marker size (px) of about one image pixel in a panel of the grid."""
    return max(2.0, 0.8 * min(260, width / max(cols, 1)) / max(shape))


def edges_figure(anatomy: Anatomy, eps: float) -> go.Figure:
    """For each attack (columns): |δ| (mean over channels, ×1/255) from white to vermilion at ε,
    with the original's edge pixels outlined — Canny (top row), Sobel above Otsu's threshold
    (bottom row), the masks edge alignment uses."""
    names = [a.name for a in anatomy.attacks]
    references, axes = _image_grid(2, len(names), ["Canny edges □", "Sobel edges □"], names)
    rows_px, cols_px = anatomy.canny.shape
    for key, axis in axes.items():  # the image's own extent: the edge markers would pad an autorange,
        if key.startswith("xaxis"):  # more where edges touch the border, and panels would differ in size
            axis["range"] = [-0.5, cols_px - 0.5]
        elif key.startswith("yaxis"):
            axis.update(range=[rows_px - 0.5, -0.5], autorange=False)  # rows top-down
    limit = delta_limit(eps)
    size = _edge_marker_size(anatomy.canny.shape, len(names))
    data = []
    for column, attack in enumerate(anatomy.attacks):
        for row, mask in enumerate((anatomy.canny, anatomy.sobel_edges)):
            x, y = references[row][column]
            data.append({"type": "heatmap", "z": attack.magnitude * 255, "colorscale": DELTA_SCALE, "zmin": 0,
                         "zmax": limit, "showscale": row == 0 and column == 0, "xaxis": x, "yaxis": y,
                         "colorbar": {"title": {"text": "|δ| × 255"}, "len": 0.8},
                         "hovertemplate": "row %{y}, col %{x}: |δ| = %{z:.2f}/255<extra></extra>"})
            rows, cols = np.nonzero(mask)
            data.append({"type": "scatter", "x": cols, "y": rows, "mode": "markers", "hoverinfo": "skip",
                         "showlegend": False, "xaxis": x, "yaxis": y,
                         "marker": {"symbol": "square-open", "size": size, "color": "#111827", "line": {"width": 1.2}}})
    return figure_from_spec(data, {**axes, "title": {
        "text": "Size of the perturbation |δ| (colour) and the original's edge pixels (□)"}}, _panel_height(2, len(names)))


def distortion_figure(table: pd.DataFrame) -> go.Figure:
    """Relative feature distortion per layer (input → output), one line per attack (paper Fig. 4)."""
    data = [{"type": "scatter", "x": list(table.columns), "y": row.values, "mode": "lines+markers", "name": name,
             "line": {"color": attack_colour(name, k), "width": 3}, "marker": {"size": 10}}
            for k, (name, row) in enumerate(table.iterrows())]
    return figure_from_spec(data, {"title": {"text": "How much each layer's features change"},
                                   "xaxis": {"title": {"text": "layer (input → output)"}},
                                   "yaxis": {"title": {"text": "‖F(x_adv) − F(x)‖ / ‖F(x)‖"}, "rangemode": "tozero",
                                             "tickformat": ".0%"}}, 360)


def feature_maps_figure(anatomy: Anatomy, layer: str) -> go.Figure:
    """Feature maps of ``layer`` for the channels the attacks change most (columns): the
    original's maps (top row, one colour range per channel), then per attack the change
    F(x_adv) − F(x) on a diverging scale shared by the channel's rows (red: up, blue: down)."""
    channels = anatomy.channels[layer]
    clean = anatomy.clean_feature_maps[layer]
    changes = [(a.name, a.feature_maps[layer] - clean) for a in anatomy.attacks]
    row_titles = ["Original"] + [f"{name}: change" for name, _ in changes]
    references, axes = _image_grid(1 + len(changes), len(channels), row_titles, [f"channel {c}" for c in channels])
    data = []
    for column in range(len(channels)):
        x, y = references[0][column]
        data.append({"type": "heatmap", "z": clean[column], "colorscale": "Viridis", "showscale": False,
                     "hovertemplate": "%{z:.3f}<extra></extra>", "xaxis": x, "yaxis": y})
        top = max(max(float(np.abs(change[column]).max()) for _, change in changes), 1e-12)
        for row, (_, change) in enumerate(changes, start=1):
            x, y = references[row][column]
            data.append({"type": "heatmap", "z": change[column], "colorscale": "RdBu_r", "zmin": -top, "zmax": top,
                         "zmid": 0, "showscale": False, "hovertemplate": "change %{z:.3f}<extra></extra>",
                         "xaxis": x, "yaxis": y})
    return figure_from_spec(data, {**axes, "title": {
        "text": f"Layer {layer}: original maps and the change each attack makes"}},
        _panel_height(1 + len(changes), len(channels), width=540))


def attribution_figure(anatomy: Anatomy) -> go.Figure:
    """Saliency (|∂ logit/∂x|) and Integrated Gradients (signed) of the original and of each
    adversarial image; one colour range per method."""
    rows = [("Original", anatomy.clean_saliency, anatomy.clean_integrated_gradients)] + \
           [(a.name, a.saliency, a.integrated_gradients) for a in anatomy.attacks]
    references, axes = _image_grid(len(rows), 2, [name for name, _, _ in rows], ["Saliency", "Integrated Gradients"])
    saliency_top = max(float(max(r[1].max() for r in rows)), 1e-12)
    ig_top = max(float(max(np.abs(r[2]).max() for r in rows)), 1e-12)
    data = []
    for row, (_, saliency, integrated) in enumerate(rows):
        (x1, y1), (x2, y2) = references[row]
        data.append({"type": "heatmap", "z": saliency, "colorscale": "Reds", "zmin": 0, "zmax": saliency_top,
                     "showscale": False, "hovertemplate": "%{z:.3g}<extra></extra>", "xaxis": x1, "yaxis": y1})
        data.append({"type": "heatmap", "z": integrated, "colorscale": "RdBu_r", "zmin": -ig_top, "zmax": ig_top,
                     "zmid": 0, "showscale": False, "hovertemplate": "%{z:.3g}<extra></extra>", "xaxis": x2, "yaxis": y2})
    return figure_from_spec(data, {**axes, "title": {"text": "Attributions (IG: red supports, blue opposes the class)"}},
                            _panel_height(len(rows), 2, width=520))


def delta_spectrum_figure(anatomy: Anatomy) -> go.Figure:
    """log₁₀ |FFT(δ)| per attack, zero frequency in the centre, one colour range for all."""
    names = [a.name for a in anatomy.attacks]
    logs = [np.log10(a.spectrum + 1e-12) for a in anatomy.attacks]
    high = max(float(s.max()) for s in logs)
    references, axes = _image_grid(1, len(names), [""], names)
    for key, axis in axes.items():
        if key.startswith("yaxis"):
            axis["autorange"] = True  # frequencies: no image orientation
    data = [{"type": "heatmap", "z": spectrum, "colorscale": "Magma", "zmin": high - 4, "zmax": high,
             "showscale": column == 0, "colorbar": {"title": {"text": "log₁₀|F(δ)|"}},
             "hovertemplate": "%{z:.2f}<extra></extra>", "xaxis": x, "yaxis": y}
            for column, (spectrum, (x, y)) in enumerate(zip(logs, references[0], strict=True))]
    return figure_from_spec(data, {**axes, "title": {
        "text": "Spectrum of δ (centre: low frequencies; corners: the finest patterns)"}}, _panel_height(1, len(names)))
