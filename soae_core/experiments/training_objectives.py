"""Training objectives: standard (ERM), PGD adversarial training, TRADES, and SOAT.

Each objective maps a batch to a scalar loss to minimise over the parameters, and reports the
input-gradient evaluations its inner maximisation spent. Inner maximisations take input
gradients with ``torch.autograd.grad`` (nothing is accumulated into parameter ``.grad``) and run
with the model in eval mode; the training loss is then computed in train mode.

PGD and the TRADES KL maximisation are written here by hand (a few lines each) because they are
the inner loop of training and need the train/eval switching above; attacks for *evaluation*
come from torchattacks / soae_core.attacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from soae_core.attacks.base import project_linf
from soae_core.defaults import PAPER_EPS, PAPER_TAU
from soae_core.validation import check_choice

METHODS = ("std", "pgd", "trades", "soat")

@dataclass(frozen=True)
class BatchShare:
    """This process's part of a global batch: rows ``rows`` of a tensor of ``global_size`` rows.

    Start noise is drawn for the whole global batch from torch's global generator — the same
    draw on every rank — and each rank keeps its rows, so every example gets the noise it would
    get in one process (see :func:`soae_core.experiments.distributed.epoch_batches`). The default, the whole
    batch, draws exactly what one process always drew.
    """

    global_size: int | None = None
    rows: slice = field(default_factory=lambda: slice(None))

    def noise(self, like: torch.Tensor, kind: str, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Noise shaped like ``like``, this rank's rows: ``uniform`` in [low, high) (as ``empty().uniform_``),
        ``rand`` in [0, 1) (as ``torch.rand``) or ``normal`` (as ``torch.randn``) — each exactly the call
        one process makes for its whole batch."""
        shape = (self.global_size or like.shape[0], *like.shape[1:])
        if kind == "uniform":
            full = torch.empty(shape, dtype=like.dtype, device=like.device).uniform_(low, high)
        elif kind == "rand":
            full = torch.rand(shape, dtype=like.dtype, device=like.device)
        else:
            full = torch.randn(shape, dtype=like.dtype, device=like.device)
        part = full[self.rows]
        if part.shape != like.shape:
            raise ValueError(f"batch share rows {self.rows} of {shape[0]} give {part.shape[0]} rows, "
                             f"the batch has {like.shape[0]}")
        return part


WHOLE_BATCH = BatchShare()



def default_alpha(eps: float) -> float:
    """The PGD/TRADES step for budget ``eps``: the paper's 2/255 at 8/255, scaled with ε."""
    return (2 / 255) * eps / PAPER_EPS


@dataclass
class ObjectiveConfig:
    """Hyper-parameters of the inner maximisation (eps, alpha on [0, 1] pixel scale).

    alpha and attack_steps are PGD's and TRADES's (step per iteration, iterations). SOAT uses
    the soae_* fields only: soae_steps iterations of SOAE moving soae_alpha/soae_steps each
    (soae_alpha None: SOAE's default total α = 2.5·eps). :func:`describe_inner_attack` says in
    words what a config does.
    """

    method: str = "std"
    eps: float = 0.1
    alpha: float = 0.025
    attack_steps: int = 7
    trades_beta: float = 6.0
    soae_steps: int = 1
    soae_hvp: str = "exact"
    soae_max_krylov: int = 10
    soae_tau: float = PAPER_TAU
    soae_step_rule: str = "sign"
    soae_random_start: bool = True
    soae_alpha: float | None = None


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
             random_start: bool = True, share: BatchShare = WHOLE_BATCH) -> torch.Tensor:
    """Madry et al. L∞ PGD maximising cross-entropy; x (N, C, H, W) in [0, 1] → x_adv in the ε-ball."""
    x_adv = x.clone()
    if random_start:
        x_adv = project_linf(x_adv + share.noise(x, "uniform", -eps, eps), x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project_linf(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def trades_adversary(model: nn.Module, x: torch.Tensor, eps: float, alpha: float, steps: int,
                     share: BatchShare = WHOLE_BATCH) -> torch.Tensor:
    """TRADES inner maximisation of KL(f(x) ‖ f(x')) from x + 0.001·N(0, 1) (Zhang et al. 2019)."""
    with torch.no_grad():
        p_natural = F.softmax(model(x), dim=1)
    x_adv = project_linf(x + 0.001 * share.noise(x, "normal"), x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_natural, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project_linf(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def soae_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ObjectiveConfig,
                  share: BatchShare = WHOLE_BATCH) -> tuple[torch.Tensor, int]:
    """Second-order adversarial examples δ* = δ⁽⁰⁾ + V_m γ* (eq. 15) from soae_core.attacks.SOAE."""
    from soae_core.attacks import SOAE  # the engine; imported lazily so the other methods work without it

    start_noise = share.noise(x, "rand") if cfg.soae_random_start and cfg.eps > 0 else None
    attack = SOAE(model, eps=cfg.eps, tau=cfg.soae_tau, steps=cfg.soae_steps, hvp=cfg.soae_hvp,
                  max_krylov=cfg.soae_max_krylov, step_rule=cfg.soae_step_rule,
                  random_start=cfg.soae_random_start, alpha=cfg.soae_alpha, keep_images=False,
                  start_noise=start_noise)
    result = attack(x, y)
    return result.adv.detach(), int(result.grad_evals)


def describe_inner_attack(cfg: ObjectiveConfig) -> str:
    """What the inner maximisation of ``cfg`` does, in one sentence (for model cards): the steps,
    their size, the start, and which recorded fields the method ignores."""
    check_choice("method", cfg.method, METHODS)
    if cfg.method == "std":
        return "none: standard training on clean images (eps, alpha, attack_steps and soae_* unused)"
    if cfg.method in ("pgd", "trades"):
        start = ("a uniform random start in the eps-ball" if cfg.method == "pgd"
                 else "x + 0.001·N(0, 1) (TRADES's start)")
        target = "cross-entropy" if cfg.method == "pgd" else "KL(f(x) ‖ f(x'))"
        return (f"{cfg.method.upper()}: {cfg.attack_steps} sign-gradient steps of alpha = {cfg.alpha:g} on {target} "
                f"from {start}, projected to the L∞ ball of eps = {cfg.eps:g} (soae_* unused)")
    alpha = 2.5 * cfg.eps if cfg.soae_alpha is None else cfg.soae_alpha
    steps = "one SOAE step" if cfg.soae_steps == 1 else f"{cfg.soae_steps} SOAE steps"
    start = "a uniform random start in the eps-ball" if cfg.soae_random_start else "the clean image"
    products = "exact" if cfg.soae_hvp == "exact" else "finite-difference"
    each = "" if cfg.soae_steps == 1 else " each"
    return (f"SOAT: {steps} ({cfg.soae_step_rule} rule) of alpha/N = {alpha / cfg.soae_steps:g}{each} "
            f"(total alpha = {alpha:g} = {alpha / cfg.eps:g}·eps) from {start}, projected to the L∞ ball of "
            f"eps = {cfg.eps:g}; direction from GMRES with {products} Hessian-vector products, "
            f"≤ {cfg.soae_max_krylov} Krylov steps, tau = {cfg.soae_tau:g} "
            f"(the recorded alpha and attack_steps are PGD's and unused by SOAT)")


def objective_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ObjectiveConfig,
                   share: BatchShare = WHOLE_BATCH,
                   attack_model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Loss of one batch for ``cfg.method``; returns (loss scalar, logits on the trained-on inputs, grad evals).

    grad evals: input gradients per example spent by the inner maximisation (not the update).
    The model is left in train mode. Under DistributedDataParallel, ``model`` is the wrapper (its
    forward passes take part in the gradient all-reduce) and ``attack_model`` the wrapped module,
    which the inner maximisation uses (input gradients only, nothing to synchronise); ``share``
    says which rows of the global batch this rank holds.
    """
    check_choice("method", cfg.method, METHODS)
    attack_model = model if attack_model is None else attack_model
    grad_evals = 0
    if cfg.method != "std":
        model.eval()
        if cfg.method == "pgd":
            x_train = pgd_linf(attack_model, x, y, cfg.eps, cfg.alpha, cfg.attack_steps, share=share)
            grad_evals = cfg.attack_steps
        elif cfg.method == "trades":
            x_train = trades_adversary(attack_model, x, cfg.eps, cfg.alpha, cfg.attack_steps, share=share)
            grad_evals = cfg.attack_steps
        else:
            x_train, grad_evals = soae_examples(attack_model, x, y, cfg, share=share)
        model.train()
    if cfg.method == "trades":
        logits_natural = model(x)
        logits_adv = model(x_train)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_natural, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits_natural, y) + cfg.trades_beta * robust, logits_natural, grad_evals
    logits = model(x if cfg.method == "std" else x_train)
    return F.cross_entropy(logits, y), logits, grad_evals
