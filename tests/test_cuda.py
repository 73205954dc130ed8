"""The CUDA path: the engine, one attack of each kind on a CUDA device. Skipped without a GPU.

These are the tests ``bench/gpu_check.py`` runs on a GPU machine (marker ``cuda``). On a machine
without CUDA they skip; nothing here stands in for a CPU test.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cnn

from soae_core.attacks import ATTACKS, SOAE
from soae_core.data import load_samples
from soae_core.device import resolve_device
from soae_core.models import load_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_engine_on_cuda_matches_cpu_in_float64(images_8x8):
    device = resolve_device("cuda")
    model = tiny_cnn()
    labels = model(images_8x8).argmax(1)
    cpu = SOAE(model, eps=0.1, hvp="exact", steps=2, tau=1e-8, max_krylov=20)(images_8x8, labels)
    gpu_model = tiny_cnn().to(device)
    gpu = SOAE(gpu_model, eps=0.1, hvp="exact", steps=2, tau=1e-8, max_krylov=20)(images_8x8.to(device),
                                                                                   labels.to(device))
    assert gpu.adv.device.type == "cuda"
    for it_cpu, it_gpu in zip(cpu.trace.iterations, gpu.trace.iterations, strict=False):
        assert torch.allclose(it_gpu.direction.cpu(), it_cpu.direction, rtol=1e-6, atol=1e-9)
        assert torch.equal(it_gpu.krylov.iterations.cpu(), it_cpu.krylov.iterations)
    assert torch.allclose(gpu.adv.cpu(), cpu.adv, atol=1e-9)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_each_attack_runs_on_cuda_like_on_cpu(name):
    device = resolve_device("cuda")
    samples = load_samples("fashion_mnist")
    x, y = samples.images[:32], samples.labels[:32]
    kwargs = {"seed": 0} if name in ("ASOD", "AutoAttack") else {}
    cpu = ATTACKS[name](load_model("fmnist-cnn-std"), eps=8 / 255, **kwargs)(x, y)
    model = load_model("fmnist-cnn-std", device=device)
    gpu = ATTACKS[name](model, eps=8 / 255, **kwargs)(x.to(device), y.to(device))
    assert gpu.adv.device.type == "cuda"
    assert float((gpu.adv.cpu() - x).abs().max()) <= 8 / 255 + 1e-6
    with torch.no_grad():
        acc_cpu = float((load_model("fmnist-cnn-std")(cpu.adv).argmax(1) == y).float().mean())
        acc_gpu = float((model(gpu.adv).argmax(1).cpu() == y).float().mean())
    # float32 on another device: a sign may flip where a gradient is ~0; outcomes nearly equal
    assert abs(acc_gpu - acc_cpu) <= 3 / 32
