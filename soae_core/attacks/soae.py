"""Second-Order Adversarial Examples (SOAE) — Qian et al., Algorithm 1.

Each outer iteration n = 1..N:

1. g ← ∇L(x_n) (one gradient evaluation);
2. solve H δ = g with GMRES from δ(0) = g, H the input Hessian of the loss, using
   Hessian-vector products only (finite difference as the paper, or exact AD);
3. step along δ̃ ≈ H⁻¹g with the chosen step rule, project onto the ε-ball and [0, 1].

Step rules (the paper writes x + (α/N)·δ̃ and never gives α):

* ``"sign"`` (default) — x + (α/N)·sign(δ̃), α = 2.5ε by default (Madry et al.'s rule of thumb
  for PGD, 2.5ε spread over the N steps);
* ``"linf"`` — x + (α/N)·δ̃/‖δ̃‖∞, same α;
* ``"raw"``  — the paper's literal x + (α/N)·δ̃, α = 1 by default. ‖H⁻¹g‖ has no fixed scale,
  so the raw step is either negligible or projected to the box; measured to leave accuracy
  near clean (``bench/measure_soae_step_rule.py``), kept for fidelity.

The default was chosen by measurement on the bundled standard Fashion-MNIST CNN (see README,
"Why the sign step"): the sign step is the strongest at equal N.

For a ReLU network H = Jᵀ(diag p − ppᵀ)J is PSD with rank ≤ C−1, so GMRES with exact
products ends by breakdown after at most C−1 steps; H⁻¹g is then an ascent direction
(gᵀH⁺g ≥ 0) that up-weights low-curvature directions. The trace records cos(δ̃, g) so users
can see how far the second-order direction departs from the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from soae_core.attacks.base import Attack, project_linf
from soae_core.defaults import DEFAULT_MAX_KRYLOV, PAPER_EPS, PAPER_ETA, PAPER_STEPS, PAPER_TAU
from soae_core.hvp import HVP_MODES, LossFn, cross_entropy_loss, loss_gradient, make_hvp_operator
from soae_core.krylov import GMRESResult, gmres
from soae_core.validation import check_choice, check_int, check_open_interval, check_positive

STEP_RULES = ("sign", "linf", "raw")
# "newton": the GMRES solution δ̃ ≈ H⁻¹g (the paper's SOAE); "gradient": δ̃ := g, everything else
# unchanged — the ablation "SOAE without curvature" (no Hessian-vector products, no Krylov solve);
# "quadratic": the paper's eq. (4) literally — δ̃ maximises the quadratic model Q(δ) = gᵀδ + ½δᵀHδ
# over the step's box ‖δ‖∞ ≤ α/N, by QUADRATIC_ASCENT_STEPS projected sign-ascent steps on Q.
DIRECTIONS = ("newton", "gradient", "quadratic")
QUADRATIC_ASCENT_STEPS = 10
HVP_ALIASES = {"fd": "finite_difference", "forward": "finite_difference", "central": "central_difference",
               "autograd": "exact"}


@dataclass
class SOAEDirection:
    """One second-order direction at a batch of B images (:meth:`SOAE.direction`).

    direction: (B, C, H, W) δ̃ ≈ H⁻¹g, always finite (g for samples whose products were
        non-finite from the start). loss: (B,) the loss at x. gradient: (B, C, H, W) g.
    krylov: the GMRES record (None with ``direction="gradient"``: no solve).
    grad_evals_per_sample: (B,) int64 gradient evaluations spent.
    logits: (B, K) the model's output at x (from the gradient's forward pass).
    """

    direction: torch.Tensor
    loss: torch.Tensor
    gradient: torch.Tensor
    krylov: GMRESResult | None
    grad_evals_per_sample: torch.Tensor
    logits: torch.Tensor


@dataclass
class SOAEIteration:
    """One outer iteration of SOAE for a batch of B images.

    loss: (B,) loss_fn(model(x_n), y) before the step (for targeted attacks y are the targets,
        and the attack lowers it). loss_after: (B,) after the step.
    gradient_norm: (B,) ‖g‖₂. cosine_to_gradient: (B,) cos(δ̃, g) (0 where either is zero).
    direction: (B, C, H, W) the GMRES solution δ̃ ≈ H⁻¹g (before the step rule); g itself with
        ``direction="gradient"``.
    krylov: the GMRES record (residual history, m, stop reasons, Hessenberg matrices); None with
        ``direction="gradient"`` (no solve was run).
    prediction, confidence: (B,) class and its softmax probability after the step.
    adv: (B, C, H, W) images after the step.
    grad_evals_per_sample: (B,) int64 gradient evaluations each image cost this iteration:
        1 gradient + its Hessian-vector products (1 each for forward difference and exact,
        2 for central difference; none with ``direction="gradient"``). Finished samples cost nothing more (shrinking batch).
    notes: per-sample remarks ('' when nothing special happened).
    """

    loss: torch.Tensor
    loss_after: torch.Tensor
    gradient_norm: torch.Tensor
    cosine_to_gradient: torch.Tensor
    direction: torch.Tensor
    krylov: GMRESResult | None
    prediction: torch.Tensor
    confidence: torch.Tensor
    adv: torch.Tensor
    grad_evals_per_sample: torch.Tensor
    notes: list[str]

    @property
    def grad_evals(self) -> int:
        """Gradient evaluations per image this iteration: the batch total ÷ B, rounded up."""
        return _per_image(self.grad_evals_per_sample)


@dataclass
class SOAETrace:
    """Everything SOAE did: the state before the attack and one record per outer iteration."""

    initial_loss: torch.Tensor
    initial_prediction: torch.Tensor
    initial_confidence: torch.Tensor
    initially_misclassified: torch.Tensor
    iterations: list[SOAEIteration] = field(default_factory=list)

    @property
    def grad_evals_per_sample(self) -> torch.Tensor:
        """(B,) int64 gradient evaluations each image cost over all iterations."""
        return sum((it.grad_evals_per_sample for it in self.iterations),
                   torch.zeros_like(self.initial_prediction))

    @property
    def grad_evals(self) -> int:
        """Gradient evaluations per image over the attack: the batch total ÷ B, rounded up
        (the same convention as the first-order attacks; for one image, the exact count)."""
        return _per_image(self.grad_evals_per_sample)

    @property
    def notes(self) -> list[str]:
        """Per-sample notes gathered over all iterations (deduplicated, '; '-joined)."""
        batch = self.initial_loss.shape[0]
        gathered: list[list[str]] = [[] for _ in range(batch)]
        for i in range(batch):
            if bool(self.initially_misclassified[i]):
                gathered[i].append("already misclassified before the attack")
            for it in self.iterations:
                if it.notes[i] and it.notes[i] not in gathered[i]:
                    gathered[i].append(it.notes[i])
        return ["; ".join(parts) for parts in gathered]


def _per_image(per_sample: torch.Tensor) -> int:
    total, batch = int(per_sample.sum()), per_sample.numel()
    return -(-total // batch) if batch else 0


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


class SOAE(Attack):
    """Second-Order Adversarial Example attack (L∞), batched and Hessian-free.

    Args:
        model: classifier on [0, 1] images returning logits; switched to eval for the call.
        eps: L∞ budget in [0, 1] pixel units (default 8/255, the paper's).
        eta: finite-difference step η > 0 in input units (default 1e-5, the paper's advice).
        tau: GMRES relative residual threshold in (0, 1) (default 1e-3).
        steps: N, outer iterations (integer ≥ 1, default 4).
        alpha: total step α > 0; each iteration moves α/N. None: 2.5ε (sign/linf), 1.0 (raw).
        hvp: "finite_difference" (paper, eq. 22), "central_difference" or "exact" (AD).
        max_krylov: cap on the Krylov dimension m per outer iteration (default 30).
        step_rule: "sign" (default), "linf" or "raw" — see the module docstring.
        random_start: start from a uniform random point of the ε-ball.
        seed: seed of the random start (None: torch's global generator).
        start_noise: uniform noise in [0, 1) of the input's shape for the random start, drawn by
            the caller instead of by the attack (distributed training draws a global batch's
            noise once and hands each rank its rows, so K ranks start where one process would).
        targeted: if True, ``y`` holds target classes and the attack lowers their loss: δ̃ is
            computed for the loss of the target class and the step goes along −δ̃.
        reorthogonalize: a third Gram–Schmidt pass in GMRES (it always makes two, CGS2).
        true_residual: also record true residuals ‖g − Hδ_j‖ (one more product per step).
        keep_images: store the images after every iteration in the trace (for scrubbing).
        loss_fn: per-sample loss (model output, y) → (B,); default cross-entropy.
        direction: "newton" (default) — step along the GMRES solution δ̃ ≈ H⁻¹g, the paper's
            SOAE; "gradient" — step along g instead, keeping start, N, step rule, α, projection
            and trace ("SOAE without curvature", the ablation that isolates what δ̃ adds). With
            "gradient" no Hessian-vector product is run: 1 gradient evaluation per iteration,
            ``krylov`` None in the trace; eta, tau, hvp and max_krylov are then unused.
            "quadratic" — eq. (4) of the paper taken literally: δ̃ maximises Q(δ) = gᵀδ + ½δᵀHδ
            over ‖δ‖∞ ≤ α/N (projected sign ascent from (α/N)·sign(g), QUADRATIC_ASCENT_STEPS
            steps of α/(2N), one product each, keeping the iterate with the largest Q; ``krylov``
            None). Untargeted, sign or linf step rule only.

    Call: ``attack(x, y)`` with x (B, C, H, W) in [0, 1] and y (B,) int64 → AttackResult with
    ``.adv``, ``.grad_evals`` (= ``.trace.grad_evals``: gradient evaluations per image, the batch
    total ÷ B rounded up, as for every attack) and ``.trace`` (:class:`SOAETrace`, with exact
    per-image counts in ``grad_evals_per_sample``).
    """

    name = "SOAE"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS, eta: float = PAPER_ETA, tau: float = PAPER_TAU,
                 steps: int = PAPER_STEPS, alpha: float | None = None, hvp: str = "finite_difference",
                 max_krylov: int = DEFAULT_MAX_KRYLOV, step_rule: str = "sign", random_start: bool = False,
                 seed: int | None = None, targeted: bool = False, reorthogonalize: bool = False,
                 true_residual: bool = False, keep_images: bool = True,
                 loss_fn: LossFn = cross_entropy_loss, start_noise: torch.Tensor | None = None,
                 direction: str = "newton") -> None:
        super().__init__(model, eps, targeted)
        self.direction_kind = check_choice("direction", direction, DIRECTIONS)
        if self.direction_kind == "quadratic" and (targeted or step_rule == "raw"):
            raise ValueError("direction='quadratic' supports untargeted attacks with the sign or linf step rule only "
                             f"(got targeted={targeted}, step_rule={step_rule!r})")
        self.eta = check_positive("eta", eta)
        self.tau = check_open_interval("tau", tau, 0.0, 1.0)
        self.steps = check_int("steps", steps, minimum=1)
        self.hvp = check_choice("hvp", HVP_ALIASES.get(hvp, hvp) if isinstance(hvp, str) else hvp, HVP_MODES)
        self.max_krylov = check_int("max_krylov", max_krylov, minimum=1)
        self.step_rule = check_choice("step_rule", step_rule, STEP_RULES)
        if alpha is None:
            alpha = 1.0 if step_rule == "raw" else 2.5 * self.eps
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.seed = seed
        self.random_start = bool(random_start)
        if start_noise is not None and not (isinstance(start_noise, torch.Tensor) and start_noise.is_floating_point()):
            raise ValueError(f"start_noise must be a floating-point tensor of uniform [0, 1) noise, got {start_noise!r}")
        self.start_noise = start_noise
        self.reorthogonalize = bool(reorthogonalize)
        self.true_residual = bool(true_residual)
        self.keep_images = bool(keep_images)
        self.loss_fn = loss_fn

    # ------------------------------------------------------------------ the second-order direction
    def direction(self, x: torch.Tensor, y: torch.Tensor) -> SOAEDirection:
        """One second-order direction at x (Algorithm 1, lines 2–17), without stepping.

        Returns an :class:`SOAEDirection` for ``loss_fn(model(x), y)`` (for targeted attacks y
        holds the targets and the caller steps along −δ̃). With ``direction="gradient"`` δ̃ is g,
        the record's ``krylov`` None and the cost 1 per sample; with ``"quadratic"`` δ̃ is the
        ascent's best maximiser of Q over ‖δ‖∞ ≤ α/N (``krylov`` None).
        """
        at_x = loss_gradient(self.model, x, y, loss_fn=self.loss_fn)
        loss, logits = at_x.objective, at_x.logits
        grad = torch.nan_to_num(at_x.gradient, nan=0.0, posinf=0.0, neginf=0.0)  # non-finite entries → 0
        if self.direction_kind == "gradient":
            ones = torch.ones(grad.shape[0], dtype=torch.int64, device=grad.device)
            return SOAEDirection(direction=grad, loss=loss, gradient=grad, krylov=None, grad_evals_per_sample=ones,
                                 logits=logits)
        matvec, _ = make_hvp_operator(self.model, x, y, self.hvp, self.eta, grad_at_x=grad,
                                          loss_fn=self.loss_fn)
        per_product = 2 if self.hvp == "central_difference" else 1
        if self.direction_kind == "quadratic":
            radius, everyone = self.alpha / self.steps, torch.arange(grad.shape[0], device=grad.device)
            delta = best = radius * grad.sign()
            best_q = torch.full_like(loss, -torch.inf)
            for _ in range(QUADRATIC_ASCENT_STEPS):
                h_delta = matvec(delta, index=everyone)
                h_delta = torch.where(torch.isfinite(h_delta), h_delta, torch.zeros_like(h_delta))
                q = ((grad + 0.5 * h_delta) * delta).flatten(1).sum(dim=1)  # Q(δ) = gᵀδ + ½δᵀHδ
                better = q > best_q
                best, best_q = torch.where(_per_sample(better, delta), delta, best), torch.where(better, q, best_q)
                delta = (delta + 0.5 * radius * (grad + h_delta).sign()).clamp(-radius, radius)  # ∇Q = g + Hδ
            evals = torch.full(grad.shape[:1], 1 + per_product * QUADRATIC_ASCENT_STEPS, device=grad.device)
            return SOAEDirection(direction=best, loss=loss, gradient=grad, krylov=None, grad_evals_per_sample=evals,
                                 logits=logits)
        result = gmres(matvec, grad, x0=grad, tau=self.tau, max_iter=self.max_krylov,
                       reorthogonalize=self.reorthogonalize, true_residual=self.true_residual)
        direction = result.solution  # finite: GMRES hands back x0 = g for a sample whose x_m is not
        return SOAEDirection(direction=direction, loss=loss, gradient=grad, krylov=result,
                             grad_evals_per_sample=1 + per_product * result.products_per_sample, logits=logits)

    def _step(self, x_n: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        size = -self.alpha / self.steps if self.targeted else self.alpha / self.steps
        if self.step_rule == "sign":
            return torch.add(x_n, direction.sign(), alpha=size)  # x_n + size·sign(δ̃), one operation
        if self.step_rule == "linf":
            peak = direction.flatten(1).abs().amax(dim=1)
            peak = torch.where(peak > 0, peak, torch.ones_like(peak))
            return x_n + size * direction / _per_sample(peak, direction)
        return x_n + size * direction

    def _predict(self, x: torch.Tensor, y: torch.Tensor,
                 at: SOAEDirection | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss (B,), prediction (B,), confidence (B,)) at x; from the loss and logits of the
        direction found at x if given (no forward pass)."""
        with torch.no_grad():
            if at is None:
                logits = self.model(x)
                loss = self.loss_fn(logits, y)
            else:
                logits, loss = at.logits, at.loss
            confidence, prediction = torch.softmax(logits, dim=1).max(dim=1)
        return loss, prediction, confidence

    # ------------------------------------------------------------------ Algorithm 1
    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, SOAETrace]:
        x_n = x.clone()
        starts_at_x = not (self.random_start and self.eps > 0)
        if not starts_at_x:
            if self.start_noise is not None:
                if self.start_noise.shape != x.shape:
                    raise ValueError(f"start_noise has shape {tuple(self.start_noise.shape)}, "
                                     f"the images {tuple(x.shape)}; they must match")
                noise = self.start_noise.to(device=x.device, dtype=x.dtype)
            else:
                generator = None
                if self.seed is not None:
                    generator = torch.Generator(device=x.device).manual_seed(self.seed)
                noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x_n = project_linf(x + (2 * noise - 1) * self.eps, x, self.eps)
        # The prediction at each iterate comes from the forward pass of the gradient taken there:
        # one forward pass per attack instead of one per iteration (two with a random start).
        found = self.direction(x_n, y)
        loss0, pred0, conf0 = self._predict(x, y, found if starts_at_x else None)
        misclassified = (pred0 == y) if self.targeted else (pred0 != y)
        trace = SOAETrace(initial_loss=loss0, initial_prediction=pred0, initial_confidence=conf0,
                          initially_misclassified=misclassified)
        lower, upper = (x - self.eps).clamp_min(0.0), (x + self.eps).clamp_max(1.0)  # the ε-ball ∩ [0, 1]

        for n in range(self.steps):
            direction, grad = found.direction, found.gradient
            notes = self._notes(grad, found.krylov)
            stepped = self._step(x_n, direction)
            stepped = torch.where(torch.isfinite(stepped), stepped, x_n)
            x_next = torch.clamp(stepped, lower, upper)  # = project_linf(stepped, x, eps), in one operation
            following = self.direction(x_next, y) if n + 1 < self.steps else None
            loss_after, prediction, confidence = self._predict(x_next, y, following)
            trace.iterations.append(SOAEIteration(
                loss=found.loss, loss_after=loss_after,
                gradient_norm=torch.linalg.vector_norm(grad.flatten(1), dim=1),
                cosine_to_gradient=torch.nn.functional.cosine_similarity(direction.flatten(1), grad.flatten(1),
                                                                         dim=1, eps=1e-30),
                direction=direction, krylov=found.krylov, prediction=prediction, confidence=confidence,
                adv=x_next if self.keep_images else x_next[:0],  # never written to: no copy
                grad_evals_per_sample=found.grad_evals_per_sample,
                notes=notes))
            x_n, found = x_next, following
        return x_n, trace.grad_evals, trace

    @staticmethod
    def _notes(grad: torch.Tensor, krylov: GMRESResult | None) -> list[str]:
        if krylov is None:
            zero_grad = (grad.flatten(1).abs().amax(dim=1) == 0).tolist()
            return ["zero gradient: no step" if zero else "" for zero in zero_grad]  # no solve, nothing else to say
        # A zero gradient (b = x0 = 0) ends its solve before the first step, with β = 0 (or with a
        # non-finite product at 0): only solves that ended so are looked at again.
        if {"beta_zero", "nonfinite"}.isdisjoint(krylov.stop_reason):
            return [""] * len(krylov.stop_reason)
        zero_grad = (grad.flatten(1).abs().amax(dim=1) == 0).tolist()
        dims = krylov.iterations.tolist()
        notes = []
        for i, reason in enumerate(krylov.stop_reason):
            if zero_grad[i]:
                notes.append("zero gradient (β = 0): no step")
            elif reason == "nonfinite" and dims[i] == 0:
                notes.append("non-finite Hessian-vector product: gradient direction used")
            elif reason == "nonfinite":
                notes.append(f"non-finite Hessian-vector product at Krylov step {dims[i] + 1}: "
                             f"kept the m = {dims[i]} solution")
            elif reason == "beta_zero":
                notes.append("initial residual g − Hg is zero: δ̃ = g")
            else:
                notes.append("")
        return notes


class SOAEWithoutCurvature(SOAE):
    """SOAE without curvature: :class:`SOAE` with ``direction="gradient"`` (δ̃ := g), for the
    registry of attacks (CLI, app). Same arguments as SOAE; ``direction`` is fixed."""

    name = "SOAE-g"

    def __init__(self, model: nn.Module, eps: float = PAPER_EPS, **kwargs) -> None:
        if "direction" in kwargs:
            raise ValueError("SOAEWithoutCurvature fixes direction='gradient'; use SOAE(direction=...) instead")
        super().__init__(model, eps, direction="gradient", **kwargs)
