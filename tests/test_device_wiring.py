"""Every entry point passes the chosen device down: evaluate, train, the app and the benchmarks.

No GPU is needed: CUDA availability is mocked (two GPUs), the device is chosen as ``cuda:1``, and a
spy at the place the model is created records the device it was asked for, then stops the run
(moving a real model to a mocked GPU would fail). Plus the app's sidebar showing its device, a bad
``SOAE_DEVICE`` shown as an error, and the GPU-only checks (one page, one training step), which
skip without CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_clean
from streamlit.testing.v1 import AppTest

from soae_core import evaluate, train
from soae_core.experiments import evaluation, training
from soae_core.experiments.distributed import TORCHRUN_VARIABLES

REPO = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Raised by a spy once it has seen the device."""


def device_spy(seen: list) -> object:
    """A stand-in for a model loader: records its ``device`` argument and stops the run."""
    def spy(*args, device=None, **kwargs):
        seen.append(torch.device(device))
        raise Stop
    return spy


@pytest.fixture
def two_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_evaluate_loads_models_on_the_chosen_device(two_fake_gpus, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(evaluation, "load_model", device_spy(seen))
    with pytest.raises(Stop):
        evaluate.main(["--models", "fmnist-cnn-std", "--n-images", "2", "--device", "cuda:1", "--quiet",
                       "--out", str(tmp_path)])
    assert seen == [torch.device("cuda", 1)]


def test_evaluate_auto_takes_cuda_when_there_is_one(two_fake_gpus, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(evaluation, "load_model", device_spy(seen))
    with pytest.raises(Stop):
        evaluate.main(["--models", "fmnist-cnn-std", "--n-images", "2", "--quiet", "--out", str(tmp_path)])
    assert seen == [torch.device("cuda", 0)]


def test_train_builds_the_model_on_the_chosen_device(two_fake_gpus, monkeypatch, tmp_path):
    seen = []

    class Model:
        def to(self, device):
            seen.append(torch.device(device))
            raise Stop

    monkeypatch.setattr(training, "build_model", lambda name: Model())
    with pytest.raises(Stop):
        train.main(["--device", "cuda:1", "--epochs", "1", "--no-progress", "--out-dir", str(tmp_path),
                    "--checkpoint-dir", str(tmp_path / "ck")])
    assert seen == [torch.device("cuda", 1)]


def test_train_rejects_a_device_that_is_not_there(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.main(["--device", "cuda", "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'cuda' is not available") and err.endswith("available: cpu")


@pytest.mark.usefixtures("models_dir")
def test_app_loads_its_models_on_soae_device(two_fake_gpus, monkeypatch):
    from soae_app import cache
    from soae_core.models import get_model_info

    seen = []
    monkeypatch.setattr(cache, "load_model", device_spy(seen))
    monkeypatch.setenv("SOAE_DEVICE", "cuda:1")
    cache._device_name.clear()
    cache._model.clear()
    try:
        assert cache.device() == torch.device("cuda", 1)
        with pytest.raises(Stop):
            cache.model(get_model_info("fmnist-cnn-std"))
    finally:
        cache._device_name.clear()
        cache._model.clear()
    assert seen == [torch.device("cuda", 1)]


@pytest.mark.usefixtures("models_dir")
def test_sidebar_shows_the_device(monkeypatch):
    app = run_app_on("cpu", monkeypatch)
    assert_clean(app)
    assert any("Computing on **CPU**" in c.value for c in app.sidebar.caption)


def run_app_on(device: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app's first page with ``SOAE_DEVICE=device`` (the device is read once per process: reset)."""
    from soae_app import cache

    monkeypatch.setenv("SOAE_DEVICE", device)
    cache._device_name.clear()
    try:
        return AppTest.from_file("../app.py", default_timeout=300).run()
    finally:
        cache._device_name.clear()


@pytest.mark.usefixtures("models_dir")
def test_bad_soae_device_is_an_error_message_not_a_traceback(monkeypatch):
    app = run_app_on("gpu", monkeypatch)
    assert not app.exception
    assert any("SOAE_DEVICE='gpu'" in e.value and "available here: cpu" in e.value for e in app.error)


@pytest.mark.parametrize("script", ["bench/bench_soae.py", "bench/bench_training.py", "bench/bench_autoattack.py",
                                    "bench/scaling_estimate.py"])
def test_benchmarks_take_the_device_through_the_policy(script):
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the benchmarks import the package as installed
    done = subprocess.run([sys.executable, script, "--device", "tpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode != 0 and "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in done.stderr


# ---------------------------------------------------------------------------------- on a GPU only
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.usefixtures("models_dir")
def test_cuda_attack_lab_page(monkeypatch):
    app = run_app_on("cuda", monkeypatch)
    assert_clean(app)
    assert any("Computing on **CUDA" in c.value for c in app.sidebar.caption)
    assert len(app.dataframe) == 1 and len(app.get("plotly_chart")) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_for_each_method():
    from soae_core.data import load_samples
    from soae_core.experiments.distributed import DistContext
    from soae_core.experiments.training import TrainConfig, make_optimizer, train_one_epoch
    from soae_core.experiments.training_objectives import ObjectiveConfig
    from soae_core.models import build_model

    device = torch.device("cuda")
    samples = load_samples("fashion_mnist")
    for method in ("std", "pgd", "trades", "soat"):
        cfg = TrainConfig(model="fmnist-cnn-std", epochs=1, batch_size=len(samples),
                          objective=ObjectiveConfig(method=method, attack_steps=2, soae_max_krylov=3))
        model = build_model(cfg.model).to(device)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer, _ = make_optimizer(cfg, model)
        record = train_one_epoch(model, optimizer, samples, cfg, 0, progress=False, ctx=DistContext(device=device))
        assert record["loss"] > 0 and all(p.device.type == "cuda" for p in model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False)), method
