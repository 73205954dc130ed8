"""Evaluation: models × attacks × ε on n test images → JSON-ready results (the reports are
:mod:`soae_core.experiments.evaluation_report`'s; ``python -m soae_core.evaluate`` is the command line).

Main grid (every model, attack and ε): clean and robust accuracy (the layout of the paper's
Tables I/II), cost (gradient evaluations per image, forward passes, wall time), accuracy versus
gradient evaluations (equal-budget comparison), PSNR/SSIM (Table V, with the paper's PSNR
convention beside the standard one), L2/L∞, edge alignment, high-frequency share of δ, feature
distortion per layer and saliency similarity (Figure 4's claims, quantified).

Studies (on the first ``--study-n`` images, at the first ε): ``eta`` — SOAE accuracy versus
finite-difference step η (Figure 1); ``tau`` — accuracy, time and Krylov dimension m versus τ
(Figure 2, Table IV); ``iterations`` — accuracy after each of 20 iterations of PGD and SOAE
(Figure 3).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn

from soae_core import __version__, attacks, data, metrics
from soae_core.attacks import ATTACKS, Attack, AttackResult, budget_points
from soae_core.attacks.asod import sigma_for
from soae_core.attacks.counting import BudgetTrace
from soae_core.attacks.soae import SOAETrace
from soae_core.defaults import PAPER_EPS, STUDY_ETAS, STUDY_TAUS
from soae_core.device import resolve_device, to_cpu
from soae_core.experiments.distributed import (
    DistContext,
    gather,
    index_blocks,
    run_units,
)
from soae_core.experiments.machine import describe_machine
from soae_core.models import get_model_info, load_model
from soae_core.validation import check_choice, check_int, check_positive

DATA_SOURCES = ("test", "samples")
STUDIES = ("eta", "tau", "iterations")
TEST_SET_LOADERS = {"fashion_mnist": data.load_fashion_mnist, "mnist": data.load_mnist, "cifar10": data.load_cifar10}
DEFAULT_MODELS = ["fmnist-cnn-std", "fmnist-cnn-pgd", "fmnist-cnn-trades", "fmnist-cnn-soat"]


@dataclass
class EvalConfig:
    """Everything one evaluation run depends on (written into the JSON report).

    eps: L∞ budgets in [0, 1] pixel units. n: test images (the first n of the split).
    soae: keyword arguments for :class:`SOAE` (paper defaults when empty).
    weights: model name → weights file overriding the bundled checkpoint.
    device: where models, images and attacks run (:mod:`soae_core.device`; under torchrun each rank
        resolves it for itself, ``auto`` giving ``cuda:LOCAL_RANK``). The numbers do not depend on it
        beyond floating-point rounding, nor on the number of ranks at all.
    """

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    attacks: list[str] = field(default_factory=lambda: ["FGSM", "PGD", "AutoAttack", "ASOD", "SOAE"])
    eps: list[float] = field(default_factory=lambda: [PAPER_EPS])
    n: int = 1000
    data: str = "test"
    batch_size: int = 500
    weights: dict[str, str] = field(default_factory=dict)
    soae: dict[str, Any] = field(default_factory=dict)
    asod_sigma: float = sigma_for("mnist")
    studies: list[str] = field(default_factory=list)
    study_n: int = 200
    study_models: list[str] | None = None
    etas: list[float] = field(default_factory=lambda: list(STUDY_ETAS))
    taus: list[float] = field(default_factory=lambda: list(STUDY_TAUS))
    study_max_krylov: int = 100
    iteration_steps: int = 20
    seed: int = 0
    device: str = "auto"

    def validate(self) -> "EvalConfig":
        """Check every field; raises ValueError naming the bad one."""
        if not self.models:
            raise ValueError("models must name at least one model")
        if not self.attacks:
            raise ValueError("attacks must name at least one attack")
        for name in self.attacks:
            check_choice("attack", name, tuple(ATTACKS))
        if not self.eps:
            raise ValueError("eps must hold at least one budget")
        for value in self.eps:
            check_positive("eps", value)
        check_int("n", self.n)
        check_choice("data", self.data, DATA_SOURCES)
        check_int("batch_size", self.batch_size)
        check_positive("asod_sigma", self.asod_sigma, allow_zero=True)
        for name in self.studies:
            check_choice("study", name, STUDIES)
        check_int("study_n", self.study_n)
        check_int("study_max_krylov", self.study_max_krylov)
        check_int("iteration_steps", self.iteration_steps)
        check_int("seed", self.seed, minimum=0)
        resolve_device(self.device)
        return self


# ---------------------------------------------------------------------------------- inputs
def load_eval_images(dataset: str, source: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images (n, C, H, W) in [0, 1] and labels (n,) of the test split or bundled samples."""
    check_choice("data", source, DATA_SOURCES)
    if source == "samples":
        sample_set = data.load_samples(dataset)
    else:
        loader = TEST_SET_LOADERS.get(dataset)
        if loader is None:
            raise ValueError(f"no test set loader for dataset {dataset!r}; allowed: {sorted(TEST_SET_LOADERS)}")
        sample_set = loader("test")
    if n > len(sample_set):
        raise ValueError(f"n must be at most {len(sample_set)} for {source} images of {dataset}, got {n}")
    return sample_set.images[:n], sample_set.labels[:n]


def load_models(config: EvalConfig, device: torch.device | str = "cpu") -> tuple[dict[str, nn.Module], str]:
    """Load every model of the config onto ``device``; all must share one dataset, which is returned."""
    datasets = {name: get_model_info(name).dataset for name in config.models}
    if len(set(datasets.values())) != 1:
        raise ValueError(f"models must share one dataset, got {datasets}")
    models = {name: load_model(name, weights_path=config.weights.get(name), device=device) for name in config.models}
    return models, next(iter(datasets.values()))


def make_attack(name: str, model: nn.Module, eps: float, config: EvalConfig, **overrides: Any) -> Attack:
    """The attack ``name`` with the run's settings (``overrides`` win; SOAE and SOAE-g keep no images;
    SOAE-g, SOAE without curvature, takes the run's SOAE settings with δ̃ := g)."""
    soae = {"keep_images": False, **config.soae}
    no_curvature = {key: value for key, value in soae.items() if key != "direction"}  # SOAE-g fixes its own
    settings: dict[str, Any] = {"SOAE": soae, "SOAE-g": no_curvature, "AutoAttack": {"seed": config.seed},
                                "ASOD": {"sigma": config.asod_sigma, "seed": config.seed}}.get(name, {})
    return attacks.make_attack(name, model, eps=eps, **{**settings, **overrides})


# ---------------------------------------------------------------------------------- running
@dataclass
class BlockRun:
    """One attack on one block of images (a unit of work; the same whichever rank runs it).

    points: (gradient evaluations per image, predictions (b,)) after each recorded step.
    forward_passes: per image. wall_time_s: the attack's seconds. krylov: per SOAE iteration,
    (Krylov dimension m per image (b,), stop reasons), None for other attacks. metrics: per-image
    values of the image-quality and location metrics (NaN where not computed) with the masks
    ``perturbed`` (δ ≠ 0) and ``fooled`` (correct on x, wrong after the attack); grid cells only.
    """

    points: list[tuple[float, torch.Tensor]]
    forward_passes: float
    wall_time_s: float
    krylov: list[tuple[torch.Tensor, list[str]]] | None
    metrics: dict[str, np.ndarray] | None = None
    perturbed: torch.Tensor | None = None
    fooled: torch.Tensor | None = None


def forward_passes(result: AttackResult, batch_size: int) -> float:
    """Forward passes per image (AutoAttack's Square queries included); gradients count as one."""
    if isinstance(result.trace, BudgetTrace):
        return result.trace.forward_images / batch_size
    return float(result.grad_evals)


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


_FEATURE_PREFIX = "feature_distortion/"


def metric_values(model: nn.Module, clean: torch.Tensor, changed: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image (N,) values of the image-quality and location metrics of ``changed`` against ``clean``."""
    norms = metrics.perturbation_norms(clean, changed)
    saliency_clean = metrics.attribution(model, clean, labels, "saliency")
    saliency_adv = metrics.attribution(model, changed, labels, "saliency")
    values = {
        "psnr_db": metrics.psnr(clean, changed),
        "psnr_paper_db": metrics.psnr_paper_convention(clean, changed),
        "ssim": metrics.ssim(clean, changed),
        "l2": norms["l2"],
        "linf": norms["linf"],
        "l0_share": norms["l0"] / clean[0].numel(),
        "edge_alignment": metrics.edge_alignment(clean, changed),
        "high_frequency_share": metrics.high_frequency_share(clean, changed),
        "saliency_similarity": metrics.attribution_similarity(saliency_clean, saliency_adv),
    }
    for layer, distortion in metrics.feature_distortion(model, clean, changed).items():
        values[_FEATURE_PREFIX + layer] = distortion
    return values


def summarise_metrics(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """Means over the images selected by ``mask`` of :func:`metric_values` (the report's layout)."""
    summary: dict[str, Any] = {}
    features: dict[str, float | None] = {}
    for key, array in values.items():
        if key.startswith(_FEATURE_PREFIX):
            features[key[len(_FEATURE_PREFIX):]] = _mean(array[mask])
        else:
            summary[key] = _mean(array[mask])
    order = ["psnr_db", "psnr_paper_db", "ssim", "l2", "linf", "l0_share", "edge_alignment",
             "high_frequency_share"]
    return {**{k: summary[k] for k in order}, "feature_distortion": features,
            "saliency_similarity": summary["saliency_similarity"]}


def run_block(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, with_metrics: bool) -> BlockRun:
    """``attack`` on one block (x, y) on the model's device; results leave on the CPU (see run_units)."""
    result = attack(x, y)
    points = budget_points(result)
    krylov = None
    if isinstance(result.trace, SOAETrace):
        krylov = [(it.krylov.iterations, list(it.krylov.stop_reason))  # none for SOAE-g (no solve)
                  for it in result.trace.iterations if it.krylov is not None] or None
    block = BlockRun(points=points, forward_passes=forward_passes(result, x.shape[0]),
                     wall_time_s=result.wall_time_s, krylov=krylov)
    if with_metrics:
        adv_predictions = points[-1][1]
        block.perturbed = (result.adv != x).flatten(1).any(dim=1)
        block.fooled = (metrics.predictions(model, x, x.shape[0]) == y) & (adv_predictions != y)
        chosen = block.perturbed | block.fooled
        values: dict[str, np.ndarray] = {}
        if bool(chosen.any()):
            part = metric_values(model, x[chosen], result.adv[chosen], y[chosen])
            where = to_cpu(chosen).numpy()
            for key, array in part.items():
                full = np.full(x.shape[0], np.nan)
                full[where] = array
                values[key] = full
        block.metrics = values
    return block


def krylov_summary(blocks: list[BlockRun]) -> dict[str, float] | None:
    """Krylov dimension m over all SOAE iterations and samples: mean, median, max, share capped
    (None when no solve ran: not SOAE, or SOAE-g)."""
    records = [record for block in blocks if block.krylov for record in block.krylov]
    if not records:
        return None
    dims = torch.cat([dims for dims, _ in records]).double()
    reasons = [r for _, stop in records for r in stop]
    return {"m_mean": float(dims.mean()), "m_median": float(dims.median()), "m_max": float(dims.max()),
            "max_iter_share": reasons.count("max_iter") / len(reasons),
            "converged_share": reasons.count("converged") / len(reasons),
            "breakdown_share": reasons.count("breakdown") / len(reasons)}


@dataclass
class CellRun:
    """The blocks of one cell put together: budget curve over all images, cost per image, wall time."""

    points: list[tuple[float, torch.Tensor]]
    grad_evals: float
    forward_passes: float
    wall_time_s: float
    blocks: list[BlockRun]


def combine_blocks(blocks: list[BlockRun]) -> CellRun:
    """The blocks of a cell, in image order, as one run over all its images."""
    sizes = [block.points[0][1].shape[0] for block in blocks]
    n = sum(sizes)
    points = [(sum(block.points[k][0] * size for block, size in zip(blocks, sizes, strict=False)) / n,
               torch.cat([block.points[k][1] for block in blocks])) for k in range(len(blocks[0].points))]
    return CellRun(points=points, grad_evals=sum(b.points[-1][0] * s for b, s in zip(blocks, sizes, strict=False)) / n,
                   forward_passes=sum(b.forward_passes * s for b, s in zip(blocks, sizes, strict=False)) / n,
                   wall_time_s=sum(block.wall_time_s for block in blocks), blocks=blocks)


def perturbation_summary(blocks: list[BlockRun]) -> dict[str, Any]:
    """Means of the metrics over the perturbed images (δ ≠ 0), and the same under ``successful`` over the
    successful adversarial examples only (correct on x, wrong on adv) — so that attacks which fool few
    images are not compared on their failures."""
    perturbed = torch.cat([block.perturbed for block in blocks]).numpy()
    fooled = torch.cat([block.fooled for block in blocks]).numpy()
    keys = next((list(block.metrics) for block in blocks if block.metrics), [])
    values = {key: np.concatenate([block.metrics[key] if block.metrics else np.full(block.perturbed.shape[0], np.nan)
                                   for block in blocks]) for key in keys}
    summary: dict[str, Any] = {"perturbed_images": int(perturbed.sum())}
    if perturbed.any():
        summary |= summarise_metrics(values, perturbed)
    summary["successful"] = {"images": int(fooled.sum())}
    if fooled.any():
        summary["successful"] |= summarise_metrics(values, fooled)
    return summary


def accuracy(predictions: torch.Tensor, y: torch.Tensor) -> float:
    """Share of predictions equal to the labels, in [0, 1]."""
    return float((predictions == y).double().mean())


# A cell is one unit of the plan: ("grid", model, ε, attack) or (study, model, value) with study in STUDIES.
Cell = tuple[Any, ...]
# Rough cost order of the grid's attacks (AutoAttack's Square spends up to 5,000 queries per robust image):
# costly units are handed out first, so no rank is left with a long unit at the end.
_ATTACK_COST_ORDER = {"AutoAttack": 0, "ASOD": 1, "SOAE": 2, "PGD": 3, "SOAE-g": 4, "FGSM": 5}


def cell_attack(config: EvalConfig, model: nn.Module, cell: Cell) -> Attack:
    """The attack a cell runs, with the run's settings (studies at the first ε)."""
    if cell[0] == "grid":
        return make_attack(cell[3], model, cell[2], config)
    study, _, value = cell
    eps = config.eps[0]
    if study == "eta":
        return make_attack("SOAE", model, eps, config, eta=value, hvp="finite_difference")
    if study == "tau":
        return make_attack("SOAE", model, eps, config, tau=value, max_krylov=config.study_max_krylov)
    return make_attack(value, model, eps, config, steps=config.iteration_steps)


def cell_images(config: EvalConfig, cell: Cell, n: int) -> int:
    """How many of the first images a cell attacks: all n for the grid, ``study_n`` for a study."""
    return n if cell[0] == "grid" else min(config.study_n, n)


def grid_record(config: EvalConfig, cell: Cell, run: CellRun, y: torch.Tensor) -> dict[str, Any]:
    """One (model, ε, attack) cell of the main grid: accuracy, cost, budget curve, metrics."""
    _, model_name, eps, attack_name = cell
    return {
        "model": model_name, "eps": eps, "attack": attack_name, "n": int(y.shape[0]),
        "robust_accuracy": accuracy(run.points[-1][1], y),
        "grad_evals_per_image": run.grad_evals, "forward_passes_per_image": run.forward_passes,
        "wall_time_s": run.wall_time_s,
        "budget_curve": [{"grad_evals": g, "accuracy": accuracy(p, y)} for g, p in run.points],
        "krylov": krylov_summary(run.blocks),
        **perturbation_summary(run.blocks),
    }


def study_rows(config: EvalConfig, cell: Cell, run: CellRun, y: torch.Tensor) -> list[dict[str, Any]]:
    """One point of a study at the first ε: η or τ value, or the attack of the iteration study."""
    study, model_name, value = cell
    eps = config.eps[0]
    if study == "eta":
        return [{"model": model_name, "eps": eps, "eta": value, "accuracy": accuracy(run.points[-1][1], y),
                 "grad_evals_per_image": run.grad_evals, "wall_time_s": run.wall_time_s}]
    if study == "tau":
        return [{"model": model_name, "eps": eps, "tau": value, "max_krylov": config.study_max_krylov,
                 "accuracy": accuracy(run.points[-1][1], y),
                 "grad_evals_per_image": run.grad_evals, "wall_time_s": run.wall_time_s,
                 **(krylov_summary(run.blocks) or {})}]
    return [{"model": model_name, "eps": eps, "attack": value, "iteration": k + 1,
             "grad_evals": g, "accuracy": accuracy(p, y)} for k, (g, p) in enumerate(run.points)]


def plan_cells(config: EvalConfig) -> list[Cell]:
    """Every cell of the run: the grid (model × ε × attack), then the studies (on the study models)."""
    cells: list[Cell] = [("grid", m, e, a) for m in config.models for e in config.eps for a in config.attacks]
    names = config.study_models or config.models
    if "eta" in config.studies:
        cells += [("eta", m, eta) for m in names for eta in config.etas]
    if "tau" in config.studies:
        cells += [("tau", m, tau) for m in names for tau in config.taus]
    if "iterations" in config.studies:
        cells += [("iterations", m, a) for m in names for a in ("PGD", "SOAE")]
    return cells


Unit = tuple[int, range]  # (cell index, block of image indices)


def run_cells(config: EvalConfig, models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
              cells: list[Cell], ctx: DistContext, progress: str | None = None) -> tuple[list[Any], dict[str, Any]] | None:
    """Results of ``cells`` in their order (rank 0; None on the other ranks) and the ranks' record.

    Every cell's images are cut into blocks of ``config.batch_size`` (the first block holds images
    0 … batch_size−1, whatever the number of ranks); each block of each cell is one unit, run by
    whichever rank takes it. Every attack seeds itself per block, so the numbers depend on the
    seed and the batch size, never on the number of ranks or which rank ran what.
    """
    units: list[Unit] = [(i, block) for i, cell in enumerate(cells)
                         for block in index_blocks(cell_images(config, cell, x.shape[0]), config.batch_size)]
    order = sorted(range(len(units)), key=lambda u: (_ATTACK_COST_ORDER.get(cells[units[u][0]][-1], 9), u))

    def work(unit: Unit) -> BlockRun:
        cell = cells[unit[0]]
        model = models[cell[1]]
        index = slice(unit[1].start, unit[1].stop)
        return run_block(cell_attack(config, model, cell), model, x[index], y[index], cell[0] == "grid")

    run = run_units(units, work, ctx, order=order, progress=progress)
    if run is None:
        return None
    labels = to_cpu(y)
    results = []
    for i, cell in enumerate(cells):
        blocks = [block for (c, _), block in zip(units, run.results, strict=False) if c == i]
        cell_run = combine_blocks(blocks)
        n_cell = cell_images(config, cell, x.shape[0])
        if cell[0] == "grid":
            results.append(grid_record(config, cell, cell_run, labels[:n_cell]))
        else:
            results.append(study_rows(config, cell, cell_run, labels[:n_cell]))
    return results, {"busy_s": run.busy_s, "wall_s": run.wall_s,
                     "units": [run.ranks.count(r) for r in range(ctx.world_size)]}


def run_evaluation(config: EvalConfig, quiet: bool = False, ctx: DistContext | None = None) -> dict[str, Any] | None:
    """Run the grid and the studies; returns the JSON-ready results on rank 0 (None on other ranks).

    ctx: the torchrun context (:func:`soae_core.distributed.init_distributed`); default: this
    process alone on ``config.device``.
    """
    config.validate()
    ctx = ctx or DistContext(device=resolve_device(config.device))
    started = time.perf_counter()
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine_at_start = describe_machine()
    models, dataset = load_models(config, ctx.device)
    x, y = load_eval_images(dataset, config.data, config.n)
    x, y = x.to(ctx.device), y.to(ctx.device)
    cells = plan_cells(config)
    grid_cells = [cell for cell in cells if cell[0] == "grid"]
    study_cells = [cell for cell in cells if cell[0] != "grid"]
    grid = run_cells(config, models, x, y, grid_cells, ctx, None if quiet else "grid (cell × image block)")
    grid_seconds = time.perf_counter() - started
    studies_run = (run_cells(config, models, x, y, study_cells, ctx, None if quiet else "studies")
                   if study_cells else ([], None))
    ranks = gather({"rank": ctx.rank, "device": str(ctx.device), "machine": machine_at_start,
                    "machine_at_end": describe_machine()}, ctx)
    if not ctx.is_main:
        return None
    clean = {name: accuracy(to_cpu(metrics.predictions(model, x, config.batch_size)), to_cpu(y))
             for name, model in models.items()}
    records, grid_ranks = grid
    studies: dict[str, list[dict[str, Any]]] = {name: [] for name in config.studies}
    for cell, rows in zip(study_cells, studies_run[0], strict=False):
        studies[cell[0]] += rows
    for record in ranks:
        r = record["rank"]
        record["grid_busy_s"] = grid_ranks["busy_s"][r]
        record["grid_units"] = grid_ranks["units"][r]
        if studies_run[1] is not None:
            record["study_busy_s"] = studies_run[1]["busy_s"][r]
            record["study_units"] = studies_run[1]["units"][r]
    return {
        "meta": {"dataset": dataset, "n": int(x.shape[0]), "study_n": min(config.study_n, config.n),
                 "started_utc": started_utc, "duration_s": time.perf_counter() - started,
                 "grid_duration_s": grid_seconds, "ranks": ctx.world_size, "per_rank": ranks,
                 "soae_lab_version": __version__, "machine": machine_at_start, "machine_at_end": describe_machine(),
                 "command": command_line(ctx)},
        "config": asdict(config),
        "models": {name: {"clean_accuracy": clean[name], "method": get_model_info(name).method} for name in models},
        "attacks": records,
        "studies": studies,
    }


def command_line(ctx: DistContext) -> str:
    """The command that ran this evaluation (torchrun's form for several ranks)."""
    if ctx.is_distributed:
        return " ".join(["torchrun --nproc-per-node", str(ctx.world_size), "-m soae_core.evaluate", *sys.argv[1:]])
    return " ".join(["python -m soae_core.evaluate", *sys.argv[1:]])
