"""The device policy (soae_core.device): auto/cpu/explicit, torchrun's LOCAL_RANK, clear errors.

CUDA availability is mocked where the rule, not the hardware, is under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch

from soae_core import device as dev


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Pretend this process sees ``count`` CUDA devices (0: none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_is_cpu_without_cuda(monkeypatch, no_torchrun):
    fake_gpus(monkeypatch, 0)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(None) == torch.device("cpu")
    assert dev.available_devices() == ["cpu"]


def test_auto_is_cuda_when_available(monkeypatch, no_torchrun):
    fake_gpus(monkeypatch, 2)
    assert dev.resolve_device("auto") == torch.device("cuda", 0)
    assert dev.available_devices() == ["cpu", "cuda:0", "cuda:1"]


def test_explicit_names(monkeypatch, no_torchrun):
    fake_gpus(monkeypatch, 2)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device(" CPU ") == torch.device("cpu")
    assert dev.resolve_device("cuda") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_torchrun_rank_takes_its_own_gpu(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dev.resolve_device("auto") == torch.device("cuda", 3)
    assert dev.resolve_device("cuda") == torch.device("cuda", 3)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_torchrun_ranks_on_cpu_stay_on_cpu(monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dev.resolve_device("auto") == torch.device("cpu")


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match=r"cuda:0, cuda:1"):
        dev.resolve_device("auto")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "tpu", "", "mps:0"])
def test_unknown_name_lists_allowed_and_available(monkeypatch, no_torchrun, spec):
    fake_gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"'auto', 'cpu', 'cuda' or 'cuda:N'.*available here: cpu, cuda:0"):
        dev.resolve_device(spec)


def test_non_string_is_rejected(no_torchrun):
    with pytest.raises(ValueError, match="device must be"):
        dev.resolve_device(0)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_names_what_exists(monkeypatch, no_torchrun, spec):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(ValueError, match=r"not available \(CUDA is not available.*available: cpu$"):
        dev.resolve_device(spec)


def test_missing_gpu_index_names_what_exists(monkeypatch, no_torchrun):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"'cuda:5' is not available \(this machine has 2 CUDA device\(s\)\); "
                                         r"available: cpu, cuda:0, cuda:1"):
        dev.resolve_device("cuda:5")


def test_bad_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        dev.resolve_device("auto")


def test_app_environment_variable(monkeypatch, no_torchrun):
    fake_gpus(monkeypatch, 0)
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    assert dev.device_from_env() == torch.device("cpu")
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.device_from_env() == torch.device("cpu")
    monkeypatch.setenv(dev.DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match=r"SOAE_DEVICE='cuda'.*available: cpu"):
        dev.device_from_env()


def test_describe_device_cpu():
    assert dev.describe_device("cpu") == "CPU"


class Pair(NamedTuple):
    a: torch.Tensor
    b: int


@dataclass
class Record:
    image: torch.Tensor
    rows: list
    label: str = "x"


def test_to_cpu_walks_containers_and_detaches():
    leaf = torch.ones(2, requires_grad=True)
    value = {"t": leaf * 2, "list": [leaf, 3], "pair": Pair(leaf, 1), "rec": Record(leaf * 3, [leaf]), "s": "k"}
    out = dev.to_cpu(value)
    assert not out["t"].requires_grad and out["t"].device.type == "cpu"
    assert torch.equal(out["t"], torch.full((2,), 2.0))
    assert isinstance(out["pair"], Pair) and not out["pair"].a.requires_grad and out["pair"].b == 1
    assert isinstance(out["rec"], Record) and not out["rec"].image.requires_grad
    assert not out["rec"].rows[0].requires_grad and out["rec"].label == "x"
    assert out["list"][1] == 3 and out["s"] == "k"
    assert leaf.requires_grad  # the input is left as it was


def test_to_cpu_returns_containers_without_tensors_unchanged():
    record = Record(image=None, rows=[1, 2])  # type: ignore[arg-type]
    value = {"a": [1, "x"], "r": record}
    assert dev.to_cpu(value) is value and dev.to_cpu(record) is record


def test_to_cpu_moves_meta_tensors_off_the_device():
    # meta tensors stand in for a device other than the CPU: .cpu() of one must be attempted.
    with pytest.raises(NotImplementedError):
        dev.to_cpu({"x": torch.empty(2, device="meta")})


def test_add_device_argument_defaults_to_auto():
    import argparse

    parser = argparse.ArgumentParser()
    dev.add_device_argument(parser)
    assert parser.parse_args([]).device == "auto"
    assert parser.parse_args(["--device", "cuda:1"]).device == "cuda:1"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_device_resolves_and_round_trips(no_torchrun):
    device = dev.resolve_device("auto")
    assert device.type == "cuda"
    x = torch.arange(4.0, device=device)
    back = dev.to_cpu({"x": x})["x"]
    assert back.device.type == "cpu" and torch.equal(back, torch.arange(4.0))
    assert dev.describe_device(device).startswith(f"CUDA {device.index}")
