"""Perturbation anatomy: where each attack's δ = x_adv − x sits, which features it disturbs, what
the model attends to before and after, and the spectrum of δ — for one image and several attacks.

``perturbation_anatomy(model, image, label, advs)`` gathers everything the Perturbation Anatomy
page draws into an :class:`Anatomy` of NumPy arrays (picklable, so the app can cache it). The
measurements themselves come from :mod:`soae_core.metrics` (scikit-image edges, torchvision
feature extraction, captum attributions); this module only assembles them per attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core import metrics
from soae_core.analysis.common import check_single_image
from soae_core.eight_bit import EIGHT_BIT_COLUMN, rounding_check, verdict_8bit
from soae_core.validation import check_choice, check_int

ATTRIBUTION_TARGETS = ("prediction", "label")


@dataclass
class AttackAnatomy:
    """One attack's perturbation of the image.

    perturbation: (C, H, W) δ; magnitude: (H, W) mean over channels of |δ|; prediction: class on
    x_adv. edge_alignment_canny / _sobel: energy share on edges ÷ edge-pixel share (NaN if δ = 0);
    high_frequency_share: share of δ's spectral energy above 0.25 cycles/pixel; spectrum: (H, W)
    centred |FFT(δ)|. feature_distortion: {layer: ‖F(x_adv) − F(x)‖ / ‖F(x)‖}. feature_maps:
    {layer: (k, h, w)} of the chosen channels. saliency, integrated_gradients: (H, W) attribution
    maps (summed over channels) of the attributed class; *_similarity: cosine with the clean map.
    success: x_adv is adversarial (prediction = the target when targeted, else ≠ the true label);
    success_8bit: it still is after 8-bit rounding (:func:`soae_core.eight_bit.rounding_check`).
    """

    name: str
    perturbation: np.ndarray
    magnitude: np.ndarray
    prediction: int
    edge_alignment_canny: float
    edge_alignment_sobel: float
    high_frequency_share: float
    spectrum: np.ndarray
    feature_distortion: dict[str, float]
    feature_maps: dict[str, np.ndarray]
    saliency: np.ndarray
    integrated_gradients: np.ndarray
    saliency_similarity: float
    integrated_gradients_similarity: float
    success: bool = False
    success_8bit: bool = False


@dataclass
class Anatomy:
    """The clean image's side and one :class:`AttackAnatomy` per attack.

    image: (C, H, W); sobel: (H, W) Sobel magnitude; sobel_edges: (H, W) bool, the magnitude
    above Otsu's threshold; canny: (H, W) bool Canny edges (both as edge alignment uses them);
    distortion_layers: every layer with a distortion number; map_layers: layers whose maps are
    kept; channels: {layer: channel indices shown}, the ones the attacks change most (summed
    over attacks); clean_feature_maps: {layer: (k, h, w)}; clean_saliency,
    clean_integrated_gradients: (H, W); attribution_target: "prediction" (each image's own
    predicted class) or "label" (the true class for every image); target: the class the attacks
    aimed at (None: untargeted).
    """

    image: np.ndarray
    label: int
    clean_prediction: int
    sobel: np.ndarray
    sobel_edges: np.ndarray
    canny: np.ndarray
    distortion_layers: list[str]
    map_layers: list[str]
    channels: dict[str, list[int]]
    clean_feature_maps: dict[str, np.ndarray]
    clean_saliency: np.ndarray
    clean_integrated_gradients: np.ndarray
    attribution_target: str
    attacks: list[AttackAnatomy]
    target: int | None = None


def spatial_layers(model: nn.Module, image: torch.Tensor, layers: list[str] | None = None) -> list[str]:
    """The layers (default: :func:`metrics.default_feature_layers`) whose output is a spatial map
    (N, K, h, w) for this input — the ones worth drawing as feature maps."""
    layers = metrics.default_feature_layers(model) if layers is None else list(layers)
    outputs = metrics.feature_maps(model, image[:1], layers)
    return [layer for layer in layers if outputs[layer].dim() == 4]


def _top_channels(maps: torch.Tensor, k: int) -> list[int]:
    """For maps (1 + A, K, h, w) — clean first, then A attacks — the k channel indices with the
    largest Σ_attacks ‖F_adv[c] − F_clean[c]‖, largest first."""
    change = (maps[1:] - maps[:1]).double().flatten(2).norm(dim=2).sum(dim=0)
    return torch.argsort(change, descending=True, stable=True)[:k].tolist()


def perturbation_anatomy(model: nn.Module, image: torch.Tensor, label: int, advs: dict[str, torch.Tensor],
                         map_layers: list[str] | None = None, top_channels: int = 4,
                         attribution_target: str = "prediction", target: int | None = None) -> Anatomy:
    """Everything the Perturbation Anatomy page shows.

    Args:
        model: classifier (eval mode, frozen; only input gradients are taken).
        image: (1, C, H, W) in [0, 1]; label: its true class.
        advs: attack name → adversarial image (1, C, H, W) in [0, 1]; at least one.
        map_layers: layers whose feature maps to keep (default: the first two spatial layers).
        top_channels: channels kept per layer (≥ 1).
        attribution_target: "prediction" or "label" (see :class:`Anatomy`).
        target: the class the attacks aimed at (None: untargeted); it decides success.

    Raises ValueError for bad inputs (shapes, ranges, unknown layers or target).
    """
    y = check_single_image(model, image, label)
    goal = None if target is None else check_single_image(model, image, target)
    top_channels = check_int("top_channels", top_channels)
    check_choice("attribution_target", attribution_target, ATTRIBUTION_TARGETS)
    if not advs:
        raise ValueError("advs must map at least one attack name to its adversarial image")
    for adv in advs.values():
        metrics.check_pair(image, adv)
    names = list(advs)
    adversarial = torch.cat([advs[name] for name in names]).detach()
    clean = image.detach().expand_as(adversarial)
    batch = torch.cat([image.detach(), adversarial])
    predictions = metrics.predictions(model, batch)
    targets = predictions if attribution_target == "prediction" else torch.full_like(predictions, label)

    distortion_layers = metrics.default_feature_layers(model)
    map_layers = spatial_layers(model, image)[:2] if map_layers is None else list(map_layers)
    features = metrics.feature_maps(model, batch, map_layers)
    for layer in map_layers:
        if features[layer].dim() != 4:
            raise ValueError(f"map_layers must name layers with spatial outputs; {layer!r} gives shape "
                             f"{tuple(features[layer].shape[1:])}")
    channels = {layer: _top_channels(features[layer], top_channels) for layer in map_layers}
    kept = {layer: features[layer][:, channels[layer]].double().cpu().numpy() for layer in map_layers}
    distortion = metrics.feature_distortion(model, clean, adversarial, distortion_layers)
    saliency = metrics.attribution(model, batch, targets, "saliency")
    integrated = metrics.attribution(model, batch, targets, "integrated_gradients")
    saliency_maps = saliency.sum(dim=1).double().cpu().numpy()
    integrated_maps = integrated.sum(dim=1).double().cpu().numpy()
    saliency_similarity = metrics.attribution_similarity(saliency[:1].expand_as(saliency[1:]), saliency[1:])
    integrated_similarity = metrics.attribution_similarity(integrated[:1].expand_as(integrated[1:]), integrated[1:])
    alignment_canny = metrics.edge_alignment(clean, adversarial, "canny")
    alignment_sobel = metrics.edge_alignment(clean, adversarial, "sobel")
    high_frequency = metrics.high_frequency_share(clean, adversarial)
    spectra = metrics.perturbation_spectrum(clean, adversarial)
    deltas = (adversarial - clean).double().cpu().numpy()
    check = rounding_check(model, adversarial, y.expand(len(names)),
                           None if goal is None else goal.expand(len(names)))

    attacks = [AttackAnatomy(
        name=name, perturbation=deltas[k], magnitude=np.abs(deltas[k]).mean(axis=0),
        prediction=int(predictions[k + 1]), edge_alignment_canny=float(alignment_canny[k]),
        edge_alignment_sobel=float(alignment_sobel[k]), high_frequency_share=float(high_frequency[k]),
        spectrum=spectra[k], feature_distortion={layer: float(values[k]) for layer, values in distortion.items()},
        feature_maps={layer: maps[k + 1] for layer, maps in kept.items()},
        saliency=saliency_maps[k + 1], integrated_gradients=integrated_maps[k + 1],
        saliency_similarity=float(saliency_similarity[k]),
        integrated_gradients_similarity=float(integrated_similarity[k]), success=bool(check.adversarial[k]),
        success_8bit=bool(check.adversarial_8bit[k])) for k, name in enumerate(names)]
    return Anatomy(image=image[0].double().cpu().numpy(), label=label, clean_prediction=int(predictions[0]),
                   sobel=metrics.sobel_magnitude(image)[0], sobel_edges=metrics.edge_mask(image, "sobel")[0],
                   canny=metrics.edge_mask(image, "canny")[0],
                   distortion_layers=distortion_layers, map_layers=map_layers, channels=channels,
                   clean_feature_maps={layer: maps[0] for layer, maps in kept.items()},
                   clean_saliency=saliency_maps[0], clean_integrated_gradients=integrated_maps[0],
                   attribution_target=attribution_target, attacks=attacks, target=target)


def verdict_table(anatomy: Anatomy, class_names: tuple[str, ...]) -> pd.DataFrame:
    """One row per attack: (Target,) Prediction, Success and whether the example is still
    adversarial after 8-bit rounding (:func:`soae_core.eight_bit.verdict_8bit`). Indexed by attack name."""
    rows = []
    for a in anatomy.attacks:
        row = {"Attack": a.name}
        if anatomy.target is not None:
            row["Target"] = class_names[anatomy.target]
        row.update({"Prediction": class_names[a.prediction], "Success": a.success,
                    EIGHT_BIT_COLUMN: verdict_8bit(a.success, a.success_8bit)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Attack")


def location_table(anatomy: Anatomy) -> pd.DataFrame:
    """One row per attack: edge alignment (Canny, Sobel), high-frequency share, attribution
    similarities. Indexed by attack name."""
    return pd.DataFrame([{"Attack": a.name, "Edge alignment (Canny)": a.edge_alignment_canny,
                          "Edge alignment (Sobel)": a.edge_alignment_sobel,
                          "High-frequency share": a.high_frequency_share,
                          "Saliency similarity": a.saliency_similarity,
                          "IG similarity": a.integrated_gradients_similarity} for a in anatomy.attacks],
                        columns=["Attack", "Edge alignment (Canny)", "Edge alignment (Sobel)", "High-frequency share",
                                 "Saliency similarity", "IG similarity"]).set_index("Attack")


def distortion_table(anatomy: Anatomy) -> pd.DataFrame:
    """Relative feature distortion: one row per attack, one column per layer (input → output order)."""
    return pd.DataFrame([{"Attack": a.name, **a.feature_distortion} for a in anatomy.attacks],
                        columns=["Attack", *anatomy.distortion_layers]).set_index("Attack")
