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

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from soae_core import attacks, data, metrics
from soae_core.attacks import ATTACKS, Attack, AttackResult, budget_points
from soae_core.attacks.counting import BudgetTrace
from soae_core.attacks.soae import SOAETrace
from soae_core.defaults import PAPER_EPS, STUDY_ETAS, STUDY_TAUS
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
    jobs: worker processes running cells side by side (1: everything in this process).
    """

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    attacks: list[str] = field(default_factory=lambda: ["FGSM", "PGD", "AutoAttack", "ASOD", "SOAE"])
    eps: list[float] = field(default_factory=lambda: [PAPER_EPS])
    n: int = 1000
    data: str = "test"
    batch_size: int = 500
    weights: dict[str, str] = field(default_factory=dict)
    soae: dict[str, Any] = field(default_factory=dict)
    asod_sigma: float = 0.7
    studies: list[str] = field(default_factory=list)
    study_n: int = 200
    study_models: list[str] | None = None
    etas: list[float] = field(default_factory=lambda: list(STUDY_ETAS))
    taus: list[float] = field(default_factory=lambda: list(STUDY_TAUS))
    study_max_krylov: int = 100
    iteration_steps: int = 20
    seed: int = 0
    jobs: int = 1

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
        check_int("jobs", self.jobs)
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


def load_models(config: EvalConfig) -> tuple[dict[str, nn.Module], str]:
    """Load every model of the config; all must share one dataset, which is returned."""
    datasets = {name: get_model_info(name).dataset for name in config.models}
    if len(set(datasets.values())) != 1:
        raise ValueError(f"models must share one dataset, got {datasets}")
    models = {name: load_model(name, weights_path=config.weights.get(name)) for name in config.models}
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
class BatchedRun:
    """One attack over all images, in batches.

    adv: (N, C, H, W). points: (gradient evaluations per image, predictions (N,)) after each
    recorded step, the budget curve. traces: each batch's trace.
    """

    adv: torch.Tensor
    grad_evals: float
    forward_passes: float
    wall_time_s: float
    points: list[tuple[float, torch.Tensor]]
    traces: list[Any]


def forward_passes(result: AttackResult, batch_size: int) -> float:
    """Forward passes per image (AutoAttack's Square queries included); gradients count as one."""
    if isinstance(result.trace, BudgetTrace):
        return result.trace.forward_images / batch_size
    return float(result.grad_evals)


def run_batched(attack: Attack, x: torch.Tensor, y: torch.Tensor, batch_size: int, desc: str,
                quiet: bool = False) -> BatchedRun:
    """Run ``attack`` on (x, y) in batches, gathering images, costs and budget curves."""
    advs, traces, batch_points = [], [], []
    grad_total = forward_total = wall = 0.0
    starts = range(0, x.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=quiet, file=sys.stderr):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        result = attack(xb, yb)
        points = budget_points(result)
        advs.append(result.adv)
        traces.append(result.trace)
        batch_points.append(points)
        grad_total += points[-1][0] * xb.shape[0]
        forward_total += forward_passes(result, xb.shape[0]) * xb.shape[0]
        wall += result.wall_time_s
    n = x.shape[0]
    points = [(sum(bp[k][0] * bp[k][1].shape[0] for bp in batch_points) / n,
               torch.cat([bp[k][1] for bp in batch_points])) for k in range(len(batch_points[0]))]
    return BatchedRun(torch.cat(advs), grad_total / n, forward_total / n, wall, points, traces)


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def metric_means(model: nn.Module, clean: torch.Tensor, changed: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Means over the images of the image-quality and location metrics of ``changed`` against ``clean``."""
    norms = metrics.perturbation_norms(clean, changed)
    saliency_clean = metrics.attribution(model, clean, labels, "saliency")
    saliency_adv = metrics.attribution(model, changed, labels, "saliency")
    return {
        "psnr_db": _mean(metrics.psnr(clean, changed)),
        "psnr_paper_db": _mean(metrics.psnr_paper_convention(clean, changed)),
        "ssim": _mean(metrics.ssim(clean, changed)),
        "l2": _mean(norms["l2"]),
        "linf": _mean(norms["linf"]),
        "l0_share": _mean(norms["l0"] / clean[0].numel()),
        "edge_alignment": _mean(metrics.edge_alignment(clean, changed)),
        "high_frequency_share": _mean(metrics.high_frequency_share(clean, changed)),
        "feature_distortion": {layer: _mean(values) for layer, values in
                               metrics.feature_distortion(model, clean, changed).items()},
        "saliency_similarity": _mean(metrics.attribution_similarity(saliency_clean, saliency_adv)),
    }


def perturbation_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
                         adv_predictions: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Means of the image-quality and location metrics over the perturbed images (δ ≠ 0), and the same
    under ``successful`` over the successful adversarial examples only (correct on x, wrong on adv) —
    so that attacks which fool few images are not compared on their failures. ``adv_predictions``
    (N,) are the model's classes for ``adv`` (the attack's last budget point)."""
    perturbed = (adv != x).flatten(1).any(dim=1)
    summary: dict[str, Any] = {"perturbed_images": int(perturbed.sum())}
    if bool(perturbed.any()):
        summary |= metric_means(model, x[perturbed], adv[perturbed], y[perturbed])
    fooled = (metrics.predictions(model, x, batch_size) == y) & (adv_predictions != y)
    summary["successful"] = {"images": int(fooled.sum())}
    if bool(fooled.any()):
        summary["successful"] |= metric_means(model, x[fooled], adv[fooled], y[fooled])
    return summary


def krylov_summary(traces: list[Any]) -> dict[str, float] | None:
    """Krylov dimension m over all SOAE iterations and samples: mean, median, max, share capped
    (None when no solve ran: not SOAE, or SOAE-g)."""
    solves = [it.krylov for t in traces if isinstance(t, SOAETrace) for it in t.iterations if it.krylov is not None]
    if not solves:
        return None
    dims = torch.cat([k.iterations for k in solves]).double()
    reasons = [r for k in solves for r in k.stop_reason]
    return {"m_mean": float(dims.mean()), "m_median": float(dims.median()), "m_max": float(dims.max()),
            "max_iter_share": reasons.count("max_iter") / len(reasons),
            "converged_share": reasons.count("converged") / len(reasons),
            "breakdown_share": reasons.count("breakdown") / len(reasons)}


def accuracy(predictions: torch.Tensor, y: torch.Tensor) -> float:
    """Share of predictions equal to the labels, in [0, 1]."""
    return float((predictions == y).double().mean())


# A cell is one unit of work: ("grid", model, ε, attack) or (study, model, value) with study in STUDIES.
Cell = tuple[Any, ...]
# Rough cost order of the grid's attacks (AutoAttack's Square spends up to 5,000 queries per robust image):
# with several workers the costly cells start first, so no worker is left with a long cell at the end.
_ATTACK_COST_ORDER = {"AutoAttack": 0, "ASOD": 1, "SOAE": 2, "PGD": 3, "SOAE-g": 4, "FGSM": 5}


def grid_record(config: EvalConfig, model: nn.Module, model_name: str, eps: float, attack_name: str,
                x: torch.Tensor, y: torch.Tensor, quiet: bool = False) -> dict[str, Any]:
    """One (model, ε, attack) cell of the main grid on (x, y): accuracy, cost, budget curve, metrics."""
    run = run_batched(make_attack(attack_name, model, eps, config), x, y, config.batch_size,
                      desc=f"{model_name} ε={eps:.4g} {attack_name}", quiet=quiet)
    return {
        "model": model_name, "eps": eps, "attack": attack_name, "n": int(x.shape[0]),
        "robust_accuracy": accuracy(run.points[-1][1], y),
        "grad_evals_per_image": run.grad_evals, "forward_passes_per_image": run.forward_passes,
        "wall_time_s": run.wall_time_s,
        "budget_curve": [{"grad_evals": g, "accuracy": accuracy(p, y)} for g, p in run.points],
        "krylov": krylov_summary(run.traces),
        **perturbation_summary(model, x, y, run.adv, run.points[-1][1], config.batch_size),
    }


def study_rows(config: EvalConfig, model: nn.Module, model_name: str, study: str, value: Any,
               x: torch.Tensor, y: torch.Tensor, quiet: bool = False) -> list[dict[str, Any]]:
    """One point of a study at the first ε on (x, y): η or τ value, or the attack of the iteration study."""
    eps = config.eps[0]
    desc = f"{study} {model_name} {value}"
    if study == "eta":
        run = run_batched(make_attack("SOAE", model, eps, config, eta=value, hvp="finite_difference"),
                          x, y, config.batch_size, desc, quiet)
        return [{"model": model_name, "eps": eps, "eta": value, "accuracy": accuracy(run.points[-1][1], y),
                 "grad_evals_per_image": run.grad_evals, "wall_time_s": run.wall_time_s}]
    if study == "tau":
        run = run_batched(make_attack("SOAE", model, eps, config, tau=value, max_krylov=config.study_max_krylov),
                          x, y, config.batch_size, desc, quiet)
        return [{"model": model_name, "eps": eps, "tau": value, "max_krylov": config.study_max_krylov,
                 "accuracy": accuracy(run.points[-1][1], y),
                 "grad_evals_per_image": run.grad_evals, "wall_time_s": run.wall_time_s,
                 **(krylov_summary(run.traces) or {})}]
    run = run_batched(make_attack(value, model, eps, config, steps=config.iteration_steps),
                      x, y, config.batch_size, desc, quiet)
    return [{"model": model_name, "eps": eps, "attack": value, "iteration": k + 1,
             "grad_evals": g, "accuracy": accuracy(p, y)} for k, (g, p) in enumerate(run.points)]


def run_cell(config: EvalConfig, models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, cell: Cell,
             quiet: bool = False) -> Any:
    """A grid record (on all of x) or a list of study rows (on the first ``study_n`` images) for ``cell``."""
    if cell[0] == "grid":
        _, model_name, eps, attack_name = cell
        return grid_record(config, models[model_name], model_name, eps, attack_name, x, y, quiet)
    study, model_name, value = cell
    n_study = min(config.study_n, x.shape[0])
    return study_rows(config, models[model_name], model_name, study, value, x[:n_study], y[:n_study], quiet)


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


_WORKER_STATE: dict[str, Any] = {}


def _start_worker(config: EvalConfig, x: torch.Tensor, y: torch.Tensor, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER_STATE.update(config=config, models=load_models(config)[0], x=x, y=y)


def _worker_cell(cell: Cell) -> Any:
    state = _WORKER_STATE
    return run_cell(state["config"], state["models"], state["x"], state["y"], cell, quiet=True)


def run_cells(config: EvalConfig, models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
              cells: list[Cell], quiet: bool = False) -> tuple[list[Any], float]:
    """Results of ``cells`` in their order, and the seconds until the last grid cell finished.

    With ``config.jobs`` > 1 the cells run in that many worker processes (each with this
    process's torch thread count, each loading the models once); costly grid cells start first.
    Every attack seeds itself, so the numbers do not depend on the order or the worker count.
    """
    started = time.perf_counter()
    results: list[Any] = [None] * len(cells)
    grid_done = 0.0
    if config.jobs == 1:
        for index, cell in enumerate(tqdm(cells, desc="cells", disable=quiet, file=sys.stderr)):
            results[index] = run_cell(config, models, x, y, cell, quiet)
            if cell[0] == "grid":
                grid_done = time.perf_counter() - started
        return results, grid_done
    order = sorted(range(len(cells)), key=lambda i: (cells[i][0] != "grid",
                                                     _ATTACK_COST_ORDER.get(cells[i][-1], 9), i))
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with ProcessPoolExecutor(config.jobs, mp_context=context, initializer=_start_worker,
                             initargs=(config, x, y, torch.get_num_threads())) as pool:
        futures = {pool.submit(_worker_cell, cells[i]): i for i in order}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"cells ({config.jobs} workers)",
                           disable=quiet, file=sys.stderr):
            index = futures[future]
            results[index] = future.result()
            if cells[index][0] == "grid":
                grid_done = time.perf_counter() - started
    return results, grid_done


def run_evaluation(config: EvalConfig, quiet: bool = False) -> dict[str, Any]:
    """Run the grid and the studies; returns the JSON-ready results (see :mod:`soae_core.experiments.evaluation_report`)."""
    config.validate()
    started = time.perf_counter()
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine_at_start = describe_machine()
    models, dataset = load_models(config)
    x, y = load_eval_images(dataset, config.data, config.n)
    clean = {name: accuracy(metrics.predictions(model, x, config.batch_size), y) for name, model in models.items()}
    cells = plan_cells(config)
    outcomes, grid_seconds = run_cells(config, models, x, y, cells, quiet)
    records = [outcome for cell, outcome in zip(cells, outcomes) if cell[0] == "grid"]
    studies: dict[str, list[dict[str, Any]]] = {name: [] for name in config.studies}
    for cell, outcome in zip(cells, outcomes):
        if cell[0] != "grid":
            studies[cell[0]] += outcome
    return {
        "meta": {"dataset": dataset, "n": int(x.shape[0]), "study_n": min(config.study_n, config.n),
                 "started_utc": started_utc, "duration_s": time.perf_counter() - started,
                 "grid_duration_s": grid_seconds, "jobs": config.jobs,
                 "machine": machine_at_start, "machine_at_end": describe_machine(),
                 "command": " ".join(["python -m soae_core.evaluate", *sys.argv[1:]])},
        "config": asdict(config),
        "models": {name: {"clean_accuracy": clean[name], "method": get_model_info(name).method} for name in models},
        "attacks": records,
        "studies": studies,
    }
