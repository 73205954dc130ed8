"""Figures of the Attack Lab page (pure functions of :mod:`soae_core.analysis.attack_lab`'s results)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_app.figures.common import PALETTE, delta_limit, layout
from soae_core.analysis.attack_lab import IterationView, LabRun, top_k


def perturbation_figure(run: LabRun, eps: float) -> go.Figure:
    """One heatmap per attack of δ = x_adv − x (mean over colour channels) in units of 1/255,
    on one diverging colour scale spanning ±ε, so the perturbations are amplified alike."""
    limit = delta_limit(eps)
    figure = make_subplots(rows=1, cols=len(run.outcomes), subplot_titles=[o.name for o in run.outcomes],
                           horizontal_spacing=0.03)
    for column, outcome in enumerate(run.outcomes, start=1):
        delta = outcome.perturbation.mean(axis=0) * 255
        figure.add_trace(go.Heatmap(z=delta, zmin=-limit, zmax=limit, zmid=0, colorscale="RdBu_r",
                                    showscale=column == 1, colorbar={"title": {"text": "δ × 255"}},
                                    hovertemplate="row %{y}, col %{x}: δ = %{z:.2f}/255<extra></extra>"),
                         row=1, col=column)
        figure.update_yaxes(autorange="reversed", scaleanchor=f"x{column if column > 1 else ''}",
                            showticklabels=False, row=1, col=column)
        figure.update_xaxes(showticklabels=False, row=1, col=column)
    return layout(figure, 300, title={"text": f"Perturbation δ (red: brighter, blue: darker; scale ±ε = ±{limit:g}/255)"})


def top5_figure(run: LabRun) -> go.Figure:
    """Top-5 class probabilities on the original and on each adversarial image; the true class
    is drawn in green, other classes in grey, the predicted (top) class outlined."""
    panels = [("Original", run.clean_probabilities)] + [(o.name, o.probabilities) for o in run.outcomes]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels],
                           horizontal_spacing=0.08)
    true_name = run.class_names[run.label]
    for column, (_, probabilities) in enumerate(panels, start=1):
        best = top_k(probabilities, run.class_names, k=min(5, len(run.class_names)))[::-1]
        names = [name for name, _ in best]
        colours = ["#009E73" if name == true_name else "#9CA3AF" for name in names]
        figure.add_trace(go.Bar(x=[p for _, p in best], y=names, orientation="h", marker_color=colours,
                                text=[f"{p:.0%}" for _, p in best], textposition="outside", cliponaxis=False,
                                showlegend=False, hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=1, col=column)
        figure.update_xaxes(range=[0, 1.25], tickvals=[0, 0.5, 1], tickformat=".0%", row=1, col=column)
    return layout(figure, 320, title={"text": f"Top-5 class probabilities (green: the true class, {true_name})"})


def loss_figure(iterations: list[IterationView], current: int) -> go.Figure:
    """Cross-entropy of the SOAE iterate after each outer iteration, the current one marked."""
    steps = [v.index for v in iterations]
    figure = go.Figure(go.Scatter(x=steps, y=[v.loss for v in iterations], mode="lines+markers",
                                  line={"color": PALETTE[0]}, name="loss"))
    figure.add_trace(go.Scatter(x=[current], y=[iterations[current].loss], mode="markers",
                                marker={"size": 16, "color": PALETTE[4], "symbol": "circle-open", "line": {"width": 3}},
                                name="shown"))
    figure.update_xaxes(title="outer iteration n", dtick=1)
    figure.update_yaxes(title="cross-entropy loss")
    return layout(figure, 280, showlegend=False, title={"text": "Loss along the SOAE iterations"})
