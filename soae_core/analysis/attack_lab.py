"""The Attack Lab's computation: SOAE and the chosen baselines on one image, summarised as plain
NumPy values (picklable, so the app can cache them), plus the exports the page offers.

``run_lab(model, image, label, settings, dataset, class_names)`` runs every attack once and
returns a :class:`LabRun`: the clean prediction, one :class:`AttackOutcome` per attack (SOAE
first) and one :class:`IterationView` per SOAE outer iteration for the iteration scrubber.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from soae_core import __version__
from soae_core.analysis.common import check_single_image, class_probabilities
from soae_core.analysis.settings import AttackSettings
from soae_core.attacks import make_attack
from soae_core.attacks.base import num_classes_of
from soae_core.eight_bit import EIGHT_BIT_COLUMN, project_to_8bit, rounding_check, to_8bit, verdict_8bit
from soae_core.metrics import logits, perturbation_norms, psnr, ssim
from soae_core.targets import attack_succeeded, choose_targets
from soae_core.transfer import transfer_verdicts
from soae_core.validation import check_images


@dataclass
class AttackOutcome:
    """One attack's result on the image.

    adv, perturbation: (C, H, W) float32; adv in [0, 1], perturbation = adv − image in [−ε, ε].
    probabilities: (K,) softmax of the model on adv. target: the class aimed at (None: untargeted).
    success: prediction = target (targeted) or prediction ≠ the true label (untargeted).
    prediction_8bit, success_8bit: the same after rounding adv to 8 bits (what the PNG holds).
    grid_adv: (C, H, W) the rounding-aware projection of adv onto the 8-bit grid (within ε);
    grid_success: it is adversarial; grid_note: one sentence on how (or why not).
    psnr_db (data_range 1; inf when adv = image), ssim, l2, linf (pixel units [0, 1]).
    grad_evals: input-gradient evaluations; wall_time_s: seconds.
    """

    name: str
    adv: np.ndarray
    perturbation: np.ndarray
    probabilities: np.ndarray
    prediction: int
    success: bool
    psnr_db: float
    ssim: float
    l2: float
    linf: float
    grad_evals: int
    wall_time_s: float
    target: int | None = None
    prediction_8bit: int = -1
    success_8bit: bool = False
    grid_adv: np.ndarray | None = None
    grid_success: bool = False
    grid_note: str = ""


@dataclass
class IterationView:
    """The SOAE iterate after ``index`` outer iterations (index 0: the clean image).

    image: (C, H, W) in [0, 1]; loss: cross-entropy at this iterate; m: Krylov dimension of the
    step that led here (0 for index 0); stop_reason: how GMRES ended ('' for index 0);
    cosine_to_gradient: cos(δ̃, g) of that step (nan for index 0).
    """

    index: int
    image: np.ndarray
    prediction: int
    confidence: float
    loss: float
    m: int
    stop_reason: str
    cosine_to_gradient: float


@dataclass
class LabRun:
    """Everything the Attack Lab page shows for one (model, image, label, settings).

    target: the class every attack aims at (None: untargeted); skipped: chosen attacks that
    cannot aim at a target → why.
    """

    image: np.ndarray
    label: int
    class_names: tuple[str, ...]
    clean_probabilities: np.ndarray
    clean_prediction: int
    outcomes: list[AttackOutcome]
    iterations: list[IterationView]
    target: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def outcome(self, name: str) -> AttackOutcome:
        """The outcome of attack ``name`` (ValueError if it was not run)."""
        for outcome in self.outcomes:
            if outcome.name == name:
                return outcome
        raise ValueError(f"attack {name!r} was not run; ran: {[o.name for o in self.outcomes]}")

    def first_success(self) -> AttackOutcome:
        """The first attack (in run order, SOAE first) whose example succeeded, else the first
        attack: the example the transfer table shows until the user picks another."""
        return next((o for o in self.outcomes if o.success), self.outcomes[0])


def _iteration_views(image: torch.Tensor, trace: Any, i: int = 0) -> list[IterationView]:
    """Views of image ``i`` of a SOAE trace; ``image``: that image (1, C, H, W)."""
    views = [IterationView(index=0, image=image[0].float().numpy(), prediction=int(trace.initial_prediction[i]),
                           confidence=float(trace.initial_confidence[i]), loss=float(trace.initial_loss[i]),
                           m=0, stop_reason="", cosine_to_gradient=math.nan)]
    for index, it in enumerate(trace.iterations, start=1):
        views.append(IterationView(index=index, image=it.adv[i].float().numpy(), prediction=int(it.prediction[i]),
                                   confidence=float(it.confidence[i]), loss=float(it.loss_after[i]),
                                   m=int(it.krylov.iterations[i]), stop_reason=it.krylov.stop_reason[i],
                                   cosine_to_gradient=float(it.cosine_to_gradient[i])))
    return views


def _outcome(model: nn.Module, name: str, image: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None,
             adv: torch.Tensor, eps: float, grad_evals: int, wall_time_s: float) -> AttackOutcome:
    """An :class:`AttackOutcome` from one image (1, C, H, W), its true class ``y`` (1,), the target
    ``goal`` (1,) of a targeted attack (else None) and its adversarial image: prediction, success,
    quality, the 8-bit check and the rounding-aware 8-bit projection within ``eps``."""
    return _outcomes(model, name, image, y, goal, adv, eps, [grad_evals], wall_time_s)[0]


def _grid_projection(model: nn.Module, images: torch.Tensor, adv: torch.Tensor, y: torch.Tensor,
                     goal: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, list[bool], list[str]]:
    """:func:`project_to_8bit` of every image (N, C, H, W): the grid images, success and note per
    image. An image with no 8-bit level within ε for some pixel gets its plain rounding and says why
    — alone, so the other images of a batch keep their projection."""
    try:
        grid = project_to_8bit(model, images, adv, y, eps, targets=goal)
        return grid.adv, [bool(a) for a in grid.adversarial], [grid.message(i) for i in range(len(images))]
    except ValueError as error:
        if len(images) == 1:  # no 8-bit image within ε (ε < 0.5/255 on an off-grid image)
            return to_8bit(adv), [False], [f"No 8-bit projection: {error}."]
    parts = [_grid_projection(model, images[i:i + 1], adv[i:i + 1], y[i:i + 1],
                              None if goal is None else goal[i:i + 1], eps) for i in range(len(images))]
    return torch.cat([p[0] for p in parts]), [p[1][0] for p in parts], [p[2][0] for p in parts]


def _outcomes(model: nn.Module, name: str, images: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None,
              adv: torch.Tensor, eps: float, grad_evals: list[int], wall_time_s: float) -> list[AttackOutcome]:
    """:func:`_outcome` of N images (N, C, H, W) at once, true classes ``y`` (N,), targets ``goal``
    (N,) or None and adversarial images ``adv`` (N, C, H, W): each forward pass of the checks runs
    once for the batch (the members of a batched attack used to pay ~7 single-image passes each,
    more than FGSM itself). grad_evals: per image; wall_time_s: each outcome's."""
    images, adv = images.detach(), adv.detach()
    probabilities = torch.softmax(logits(model, adv), dim=1).double().cpu()
    prediction = probabilities.argmax(dim=1)
    success = attack_succeeded(prediction, y.cpu(), None if goal is None else goal.cpu())
    check = rounding_check(model, adv, y, goal)
    grid_adv, grid_success, grid_note = _grid_projection(model, images, adv, y, goal, eps)
    norms = perturbation_norms(images, adv)
    psnr_db = psnr(images, adv)
    ssim_values = ssim(images, adv) if min(images.shape[-2:]) >= 7 else np.full(len(images), math.nan)
    perturbation = (adv - images).float().cpu().numpy()
    adv_np, grid_np = adv.float().cpu().numpy(), grid_adv.float().cpu().numpy()
    return [AttackOutcome(  # copies: no member's arrays are views into the batch's
        name=name, adv=adv_np[i].copy(), perturbation=perturbation[i].copy(), probabilities=probabilities[i].numpy().copy(),
        prediction=int(prediction[i]), success=bool(success[i]), psnr_db=float(psnr_db[i]), ssim=float(ssim_values[i]),
        l2=float(norms["l2"][i]), linf=float(norms["linf"][i]), grad_evals=int(grad_evals[i]),
        wall_time_s=float(wall_time_s), target=None if goal is None else int(goal[i]),
        prediction_8bit=int(check.prediction_8bit[i]), success_8bit=bool(check.adversarial_8bit[i]),
        grid_adv=grid_np[i].copy(), grid_success=grid_success[i], grid_note=grid_note[i]) for i in range(len(images))]


def run_attack(model: nn.Module, image: torch.Tensor, label: int, name: str,
               attack_kwargs: dict[str, Any], target: int | None = None) -> tuple[AttackOutcome, list[IterationView]]:
    """Run attack ``name`` (a name of ``soae_core.attacks.ATTACKS``) on one image.

    Args:
        model: classifier (eval mode, frozen parameters; only input gradients are taken).
        image: (1, C, H, W) in [0, 1], the model's dtype. label: the true class index.
        attack_kwargs: the attack's keyword arguments besides the model
            (see :meth:`AttackSettings.attack_kwargs`; ``targeted=True`` for a targeted attack).
        target: the class a targeted attack aims at (required exactly when ``targeted``).

    The outcome also says whether the example survives 8-bit rounding and holds its rounding-aware
    projection onto the 8-bit grid (:func:`soae_core.eight_bit.project_to_8bit`).
    Returns (outcome, SOAE iterate views — empty for the baselines). ValueError for bad inputs.
    """
    attack = make_attack(name, model, **attack_kwargs)
    y = check_single_image(model, image, label)
    if attack.targeted != (target is not None):
        raise ValueError(f"a target class must be given exactly for targeted attacks; {name} is "
                         f"{'targeted' if attack.targeted else 'untargeted'} and target is {target!r}")
    goal = None if target is None else check_single_image(model, image, target)
    if goal is not None and target == label:
        raise ValueError(f"target class {target} is the true class of the image; choose another target")
    image = image.detach()
    result = attack(image, y if goal is None else goal)
    outcome = _outcome(model, name, image, y, goal, result.adv, attack.eps, result.grad_evals, result.wall_time_s)
    return outcome, _iteration_views(image, result.trace) if name == "SOAE" else []


def batchable(name: str, attack_kwargs: dict[str, Any], dtype: torch.dtype = torch.float32) -> bool:
    """True when attack ``name`` on a ``dtype`` model gives every image of a batch what it gives
    the image alone (predictions, counts and pixels; checked by tests/test_batching.py).

    FGSM and PGD without a random start: yes (0 of 29 bundled images differed). SOAE only in
    float64 (the app's default precision): in float32 the model's logits differ by ~4e-6 between a
    batch and one image (CPU kernels sum in a batch-dependent order), which flips the sign of δ̃'s
    near-zero components and, with finite differences (÷η), changes the Krylov dimensions. Measured
    by ``bench/bench_precision.py`` on 30 bundled images (``bench/results/precision.json``): in
    float32, 30 of 30 batch members differed from their run alone with the paper's settings and 4
    of 30 with exact products; in float64, none. Random starts (noise drawn per batch), targeted
    runs, AutoAttack and ASOD always run alone.
    """
    if attack_kwargs.get("random_start", False) or attack_kwargs.get("targeted", False):
        return False  # noise drawn per batch; targets are per image
    return name in ("FGSM", "PGD") or (name == "SOAE" and dtype == torch.float64)


def batch_differences(batched: tuple[AttackOutcome, list[IterationView]],
                      alone: tuple[AttackOutcome, list[IterationView]]) -> list[str]:
    """What differs between a batch member's result and the same image's run alone (both as
    :func:`run_attack` returns them); empty when the batch gave the member its alone result — the
    contract of :func:`batchable`: predictions, success, gradient evaluations, the 8-bit check and
    projection's verdicts, Krylov dimensions and stop reasons exactly; images (the adversarial one
    and its 8-bit projection) to 1e-6 (pixel units), probabilities to 1e-5, losses to 1e-5
    relative. One home for the check the tests, ``bench/bench_precision.py`` and
    ``bench/gpu_check.py`` make."""
    (outcome, views), (outcome_alone, views_alone) = batched, alone
    found = [name for name in ("prediction", "success", "grad_evals", "prediction_8bit", "success_8bit",
                               "grid_success", "grid_note")
             if getattr(outcome, name) != getattr(outcome_alone, name)]
    if not np.allclose(outcome.adv, outcome_alone.adv, rtol=0, atol=1e-6):
        found.append("adv")
    if not np.allclose(outcome.grid_adv, outcome_alone.grid_adv, rtol=0, atol=1e-6):
        found.append("grid_adv")
    if not np.allclose(outcome.probabilities, outcome_alone.probabilities, rtol=0, atol=1e-5):
        found.append("probabilities")
    if [(v.prediction, v.m, v.stop_reason) for v in views] != [(v.prediction, v.m, v.stop_reason) for v in views_alone]:
        found.append("iterations")
    elif not all(np.allclose(v.image, w.image, rtol=0, atol=1e-6) and np.isclose(v.loss, w.loss, rtol=1e-5, atol=1e-7)
                 for v, w in zip(views, views_alone, strict=True)):
        found.append("iteration images or losses")
    return found


def run_attack_batch(model: nn.Module, images: list[torch.Tensor], labels: list[int], name: str,
                     attack_kwargs: dict[str, Any]) -> list[tuple[AttackOutcome, list[IterationView]] | ValueError]:
    """:func:`run_attack` on several images at once, as one batched attack call.

    images: each (1, C, H, W) in [0, 1], one shape and dtype; labels: their true classes. Returns
    one entry per image, in order: what :func:`run_attack` returns for it alone (equal to float
    tolerance; predictions, Krylov dimensions and gradient-evaluation counts exactly), or the
    ValueError it raises for it — a bad image fails alone. wall_time_s of each outcome: the
    batch's wall time ÷ its size. Raises ValueError when the attack is not :func:`batchable`.
    """
    dtype = next(model.parameters()).dtype
    if not batchable(name, attack_kwargs, dtype):
        raise ValueError(f"{name} with {attack_kwargs} on a {dtype} model cannot be batched: see batchable")
    attack = make_attack(name, model, **attack_kwargs)
    results: list[Any] = [None] * len(images)
    good, targets = [], []
    classes = None  # the model's number of classes: one forward pass, on the first image that gets that far
    for i, (image, label) in enumerate(zip(images, labels, strict=False)):
        try:
            if classes is None:
                check_images(image, "image")  # a clear message before the forward pass below
                classes = num_classes_of(model, image)
            y = check_single_image(model, image, label, num_classes=classes)
            if good and image.shape != images[good[0]].shape:
                raise ValueError(f"image has shape {tuple(image.shape)}, the batch {tuple(images[good[0]].shape)}")
            good.append(i)
            targets.append(y)
        except ValueError as error:
            results[i] = error
    if not good:
        return results
    batch, y = torch.cat([images[i].detach() for i in good]), torch.cat(targets)
    result = attack(batch, y)
    per_sample = result.trace.grad_evals_per_sample if name == "SOAE" else None
    grad_evals = [int(per_sample[row]) if per_sample is not None else result.grad_evals for row in range(len(good))]
    outcomes = _outcomes(model, name, batch, y, None, result.adv, attack.eps, grad_evals, result.wall_time_s / len(good))
    for row, (i, outcome) in enumerate(zip(good, outcomes, strict=True)):
        results[i] = (outcome, _iteration_views(images[i].detach(), result.trace, row) if name == "SOAE" else [])
    return results


# Runs one attack of a lab run: (name, keyword arguments, target) -> what :func:`run_attack` returns.
AttackRunner = Callable[[str, dict[str, Any], int | None], tuple[AttackOutcome, list[IterationView]]]


def run_lab(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings, dataset: str,
            class_names: tuple[str, ...], run: AttackRunner | None = None,
            on_attack: Callable[[str], None] | None = None) -> LabRun:
    """Run SOAE and ``settings.baselines`` on one image (1, C, H, W) in [0, 1] with true ``label``.

    dataset: the model's dataset name (sets ASOD's σ); class_names: one name per class.
    Targeted settings aim every attack that can at the class :func:`lab_target` picks; the
    others are listed in ``skipped`` with the reason.
    run: runs one attack (default :func:`run_attack` on this model and image; the app passes
    its cached equivalent). on_attack: called with each attack's name before it runs.
    Returns a :class:`LabRun`. Raises ValueError for bad inputs or parameters (a chosen target
    equal to the true class included).
    """
    if run is None:
        def run(name: str, kwargs: dict[str, Any], target: int | None) -> tuple[AttackOutcome, list[IterationView]]:
            return run_attack(model, image, label, name, kwargs, target)
    target = lab_target(model, image, label, settings, class_names)
    outcomes, iterations = [], []
    for name in settings.attack_names:
        if on_attack is not None:
            on_attack(name)
        outcome, views = run(name, settings.attack_kwargs(name, dataset), target)
        outcomes.append(outcome)
        iterations = iterations or views
    run_record = assemble_run(model, image, label, class_names, outcomes, iterations)
    run_record.target, run_record.skipped = target, settings.skipped
    return run_record


def lab_target(model: nn.Module, image: torch.Tensor, label: int, settings: AttackSettings,
               class_names: tuple[str, ...]) -> int | None:
    """The class the settings aim at for this image (1, C, H, W) with true ``label``; None when
    untargeted. ValueError when a chosen target is the true class or out of range (K, the number
    of classes, is ``len(class_names)``: no forward pass unless the rule needs one)."""
    targets = choose_targets(settings.target_rule, model, image,
                             check_single_image(model, image, label, num_classes=len(class_names)), class_names)
    return None if targets is None else int(targets[0])


def assemble_run(model: nn.Module, image: torch.Tensor, label: int, class_names: tuple[str, ...],
                 outcomes: list[AttackOutcome], iterations: list[IterationView]) -> LabRun:
    """A :class:`LabRun` from per-attack results (as :func:`run_attack` returns them)."""
    probabilities = class_probabilities(model, image)
    if len(class_names) != probabilities.shape[0]:
        raise ValueError(f"class_names must name all {probabilities.shape[0]} classes, got {len(class_names)}")
    return LabRun(image=image[0].detach().float().numpy(), label=label, class_names=tuple(class_names),
                  clean_probabilities=probabilities, clean_prediction=int(probabilities.argmax()),
                  outcomes=outcomes, iterations=iterations)


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes as (name, probability), most probable first."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def metrics_table(run: LabRun) -> pd.DataFrame:
    """One row per attack: (target,) prediction, confidence, success, whether the example is still
    adversarial after 8-bit rounding, PSNR (dB), SSIM, L2, L∞ (×1/255), gradient evaluations and
    time (ms). Indexed by attack name."""
    rows = []
    for o in run.outcomes:
        row = {"Attack": o.name}
        if o.target is not None:
            row["Target"] = run.class_names[o.target]
        row.update({"Prediction": run.class_names[o.prediction], "Confidence": float(o.probabilities[o.prediction]),
                    "Success": o.success, EIGHT_BIT_COLUMN: verdict_8bit(o.success, o.success_8bit),
                    "PSNR (dB)": o.psnr_db, "SSIM": o.ssim, "L2": o.l2, "L∞ (×1/255)": o.linf * 255,
                    "Gradient evals": o.grad_evals, "Time (ms)": o.wall_time_s * 1000})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Attack")


def png_bytes(image: np.ndarray) -> bytes:
    """(C, H, W) float image in [0, 1] → 8-bit PNG bytes (greyscale for C = 1, RGB for C = 3).

    8-bit rounding (:func:`soae_core.eight_bit.to_8bit`) moves pixels by up to 0.5/255, which can
    undo a borderline attack; the ``.npy`` export keeps the exact values.
    """
    array = (to_8bit(torch.as_tensor(np.asarray(image, dtype=np.float64))) * 255).round().numpy().astype(np.uint8)
    pil = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(np.moveaxis(array, 0, -1))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """A NumPy array as the bytes of a ``.npy`` file (``np.load`` reads it back)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of soae_core and the libraries that shape the numbers (read once per process)."""
    versions = {"soae_core": __version__}
    for package in ("torch", "torchvision", "torchattacks", "numpy", "scikit-image", "streamlit"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_bundle(run: LabRun, settings: AttackSettings, model_name: str, image_source: str) -> bytes:
    """A JSON document (UTF-8 bytes) that says how to reproduce ``run``: model, image source,
    true label, settings (seed included), per-attack metrics and library versions."""
    document = {
        "model": model_name, "image": image_source, "label": run.label, "label_name": run.class_names[run.label],
        "clean_prediction": run.class_names[run.clean_prediction], "settings": settings.as_dict(),
        "target": None if run.target is None else run.class_names[run.target],
        "skipped": run.skipped,
        "results": [{"attack": o.name, "prediction": run.class_names[o.prediction], "success": o.success,
                     "prediction_after_8bit_rounding": run.class_names[o.prediction_8bit],
                     "adversarial_after_8bit_rounding": o.success_8bit,
                     "rounding_aware_8bit_projection_adversarial": o.grid_success,
                     "psnr_db": _finite_or_none(o.psnr_db), "ssim": _finite_or_none(o.ssim), "l2": o.l2,
                     "linf": o.linf, "grad_evals": o.grad_evals, "wall_time_s": o.wall_time_s}
                    for o in run.outcomes],
        "versions": dict(library_versions()),
    }
    return json.dumps(document, indent=2).encode("utf-8")


def transfer_table(models: dict[str, nn.Module], run: LabRun, outcome: AttackOutcome, source: str) -> pd.DataFrame:
    """How every model in ``models`` classifies ``outcome``'s adversarial image (made on model ``source``),
    before and after 8-bit rounding; rows indexed by model name, the source marked "(attacked)".

    Uses :func:`soae_core.transfer.transfer_verdicts`; success follows the run's target.
    """
    clean = torch.from_numpy(run.image).unsqueeze(0)
    adv = torch.from_numpy(outcome.adv).unsqueeze(0)
    rows = []
    for verdict in transfer_verdicts(models, clean, adv, run.label, outcome.target):
        rows.append({"Model": verdict.model + (" (attacked)" if verdict.model == source else ""),
                     "On the original": run.class_names[verdict.clean_prediction],
                     "On the adversarial image": run.class_names[verdict.prediction],
                     "Fooled": verdict.fooled,
                     "After 8-bit rounding": run.class_names[verdict.prediction_8bit],
                     "Fooled after rounding": verdict.fooled_8bit})
    return pd.DataFrame(rows).set_index("Model")
