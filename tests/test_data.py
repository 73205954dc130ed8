"""Data loading: Fashion-MNIST (Debian IDX .gz), MNIST and CIFAR-10 through torchvision on files
written here, the bundled samples, scikit-image photos, and user images of every kind."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from dataset_files import write_cifar10, write_idx_dataset
from PIL import Image

from soae_core.data import (
    FASHION_MNIST_CLASSES,
    list_photos,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_photo,
    load_samples,
    load_user_image,
)


def test_fashion_mnist_from_debian_gz_files(tmp_path):
    arrays = write_idx_dataset(tmp_path / "debian", n_train=30, n_test=12, gz=True)
    train = load_fashion_mnist("train", root=tmp_path / "data", debian_dir=tmp_path / "debian")
    test = load_fashion_mnist("test", root=tmp_path / "data", debian_dir=tmp_path / "debian")
    assert train.images.shape == (30, 1, 28, 28) and test.images.shape == (12, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["t10k_images"]).float() / 255)
    assert torch.equal(test.labels, torch.from_numpy(arrays["t10k_labels"]).long())
    assert train.class_names == FASHION_MNIST_CLASSES


def test_fashion_mnist_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Fashion-MNIST not found.*dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path, debian_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", root=tmp_path, debian_dir=tmp_path / "none")


def test_mnist_through_torchvision_idx_layout(tmp_path):
    arrays = write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)
    test = load_mnist("test", root=tmp_path)
    assert test.images.shape == (10, 1, 28, 28)
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["t10k_images"]).float() / 255)
    assert test.class_names[3] == "3"


def test_cifar10_through_torchvision_pickle_layout(tmp_path, monkeypatch):
    arrays = write_cifar10(tmp_path, per_batch=4)
    # torchvision checks the official files' MD5 sums, which files written here cannot match.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    train, test = load_cifar10("train", root=tmp_path), load_cifar10("test", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    expected = torch.from_numpy(arrays["test_batch"].reshape(4, 3, 32, 32)).float() / 255
    assert torch.equal(test.images, expected)
    assert test.labels.tolist() == arrays["test_batch_labels"].tolist()
    assert test.class_names[0] == "airplane"


def test_cifar10_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="CIFAR-10 not found"):
        load_cifar10("test", root=tmp_path)


def test_bundled_samples():
    samples = load_samples("fashion_mnist")
    assert samples.images.shape == (200, 1, 28, 28) and samples.images.dtype == torch.float32
    assert 0.0 <= float(samples.images.min()) and float(samples.images.max()) <= 1.0
    assert samples.labels.bincount(minlength=10).tolist() == [20] * 10
    assert samples.class_names == FASHION_MNIST_CLASSES
    with pytest.raises(ValueError, match="dataset"):
        load_samples("imagenet")


@pytest.mark.parametrize("name", list_photos())
def test_photos_at_model_sizes(name):
    photo = load_photo(name, (3, 224, 224))
    assert photo.shape == (1, 3, 224, 224) and photo.dtype == torch.float32
    assert 0.0 <= float(photo.min()) and float(photo.max()) <= 1.0 and float(photo.std()) > 0.01
    assert load_photo(name, (1, 28, 28)).shape == (1, 1, 28, 28)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


@pytest.mark.parametrize("mode,fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"),
                                      ("1", "PNG"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGB", "GIF"),
                                      ("RGB", "BMP"), ("RGB", "TIFF"), ("RGB", "WEBP")])
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32), (3, 224, 224)])
def test_user_images_of_any_mode_become_model_input(mode, fmt, input_shape):
    image = Image.fromarray(_gradient(77, 45)).convert(mode)
    x = load_user_image(_encode(image, fmt), input_shape)
    assert x.shape == (1, *input_shape) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_sixteen_bit_greyscale_keeps_its_contrast():
    array = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    x = load_user_image(_encode(Image.fromarray(array), "PNG"), (1, 28, 28))
    assert float(x.min()) < 0.05 and float(x.max()) > 0.95  # not clipped to white at 255


def test_user_image_content_is_preserved():
    array = np.zeros((56, 56), dtype=np.uint8)
    array[:, 28:] = 255  # left half black, right half white
    x = load_user_image(_encode(Image.fromarray(array), "PNG"), (1, 28, 28))
    assert float(x[0, 0, :, :10].max()) < 0.05 and float(x[0, 0, :, 18:].min()) > 0.95


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR is rewritten to claim width×height (a decompression bomb header)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"this is a text file, not an image", "could not be read as an image"),
    (_encode(Image.new("RGB", (40, 40), "red"), "PNG")[:60], "could not be read as an image"),
    (bytes(range(256)) * 8, "could not be read as an image"),
    (_png_claiming_size(40000, 40000), "too large|could not be read"),
])
def test_unreadable_images_give_clear_errors(data, message):
    with pytest.raises(ValueError, match=message):
        load_user_image(data, (3, 224, 224))


def test_bad_input_shape_is_rejected():
    data = _encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(ValueError, match="channels"):
        load_user_image(data, (4, 28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        load_user_image(data, (28, 28))
