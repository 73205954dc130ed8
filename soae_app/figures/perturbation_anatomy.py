"""Figures of the Perturbation Anatomy page (pure functions of
:mod:`soae_core.analysis.perturbation_anatomy`'s results). Image panels keep pixels square and rows top-down."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_app.figures.common import attack_colour, delta_limit, layout
from soae_core.analysis.perturbation_anatomy import Anatomy

# |δ|: white where δ = 0, vermilion at |δ| = ε.
DELTA_SCALE = [[0.0, "#ffffff"], [1.0, "#D55E00"]]


def _image_grid(rows: int, cols: int, row_titles: list[str], col_titles: list[str]) -> go.Figure:
    figure = make_subplots(rows=rows, cols=cols, column_titles=col_titles, row_titles=row_titles,
                           horizontal_spacing=0.02, vertical_spacing=0.04)
    figure.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                        scaleanchor="x", constrain="domain")
    figure.update_xaxes(constrain="domain")
    return figure


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
    figure = _image_grid(2, len(names), ["Canny edges □", "Sobel edges □"], names)
    limit = delta_limit(eps)
    size = _edge_marker_size(anatomy.canny.shape, len(names))
    for column, attack in enumerate(anatomy.attacks, start=1):
        for row, mask in ((1, anatomy.canny), (2, anatomy.sobel_edges)):
            figure.add_trace(go.Heatmap(z=attack.magnitude * 255, colorscale=DELTA_SCALE, zmin=0, zmax=limit,
                                        showscale=row == 1 and column == 1,
                                        colorbar={"title": {"text": "|δ| × 255"}, "len": 0.8},
                                        hovertemplate="row %{y}, col %{x}: |δ| = %{z:.2f}/255<extra></extra>"),
                             row=row, col=column)
            rows, cols = np.nonzero(mask)
            figure.add_trace(go.Scatter(x=cols, y=rows, mode="markers", hoverinfo="skip", showlegend=False,
                                        marker={"symbol": "square-open", "size": size, "color": "#111827",
                                                "line": {"width": 1.2}}), row=row, col=column)
    return layout(figure, _panel_height(2, len(names)),
                   title={"text": "Size of the perturbation |δ| (colour) and the original's edge pixels (□)"})


def distortion_figure(table: pd.DataFrame) -> go.Figure:
    """Relative feature distortion per layer (input → output), one line per attack (paper Fig. 4)."""
    figure = go.Figure()
    for k, (name, row) in enumerate(table.iterrows()):
        figure.add_trace(go.Scatter(x=list(table.columns), y=row.values, mode="lines+markers", name=name,
                                    line={"color": attack_colour(name, k), "width": 3}, marker={"size": 10}))
    figure.update_xaxes(title="layer (input → output)")
    figure.update_yaxes(title="‖F(x_adv) − F(x)‖ / ‖F(x)‖", rangemode="tozero", tickformat=".0%")
    return layout(figure, 360, title={"text": "How much each layer's features change"})


def feature_maps_figure(anatomy: Anatomy, layer: str) -> go.Figure:
    """Feature maps of ``layer`` for the channels the attacks change most (columns): the
    original's maps (top row, one colour range per channel), then per attack the change
    F(x_adv) − F(x) on a diverging scale shared by the channel's rows (red: up, blue: down)."""
    channels = anatomy.channels[layer]
    clean = anatomy.clean_feature_maps[layer]
    changes = [(a.name, a.feature_maps[layer] - clean) for a in anatomy.attacks]
    row_titles = ["Original"] + [f"{name}: change" for name, _ in changes]
    figure = _image_grid(1 + len(changes), len(channels), row_titles, [f"channel {c}" for c in channels])
    for column in range(len(channels)):
        figure.add_trace(go.Heatmap(z=clean[column], colorscale="Viridis", showscale=False,
                                    hovertemplate="%{z:.3f}<extra></extra>"), row=1, col=column + 1)
        top = max(max(float(np.abs(change[column]).max()) for _, change in changes), 1e-12)
        for row, (_, change) in enumerate(changes, start=2):
            figure.add_trace(go.Heatmap(z=change[column], colorscale="RdBu_r", zmin=-top, zmax=top, zmid=0,
                                        showscale=False, hovertemplate="change %{z:.3f}<extra></extra>"),
                             row=row, col=column + 1)
    return layout(figure, _panel_height(1 + len(changes), len(channels), width=540),
                   title={"text": f"Layer {layer}: original maps and the change each attack makes"})


def attribution_figure(anatomy: Anatomy) -> go.Figure:
    """Saliency (|∂ logit/∂x|) and Integrated Gradients (signed) of the original and of each
    adversarial image; one colour range per method."""
    rows = [("Original", anatomy.clean_saliency, anatomy.clean_integrated_gradients)] + \
           [(a.name, a.saliency, a.integrated_gradients) for a in anatomy.attacks]
    figure = _image_grid(len(rows), 2, [name for name, _, _ in rows], ["Saliency", "Integrated Gradients"])
    saliency_top = max(float(max(r[1].max() for r in rows)), 1e-12)
    ig_top = max(float(max(np.abs(r[2]).max() for r in rows)), 1e-12)
    for row, (_, saliency, integrated) in enumerate(rows, start=1):
        figure.add_trace(go.Heatmap(z=saliency, colorscale="Reds", zmin=0, zmax=saliency_top,
                                    showscale=False, hovertemplate="%{z:.3g}<extra></extra>"), row=row, col=1)
        figure.add_trace(go.Heatmap(z=integrated, colorscale="RdBu_r", zmin=-ig_top, zmax=ig_top, zmid=0,
                                    showscale=False, hovertemplate="%{z:.3g}<extra></extra>"), row=row, col=2)
    return layout(figure, _panel_height(len(rows), 2, width=520),
                   title={"text": "Attributions (IG: red supports, blue opposes the class)"})


def delta_spectrum_figure(anatomy: Anatomy) -> go.Figure:
    """log₁₀ |FFT(δ)| per attack, zero frequency in the centre, one colour range for all."""
    names = [a.name for a in anatomy.attacks]
    logs = [np.log10(a.spectrum + 1e-12) for a in anatomy.attacks]
    high = max(float(s.max()) for s in logs)
    figure = _image_grid(1, len(names), [""], names)
    for column, spectrum in enumerate(logs, start=1):
        figure.add_trace(go.Heatmap(z=spectrum, colorscale="Magma", zmin=high - 4, zmax=high,
                                    showscale=column == 1, colorbar={"title": {"text": "log₁₀|F(δ)|"}},
                                    hovertemplate="%{z:.2f}<extra></extra>"), row=1, col=column)
    figure.update_yaxes(autorange=True)  # frequencies: no image orientation
    return layout(figure, _panel_height(1, len(names)),
                   title={"text": "Spectrum of δ (centre: low frequencies; corners: the finest patterns)"})
