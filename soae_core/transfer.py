"""Transfer: do adversarial examples made on one model fool another?

- :func:`transfer_verdicts`: one adversarial image (made on some model) shown to every model:
  its prediction before and after 8-bit rounding, and whether it fools each.
- :func:`transfer_matrix`: an attack run on every source model over n images; every target model's
  accuracy on those examples (rows source, columns target; the diagonal is the white-box
  attack), before and after 8-bit rounding, as a table and as CSV.

Models are classifiers on the same input shape and classes (float images (N, C, H, W) in
[0, 1]); the attack is named with its keyword arguments (``soae_core.attacks.make_attack``), so
any attack and its settings — targeted ones included — can be transferred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from soae_core.attacks import make_attack
from soae_core.eight_bit import to_8bit
from soae_core.metrics import logits, predictions
from soae_core.targets import attack_succeeded
from soae_core.validation import check_images

Progress = Callable[[int, int, str], None]


def _model_logits(models: Mapping[str, nn.Module], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each model's logits (N, classes) on ``images`` (one pass per model); ValueError unless there
    is a model, every model can classify the images and all give the same number of classes."""
    if not models:
        raise ValueError("models must name at least one model")
    outputs = {}
    for name, model in models.items():
        try:
            outputs[name] = logits(model, images)
        except RuntimeError as exc:
            raise ValueError(f"model {name!r} cannot classify images of shape {tuple(images.shape[1:])}: "
                             f"{str(exc).splitlines()[0][:160]}") from None
    counts = {name: int(output.shape[1]) for name, output in outputs.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"all models must have the same classes to compare transfer; got class counts {counts}")
    return outputs


@dataclass
class TransferVerdict:
    """One model's view of one adversarial image: predictions (class indices) on the clean image, the
    adversarial image and its 8-bit rounding; fooled: the attack's goal holds on it (before / after rounding)."""

    model: str
    clean_prediction: int
    prediction: int
    prediction_8bit: int
    fooled: bool
    fooled_8bit: bool


def transfer_verdicts(models: Mapping[str, nn.Module], clean: torch.Tensor, adv: torch.Tensor, label: int,
                      target: int | None = None) -> list[TransferVerdict]:
    """How every model in ``models`` classifies one adversarial image (1, C, H, W) made on some model.

    label: the true class; target: the target class of a targeted attack (success = prediction =
    target), else None (success = prediction ≠ label). One verdict per model, in ``models`` order.
    """
    check_images(clean, "clean")
    check_images(adv, "adv")
    if clean.shape[0] != 1 or clean.shape != adv.shape:
        raise ValueError(f"clean and adv must each hold one image of the same shape, got {tuple(clean.shape)} "
                         f"and {tuple(adv.shape)}")
    labels = torch.tensor([label], device=adv.device)
    targets = None if target is None else torch.tensor([target], device=adv.device)
    verdicts = []
    for name, outputs in _model_logits(models, torch.cat([clean, adv, to_8bit(adv)])).items():
        clean_p, adv_p, adv8_p = outputs.argmax(dim=1)
        verdicts.append(TransferVerdict(
            model=name, clean_prediction=int(clean_p), prediction=int(adv_p), prediction_8bit=int(adv8_p),
            fooled=bool(attack_succeeded(adv_p[None], labels, targets)),
            fooled_8bit=bool(attack_succeeded(adv8_p[None], labels, targets))))
    return verdicts


@dataclass
class TransferMatrix:
    """Accuracy of target models on adversarial examples made on source models.

    sources, targets: model names (rows, columns). n: images per cell. attack: the attack's name.
    clean_accuracy: (T,) each target model's accuracy on the clean images.
    accuracy: (S, T) target model's accuracy on the source model's adversarial examples, in [0, 1];
        the diagonal (same model) is the white-box attack.
    accuracy_8bit: (S, T) the same after rounding the examples to 8 bits (as a PNG would).
    hit_rate, hit_rate_8bit: (S, T) share of examples classified as their target (targeted
        attacks only; None for untargeted ones).
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    n: int
    attack: str
    clean_accuracy: np.ndarray
    accuracy: np.ndarray
    accuracy_8bit: np.ndarray
    hit_rate: np.ndarray | None = None
    hit_rate_8bit: np.ndarray | None = None

    def table(self, after_rounding: bool = False) -> pd.DataFrame:
        """Rows "source model", columns target models, cells in %: accuracy with a first row of clean
        accuracy (untargeted), or the target hit rate (targeted: success = predicts the target)."""
        if self.hit_rate is not None:
            values = self.hit_rate_8bit if after_rounding else self.hit_rate
            return pd.DataFrame(values * 100, index=pd.Index(self.sources, name="source model"), columns=self.targets)
        values = self.accuracy_8bit if after_rounding else self.accuracy
        frame = pd.DataFrame(values * 100, index=pd.Index(self.sources, name="source model"), columns=self.targets)
        clean = pd.DataFrame([self.clean_accuracy * 100], index=["(clean images)"], columns=self.targets)
        return pd.concat([clean, frame])

    def long_table(self) -> pd.DataFrame:
        """One row per (source, target) pair with every number, for download."""
        rows = []
        for i, source in enumerate(self.sources):
            for j, target in enumerate(self.targets):
                row = {"attack": self.attack, "source model": source, "target model": target, "n images": self.n,
                       "clean accuracy (%)": 100 * self.clean_accuracy[j],
                       "accuracy (%)": 100 * self.accuracy[i, j],
                       "accuracy after 8-bit rounding (%)": 100 * self.accuracy_8bit[i, j]}
                if self.hit_rate is not None:
                    row["target hit (%)"] = 100 * self.hit_rate[i, j]
                    row["target hit after 8-bit rounding (%)"] = 100 * self.hit_rate_8bit[i, j]
                rows.append(row)
        return pd.DataFrame(rows)

    def csv_bytes(self) -> bytes:
        """:meth:`long_table` as UTF-8 CSV."""
        return self.long_table().to_csv(index=False).encode("utf-8")


def _share(mask: torch.Tensor) -> float:
    """The share in [0, 1] of True in ``mask`` (N,)."""
    return float(mask.double().mean())


def adversarial_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_name: str,
                         attack_kwargs: dict[str, Any], targets: torch.Tensor | None = None) -> torch.Tensor:
    """Attack ``attack_name`` with ``attack_kwargs`` run on ``model``: adversarial images (N, C, H, W)
    (aimed at ``targets`` when given, with ``targeted=True``)."""
    kwargs = attack_kwargs if targets is None else {**attack_kwargs, "targeted": True}
    return make_attack(attack_name, model, **kwargs)(images, labels if targets is None else targets).adv


def transfer_matrix(models: Mapping[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, attack_name: str,
                    attack_kwargs: dict[str, Any], targets: torch.Tensor | None = None,
                    sources: tuple[str, ...] | None = None, progress: Progress | None = None,
                    craft: Callable[[str], torch.Tensor] | None = None) -> TransferMatrix:
    """Run the attack on (images, labels) for each source model and evaluate every model on the results.

    Args:
        models: name → classifier; all on the same input shape and classes.
        images: (N, C, H, W) in [0, 1]; labels: true classes (N,) int64.
        attack_name, attack_kwargs: the attack (a key of ``soae_core.attacks.ATTACKS``) and its settings.
        targets: target classes (N,) for a targeted attack.
        sources: the models to attack (default: all); columns are always all models.
        progress: called as progress(done, total, source_name) after each source model.
        craft: craft(source_name) → the adversarial images of that source (default
            :func:`adversarial_examples`; the app passes its cached equivalent).
    """
    check_images(images, "images")
    labels = torch.as_tensor(labels, dtype=torch.long, device=images.device)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    names = tuple(models)
    sources = names if sources is None else tuple(sources)
    unknown = [s for s in sources if s not in models]
    if unknown:  # before any forward pass
        raise ValueError(f"sources {unknown} are not among the models {list(names)}")
    clean_logits = _model_logits(models, images)
    if craft is None:
        def craft(source: str) -> torch.Tensor:
            return adversarial_examples(models[source], images, labels, attack_name, attack_kwargs, targets)
    clean_accuracy = np.array([_share(clean_logits[t].argmax(dim=1) == labels) for t in names])
    shape = (len(sources), len(names))
    robust, robust_8bit = np.zeros(shape), np.zeros(shape)
    hit, hit_8bit = (np.zeros(shape), np.zeros(shape)) if targets is not None else (None, None)
    for i, source in enumerate(sources):
        adv = craft(source)
        both = torch.cat([adv, to_8bit(adv)])  # each target model sees the examples and their rounding at once
        for j, target in enumerate(names):
            classes, classes_8bit = predictions(models[target], both).split(len(adv))
            robust[i, j], robust_8bit[i, j] = _share(classes == labels), _share(classes_8bit == labels)
            if targets is not None:
                hit[i, j] = _share(attack_succeeded(classes, labels, targets))
                hit_8bit[i, j] = _share(attack_succeeded(classes_8bit, labels, targets))
        if progress is not None:
            progress(i + 1, len(sources), source)
    return TransferMatrix(sources=sources, targets=names, n=int(images.shape[0]), attack=attack_name,
                          clean_accuracy=clean_accuracy, accuracy=robust, accuracy_8bit=robust_8bit,
                          hit_rate=hit, hit_rate_8bit=hit_8bit)
