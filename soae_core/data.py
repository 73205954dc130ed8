"""Images to attack and to train on, as float tensors in [0, 1] of shape (N, C, H, W).

- Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files in
  /usr/share/datasets/fashion-mnist), else torchvision's download when online;
- MNIST and CIFAR-10 through torchvision (download when online);
- a bundled sample set (``assets/samples/<dataset>.npz``) so the app and tests need no dataset;
- scikit-image's photographs for the ImageNet models;
- user images (PNG/JPEG/… of any size, mode or channel count) → one tensor at a model's input size.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.utils import extract_archive

from soae_core import bundled_assets_dir
from soae_core.validation import check_choice, check_int

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SAMPLE_DATASETS = ("fashion_mnist",)
# scikit-image photographs that ship with the package (no download) and show ImageNet-like objects.
PHOTOS = {"astronaut": "astronaut", "chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket",
          "motorcycle": "stereo_motorcycle", "camera": "camera"}
MAX_USER_IMAGE_PIXELS = 50_000_000


@dataclass
class SampleSet:
    """images: float32 (N, C, H, W) in [0, 1]; labels: int64 (N,); class_names: one name per class."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_data_dir() -> Path:
    """Where torchvision datasets are kept: $SOAE_DATA_DIR or ~/.cache/soae_lab/data."""
    return Path(os.environ.get("SOAE_DATA_DIR", Path.home() / ".cache" / "soae_lab" / "data"))


def samples_dir() -> Path:
    """The bundled samples: assets/samples/ of this checkout (soae_core/assets/samples in a wheel)."""
    return bundled_assets_dir() / "samples"


def _from_uint8(data: torch.Tensor | np.ndarray, channels_last: bool) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(data))
    images = images.permute(0, 3, 1, 2) if channels_last else images.unsqueeze(1)
    return images.contiguous().float().div_(255.0)


def _place_debian_idx(root: Path, debian_dir: Path) -> None:
    """Unpack the Debian IDX .gz files into <root>/FashionMNIST/raw/, where torchvision reads them."""
    raw = root / "FashionMNIST" / "raw"
    for gz in sorted(debian_dir.glob("*-ubyte.gz")):
        if not (raw / gz.stem).is_file():
            raw.mkdir(parents=True, exist_ok=True)
            extract_archive(str(gz), str(raw))  # writes raw/<name without .gz>


def _open_torchvision(dataset_cls: type, label: str, folder: str, split: str, root: str | Path | None,
                      download: bool, hint: str = "") -> object:
    """Instantiate a torchvision dataset class; a missing/corrupt dataset becomes a ValueError."""
    check_choice("split", split, SPLITS)
    root = Path(root) if root is not None else default_data_dir()
    try:
        return dataset_cls(str(root), train=split == "train", download=download)
    except RuntimeError as exc:
        raise ValueError(f"{label} not found in {root}/{folder}/{hint}; pass download=True when online "
                         f"({exc})") from None


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool = False,
                       debian_dir: str | Path = DEBIAN_FASHION_MNIST_DIR) -> SampleSet:
    """Fashion-MNIST ``split`` ('train': 60 000, 'test': 10 000 images), images (N, 1, 28, 28) in [0, 1].

    Uses the Debian package's IDX files when present, else files already in ``root``, else
    torchvision's download when ``download`` is True. ValueError when none of these works.
    """
    if Path(debian_dir).is_dir():
        _place_debian_idx(Path(root) if root is not None else default_data_dir(), Path(debian_dir))
    ds = _open_torchvision(torchvision.datasets.FashionMNIST, "Fashion-MNIST", "FashionMNIST/raw", split, root,
                           download, hint=" (or install the Debian package dataset-fashion-mnist)")
    return SampleSet(_from_uint8(ds.data, channels_last=False), ds.targets.long(), FASHION_MNIST_CLASSES)


def load_mnist(split: str = "train", root: str | Path | None = None, download: bool = False) -> SampleSet:
    """MNIST through torchvision (IDX files in <root>/MNIST/raw/); images (N, 1, 28, 28) in [0, 1]."""
    ds = _open_torchvision(torchvision.datasets.MNIST, "MNIST", "MNIST/raw", split, root, download)
    return SampleSet(_from_uint8(ds.data, channels_last=False), ds.targets.long(), MNIST_CLASSES)


def load_cifar10(split: str = "train", root: str | Path | None = None, download: bool = False) -> SampleSet:
    """CIFAR-10 through torchvision (<root>/cifar-10-batches-py/); images (N, 3, 32, 32) in [0, 1]."""
    ds = _open_torchvision(torchvision.datasets.CIFAR10, "CIFAR-10", "cifar-10-batches-py", split, root, download)
    return SampleSet(_from_uint8(ds.data, channels_last=True), torch.as_tensor(ds.targets).long(),
                     tuple(ds.classes))


def load_samples(dataset: str = "fashion_mnist") -> SampleSet:
    """The bundled sample set ``assets/samples/<dataset>.npz`` (test-set images with labels)."""
    check_choice("dataset", dataset, SAMPLE_DATASETS)
    path = samples_dir() / f"{dataset}.npz"
    if not path.is_file():
        raise ValueError(f"bundled samples {path} are missing; run python -m soae_core.make_samples")
    with np.load(path, allow_pickle=False) as npz:
        images = _from_uint8(npz["images"], channels_last=False)
        labels = torch.as_tensor(npz["labels"]).long()
        class_names = tuple(str(c) for c in npz["class_names"])
    return SampleSet(images, labels, class_names)


def list_photos() -> list[str]:
    """Names of the scikit-image photographs offered for the ImageNet models."""
    return list(PHOTOS)


def _to_model_input(image: Image.Image, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """PIL image → (1, C, H, W) float in [0, 1]: resize the short side, centre-crop to (H, W)."""
    channels, height, width = input_shape
    image = image.convert("L" if channels == 1 else "RGB")
    tensor = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    tensor = TF.resize(tensor, [min(height, width)] if height == width else [height, width], antialias=True)
    tensor = TF.center_crop(tensor, [height, width])
    if channels not in (1, 3):
        raise ValueError(f"input_shape must have 1 or 3 channels, got {channels}")
    return tensor.clamp(0.0, 1.0).unsqueeze(0).contiguous()


def _check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3):
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
    channels, height, width = (check_int("input_shape", v) for v in input_shape)
    if channels not in (1, 3):
        raise ValueError(f"input_shape must have 1 or 3 channels, got {channels}")
    return channels, height, width


def load_photo(name: str, input_shape: tuple[int, int, int] = (3, 224, 224)) -> torch.Tensor:
    """A scikit-image photograph as (1, C, H, W) in [0, 1] (short side resized, centre crop)."""
    import skimage.data

    check_choice("name", name, tuple(PHOTOS))
    array = getattr(skimage.data, PHOTOS[name])()
    array = array[0] if isinstance(array, tuple) else array
    return _to_model_input(Image.fromarray(np.asarray(array)), _check_input_shape(input_shape))


def _rescale_wide_mode(image: Image.Image) -> Image.Image:
    """16-bit/32-bit/float greyscale → 8-bit by its own range (PIL's convert would clip at 255)."""
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def load_user_image(data: bytes, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Decode an uploaded image (PNG, JPEG, GIF, BMP, TIFF, WebP; any size, mode or channel count).

    Returns (1, C, H, W) float32 in [0, 1] at ``input_shape`` = (C, H, W): greyscale or RGB as the
    model needs, alpha dropped, EXIF rotation applied, short side resized, centre-cropped.
    Raises ValueError with a clear message for empty, corrupt, unreadable or huge files.
    """
    input_shape = _check_input_shape(input_shape)
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise ValueError("image data is empty: upload a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)))
            if image.width * image.height > MAX_USER_IMAGE_PIXELS:
                raise ValueError(f"image is too large ({image.width}×{image.height} pixels; at most "
                                 f"{MAX_USER_IMAGE_PIXELS:,} allowed)")
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        raise ValueError(f"the file could not be read as an image ({type(exc).__name__}: {str(exc)[:120]}); "
                         "upload a PNG or JPEG file") from None
    if image.width == 0 or image.height == 0:
        raise ValueError("image has zero width or height")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _rescale_wide_mode(image)
    return _to_model_input(image, input_shape)
