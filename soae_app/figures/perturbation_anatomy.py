"""Plotly figures of the analysis pages (Perturbation Anatomy, Compare & Sweeps, How SOAE works):
pure functions of what soae_core computed. Image panels keep pixels square and rows top-down."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_app.figures import PALETTE, _layout
from soae_core.anatomy import Anatomy
from soae_core.landscape import LossLine, LossPlane
from soae_core.toy2d import TOY_CLASSES, LossGrid, ToyStep

# |δ|: white where δ = 0, vermilion at |δ| = ε.
DELTA_SCALE = [[0.0, "#ffffff"], [1.0, "#D55E00"]]
# One colour per attack on every chart of these pages.
ATTACK_COLOURS = {"SOAE": PALETTE[0], "FGSM": PALETTE[1], "PGD": PALETTE[2], "AutoAttack": PALETTE[3],
                  "ASOD": PALETTE[4]}
# Pale region colours for the toy's three classes (same order as PALETTE's first three).
REGION_COLOURS = ("#cfe3f3", "#fbe6bf", "#c7eadf")


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
    limit = max(eps * 255, 1e-3)
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
    return _layout(figure, _panel_height(2, len(names)),
                   title={"text": "Size of the perturbation |δ| (colour) and the original's edge pixels (□)"})


def distortion_figure(table: pd.DataFrame) -> go.Figure:
    """Relative feature distortion per layer (input → output), one line per attack (paper Fig. 4)."""
    figure = go.Figure()
    for k, (name, row) in enumerate(table.iterrows()):
        figure.add_trace(go.Scatter(x=list(table.columns), y=row.values, mode="lines+markers", name=name,
                                    line={"color": attack_colour(name, k), "width": 3}, marker={"size": 10}))
    figure.update_xaxes(title="layer (input → output)")
    figure.update_yaxes(title="‖F(x_adv) − F(x)‖ / ‖F(x)‖", rangemode="tozero", tickformat=".0%")
    return _layout(figure, 360, title={"text": "How much each layer's features change"})


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
    return _layout(figure, _panel_height(1 + len(changes), len(channels), width=540),
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
    return _layout(figure, _panel_height(len(rows), 2, width=520),
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
    return _layout(figure, _panel_height(1, len(names)),
                   title={"text": "Spectrum of δ (centre: low frequencies; corners: the finest patterns)"})


# ---------------------------------------------------------------------------------- compare
def attack_colour(name: str, position: int = 0) -> str:
    """The attack's colour (:data:`ATTACK_COLOURS`); other names take a palette colour by position."""
    return ATTACK_COLOURS.get(name, PALETTE[(5 + position) % len(PALETTE)])


def budget_figure(table: pd.DataFrame, clean_accuracy: float) -> go.Figure:
    """Accuracy after each recorded step versus gradient evaluations per image (log axis), one
    line per attack, the clean accuracy dotted: lower is a stronger attack at that cost."""
    figure = go.Figure()
    names = list(dict.fromkeys(table["Attack"]))
    for k, name in enumerate(names):
        rows = table[(table["Attack"] == name) & (table["Gradient evals / image"] > 0)]
        figure.add_trace(go.Scatter(x=rows["Gradient evals / image"], y=rows["Accuracy"], mode="lines+markers",
                                    name=name, line={"color": attack_colour(name, k), "width": 3},
                                    marker={"size": 9}, customdata=rows["Step"],
                                    hovertemplate=f"{name}, step %{{customdata}}: %{{x:.1f}} gradients, "
                                                  "accuracy %{y:.1%}<extra></extra>"))
    figure.add_hline(y=clean_accuracy, line={"dash": "dot", "color": "#111827"},
                     annotation_text=f"clean {clean_accuracy:.0%}", annotation_position="top right")
    figure.update_xaxes(type="log", title="gradient evaluations per image (log scale)")
    figure.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.05])
    return _layout(figure, 420, title={"text": "Equal budget: accuracy vs gradient evaluations"})


def eta_figure(table: pd.DataFrame) -> go.Figure:
    """SOAE accuracy versus the finite-difference step η (paper Figure 1)."""
    figure = go.Figure(go.Scatter(x=table["η"], y=table["Accuracy"], mode="lines+markers",
                                  line={"color": PALETTE[0], "width": 3}, marker={"size": 10}))
    figure.update_xaxes(type="log", title="η", exponentformat="power")
    figure.update_yaxes(title="accuracy under SOAE", tickformat=".0%", range=[0, 1.05])
    return _layout(figure, 380, title={"text": "Accuracy vs η (paper Fig. 1)"})


def tau_figure(table: pd.DataFrame) -> go.Figure:
    """SOAE accuracy (left axis) and cost relative to the largest τ (right axis: wall time, as in
    the paper's Figure 2, and gradient evaluations, which do not depend on the machine's load)."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=table["τ"], y=table["Accuracy"], mode="lines+markers", name="accuracy",
                                line={"color": PALETTE[0], "width": 3}, marker={"size": 10}), secondary_y=False)
    for column, name, dash, symbol in [("Time ÷ time at the largest τ", "time ÷ at the largest τ", "dash", "square"),
                                       ("Gradient evals ÷ at the largest τ", "gradient evaluations ÷ at the largest τ",
                                        "dot", "diamond")]:
        figure.add_trace(go.Scatter(x=table["τ"], y=table[column], mode="lines+markers", name=name,
                                    line={"color": PALETTE[4], "width": 3, "dash": dash},
                                    marker={"size": 10, "symbol": symbol}), secondary_y=True)
    figure.update_xaxes(type="log", title="τ", exponentformat="power", autorange="reversed")
    figure.update_yaxes(title_text="accuracy under SOAE", tickformat=".0%", range=[0, 1.05], secondary_y=False)
    figure.update_yaxes(title_text="relative cost", rangemode="tozero", tickformat=".1f", showgrid=False,
                        secondary_y=True)
    return _layout(figure, 400, title={"text": "Accuracy and cost vs τ (paper Fig. 2)"},
                   legend={"orientation": "h", "y": -0.25})


def steps_figure(table: pd.DataFrame) -> go.Figure:
    """Accuracy after each iteration of PGD and SOAE (paper Figure 3)."""
    figure = go.Figure()
    names = list(dict.fromkeys(table["Attack"]))
    for k, name in enumerate(names):
        rows = table[table["Attack"] == name]
        figure.add_trace(go.Scatter(x=rows["Iteration"], y=rows["Accuracy"], mode="lines+markers", name=name,
                                    line={"color": attack_colour(name, k), "width": 3}, marker={"size": 8}))
    figure.update_xaxes(title="iteration N", dtick=2)
    figure.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.05])
    return _layout(figure, 380, title={"text": "Accuracy vs iterations (paper Fig. 3)"})


# ---------------------------------------------------------------------------------- how it works
def _arrow(figure: go.Figure, start: np.ndarray, end: np.ndarray, colour: str, text: str) -> None:
    """An arrow from start to end with its label just beyond the head."""
    figure.add_annotation(x=end[0], y=end[1], ax=start[0], ay=start[1], xref="x", yref="y", axref="x", ayref="y",
                          showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=3, arrowcolor=colour, text="")
    beyond = end + 0.18 * (end - start)
    figure.add_annotation(x=beyond[0], y=beyond[1], xref="x", yref="y", showarrow=False, text=f"<b>{text}</b>",
                          font={"color": colour, "size": 15}, bgcolor="rgba(255,255,255,0.75)")


def _levels(values: np.ndarray, count: int = 14) -> dict:
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return {"start": low, "end": high, "size": max((high - low) / count, 1e-9)}


def toy_figure(grid: LossGrid, step: ToyStep, show_quadratic: bool, click_points: int = 41) -> go.Figure:
    """The toy's loss contours for the chosen class over its decision regions, the point p, the
    L∞ box of radius ε, unit arrows along g, the GMRES iterates and H⁻¹g, the candidate steps,
    and (optionally) the quadratic model's contours (dashed, within 3ε of p). A grid of faint dots
    makes every spot clickable."""
    figure = go.Figure()
    regions = [[0.0, REGION_COLOURS[0]], [1 / 3, REGION_COLOURS[0]], [1 / 3, REGION_COLOURS[1]],
               [2 / 3, REGION_COLOURS[1]], [2 / 3, REGION_COLOURS[2]], [1.0, REGION_COLOURS[2]]]
    figure.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=grid.prediction, zmin=-0.5, zmax=2.5, colorscale=regions,
                                showscale=False, hoverinfo="skip"))
    levels = _levels(grid.loss)
    figure.add_trace(go.Contour(x=grid.xs, y=grid.ys, z=grid.loss, contours={**levels, "coloring": "lines",
                                                                              "showlabels": True},
                                line={"width": 1.5}, colorscale=[[0, "#6b7280"], [1, "#111827"]], showscale=False,
                                name="loss L", hovertemplate="L = %{z:.2f}<extra></extra>"))
    p, eps = step.point, step.eps
    if show_quadratic:
        # Q is a local model: drawn only within 3ε of p (it is a poor guide further out).
        xx, yy = np.meshgrid(grid.xs, grid.ys)
        near = np.maximum(np.abs(xx - p[0]), np.abs(yy - p[1])) <= 3 * eps
        figure.add_trace(go.Contour(x=grid.xs, y=grid.ys, z=np.where(near, step.quadratic_grid(grid), np.nan),
                                    contours={**levels, "coloring": "lines"}, line={"width": 2, "dash": "dash"},
                                    colorscale=[[0, PALETTE[3]], [1, PALETTE[3]]], showscale=False,
                                    name="quadratic model Q", hovertemplate="Q = %{z:.2f}<extra></extra>"))
    box_x = np.clip([p[0] - eps, p[0] + eps], 0, 1)
    box_y = np.clip([p[1] - eps, p[1] + eps], 0, 1)
    figure.add_shape(type="rect", x0=box_x[0], x1=box_x[1], y0=box_y[0], y1=box_y[1],
                     line={"color": "#111827", "width": 2, "dash": "dot"})
    length = 1.6 * eps
    for vector, colour, text in [(step.gradient, PALETTE[0], "g"), (step.direction, PALETTE[4], "H⁻¹g")]:
        norm = np.linalg.norm(vector)
        if norm > 0:
            _arrow(figure, p, p + length * vector / norm, colour, text)
    iterates = step.gmres_iterates[1:-1]
    if len(iterates):
        tips = np.array([p + 0.8 * length * v / max(np.linalg.norm(v), 1e-300) for v in step.gmres_iterates])
        figure.add_trace(go.Scatter(x=tips[:, 0], y=tips[:, 1], mode="lines+markers+text", name="GMRES iterates",
                                    text=[f"δ{j}" for j in range(len(tips))], textposition="top center",
                                    line={"color": PALETTE[2], "width": 2, "dash": "dot"},
                                    marker={"size": 9, "color": PALETTE[2]}))
    symbols = ("diamond", "star", "triangle-up", "x")
    for k, candidate in enumerate(step.candidates):
        figure.add_trace(go.Scatter(x=[candidate.point[0]], y=[candidate.point[1]], mode="markers",
                                    name=candidate.name, marker={"size": 15, "symbol": symbols[k % len(symbols)],
                                                                 "color": PALETTE[(k + 4) % len(PALETTE)],
                                                                 "line": {"width": 1.5, "color": "white"}},
                                    hovertemplate=f"{candidate.name}<br>L = {candidate.loss:.3f}, "
                                                  f"Q = {candidate.quadratic:.3f}<extra></extra>"))
    figure.add_trace(go.Scatter(x=[p[0]], y=[p[1]], mode="markers", name="p (click to move)",
                                marker={"size": 14, "color": "#111827", "line": {"width": 2, "color": "white"}}))
    axis = np.linspace(0, 1, click_points)
    xx, yy = np.meshgrid(axis, axis)
    figure.add_trace(go.Scatter(x=xx.ravel(), y=yy.ravel(), mode="markers", name="click target",
                                marker={"size": 9, "color": "rgba(0,0,0,0.025)"}, showlegend=False,
                                hovertemplate="move p to (%{x:.3f}, %{y:.3f})<extra></extra>"))
    figure.update_xaxes(range=[0, 1], title="x₁", constrain="domain")
    figure.update_yaxes(range=[0, 1], title="x₂", scaleanchor="x", constrain="domain")
    return _layout(figure, 640, title={"text": f"Loss of {TOY_CLASSES[step.label]} (contours) over the decision regions"},
                   legend={"orientation": "h", "y": -0.12}, clickmode="event+select", dragmode=False)


def line_figure(along_gradient: LossLine, along_soae: LossLine, radius: float) -> go.Figure:
    """Two panels: the loss (solid) and its quadratic model (dashed) along g and along H⁻¹g;
    dotted verticals at ±radius, where the ε-ball's corners are."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["along the gradient g", "along SOAE's H⁻¹g"],
                           horizontal_spacing=0.08)
    for column, line in enumerate((along_gradient, along_soae), start=1):
        figure.add_trace(go.Scatter(x=line.offsets, y=line.loss, mode="lines", name="loss L",
                                    line={"color": PALETTE[0], "width": 3}, showlegend=column == 1), row=1, col=column)
        figure.add_trace(go.Scatter(x=line.offsets, y=line.quadratic, mode="lines", name="quadratic model Q",
                                    line={"color": PALETTE[3], "width": 3, "dash": "dash"}, showlegend=column == 1),
                         row=1, col=column)
        for x in (-radius, radius):
            figure.add_vline(x=x, line={"color": "#6b7280", "dash": "dot"}, row=1, col=column)
        figure.update_xaxes(title="t (Euclidean distance, pixel units)", row=1, col=column)
    low = min(float(line.loss.min()) for line in (along_gradient, along_soae))
    high = max(float(line.loss.max()) for line in (along_gradient, along_soae))
    margin = 0.1 * max(high - low, 1e-3)
    figure.update_yaxes(title="cross-entropy", range=[low - margin, high + margin])
    return _layout(figure, 400, title={"text": "Loss along a line through the image"},
                   legend={"orientation": "h", "y": -0.25})


def plane_figure(plane: LossPlane) -> go.Figure:
    """Filled contours of the loss on the plane of g and H⁻¹g, the quadratic model's contours
    (dashed), and unit arrows along g and H⁻¹g from the image (the origin)."""
    figure = go.Figure()
    levels = _levels(plane.loss)
    figure.add_trace(go.Contour(x=plane.a, y=plane.b, z=plane.loss, contours=levels, colorscale="Blues",
                                colorbar={"title": {"text": "loss"}}, name="loss",
                                hovertemplate="a %{x:.2f}, b %{y:.2f}: L = %{z:.3f}<extra></extra>"))
    figure.add_trace(go.Contour(x=plane.a, y=plane.b, z=plane.quadratic, contours={**levels, "coloring": "lines"},
                                line={"width": 2, "dash": "dash"}, colorscale=[[0, PALETTE[3]], [1, PALETTE[3]]],
                                showscale=False, name="quadratic model Q",
                                hovertemplate="Q = %{z:.3f}<extra></extra>"))
    length = 0.6 * float(plane.a.max())
    origin = np.zeros(2)
    _arrow(figure, origin, np.array([length, 0.0]), PALETTE[4], "g")
    _arrow(figure, origin, length * plane.soae_coords, "#111827", "H⁻¹g")
    figure.update_xaxes(title="a: along g", constrain="domain")
    figure.update_yaxes(title="b: ⟂ g, towards H⁻¹g", scaleanchor="x", constrain="domain")
    return _layout(figure, 520, title={"text": "Loss on the plane of g and H⁻¹g (dashed: quadratic model)"})

