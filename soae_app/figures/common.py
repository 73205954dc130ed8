"""What every page's figures share: the colours (colour-blind safe, readable on a projector),
the layout, images enlarged for display and the scale of δ."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# Colour-blind-safe (Okabe–Ito) colours, readable on a projector.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
FONT = {"size": 15}
# One colour per attack on every chart.
ATTACK_COLOURS = {"SOAE": PALETTE[0], "FGSM": PALETTE[1], "PGD": PALETTE[2], "AutoAttack": PALETTE[3],
                  "ASOD": PALETTE[4], "SOAE-g": PALETTE[5]}


def display_image(image: np.ndarray, min_size: int = 168) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H', W') or (H', W', 3) for ``st.image``, enlarged by pixel
    repetition (crisp pixels, no blur) until the short side is at least ``min_size``."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    factor = max(1, int(np.ceil(min_size / min(array.shape[-2:]))))
    array = array.repeat(factor, axis=-2).repeat(factor, axis=-1)
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


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
