"""Your own weights in the app: uploaded ``.safetensors`` checkpoints, held in memory only.

A session's uploads live in its own ``st.session_state`` (never written to disk, gone with the
session) and are listed only in that session's model picker. So that every cached computation
can load an uploaded model by name, like a bundled one, the bytes are also registered in a small
in-process table keyed by the model's name, which holds the SHA-256 of the bytes: another session
could only reach an entry by uploading the very same file. The table keeps the most recent
:data:`MAX_HELD` uploads; each session re-registers its own on every run, so an evicted entry
returns as soon as its session runs again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from soae_core.models import ModelInfo, build_model, load_uploaded_model, upload_architectures

SESSION_KEY = "soae_lab_uploaded_models"
MAX_HELD = 16
MAX_PER_SESSION = 3


@dataclass(frozen=True)
class Upload:
    """One uploaded checkpoint: its architecture, file name, bytes and registry-style record."""

    architecture: str
    filename: str
    data: bytes
    info: ModelInfo


_held: OrderedDict[str, Upload] = OrderedDict()
_lock = threading.Lock()


def _hold(upload: Upload) -> None:
    with _lock:
        _held[upload.info.name] = upload
        _held.move_to_end(upload.info.name)
        while len(_held) > MAX_HELD:
            _held.popitem(last=False)


def session_uploads() -> dict[str, Upload]:
    """This session's uploads by model name (oldest first), each re-registered for the caches."""
    uploads = st.session_state.setdefault(SESSION_KEY, {})
    for upload in uploads.values():
        _hold(upload)
    return uploads


def add(architecture: str, filename: str, data: bytes) -> ModelInfo:
    """Check and keep an upload for this session; returns its record.

    Raises ValueError (from :func:`soae_core.models.load_uploaded_model`) for a refused or
    mismatching file; then nothing is kept and the session is unchanged.
    """
    info = load_uploaded_model(architecture, data, filename).info
    upload = Upload(architecture=architecture, filename=filename, data=bytes(data), info=info)
    uploads = st.session_state.setdefault(SESSION_KEY, {})
    uploads.pop(info.name, None)
    uploads[info.name] = upload
    while len(uploads) > MAX_PER_SESSION:
        uploads.pop(next(iter(uploads)))
    _hold(upload)
    return info


@st.cache_data(show_spinner=False)
def weights_megabytes(architecture: str) -> float:
    """Size in MB (2**20 bytes) of an architecture's float32 safetensors weights (parameters and buffers)."""
    model = build_model(upload_architectures()[architecture])
    return sum(t.numel() * 4 for t in model.state_dict().values()) / 2**20


def is_upload(name: str) -> bool:
    """True when ``name`` is an uploaded model registered in this process."""
    with _lock:
        return name in _held


def load(name: str, dtype: torch.dtype) -> nn.Module:
    """The frozen model of the registered upload ``name`` (ValueError when it is no longer held)."""
    with _lock:
        upload = _held.get(name)
    if upload is None:
        raise ValueError(f"the uploaded model {name!r} is no longer held; upload it again")
    return load_uploaded_model(upload.architecture, upload.data, upload.filename, dtype=dtype).model
