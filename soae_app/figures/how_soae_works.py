"""Figures of the How SOAE works page (pure functions of :mod:`soae_core.analysis.how_soae_works`' results)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_app.figures.common import PALETTE, layout
from soae_core.analysis.how_soae_works import TOY_CLASSES, LossGrid, LossLine, LossPlane, ToyStep

# Pale region colours for the toy's three classes (same order as PALETTE's first three).
REGION_COLOURS = ("#cfe3f3", "#fbe6bf", "#c7eadf")


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
    return layout(figure, 640, title={"text": f"Loss of {TOY_CLASSES[step.label]} (contours) over the decision regions"},
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
    return layout(figure, 400, title={"text": "Loss along a line through the image"},
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
    return layout(figure, 520, title={"text": "Loss on the plane of g and H⁻¹g (dashed: quadratic model)"})
