"""Your own weights: an uploaded .safetensors checkpoint, read in memory, for one of the zoo's
architectures; pickles refused with the reason; size, key, shape and architecture mismatches named."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save as save_bytes

from soae_core.data import load_samples
from soae_core.models import (
    MAX_UPLOAD_BYTES,
    build_model,
    bundled_models_dir,
    load_model,
    load_uploaded_model,
    save_state_dict,
    upload_architectures,
)


def _bytes(name: str) -> bytes:
    return (bundled_models_dir() / f"{name}.safetensors").read_bytes()


def test_upload_of_a_bundled_checkpoint_gives_the_same_model():
    upload = load_uploaded_model("small-cnn", _bytes("fmnist-cnn-pgd"), "my weights.safetensors")
    images = load_samples("fashion_mnist").images[:20]
    with torch.no_grad():
        assert torch.equal(upload.model(images), load_model("fmnist-cnn-pgd")(images))
    digest = hashlib.sha256(_bytes("fmnist-cnn-pgd")).hexdigest()
    assert upload.digest == digest and upload.info.weights_path is None
    assert upload.info.name == f"my weights.safetensors (small-cnn, {digest[:8]})"
    assert upload.info.class_names[0] == "T-shirt/top" and upload.info.input_shape == (1, 28, 28)
    assert not upload.model.training and not any(p.requires_grad for p in upload.model.parameters())


def test_architecture_choices_cover_the_zoo():
    assert upload_architectures() == {"small-cnn": "fmnist-cnn-std", "small-cnn-smooth": "fmnist-cnn-smooth-std",
                                      "resnet18-cifar": "cifar10-resnet18", "wrn-34-10": "cifar10-wrn",
                                      "resnet18": "imagenet-resnet18", "resnet50": "imagenet-resnet50"}
    with pytest.raises(ValueError, match="architecture must be one of"):
        load_uploaded_model("vgg16", _bytes("fmnist-cnn-std"), "w.safetensors")


def test_recorded_architecture_must_match(tmp_path):
    path = tmp_path / "smooth.safetensors"
    save_state_dict(build_model("fmnist-cnn-smooth-std"), path, metadata={"architecture": "small-cnn-smooth"})
    data = path.read_bytes()
    # Same keys and shapes as small-cnn: only the recorded architecture tells them apart.
    with pytest.raises(ValueError, match="holds weights for the 'small-cnn-smooth' architecture .* not 'small-cnn'"):
        load_uploaded_model("small-cnn", data, path.name)
    upload = load_uploaded_model("small-cnn-smooth", data, path.name)
    assert upload.metadata == {"architecture": "small-cnn-smooth"}


def test_pickles_are_refused_with_the_reason_and_without_unpickling(monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a pickle was unpickled"))
    buffer = io.BytesIO()
    torch.save(build_model("fmnist-cnn-std").state_dict(), buffer)
    for name in ("weights.pt", "weights.pth", "weights.ckpt", "weights"):
        with pytest.raises(ValueError, match=r"was refused: it is a PyTorch pickle, and unpickling a file can run any "
                                             r"code .* safetensors"):
            load_uploaded_model("small-cnn", buffer.getvalue(), name)
    with pytest.raises(ValueError, match="refused: it is a PyTorch pickle"):
        load_uploaded_model("small-cnn", pickle.dumps({"a": 1}), "evil.bin")


def test_wrong_file_types_sizes_and_contents_are_named():
    with pytest.raises(ValueError, match=r"'w.png' is not a .safetensors file \(got '.png'\)"):
        load_uploaded_model("small-cnn", b"\x89PNG\r\n\x1a\n", "w.png")
    with pytest.raises(ValueError, match="'w.safetensors' is empty"):
        load_uploaded_model("small-cnn", b"", "w.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_uploaded_model("small-cnn", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "w.safetensors")
    too_big = b"\x00" * (MAX_UPLOAD_BYTES + 1)
    with pytest.raises(ValueError, match=r"is 50.0 MB; uploads may be at most 50 MB"):
        load_uploaded_model("small-cnn", too_big, "w.safetensors")


def test_key_and_shape_mismatches_are_named():
    state = {k: v.clone() for k, v in build_model("fmnist-cnn-std").state_dict().items()}
    state["classifier.3.weight"] = torch.zeros(7, 128)
    state["extra.bias"] = torch.zeros(3)
    del state["features.0.bias"]
    with pytest.raises(ValueError) as info:
        load_uploaded_model("small-cnn", save_bytes(state), "w.safetensors")
    message = str(info.value)
    assert "missing keys: features.0.bias" in message and "unexpected keys: extra.bias" in message
    assert "classifier.3.weight: file (7, 128) vs model (10, 128)" in message


def test_nothing_is_written_to_disk(tmp_path, monkeypatch):
    data = _bytes("fmnist-cnn-std")
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            pytest.fail(f"the upload wrote to {file}")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    load_uploaded_model("small-cnn", data, "w.safetensors")
    assert os.listdir(tmp_path) == []
