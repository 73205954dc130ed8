"""Shared fixtures: tiny deterministic models for engine tests (no files, no training), random
Fashion-MNIST files for the training tests, and for the app tests a temporary folder of untrained
checkpoints and the check that a page ran cleanly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dataset_files import write_idx_dataset
from torch import nn

# One intra-op thread: on the 2-core machines two torch threads were 5-10x slower whenever
# anything else ran (measured by the training and app benchmarks), and tests run beside servers.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
# The one tolerance table: how closely two computations of the same quantity that differ only in
# rounding (summation order, batched vs alone, matrix-free vs dense) must agree, per dtype.
TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


def tolerance(dtype: torch.dtype, amplification: float = 1.0) -> dict[str, float]:
    """``rtol``/``atol`` for ``torch.testing.assert_close`` from :data:`TOLERANCES`, times
    ``amplification`` where the computation magnifies rounding (a solve's condition number, a
    finite difference's 1/η)."""
    return {key: value * amplification for key, value in TOLERANCES[dtype].items()}


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device here: the CPU, and CUDA when present."""
    return torch.device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Both precisions the library supports."""
    return request.param


def tiny_cnn(activation: type[nn.Module] = nn.ReLU, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A 1×8×8-input CNN with max-pooling and 5 classes, frozen, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), activation(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 16), activation(), nn.Linear(16, 5)).to(dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def tiny_smooth_mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A smooth (Softplus) MLP on 1×3×3 images with 4 classes, frozen, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 12), nn.Softplus(), nn.Linear(12, 4)).to(dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


@pytest.fixture
def images_8x8() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 8, 8, generator=gen, dtype=torch.float64)



@pytest.fixture
def fashion_mnist_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], Path]:
    """For the training tests: call it as (n_train, n_test) to write that many random images and
    labels in <data>/FashionMNIST/raw (torchvision's layout) under tmp_path and point
    SOAE_DATA_DIR at <data>; returns <data>."""
    def write(n_train: int, n_test: int) -> Path:
        data_dir = tmp_path / "data"
        write_idx_dataset(data_dir / "FashionMNIST" / "raw", n_train=n_train, n_test=n_test)
        monkeypatch.setenv("SOAE_DATA_DIR", str(data_dir))
        return data_dir
    return write

# ---------------------------------------------------------------------------------- app tests
@pytest.fixture(scope="module")
def models_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A temporary SOAE_MODELS_DIR holding untrained fmnist-cnn-std and fmnist-cnn-smooth-std
    checkpoints (seed 0), so app tests do not depend on the bundled training runs. A test module
    adds model cards by defining ``MODEL_CARDS = {name: card}``."""
    from soae_core.models import build_model, save_state_dict

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name in ("fmnist-cnn-std", "fmnist-cnn-smooth-std"):
        save_state_dict(build_model(name), folder / f"{name}.safetensors")
    for name, card in getattr(request.module, "MODEL_CARDS", {}).items():
        (folder / f"{name}.json").write_text(json.dumps(card))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOAE_MODELS_DIR", str(folder))
        yield folder


def assert_clean(app) -> None:
    """The AppTest run raised no exception and showed no ``st.error``."""
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
