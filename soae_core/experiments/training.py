"""Training (``python -m soae_core.train`` is its command line).

Methods: std (cross-entropy), pgd (Madry PGD-AT), trades (β = 6), soat (training on SOAE
examples, eq. 15 of Qian et al.). Checkpoints every epoch to ``runs/<name>/checkpoint.pt``
(written atomically); ``--resume`` continues from the last finished epoch, so a ``kill -9``
loses at most the running epoch. Each epoch's shuffling and attack noise come from
``seed + epoch``, so a resumed run repeats what the uninterrupted run would have done.

Under ``torchrun --nproc-per-node K -m soae_core.train ...`` the same code trains with
DistributedDataParallel: ``--batch-size`` stays the global batch (each rank takes 1/K of it through a
DistributedSampler), every rank draws the global batch's start noise and keeps its rows, so K ranks
follow the one-process run up to the order of floating-point sums; rank 0 writes checkpoints, logs,
weights and card, and ``--resume`` restarts all ranks from the last checkpoint after any rank died.
At the end it writes ``<out-dir>/<name>.safetensors`` and the model card ``<name>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from soae_core import __version__
from soae_core.data import SampleSet, load_fashion_mnist
from soae_core.device import describe_device
from soae_core.experiments.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    epoch_batches,
    rank_rows,
    shutdown,
)
from soae_core.experiments.machine import machine_facts
from soae_core.experiments.model_card import CARD_PGD_IMAGES, CARD_SOAE_IMAGES, evaluate_for_card
from soae_core.experiments.training_objectives import (
    METHODS,
    BatchShare,
    ObjectiveConfig,
    describe_inner_attack,
    objective_loss,
)
from soae_core.models import build_model, get_model_info, save_state_dict
from soae_core.validation import check_choice, check_int, check_positive

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the checkpoint and the card)."""

    model: str = "fmnist-cnn-std"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    seed: int = 0
    train_subset: int | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


def _check_config(cfg: TrainConfig) -> TrainConfig:
    info = get_model_info(cfg.model)
    if info.dataset != "fashion_mnist":
        raise ValueError(f"model must be a Fashion-MNIST model to train here, got {cfg.model!r} ({info.dataset})")
    check_int("epochs", cfg.epochs)
    check_int("batch_size", cfg.batch_size)
    check_positive("lr", cfg.lr)
    check_positive("weight_decay", cfg.weight_decay, allow_zero=True)
    check_choice("optimizer", cfg.optimizer, ("adam", "sgd"))
    check_choice("lr_schedule", cfg.lr_schedule, ("cosine", "constant"))
    check_int("seed", cfg.seed, minimum=0)
    if cfg.train_subset is not None:
        check_int("train_subset", cfg.train_subset)
    check_choice("method", cfg.objective.method, METHODS)
    check_positive("eps", cfg.objective.eps)
    check_positive("alpha", cfg.objective.alpha)
    check_int("attack_steps", cfg.objective.attack_steps)
    return cfg


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer (Adam or SGD with momentum 0.9) and learning-rate scheduler of ``cfg``."""
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return optimizer, scheduler


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**data, "objective": ObjectiveConfig(**data["objective"])})


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train: SampleSet, cfg: TrainConfig,
                    epoch: int, progress: bool = True, ctx: DistContext | None = None,
                    attack_model: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``train`` in a seeded random order; returns loss, accuracy, grad evals, seconds.

    Under torchrun (``ctx``) each rank takes its share of every global batch of ``cfg.batch_size``
    (:func:`soae_core.distributed.epoch_batches`), ``model`` is the DistributedDataParallel wrapper
    and ``attack_model`` the module inside it; the returned numbers are over all ranks.
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    torch.manual_seed(cfg.seed * 1000 + epoch)
    batches = epoch_batches(len(train), cfg.batch_size, cfg.seed * 1000, epoch, ctx)
    model.train()
    start = time.perf_counter()
    total_loss = correct = seen = grad_evals = 0.0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not (progress and ctx.is_main),
               mininterval=2.0, file=sys.stderr)
    for idx in bar:
        x, y = train.images[idx].to(ctx.device), train.labels[idx].to(ctx.device)
        share = BatchShare(global_size=len(idx) * ctx.world_size, rows=rank_rows(ctx))
        loss, logits, evals = objective_loss(model, x, y, cfg.objective, share=share, attack_model=attack_model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # training only: the model here is private to this process
        optimizer.step()
        total_loss += loss.detach().double() * len(idx)  # summed on the device: no host sync per step
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        grad_evals += evals * len(idx)
        if progress and ctx.is_main:
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}", acc=f"{float(correct) / seen:.3f}")
    total_loss, correct, seen, grad_evals = all_reduce_sum([float(total_loss), float(correct), seen, grad_evals], ctx)
    if not math.isfinite(total_loss):
        raise RuntimeError(f"training diverged at epoch {epoch + 1}: loss is {total_loss / seen}")
    return {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen,
            "grad_evals_per_example": grad_evals / seen, "seconds": time.perf_counter() - start}


def train(cfg: TrainConfig, checkpoint_dir: Path, resume: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None, ctx: DistContext | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or continue) ``cfg.model``; returns the trained model and the run record.

    ctx: where to run — one process on a device, or this rank of a torchrun job (then the model
    is wrapped in DistributedDataParallel, every rank reads the checkpoint, rank 0 alone writes it).
    Default: one process on the CPU.
    stop_after_epochs: return after that many epochs of this call (for tests of --resume).
    """
    cfg = _check_config(cfg)
    ctx = ctx or DistContext()
    ckpt_path = checkpoint_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(ctx.device)
    optimizer, scheduler = make_optimizer(cfg, model)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=ctx.device, weights_only=True)
        saved = _config_from_dict(state["config"])
        if saved != cfg:
            diff = {k: (v, _config_dict(cfg)[k]) for k, v in state["config"].items() if _config_dict(cfg)[k] != v}
            raise ValueError(f"--resume: the checkpoint in {checkpoint_dir} was made with other settings "
                             f"(checkpoint, now): {diff}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        if ctx.is_main:
            print(f"resuming {cfg.model} after epoch {start_epoch}", file=sys.stderr)
    trained = model
    if ctx.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    train_set = load_fashion_mnist("train")
    if cfg.train_subset is not None:
        train_set = SampleSet(train_set.images[:cfg.train_subset], train_set.labels[:cfg.train_subset],
                              train_set.class_names)
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after_epochs is not None and epoch - start_epoch >= stop_after_epochs:
            break
        record = train_one_epoch(trained, optimizer, train_set, cfg, epoch, progress, ctx, attack_model=model)
        record["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        history.append(record)
        if ctx.is_main:
            print(json.dumps(record), file=sys.stderr)
            _save_atomic({"config": _config_dict(cfg), "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "history": history, "epoch": epoch + 1}, ckpt_path)
        barrier(ctx)  # no rank runs ahead of the checkpoint
    return model, {"config": _config_dict(cfg), "history": history, "finished": len(history) == cfg.epochs}


def train_and_save(cfg: TrainConfig, checkpoint_dir: Path, out_dir: Path, command: str, resume: bool = False,
                   progress: bool = True, test_subset: int | None = None, eval_pgd_n: int = CARD_PGD_IMAGES,
                   eval_soae_n: int = CARD_SOAE_IMAGES, ctx: DistContext | None = None) -> dict[str, Any] | None:
    """Train ``cfg`` (see :func:`train`), write ``<out_dir>/<model>.safetensors`` and its model card
    ``<model>.json`` (architecture, hyper-parameters, history, machine, device, ranks,
    :func:`evaluate_for_card`'s numbers and ``command``, the command line that ran it). Returns the card.

    Under torchrun (``ctx``) every rank trains; then the process group is closed and rank 0 alone
    evaluates the model and writes the files (the other ranks return None).
    """
    started = time.perf_counter()
    ctx = ctx or DistContext()
    try:
        model, run = train(cfg, checkpoint_dir, resume=resume, progress=progress, ctx=ctx)
    finally:
        shutdown(ctx)
    if not ctx.is_main:
        return None
    train_seconds = sum(r["seconds"] for r in run["history"])
    model.eval().requires_grad_(False)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{cfg.model}.safetensors"
    method = cfg.objective.method
    # The header records what the weights are for, so an upload to the app can be checked against
    # the architecture it is meant for (the smooth twin has the same keys and shapes).
    architecture = get_model_info(cfg.model).architecture
    save_state_dict(model, weights, metadata={"model": cfg.model, "architecture": architecture, "method": method})
    card = {
        "name": cfg.model,
        "architecture": get_model_info(cfg.model).architecture,
        "dataset": "fashion_mnist",
        "method": method,
        "trained_eps": None if method == "std" else cfg.objective.eps,  # on [0, 1] pixels (0.1, not 8/255)
        "hyperparameters": run["config"],
        "inner_attack": describe_inner_attack(cfg.objective),
        "epochs": cfg.epochs,
        "wall_time_s": {"training": round(train_seconds, 2), "this_invocation": None},
        "soae_lab_version": __version__,
        "machine": machine_facts(),
        "device": describe_device(ctx.device),
        "ranks": ctx.world_size,
        "history": run["history"],
        "grad_evals_per_example_per_epoch": run["history"][-1]["grad_evals_per_example"] if run["history"] else None,
        "command": command,
        "weights_file": weights.name,
        "weights_dtype": "float32",
    }
    card.update(evaluate_for_card(model, eps=cfg.objective.eps, test_subset=test_subset,
                                  pgd_n=eval_pgd_n, soae_n=eval_soae_n, progress=progress))
    card["wall_time_s"]["this_invocation"] = round(time.perf_counter() - started, 1)
    (out_dir / f"{cfg.model}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
