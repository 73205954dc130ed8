"""The device policy: where models, images, attacks and metrics run. One home for the rule.

A device is named by one of

* ``"auto"`` — CUDA when it is available, else the CPU;
* ``"cpu"``;
* ``"cuda"`` — the current CUDA device (``cuda:LOCAL_RANK`` under torchrun);
* ``"cuda:N"`` — CUDA device N.

Under torchrun (``LOCAL_RANK`` in the environment) ``auto`` and ``cuda`` give each rank its own GPU,
``cuda:LOCAL_RANK``, so K ranks on a node with K GPUs never share one. The app reads its device from
the environment variable ``SOAE_DEVICE`` (default ``auto``); the CLIs take ``--device``.

Anything that leaves the device — a figure, a table, a download, a JSON record — goes through
:func:`to_cpu`, the one place results are brought back to host memory.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

DEVICE_ENV = "SOAE_DEVICE"
DEVICE_CHOICES_TEXT = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")

T = TypeVar("T")


def available_devices() -> list[str]:
    """The devices this process can use: ``["cpu", "cuda:0", …]``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


def local_rank() -> int | None:
    """This process's rank on its node under torchrun (``LOCAL_RANK``), None outside torchrun."""
    value = os.environ.get("LOCAL_RANK")
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"LOCAL_RANK must be a non-negative integer (set by torchrun), got {value!r}")
    return int(value)


def _cuda_device(index: int, spec: str) -> torch.device:
    devices = available_devices()
    if f"cuda:{index}" not in devices:
        reason = "CUDA is not available in this process" if len(devices) == 1 else \
            f"this machine has {len(devices) - 1} CUDA device(s)"
        raise ValueError(f"device {spec!r} is not available ({reason}); available: {', '.join(devices)}")
    return torch.device("cuda", index)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` named by ``spec`` (see the module docstring; None means ``auto``).

    Raises ValueError naming the allowed spellings for an unknown name, and the devices that
    exist for one that is not available here (``cuda`` without CUDA, ``cuda:3`` on a 2-GPU node).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None:
        spec = "auto"
    if not isinstance(spec, str):
        raise ValueError(f"device must be {DEVICE_CHOICES_TEXT}, got {spec!r} ({type(spec).__name__})")
    name = spec.strip().lower()
    rank = local_rank()
    if name == "auto":
        return _cuda_device(rank or 0, "auto") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        return _cuda_device(rank if rank is not None else (torch.cuda.current_device()
                                                            if torch.cuda.is_available() else 0), spec)
    match = _CUDA_INDEX.match(name)
    if match:
        return _cuda_device(int(match.group(1)), spec)
    raise ValueError(f"device must be {DEVICE_CHOICES_TEXT}, got {spec!r}; available here: "
                     f"{', '.join(available_devices())}")


def device_from_env(default: str = "auto") -> torch.device:
    """The app's device: ``$SOAE_DEVICE`` resolved by :func:`resolve_device` (``default`` when unset).

    A bad value raises ValueError naming the variable, so the app can show it instead of a traceback.
    """
    spec = os.environ.get(DEVICE_ENV, default)
    try:
        return resolve_device(spec)
    except ValueError as exc:
        raise ValueError(f"{DEVICE_ENV}={spec!r}: {exc}") from None


def describe_device(device: torch.device | str) -> str:
    """A short label for people: ``"CPU"`` or ``"CUDA 0 — NVIDIA H200"``."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type.upper()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"CUDA {index} — {torch.cuda.get_device_name(index)}"


def to_cpu(value: T) -> T:
    """``value`` with every tensor inside it detached and on the CPU (the one exit from the device).

    Walks tensors, dicts, lists, tuples (named ones too) and dataclass instances; anything else
    is returned as it is. A container holding no tensor is returned itself, not rebuilt, and a
    tensor already on the CPU is returned detached, without a copy.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()  # type: ignore[return-value]
    if isinstance(value, Mapping):
        items = {k: to_cpu(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else type(value)(items)  # type: ignore[call-arg]
    if isinstance(value, (list, tuple)):
        parts = [to_cpu(v) for v in value]
        if all(p is v for p, v in zip(parts, value, strict=False)):
            return value
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*parts)  # type: ignore[return-value]
        return type(value)(parts)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value) if f.init]
        changes = {name: to_cpu(getattr(value, name)) for name in fields}
        if all(changes[name] is getattr(value, name) for name in fields):
            return value
        return dataclasses.replace(value, **changes)
    return value


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (CUDA kernels run asynchronously); no-op on the CPU.

    Call it before reading a wall clock around device work, or the time measured is the launch's.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_device_argument(parser: Any, help_suffix: str = "") -> None:
    """Add ``--device`` (default ``auto``) to an argparse parser; every CLI uses this one definition."""
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICE_CHOICES_TEXT} (auto: CUDA when available, else CPU; under torchrun "
                             f"each rank takes cuda:LOCAL_RANK){help_suffix}")
