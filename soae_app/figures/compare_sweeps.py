"""Figures of the Compare & Sweeps page (pure functions of :mod:`soae_core.analysis.compare_sweeps`' tables)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_app.figures.common import PALETTE, attack_colour, layout


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
    # 1-2-5 ticks: plotly's default on a log axis labels every digit of each decade, too cramped to read.
    figure.update_xaxes(type="log", title="gradient evaluations per image (log scale)",
                        tickvals=[m * 10 ** e for e in range(5) for m in (1, 2, 5)])
    figure.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.05])
    return layout(figure, 420, title={"text": "Equal budget: accuracy vs gradient evaluations"})


def eta_figure(table: pd.DataFrame) -> go.Figure:
    """SOAE accuracy versus the finite-difference step η (paper Figure 1)."""
    figure = go.Figure(go.Scatter(x=table["η"], y=table["Accuracy"], mode="lines+markers",
                                  line={"color": PALETTE[0], "width": 3}, marker={"size": 10}))
    figure.update_xaxes(type="log", title="η", exponentformat="power")
    figure.update_yaxes(title="accuracy under SOAE", tickformat=".0%", range=[0, 1.05])
    return layout(figure, 380, title={"text": "Accuracy vs η (paper Fig. 1)"})


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
    return layout(figure, 400, title={"text": "Accuracy and cost vs τ (paper Fig. 2)"},
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
    return layout(figure, 380, title={"text": "Accuracy vs iterations (paper Fig. 3)"})
