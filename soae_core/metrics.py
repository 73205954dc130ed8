"""How big, how visible and where a perturbation is: image-quality scores, norms, edge maps,
edge alignment, feature distortion, attributions and the spectrum of δ = x_adv − x; and the
model's batched predictions and accuracy.

Inputs are image batches (N, C, H, W) in [0, 1] (float tensors). Per-image scores come back as
NumPy float64 arrays of shape (N,); maps as NumPy arrays (N, H, W). Built on scikit-image (PSNR,
SSIM, Sobel, Canny), torchvision (feature extraction) and captum (attributions).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.filters import sobel, threshold_otsu
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from soae_core.validation import check_choice, check_images, check_int, check_positive

# data_range = 255 applied to [0, 1] images adds 20·log10(255) ≈ 48.13 dB to the standard PSNR and
# brings values into the range of the paper's Table V (71–82 dB) — but it explains them only in part:
# in that convention any L∞ ≤ 8/255 perturbation has PSNR ≥ 20·log10(255²/8) ≈ 78.2 dB, and most of
# Table V lies below that bound (REPRODUCTION.md, claim 8). The rest is unexplained.
PAPER_PSNR_OFFSET_DB = 20 * math.log10(255)
# The app's help text for that column (one home; REPRODUCTION.md, claim 8, counts the values below the floor).
PAPER_PSNR_NOTE = (f"The paper's convention: data_range = 255 on [0, 1] images, +{PAPER_PSNR_OFFSET_DB:.1f} dB over the "
                   "standard PSNR. It lands in the range of the paper's Table V (71–82 dB) but does not explain its "
                   f"values: with it, any perturbation with L∞ ≤ 8/255 has PSNR ≥ {20 * math.log10(255 ** 2 / 8):.1f} dB, "
                   "yet most of Table V lies below that. The rest is unexplained.")
EDGE_METHODS = ("canny", "sobel")
ATTRIBUTION_METHODS = ("saliency", "integrated_gradients")


def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits (N, classes) for images (N, C, H, W) in [0, 1], in batches without gradients.

    The batches go to the model's device and the logits come back to the images' device, so a
    model on a GPU can judge images held on the CPU (transfer to every model of the app)."""
    batch_size = check_int("batch_size", batch_size)
    where = next(model.parameters(), images).device
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size].to(where)).to(images.device)
                          for i in range(0, images.shape[0], batch_size)])


def predictions(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's classes (N,) int64 for images (N, C, H, W) in [0, 1]: the argmax of :func:`logits`."""
    return logits(model, images, batch_size).argmax(dim=1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share in [0, 1] of ``images`` (N, C, H, W) that ``model`` classifies as ``labels`` (N,)."""
    return float((predictions(model, images, batch_size) == labels).double().mean())


def check_pair(clean: torch.Tensor, adv: torch.Tensor) -> None:
    """Both image batches valid and of the same shape, else ValueError."""
    check_images(clean, "clean")
    check_images(adv, "adv")
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adv must have the same shape, got {tuple(clean.shape)} and {tuple(adv.shape)}")


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor → (H, W) for one channel, (H, W, C) otherwise, float64."""
    array = image.detach().cpu().double().numpy()
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


def _gray(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor in [0, 1] → (H, W) float64 luminance."""
    array = _to_hwc(image)
    return array if array.ndim == 2 else rgb2gray(array)


def _psnr(clean: torch.Tensor, adv: torch.Tensor, data_range: float) -> np.ndarray:
    check_pair(clean, adv)
    return np.asarray([math.inf if torch.equal(a, b) else
                       peak_signal_noise_ratio(_to_hwc(a), _to_hwc(b), data_range=data_range)
                       for a, b in zip(clean, adv, strict=False)], dtype=np.float64)


def psnr(clean: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """Standard PSNR in dB per image, data_range = 1 (images in [0, 1]); inf for identical images."""
    return _psnr(clean, adv, data_range=1.0)


def psnr_paper_convention(clean: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """PSNR as the paper's Table V appears to compute it: data_range = 255 on [0, 1] images.

    Equals :func:`psnr` + 20·log10(255) ≈ +48.13 dB. Not a meaningful quality measure; reported
    only to compare with the paper. It does not reproduce the paper's values: an L∞ ≤ ε
    perturbation gives at least :func:`paper_convention_psnr_floor` (ε = 8/255: 78.2 dB) here,
    while most of the paper's Table V lies below that.
    """
    return _psnr(clean, adv, data_range=255.0)


def paper_convention_psnr_floor(eps: float) -> float:
    """The lowest PSNR (dB) any perturbation with L∞ ≤ eps (in [0, 1] units) can have in the paper's
    convention: MSE ≤ eps², so PSNR ≥ 20·log10(255 / eps) (eps = 8/255: 20·log10(255²/8) ≈ 78.2 dB)."""
    check_positive("eps", eps)
    return 20 * math.log10(255.0 / eps)


def ssim(clean: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """SSIM per image (scikit-image, 7×7 window, data_range = 1; colour: mean over channels).

    Images must be at least 7×7 pixels. 1 for identical images.
    """
    check_pair(clean, adv)
    if min(clean.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7×7 pixels, got {tuple(clean.shape[-2:])}")
    channel_axis = None if clean.shape[1] == 1 else -1
    return np.asarray([structural_similarity(_to_hwc(a), _to_hwc(b), data_range=1.0, channel_axis=channel_axis)
                       for a, b in zip(clean, adv, strict=False)], dtype=np.float64)


def perturbation_norms(clean: torch.Tensor, adv: torch.Tensor, zero_tolerance: float = 1e-7) -> dict[str, np.ndarray]:
    """L0, L2 and L∞ norms of δ = adv − clean per image, over all N·C·H·W components.

    L0 counts components with |δ| > zero_tolerance (float rounding of the projection leaves
    ~1e-8 residues). Returns {"l0": (N,), "l2": (N,), "linf": (N,)}.
    """
    check_pair(clean, adv)
    check_positive("zero_tolerance", zero_tolerance, allow_zero=True)
    delta = (adv - clean).detach().double().flatten(1)
    return {
        "l0": (delta.abs() > zero_tolerance).sum(dim=1).cpu().numpy().astype(np.float64),
        "l2": delta.norm(dim=1).cpu().numpy(),
        "linf": delta.abs().amax(dim=1).cpu().numpy(),
    }


def sobel_magnitude(images: torch.Tensor) -> np.ndarray:
    """Sobel gradient magnitude of each image's luminance, (N, H, W) float64."""
    check_images(images, "images")
    return np.stack([sobel(_gray(image)) for image in images])


def edge_mask(images: torch.Tensor, method: str = "canny", sigma: float = 1.0) -> np.ndarray:
    """Boolean edge maps (N, H, W) of each image's luminance.

    method: "canny" (scikit-image Canny, Gaussian ``sigma`` in pixels) or "sobel" (Sobel
    magnitude above its Otsu threshold, per image; no edges where the magnitude is constant).
    """
    check_images(images, "images")
    check_choice("method", method, EDGE_METHODS)
    check_positive("sigma", sigma)
    if method == "canny":
        return np.stack([canny(_gray(image), sigma=sigma) for image in images])
    masks = []
    for magnitude in sobel_magnitude(images):
        if magnitude.max() == magnitude.min():
            masks.append(np.zeros_like(magnitude, dtype=bool))
        else:
            masks.append(magnitude > threshold_otsu(magnitude))
    return np.stack(masks)


def edge_alignment(clean: torch.Tensor, adv: torch.Tensor, method: str = "canny", sigma: float = 1.0) -> np.ndarray:
    """Edge-alignment score per image: (share of δ's energy on edge pixels) ÷ (share of edge pixels).

    Energy per pixel is Σ_channels δ². Edges come from the clean image (:func:`edge_mask`).
    1 means no preference for edges, > 1 that the perturbation concentrates on them, < 1 that
    it avoids them. NaN where the image has no edges, only edges, or δ = 0.
    """
    check_pair(clean, adv)
    edges = edge_mask(clean, method=method, sigma=sigma)
    energy = ((adv - clean).detach().double() ** 2).sum(dim=1).cpu().numpy()
    scores = []
    for pixel_energy, mask in zip(energy, edges, strict=False):
        edge_share = mask.mean()
        total = pixel_energy.sum()
        if total == 0 or edge_share in (0.0, 1.0):
            scores.append(math.nan)
        else:
            scores.append((pixel_energy[mask].sum() / total) / edge_share)
    return np.asarray(scores, dtype=np.float64)


def default_feature_layers(model: nn.Module) -> list[str]:
    """Qualified names of the model's Conv2d and Linear modules, in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def _twin(model: nn.Module) -> nn.Module:
    """A private copy of the model's module tree that shares its parameter and buffer tensors
    (no weights are copied), in eval mode: hooks on it never touch the shared model."""
    shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo=shared).eval()


def feature_maps(model: nn.Module, images: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Outputs of the named modules for images (N, C, H, W): {layer: (N, ...)} without gradients.

    layers: module names (see :func:`default_feature_layers`, the default). Raises ValueError for
    a name that is not a module of the model. The model is neither modified nor hooked.
    """
    check_images(images, "images")
    layers = default_feature_layers(model) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers must name at least one module; the model has no Conv2d/Linear to default to")
    known = {name for name, _ in model.named_modules()}
    unknown = [layer for layer in layers if layer not in known]
    if unknown:
        raise ValueError(f"layers {unknown} are not modules of the model; allowed: {sorted(known - {''})}")
    # Forward hooks on a private twin, not torch.fx tracing (torchvision's feature extractor):
    # tracing patches torch.nn.Module.__call__ process-wide, which broke every other session's
    # forward pass running at that moment (NameError "module is not installed as a submodule",
    # seen with 3 concurrent Perturbation Anatomy sessions).
    twin, outputs = _twin(model), {}
    for layer in layers:
        twin.get_submodule(layer).register_forward_hook(
            lambda _module, _inputs, output, layer=layer: outputs.__setitem__(layer, output))
    with torch.no_grad():
        twin(images)
    missing = [layer for layer in layers if layer not in outputs]
    if missing:
        raise ValueError(f"layers {missing} are not used by the model's forward pass")
    return {layer: outputs[layer] for layer in layers}


def feature_distortion(model: nn.Module, clean: torch.Tensor, adv: torch.Tensor,
                       layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """Relative L2 distortion ‖F(adv) − F(clean)‖₂ / ‖F(clean)‖₂ per image at each layer.

    layers: module names (see :func:`default_feature_layers`, the default). Returns
    {layer: (N,) float64}, NaN where a clean feature map is all zero. Raises ValueError for a
    name that is not a module the model's forward pass uses.
    """
    check_pair(clean, adv)
    layers = default_feature_layers(model) if layers is None else list(layers)
    both = feature_maps(model, torch.cat([clean, adv]), layers)
    clean_features = {layer: maps[:clean.shape[0]] for layer, maps in both.items()}
    adv_features = {layer: maps[clean.shape[0]:] for layer, maps in both.items()}
    result = {}
    for layer in layers:
        reference = clean_features[layer].double().flatten(1)
        change = (adv_features[layer].double().flatten(1) - reference).norm(dim=1)
        scale = reference.norm(dim=1)
        ratio = torch.where(scale > 0, change / scale.clamp_min(1e-300), torch.full_like(scale, math.nan))
        result[layer] = ratio.cpu().numpy()
    return result


def attribution(model: nn.Module, images: torch.Tensor, target: torch.Tensor, method: str = "saliency",
                n_steps: int = 32) -> torch.Tensor:
    """captum attribution of the ``target`` logit for each image, shape (N, C, H, W).

    method: "saliency" (|∂ logit / ∂x|) or "integrated_gradients" (black-image baseline,
    ``n_steps`` Riemann steps). Both take input gradients with torch.autograd.grad; the model
    is neither modified nor hooked.
    """
    check_images(images, "images")
    check_choice("method", method, ATTRIBUTION_METHODS)
    n_steps = check_int("n_steps", n_steps, minimum=2)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (images.shape[0],):
        raise ValueError(f"target must be a tensor of shape ({images.shape[0]},), got {target!r}")
    inputs = images.detach().clone().requires_grad_(True)
    if method == "saliency":
        result = Saliency(model).attribute(inputs, target=target, abs=True)
    else:
        result = IntegratedGradients(model).attribute(inputs, baselines=torch.zeros_like(inputs), target=target,
                                                      n_steps=n_steps, internal_batch_size=images.shape[0])
    return result.detach()


def attribution_similarity(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """Cosine similarity per image of two attribution maps (N, C, H, W); NaN if either is zero."""
    if first.shape != second.shape:
        raise ValueError(f"attribution maps must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    a, b = first.detach().double().flatten(1), second.detach().double().flatten(1)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    cosine = (a * b).sum(dim=1) / denominator.clamp_min(1e-300)
    return torch.where(denominator > 0, cosine, torch.full_like(cosine, math.nan)).cpu().numpy()


def perturbation_spectrum(clean: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """Centred FFT magnitude |F(δ)| of the perturbation (mean over channels), (N, H, W) float64.

    Zero frequency sits at (H // 2, W // 2) (``np.fft.fftshift``).
    """
    check_pair(clean, adv)
    delta = (adv - clean).detach().double().mean(dim=1).cpu().numpy()
    return np.abs(np.fft.fftshift(np.fft.fft2(delta), axes=(-2, -1)))


def high_frequency_share(clean: torch.Tensor, adv: torch.Tensor, cutoff: float = 0.25) -> np.ndarray:
    """Share of δ's spectral energy at radial frequency above ``cutoff`` (cycles/pixel, ≤ 0.5).

    A uniform (white) perturbation gives about 1 − π·cutoff²; smooth ones much less.
    """
    cutoff = check_positive("cutoff", cutoff)
    if cutoff >= 0.5:
        raise ValueError(f"cutoff must lie in (0, 0.5) cycles per pixel, got {cutoff}")
    energy = perturbation_spectrum(clean, adv) ** 2
    height, width = energy.shape[-2:]
    fy = np.fft.fftshift(np.fft.fftfreq(height))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(width))[None, :]
    high = np.hypot(fy, fx) > cutoff
    total = energy.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, energy[:, high].sum(axis=-1) / total, np.nan)
