"""Plotly figures and display arrays for the app's pages (pure functions of computed results)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from soae_core.krylov_diagnostics import KrylovRecord, Spectrum
from soae_core.lab import IterationView, LabRun, top_k

# Colour-blind-safe (Okabe–Ito) colours, readable on a projector.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
FONT = {"size": 15}


def display_image(image: np.ndarray, min_size: int = 168) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H', W') or (H', W', 3) for ``st.image``, enlarged by pixel
    repetition (crisp pixels, no blur) until the short side is at least ``min_size``."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    factor = max(1, int(np.ceil(min_size / min(array.shape[-2:]))))
    array = array.repeat(factor, axis=-2).repeat(factor, axis=-1)
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


def _layout(figure: go.Figure, height: int, **kwargs) -> go.Figure:
    figure.update_layout(height=height, font=FONT, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                         plot_bgcolor="white", **kwargs)
    return figure


def perturbation_figure(run: LabRun, eps: float) -> go.Figure:
    """One heatmap per attack of δ = x_adv − x (mean over colour channels) in units of 1/255,
    on one diverging colour scale spanning ±ε, so the perturbations are amplified alike."""
    limit = max(eps * 255, 1e-3)
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
    return _layout(figure, 300, title={"text": f"Perturbation δ (red: brighter, blue: darker; scale ±ε = ±{limit:g}/255)"})


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
    return _layout(figure, 320, title={"text": f"Top-5 class probabilities (green: the true class, {true_name})"})


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
    return _layout(figure, 280, showlegend=False, title={"text": "Loss along the SOAE iterations"})


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
    return _layout(figure, 420, title={"text": "GMRES residual (solid: estimate, dotted: true)"})


def m_figure(records: list[KrylovRecord]) -> go.Figure:
    """Krylov dimension m per outer iteration, labelled with how GMRES stopped."""
    figure = go.Figure(go.Bar(x=[r.iteration for r in records], y=[r.m for r in records],
                              text=[f"{r.m}<br>{r.stop_reason}" for r in records], textposition="outside",
                              textfont={"size": 14}, marker_color=PALETTE[0], cliponaxis=False))
    figure.update_xaxes(title="outer iteration n", dtick=1)
    figure.update_yaxes(title="m", range=[0, max([r.m for r in records], default=1) * 1.3])
    return _layout(figure, 420, title={"text": "Krylov dimension m"})


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
    return _layout(figure, 420, title={"text": "Ritz values of the input Hessian (exact products, float64)"},
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
    return _layout(figure, 420, title={"text": "Finite-difference Hessian-vector product: error vs η"})


def margin_gains_figure(gains: pd.DataFrame) -> go.Figure:
    """Grouped bars per wrong class: the first-order gain of its advantage for SOAE's first step along
    g and along δ̃, with the gap it would have to close drawn as a black tick (a bar reaching the tick
    flips the prediction to that class). The nearest wrong class is marked with ★."""
    names = [f"★ {c}" if near else c for c, near in zip(gains["class"], gains["nearest"])]
    figure = go.Figure()
    for column, colour, label in (("along g", PALETTE[1], "step along g (SOAE without curvature)"),
                                  ("along δ̃", PALETTE[0], "step along δ̃ (SOAE)")):
        figure.add_trace(go.Bar(x=names, y=gains[column], name=label, marker_color=colour,
                                hovertemplate="%{x}: Δa = %{y:.3f}<extra>" + label + "</extra>"))
    figure.add_trace(go.Scatter(x=names, y=gains["gap"], mode="markers", name="gap to close (z_y − z_k)",
                                marker={"symbol": "line-ew-open", "size": 34, "color": "#000000",
                                        "line": {"width": 3}},
                                hovertemplate="%{x}: gap %{y:.3f}<extra></extra>"))
    figure.update_yaxes(title_text="change of z_k − z_y (logits)", zeroline=True, zerolinecolor="#888888")
    return _layout(figure, 380, barmode="group",
                   title={"text": "One step, first order: how much each wrong class gains (★ nearest class)"},
                   legend={"orientation": "h", "y": -0.2})
