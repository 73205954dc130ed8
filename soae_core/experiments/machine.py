"""The machine results were measured on, for model cards, evaluation reports and benchmarks."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (the platform's processor or machine name elsewhere)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine_facts() -> dict[str, Any]:
    """CPU model, core count, torch threads, OS, Python and torch versions (for model cards)."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def describe_machine() -> str:
    """One line: CPU model, core count, torch version and threads, GPU if any, Python version,
    load average (for reports and benchmarks)."""
    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, Python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f}")
