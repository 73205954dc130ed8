"""Argument checks shared by the library: every failure is a ValueError that names the
parameter, what it got and what is allowed."""

from __future__ import annotations

import math
import numbers

import torch


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is a finite real number > 0 (>= 0 with allow_zero)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if allow_zero and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if not allow_zero and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_open_interval(name: str, value: object, low: float, high: float) -> float:
    """Return ``value`` as float if it lies strictly inside (low, high)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in ({low}, {high}), got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low < value < high):
        raise ValueError(f"{name} must lie in the open interval ({low}, {high}), got {value}")
    return value


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer (not bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value  # type: ignore[return-value]


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """Check an image batch: a floating tensor of shape (N, C, H, W), finite, values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got an empty batch")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; images must be finite in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return x


def check_labels(y: object, batch_size: int, num_classes: int, name: str = "y") -> torch.Tensor:
    """Check class labels: an integer tensor of shape (batch_size,) with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape ({batch_size},), got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (int64), got {y.dtype}")
    if tuple(y.shape) != (batch_size,):
        raise ValueError(f"{name} must have shape ({batch_size},) to match the images, got {tuple(y.shape)}")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} must hold class indices in [0, {num_classes - 1}], got values in [{low}, {high}]")
    return y.long()
