"""The model zoo: a name → architecture, dataset, input shape, class names, weights source, card.

Bundled Fashion-MNIST checkpoints live in ``assets/models/<name>.safetensors`` with a model card
``<name>.json`` beside them. CIFAR-10 architectures come without weights (users bring theirs).
ImageNet ResNets use torchvision's official weights from the torch hub cache, downloaded on
first load when the network allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from soae_core import bundled_assets_dir
from soae_core.models.cifar_resnet import CifarResNet18
from soae_core.models.imagenet_resnet import ImageNetResNet
from soae_core.models.small_cnn import SmallCNN
from soae_core.models.weights import fit_state_dict, read_state_dict
from soae_core.models.wide_resnet import WideResNet
from soae_core.validation import check_choice

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_CLASSES = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])

DEFAULT_MODEL = "fmnist-cnn-std"
_DTYPES = (torch.float32, torch.float64)


def bundled_models_dir() -> Path:
    """assets/models/ of this checkout (soae_core/assets/models in a wheel); override with the
    SOAE_MODELS_DIR environment variable."""
    return Path(os.environ.get("SOAE_MODELS_DIR", bundled_assets_dir() / "models"))


@dataclass(frozen=True)
class _Spec:
    name: str
    dataset: str
    architecture: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    method: str
    source: str  # "bundled", "user" or "torchvision"
    description: str
    torchvision_weights: Any = None


def _fmnist(name: str, method: str, smooth: bool, description: str) -> _Spec:
    arch = "small-cnn-smooth" if smooth else "small-cnn"
    build = (lambda: SmallCNN(activation="silu", pooling="avg")) if smooth else (lambda: SmallCNN())
    return _Spec(name, "fashion_mnist", arch, build, (1, 28, 28), FASHION_MNIST_CLASSES, method, "bundled", description)


_SPECS: dict[str, _Spec] = {s.name: s for s in [
    _fmnist("fmnist-cnn-std", "std", False, "Small ReLU CNN, standard training."),
    _fmnist("fmnist-cnn-pgd", "pgd", False, "Small ReLU CNN, PGD adversarial training (Madry et al.)."),
    _fmnist("fmnist-cnn-trades", "trades", False, "Small ReLU CNN, TRADES (β = 6)."),
    _fmnist("fmnist-cnn-soat", "soat", False, "Small ReLU CNN, second-order adversarial training on SOAE examples (eq. 15)."),
    _fmnist("fmnist-cnn-smooth-std", "std", True,
            "Smooth twin (SiLU + average pooling), standard training: full-rank input Hessian."),
    _Spec("cifar10-resnet18", "cifar10", "resnet18-cifar", CifarResNet18, (3, 32, 32), CIFAR10_CLASSES, "user",
          "user", "ResNet-18 with the CIFAR stem; bring your own CIFAR-10 weights (torchvision key names)."),
    _Spec("cifar10-wrn", "cifar10", "wrn-34-10", WideResNet, (3, 32, 32), CIFAR10_CLASSES, "user",
          "user", "WideResNet-34-10; bring your own CIFAR-10 weights (TRADES/RobustBench key names)."),
    _Spec("imagenet-resnet18", "imagenet", "resnet18", lambda: ImageNetResNet(18), (3, 224, 224), IMAGENET_CLASSES,
          "std", "torchvision", "torchvision ResNet-18, official ImageNet weights (IMAGENET1K_V1).",
          ResNet18_Weights.IMAGENET1K_V1),
    _Spec("imagenet-resnet50", "imagenet", "resnet50", lambda: ImageNetResNet(50), (3, 224, 224), IMAGENET_CLASSES,
          "std", "torchvision", "torchvision ResNet-50, official ImageNet weights (IMAGENET1K_V2).",
          ResNet50_Weights.IMAGENET1K_V2),
]}


@dataclass(frozen=True)
class ModelInfo:
    """A registry record. ``available`` False comes with a one-line ``reason``; ``card`` is the model card."""

    name: str
    dataset: str
    architecture: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    method: str
    available: bool
    reason: str
    description: str
    weights_path: str | None
    card: dict[str, Any] | None = field(default=None, compare=False)


def model_names() -> list[str]:
    """All registered names, the default model first."""
    return list(_SPECS)


def _hub_cache_file(spec: _Spec) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.torchvision_weights.url)


def _weights_file(spec: _Spec) -> Path | None:
    if spec.source == "bundled":
        return bundled_models_dir() / f"{spec.name}.safetensors"
    if spec.source == "torchvision":
        return _hub_cache_file(spec)
    return None


def _availability(spec: _Spec) -> tuple[bool, str]:
    path = _weights_file(spec)
    if spec.source == "user":
        return False, "no bundled CIFAR-10 weights: load your own with weights_path=..."
    if path is not None and path.is_file():
        return True, ""
    if spec.source == "bundled":
        return False, f"checkpoint {path.name} not trained yet (python -m soae_core.train --model {spec.name})"
    return False, f"ImageNet weights not in the torch hub cache ({path}); they download on first load when online"


def _read_card(spec: _Spec) -> dict[str, Any] | None:
    if spec.source != "bundled":
        return None
    path = bundled_models_dir() / f"{spec.name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def get_model_info(name: str) -> ModelInfo:
    """The registry record of ``name`` (ValueError for an unknown name)."""
    spec = _SPECS[check_choice("name", name, tuple(_SPECS))]
    available, reason = _availability(spec)
    path = _weights_file(spec)
    return ModelInfo(name=spec.name, dataset=spec.dataset, architecture=spec.architecture,
                     input_shape=spec.input_shape, num_classes=len(spec.class_names), class_names=spec.class_names,
                     method=spec.method, available=available, reason=reason, description=spec.description,
                     weights_path=str(path) if path is not None else None, card=_read_card(spec))


def list_models() -> list[ModelInfo]:
    """Every registered model with its metadata; unavailable ones carry a one-line reason."""
    return [get_model_info(name) for name in _SPECS]


def build_model(name: str) -> nn.Module:
    """The untrained architecture of ``name`` (float32, CPU, train mode), e.g. for training."""
    return _SPECS[check_choice("name", name, tuple(_SPECS))].build()


def _download_torchvision_weights(spec: _Spec, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.torchvision_weights.url, str(target), progress=False)
    except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear line
        raise ValueError(f"{spec.name} is unavailable: its weights are not in the torch hub cache ({target}) "
                         f"and the download failed ({type(exc).__name__}: {str(exc)[:120]})") from None


def load_model(name: str, weights_path: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build ``name``, load its weights, and return it in eval mode with frozen parameters.

    weights_path: your own weights for this architecture (.safetensors or a torch.save state dict,
    read without running code); default: the bundled checkpoint / torchvision's official weights.
    dtype: torch.float32 or torch.float64. Raises ValueError for an unknown name, missing weights,
    an unsafe or corrupt file, or a state dict that does not fit (naming the keys/shapes).
    """
    spec = _SPECS[check_choice("name", name, tuple(_SPECS))]
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if weights_path is None:
        path = _weights_file(spec)
        if spec.source == "torchvision" and path is not None and not path.is_file():
            _download_torchvision_weights(spec, path)
        available, reason = _availability(spec)
        if not available:
            raise ValueError(f"{name} is unavailable: {reason}")
        weights_path = path
    model = spec.build()
    fit_state_dict(model, read_state_dict(weights_path), name)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model
