"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; never code-running pickles.

Errors are ValueErrors that say what went wrong: a file that is not a tensor archive, a pickle
that would need to run code, a state dict whose keys or shapes do not fit the architecture.
Uploads (bytes from a browser) are stricter: safetensors only, at most 50 MB, read in memory —
nothing is written to disk.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file
from torch import nn

# Checkpoints saved by other code often wrap the weights; these keys are unwrapped.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_MAX_LISTED = 8
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# What torch.save writes: a zip archive (PyTorch ≥ 1.6) or a bare pickle (protocol marker 0x80).
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_PICKLE_REASON = ("unpickling a file can run any code it contains on the server, so uploads must be safetensors "
                  "(tensors only). Convert it where you trust it: "
                  "safetensors.torch.save_file(torch.load(path, weights_only=True), 'weights.safetensors') — "
                  "the training CLI (python -m soae_core.train) already writes .safetensors")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file without running code.

    Returns {name: tensor} on the CPU. ``module.`` prefixes (DataParallel) are stripped and a
    dict wrapped under 'state_dict'/'model'/… is unwrapped. Raises ValueError for a missing file,
    a corrupt file, or a pickle holding anything but tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights_path {str(path)!r} does not exist or is not a file")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"weights_path {str(path)!r} is not a readable safetensors file: {exc}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"weights_path {str(path)!r} was refused: it is a pickle that holds more than tensors "
                f"(loading it could run code). Save a plain state dict or use safetensors. Detail: {first_line}"
            ) from None
        except (RuntimeError, EOFError, OSError, AttributeError, TypeError) as exc:
            raise ValueError(f"weights_path {str(path)!r} is not a readable PyTorch weights file: "
                             f"{type(exc).__name__}: {str(exc).strip()[:200]}") from None
    return _plain_state_dict(state, path)


def _plain_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):
        if isinstance(state, dict):
            wrapped = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if wrapped is not None:
                state = wrapped
    if not isinstance(state, dict) or not state:
        raise ValueError(f"weights_path {str(path)!r} does not hold a state dict (got {type(state).__name__})")
    plain = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"weights_path {str(path)!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        plain[key.removeprefix("module.")] = value
    return plain


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], model_name: str) -> None:
    """Load ``state`` into ``model`` strictly; raise ValueError naming missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED]) + (f", … ({len(items)} in all)" if len(items) > _MAX_LISTED else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError(f"the weights do not fit the {model_name} architecture; " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def save_state_dict(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's parameters and buffers as float32 safetensors (contiguous CPU copies).

    metadata: strings stored in the file's header (the training CLI records the zoo model and its
    architecture there, which lets an upload be checked against the architecture it is meant for).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(path), metadata=None if metadata is None else {str(k): str(v) for k, v in metadata.items()})


def _looks_like_pickle(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The free-form ``__metadata__`` of a safetensors file's header ({} when it has none).

    The format starts with an 8-byte little-endian header length and a JSON header; read here
    by hand because safetensors' Python API gives metadata only for files on disk.
    """
    if len(data) < 8:
        return {}
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or 8 + length > len(data):
        return {}
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, ValueError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def read_uploaded_state_dict(data: bytes, filename: str,
                             max_bytes: int = MAX_UPLOAD_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read an uploaded ``.safetensors`` checkpoint from memory: (state dict on the CPU, its metadata).

    Nothing is written to disk. Raises ValueError naming the problem for: no data, more than
    ``max_bytes``, a PyTorch pickle (refused, with the reason and how to convert it), any other
    file type, or bytes that are not a readable safetensors file.
    """
    name = Path(str(filename)).name
    suffix = Path(name).suffix.lower()
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise ValueError(f"{name!r} is empty: upload the .safetensors file the training CLI wrote")
    if len(data) > max_bytes:
        raise ValueError(f"{name!r} is {len(data) / 2**20:.1f} MB; uploads may be at most "
                         f"{max_bytes / 2**20:.0f} MB")
    if suffix in _PICKLE_SUFFIXES or (suffix != ".safetensors" and _looks_like_pickle(bytes(data))):
        raise ValueError(f"{name!r} was refused: it is a PyTorch pickle, and {_PICKLE_REASON}")
    if suffix != ".safetensors":
        raise ValueError(f"{name!r} is not a .safetensors file (got {suffix or 'no extension'!r}); "
                         "upload weights saved with safetensors")
    try:
        state = load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name!r} is not a readable safetensors file: {str(exc)[:200]}") from None
    return _plain_state_dict(state, Path(name)), safetensors_metadata(bytes(data))
