"""SOAE Lab core: Hessian-free second-order adversarial examples (Qian et al.) and friends.

Images everywhere are float tensors in [0, 1], shape (N, C, H, W); any normalisation lives
inside the model. Models return logits of shape (N, num_classes).
"""

from pathlib import Path

__version__ = "0.1.0"  # the one source of the version (pyproject.toml reads it)


def bundled_assets_dir() -> Path:
    """The bundled models (``models/``) and samples (``samples/``): ``assets/`` of a checkout, or
    ``soae_core/assets/`` inside an installed wheel (pyproject.toml maps the one onto the other)."""
    installed = Path(__file__).resolve().parent / "assets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "assets"
