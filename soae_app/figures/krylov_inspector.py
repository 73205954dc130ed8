"""Figures of the Krylov Inspector page (pure functions of :mod:`soae_core.analysis.krylov_inspector`'s results)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from soae_app.figures.common import PALETTE, attack_colour, layout
from soae_core.analysis.krylov_inspector import KrylovRecord, Spectrum


def residual_figure(records: list[KrylovRecord], tau: float) -> go.Figure:
    """GMRES relative residual per Krylov step, one colour per outer iteration: Givens estimate
    (solid), operator-evaluated true residual (dotted), the τ threshold (dashed), m marked (×).
    The y-axis stops at 1e3: a true residual that blows up leaves the chart upwards."""
    figure = go.Figure()
    lowest = tau
    for k, record in enumerate(records):
        colour = PALETTE[k % len(PALETTE)]
        steps = np.arange(len(record.residuals))
        group = f"n = {record.iteration}"
        figure.add_trace(go.Scatter(x=steps, y=record.residuals, mode="lines", line={"color": colour, "width": 3},
                                    name=f"{group}: m = {record.m} ({record.stop_reason})", legendgroup=group))
        if record.true_residuals is not None:
            figure.add_trace(go.Scatter(x=steps, y=record.true_residuals, mode="lines",
                                        line={"color": colour, "dash": "dot", "width": 2},
                                        name=f"{group}: true residual", legendgroup=group, showlegend=False))
        figure.add_trace(go.Scatter(x=[record.m], y=[record.residuals[-1]], mode="markers",
                                    marker={"color": colour, "size": 14, "symbol": "x"}, showlegend=False,
                                    legendgroup=group, hovertemplate=f"{group}: m = {record.m} ({record.stop_reason})"
                                                                     "<extra></extra>"))
        positive = record.residuals[record.residuals > 0]
        lowest = min(lowest, float(positive.min()) if positive.size else lowest)
    figure.add_hline(y=tau, line={"dash": "dash", "color": "#111827"})
    # Placed by hand: plotly puts add_hline's own annotation at the wrong height on a log axis.
    figure.add_annotation(x=1, xref="x domain", y=np.log10(tau), yref="y", text=f"τ = {tau:g}", showarrow=False,
                          xanchor="right", yanchor="top")
    figure.update_yaxes(type="log", title="‖g − Hδ_j‖ / β", exponentformat="power",
                        range=[np.log10(lowest) - 0.5, 3])
    figure.update_xaxes(title="Krylov step j")
    return layout(figure, 420, title={"text": "GMRES residual (solid: estimate, dotted: true)"})


def m_figure(records: list[KrylovRecord]) -> go.Figure:
    """Krylov dimension m per outer iteration, labelled with how GMRES stopped."""
    figure = go.Figure(go.Bar(x=[r.iteration for r in records], y=[r.m for r in records],
                              text=[f"{r.m}<br>{r.stop_reason}" for r in records], textposition="outside",
                              textfont={"size": 14}, marker_color=PALETTE[0], cliponaxis=False))
    figure.update_xaxes(title="outer iteration n", dtick=1)
    figure.update_yaxes(title="m", range=[0, max([r.m for r in records], default=1) * 1.3])
    return layout(figure, 420, title={"text": "Krylov dimension m"})


def spectrum_figure(spectra: dict[str, Spectrum]) -> go.Figure:
    """Ritz values |λ| (log scale) by rank, one colour per model; filled markers λ > 0,
    open markers λ < 0. A dotted line marks the ReLU bound C − 1 on the rank."""
    figure = go.Figure()
    for k, (name, spectrum) in enumerate(spectra.items()):
        values = spectrum.ritz_values
        magnitude = np.maximum(np.abs(values), 1e-300)
        symbols = ["circle" if v > 0 else "circle-open" for v in values]
        figure.add_trace(go.Scatter(x=np.arange(1, len(values) + 1), y=magnitude, mode="markers",
                                    marker={"color": PALETTE[k % len(PALETTE)], "size": 10, "symbol": symbols,
                                            "line": {"width": 2}},
                                    name=f"{name}: m = {spectrum.m} ({spectrum.stop_reason})",
                                    customdata=values, hovertemplate="λ = %{customdata:.3e}<extra></extra>"))
    if spectra:
        bound = next(iter(spectra.values())).num_classes - 1
        figure.add_vline(x=bound + 0.5, line={"dash": "dot", "color": "#111827"},
                         annotation_text=f"C − 1 = {bound}", annotation_position="top right")
    figure.update_yaxes(type="log", title="|Ritz value| (open: negative)", exponentformat="power")
    figure.update_xaxes(title="rank (largest first)")
    return layout(figure, 420, title={"text": "Ritz values of the input Hessian (exact products, float64)"},
                   legend={"orientation": "h", "y": -0.25})


def fd_accuracy_figure(table: pd.DataFrame, eta: float) -> go.Figure:
    """Relative error of finite-difference products vs η (log–log): forward/central ×
    float32/float64, the chosen η marked."""
    figure = go.Figure()
    styles = {("forward", "float32"): (PALETTE[4], "solid"), ("central", "float32"): (PALETTE[4], "dash"),
              ("forward", "float64"): (PALETTE[0], "solid"), ("central", "float64"): (PALETTE[0], "dash")}
    for (scheme, dtype), (colour, dash) in styles.items():
        rows = table[(table["scheme"] == scheme) & (table["dtype"] == dtype)].sort_values("eta")
        figure.add_trace(go.Scatter(x=rows["eta"], y=rows["relative_error"], mode="lines+markers",
                                    line={"color": colour, "dash": dash, "width": 3}, name=f"{scheme}, {dtype}"))
    figure.add_vline(x=eta, line={"color": "#111827", "dash": "dot"})
    # Placed by hand: plotly puts add_vline's own annotation at the wrong place on a log axis.
    figure.add_annotation(x=np.log10(eta), xref="x", y=1, yref="y domain", text=f"chosen η = {eta:g}",
                          showarrow=False, xanchor="left", yanchor="top")
    figure.update_xaxes(type="log", title="η", exponentformat="power")
    figure.update_yaxes(type="log", title="‖Hv_fd − Hv‖ / ‖Hv‖", exponentformat="power")
    return layout(figure, 420, title={"text": "Finite-difference Hessian-vector product: error vs η"})


def margin_gains_figure(gains: pd.DataFrame) -> go.Figure:
    """Grouped bars per wrong class: the first-order gain of its advantage for SOAE's first step along
    g and along δ̃, with the gap it would have to close drawn as a black tick (a bar reaching the tick
    flips the prediction to that class). The nearest wrong class is marked with ★, a target class
    (targeted step, along −g and −δ̃) with ◎."""
    targeted = "target" in gains and bool(gains["target"].any())
    aims = gains["target"] if targeted else [False] * len(gains)
    names = [("◎ " if aim else "") + (f"★ {c}" if near else c)
             for c, near, aim in zip(gains["class"], gains["nearest"], aims, strict=False)]
    sign = "−" if targeted else ""
    figure = go.Figure()
    for column, colour, label in (("along g", attack_colour("SOAE-g"), f"step along {sign}g (SOAE without curvature)"),
                                  ("along δ̃", attack_colour("SOAE"), f"step along {sign}δ̃ (SOAE)")):
        figure.add_trace(go.Bar(x=names, y=gains[column], name=label, marker_color=colour,
                                hovertemplate="%{x}: Δa = %{y:.3f}<extra>" + label + "</extra>"))
    figure.add_trace(go.Scatter(x=names, y=gains["gap"], mode="markers", name="gap to close (z_y − z_k)",
                                marker={"symbol": "line-ew-open", "size": 34, "color": "#000000",
                                        "line": {"width": 3}},
                                hovertemplate="%{x}: gap %{y:.3f}<extra></extra>"))
    figure.update_yaxes(title_text="change of z_k − z_y (logits)", zeroline=True, zerolinecolor="#888888")
    return layout(figure, 380, barmode="group",
                  title={"text": "One step, first order: how much each wrong class gains (★ nearest class"
                                 + (", ◎ target)" if targeted else ")")},
                  legend={"orientation": "h", "y": -0.2})
