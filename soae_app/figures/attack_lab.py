"""Figures of the Attack Lab page (pure functions of :mod:`soae_core.analysis.attack_lab`'s results)."""

from __future__ import annotations

import plotly.graph_objects as go

from soae_app.figures.common import PALETTE, delta_limit, figure_from_spec, image_axes, subplot_row
from soae_core.analysis.attack_lab import IterationView, LabRun, top_k


def perturbation_figure(run: LabRun, eps: float) -> go.Figure:
    """One heatmap per attack of δ = x_adv − x (mean over colour channels) in units of 1/255,
    on one diverging colour scale spanning ±ε, so the perturbations are amplified alike."""
    limit = delta_limit(eps)
    references, axes = subplot_row([o.name for o in run.outcomes], spacing=0.03)
    image_axes(axes)
    data = []
    for column, (outcome, (x, y)) in enumerate(zip(run.outcomes, references, strict=True), start=1):
        data.append({"type": "heatmap", "z": outcome.perturbation.mean(axis=0) * 255, "zmin": -limit, "zmax": limit,
                     "zmid": 0, "colorscale": "RdBu_r", "showscale": column == 1, "colorbar": {"title": {"text": "δ × 255"}},
                     "hovertemplate": "row %{y}, col %{x}: δ = %{z:.2f}/255<extra></extra>", "xaxis": x, "yaxis": y})
    return figure_from_spec(data, {**axes, "title": {
        "text": f"Perturbation δ (red: brighter, blue: darker; scale ±ε = ±{limit:g}/255)"}}, 300)


def top5_figure(run: LabRun) -> go.Figure:
    """Top-5 class probabilities on the original and on each adversarial image; the true class
    is drawn in green, other classes in grey, the predicted (top) class outlined."""
    panels = [("Original", run.clean_probabilities)] + [(o.name, o.probabilities) for o in run.outcomes]
    references, axes = subplot_row([name for name, _ in panels], spacing=0.08)
    true_name = run.class_names[run.label]
    data = []
    for (_, probabilities), (x, y) in zip(panels, references, strict=True):
        best = top_k(probabilities, run.class_names, k=min(5, len(run.class_names)))[::-1]
        names = [name for name, _ in best]
        data.append({"type": "bar", "x": [p for _, p in best], "y": names, "orientation": "h",
                     "marker": {"color": ["#009E73" if name == true_name else "#9CA3AF" for name in names]},
                     "text": [f"{p:.0%}" for _, p in best], "textposition": "outside", "cliponaxis": False,
                     "showlegend": False, "hovertemplate": "%{y}: %{x:.3f}<extra></extra>", "xaxis": x, "yaxis": y})
        axes[f"xaxis{x[1:]}"].update(range=[0, 1.25], tickvals=[0, 0.5, 1], tickformat=".0%")
    return figure_from_spec(data, {**axes, "title": {
        "text": f"Top-5 class probabilities (green: the true class, {true_name})"}}, 320)


def loss_figure(iterations: list[IterationView], current: int) -> go.Figure:
    """Cross-entropy of the SOAE iterate after each outer iteration, the current one marked."""
    data = [{"type": "scatter", "x": [v.index for v in iterations], "y": [v.loss for v in iterations],
             "mode": "lines+markers", "line": {"color": PALETTE[0]}, "name": "loss"},
            {"type": "scatter", "x": [current], "y": [iterations[current].loss], "mode": "markers", "name": "shown",
             "marker": {"size": 16, "color": PALETTE[4], "symbol": "circle-open", "line": {"width": 3}}}]
    return figure_from_spec(data, {"showlegend": False, "title": {"text": "Loss along the SOAE iterations"},
                                   "xaxis": {"title": {"text": "outer iteration n"}, "dtick": 1},
                                   "yaxis": {"title": {"text": "cross-entropy loss"}}}, 280)
