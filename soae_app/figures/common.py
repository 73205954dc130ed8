"""What every page's figures share: the colours (colour-blind safe, readable on a projector),
the layout, images enlarged for display and the scale of δ."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.colors import get_colorscale

# Colour-blind-safe (Okabe–Ito) colours, readable on a projector.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
FONT = {"size": 15}
# What a table shows in a cell whose number does not apply (NaN/None: the clean row's Fooled and Time on
# Compare & Sweeps, a model card's missing numbers): st.dataframe(..., placeholder=NOT_APPLICABLE).
NOT_APPLICABLE = "—"
# One colour per attack on every chart.
ATTACK_COLOURS = {"SOAE": PALETTE[0], "FGSM": PALETTE[1], "PGD": PALETTE[2], "AutoAttack": PALETTE[3],
                  "ASOD": PALETTE[4], "SOAE-g": PALETTE[5]}


def display_image(image: np.ndarray, min_size: int = 168) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H', W') or (H', W', 3), enlarged by pixel repetition (crisp pixels,
    no blur) until the short side is at least ``min_size``."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    factor = max(1, int(np.ceil(min_size / min(array.shape[-2:]))))
    array = array.repeat(factor, axis=-2).repeat(factor, axis=-1)
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


@st.cache_data(show_spinner=False, max_entries=1024)
def display_png(image: np.ndarray, min_size: int = 168) -> bytes:
    """:func:`display_image` as 8-bit PNG bytes, for ``st.image(..., output_format="PNG")``.

    Lossless on purpose: given an array, ``st.image`` sends a JPEG, whose artefacts blur the
    enlarged pixels and distort a perturbation of a few /255 — the very thing shown. Cached (the
    same image is drawn on every rerun of every session), so a rerun encodes nothing. zlib level 1:
    several times faster to encode than the default level, in the server's shared GIL (a cold
    Attack Lab view encodes 5 to 15 of them), for a slightly larger file."""
    array = (display_image(image, min_size) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def figure_from_spec(data: list[dict[str, Any]], layout_spec: dict[str, Any], height: int) -> go.Figure:
    """A figure from plain trace and layout dicts, with the app's common layout at ``height`` pixels.

    Built without plotly's per-property validation (``_validate=False``): on the Attack Lab this
    takes ~2 ms where ``make_subplots`` + ``update_*`` took ~60–180 ms per figure, all of it in the
    server's shared script threads (measured, bench/results/classroom_*). tests/test_figures.py
    validates every figure built this way against plotly's schema instead.
    """
    spec = {"height": height, "font": FONT, "margin": {"l": 10, "r": 10, "t": 50, "b": 10}, "plot_bgcolor": "white",
            **layout_spec}
    # Validation would also have turned a named colour scale into its colours: plotly.js knows
    # neither Python's names ("Magma") nor their reversal ("RdBu_r") and would draw its default.
    data = [{**trace, "colorscale": get_colorscale(trace["colorscale"])} if isinstance(trace.get("colorscale"), str)
            else trace for trace in data]
    return go.Figure({"data": data, "layout": spec}, _validate=False)


def subplot_grid(rows: int, cols: int, col_titles: list[str], row_titles: list[str] | None = None,
                 spacing: tuple[float, float] = (0.02, 0.04)) -> tuple[list[list[tuple[str, str]]], dict[str, Any]]:
    """A grid of subplots as plain dicts — what ``make_subplots(rows, cols, column_titles=…,
    row_titles=…, horizontal_spacing, vertical_spacing)`` lays out, without its cost: the (xaxis,
    yaxis) references of each panel, [row][col] from the top left, for its traces, and the layout
    entries — one x/y axis pair per panel (dicts to extend) and the titles as annotations (columns
    above, rows on the right). ``spacing``: (horizontal, vertical) gaps, fractions of the figure."""
    horizontal, vertical = spacing
    full = 0.98 if row_titles else 1.0  # make_subplots leaves room for row titles on the right
    width = (full - horizontal * (cols - 1)) / cols
    height = (1 - vertical * (rows - 1)) / rows
    references, entries, annotations = [], {}, []
    for row in range(rows):
        top = 1 - row * (height + vertical)
        references.append([])
        for col in range(cols):
            index = row * cols + col
            suffix = "" if index == 0 else str(index + 1)
            left = col * (width + horizontal)
            references[row].append((f"x{suffix}", f"y{suffix}"))
            entries[f"xaxis{suffix}"] = {"domain": [left, left + width], "anchor": f"y{suffix}"}
            entries[f"yaxis{suffix}"] = {"domain": [max(top - height, 0.0), top], "anchor": f"x{suffix}"}
    title = {"xref": "paper", "yref": "paper", "showarrow": False, "font": {"size": 16}}
    for col, text in enumerate(col_titles):
        if text:  # make_subplots draws no annotation for an empty title
            annotations.append({**title, "text": text, "x": col * (width + horizontal) + width / 2, "y": 1.0,
                                "xanchor": "center", "yanchor": "bottom"})
    for row, text in enumerate(row_titles or []):
        if text:
            annotations.append({**title, "text": text, "x": full, "y": 1 - row * (height + vertical) - height / 2,
                                "xanchor": "left", "yanchor": "middle", "textangle": 90})
    entries["annotations"] = annotations
    return references, entries


def image_axes(entries: dict[str, Any]) -> None:
    """Turn the panels of :func:`subplot_grid`'s layout ``entries`` into image panels, in place: no
    ticks, tick labels, grid or zero lines, square pixels, rows top-down, each panel's domain shrunk
    to its image. Each y axis keeps pixels square against its own x axis (anchoring every panel to
    the first one's x instead left panels unequal: the anchor's constraints do not follow the others'
    domains)."""
    bare = {"showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False, "constrain": "domain"}
    for key, axis in entries.items():
        if key.startswith("xaxis"):
            axis.update(bare)
        elif key.startswith("yaxis"):
            axis.update(bare, autorange="reversed", scaleanchor=axis["anchor"])


def subplot_row(titles: list[str], spacing: float) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """One row of ``len(titles)`` subplots (``make_subplots(rows=1, cols=n, subplot_titles=titles,
    horizontal_spacing=spacing)``): :func:`subplot_grid`'s references of that row and its entries."""
    references, entries = subplot_grid(1, len(titles), titles, spacing=(spacing, 0.0))
    return references[0], entries


def layout(figure: go.Figure, height: int, **kwargs) -> go.Figure:
    """The app's common layout (font, margins, white background) at ``height`` pixels."""
    figure.update_layout(height=height, font=FONT, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                         plot_bgcolor="white", **kwargs)
    return figure


def attack_colour(name: str, position: int = 0) -> str:
    """The attack's colour (:data:`ATTACK_COLOURS`); other names take a palette colour by position."""
    return ATTACK_COLOURS.get(name, PALETTE[(5 + position) % len(PALETTE)])


def delta_limit(eps: float) -> float:
    """The end of δ's colour scale in units of 1/255: ε (a tiny floor so ε = 0 still draws)."""
    return max(eps * 255, 1e-3)
