"""Figures of the Source × target grid page (pure functions of :mod:`soae_core.analysis.target_grid`'s results)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from soae_core.analysis.target_grid import TargetGrid

# Frame colours (Okabe–Ito): target reached and kept at 8 bits, reached but lost to rounding, missed, original.
REACHED, LOST, MISSED, ORIGINAL = (0, 158, 115), (240, 228, 66), (213, 94, 0), (150, 150, 150)
_CELL, _FRAME, _GAP = 84, 5, 4
_LEFT, _TOP = 118, 58


def _tile(image: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """(C, H, W) in [0, 1] → an RGB tile enlarged by pixel repetition, with a coloured frame."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
    factor = max(1, _CELL // max(array.shape[-2:]))
    array = (array.repeat(factor, axis=1).repeat(factor, axis=2) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    tile = Image.new("RGB", (array.shape[1] + 2 * _FRAME, array.shape[0] + 2 * _FRAME), colour)
    tile.paste(Image.fromarray(array), (_FRAME, _FRAME))
    return tile


def _colour(grid: TargetGrid, i: int, j: int) -> tuple[int, int, int]:
    if i == j:
        return ORIGINAL
    if not grid.success[i, j]:
        return MISSED
    return REACHED if grid.success_8bit[i, j] else LOST


def grid_picture(grid: TargetGrid, class_names: tuple[str, ...]) -> np.ndarray:
    """The K × K images as one labelled RGB picture (H, W, 3) uint8: rows source class (left labels),
    columns target class (top labels), each framed green (target reached, also after 8-bit
    rounding), yellow (reached, lost to rounding), red (missed) or grey (the original, diagonal)."""
    k = grid.success.shape[0]
    tiles = [[_tile(grid.images[i, j], _colour(grid, i, j)) for j in range(k)] for i in range(k)]
    size = tiles[0][0].width + _GAP
    picture = Image.new("RGB", (_LEFT + k * size, _TOP + k * size), "white")
    draw = ImageDraw.Draw(picture)
    font, small = ImageFont.load_default(size=16), ImageFont.load_default(size=14)
    draw.text((_LEFT, 4), "target class (columns)", fill=(60, 60, 60), font=small)
    draw.text((4, 4), "source (rows)", fill=(60, 60, 60), font=small)
    for index in range(k):
        name = class_names[index]
        width = draw.textlength(name, font=font)
        draw.text((_LEFT + index * size + (size - _GAP - width) / 2, _TOP - 26), name, fill="black", font=font)
        draw.text((4, _TOP + index * size + (size - _GAP) / 2 - 9), name, fill="black", font=font)
        for j in range(k):
            picture.paste(tiles[index][j], (_LEFT + j * size, _TOP + index * size))
    return np.asarray(picture)
