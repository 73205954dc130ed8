"""The attack settings the app's sidebar controls: choices, defaults, presets, and the keyword
arguments they give the attacks.

Pure logic (no Streamlit) so it can be tested on its own. The sidebar's widgets hold values in
"widget units" (ε in multiples of 1/255, α as a multiple of ε); :func:`widget_values` and
:func:`settings_from_widgets` translate between those and :class:`AttackSettings` (ε in [0, 1]
pixel units). Widget keys are the short names below and double as URL query parameters, so a
shared link such as ``?eps=4/255&hvp=exact&N=2`` reproduces a view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from soae_core.attacks.asod import sigma_for
from soae_core.defaults import (
    DEFAULT_MAX_KRYLOV,
    ETA_CHOICES,
    PAPER_EPS,
    PAPER_ETA,
    PAPER_STEPS,
    PAPER_TAU,
    TAU_CHOICES,
)
from soae_core.targets import TargetRule, targeted_support
from soae_core.validation import check_choice, check_int, check_open_interval, check_positive

# ε choices in multiples of 1/255 (8/255 is the paper's budget; 25.5/255 = 0.1 and 76.5/255 = 0.3
# are the usual Fashion-MNIST budgets).
EPS_255_CHOICES: tuple[float, ...] = (1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 25.5, 32.0, 51.0, 76.5)
# α is the total step length spread over the N outer iterations: α/ε for the sign and linf rules,
# an absolute multiplier of δ̃ for the raw rule (δ̃ = H⁻¹g has no fixed scale).
ALPHA_FACTOR_CHOICES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
ALPHA_RAW_CHOICES: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
MAX_STEPS = 20
MAX_KRYLOV = 100

# Labels double as URL values (``?hvp=exact``), so they stay short and plain.
HVP_LABELS: dict[str, str] = {"finite_difference": "finite difference",
                              "central_difference": "central difference",
                              "exact": "exact"}
STEP_RULE_LABELS: dict[str, str] = {"sign": "sign", "linf": "L∞-normalised", "raw": "raw"}
# The dtype of the model copy the attacks run on (``?prec=float32``). float64 is the default
# because it lets a class be served together: a batch of float64 SOAE runs gives every image what
# it gets alone, a float32 batch does not (``attack_lab.batchable``). On the bundled Fashion-MNIST
# CNN it is not slower alone either: with the paper's finite-difference products GMRES needs fewer
# gradients in float64 (``bench/bench_precision.py``, results in bench/results/precision.json).
# float32 is the paper's (and the CLI's) precision, and 2–3× faster per gradient for ResNet-18
# at 224 × 224 on the project's CPU (same benchmark).
PRECISIONS: tuple[str, ...] = ("float64", "float32")
# Widgets that presets leave alone: the target (``?target=chosen&tcls=3``: what the attacks aim
# at) and the precision (how they are computed).
UNPRESET_KEYS: tuple[str, ...] = ("target", "tcls", "prec")
# "SOAE-g" is SOAE without curvature: the sidebar's SOAE settings with δ̃ replaced by g (the ablation).
BASELINES: tuple[str, ...] = ("FGSM", "PGD", "AutoAttack", "ASOD", "SOAE-g")


@dataclass(frozen=True)
class AttackSettings:
    """Everything that defines an Attack Lab run apart from the model and the image.

    eps: L∞ budget in [0, 1] pixel units. eta: finite-difference step (input units).
    tau: GMRES relative-residual threshold in (0, 1). steps: N outer iterations.
    alpha_factor: total step α as a multiple of ε (sign/linf rules). alpha_raw: α for the raw rule.
    hvp: "finite_difference" | "central_difference" | "exact". step_rule: "sign" | "linf" | "raw".
    max_krylov: cap on the Krylov dimension m. random_start: start from a random point of the
    ε-ball. seed: seeds the random start, the randomised baselines and random targets.
    baselines: first-order attacks shown beside SOAE (names from :data:`BASELINES`).
    target_mode: "untargeted" or how targets are chosen (:data:`soae_core.targets.TARGET_MODES`);
    target_class: the class to reach in mode "chosen" (ignored otherwise).
    precision: "float64" | "float32", the dtype of the model copy every attack runs on (see
    :data:`PRECISIONS`).
    """

    eps: float = PAPER_EPS
    eta: float = PAPER_ETA
    tau: float = PAPER_TAU
    steps: int = PAPER_STEPS
    alpha_factor: float = 2.5
    alpha_raw: float = 1.0
    hvp: str = "finite_difference"
    step_rule: str = "sign"
    max_krylov: int = DEFAULT_MAX_KRYLOV
    random_start: bool = False
    seed: int = 0
    baselines: tuple[str, ...] = ("FGSM", "PGD")
    target_mode: str = "untargeted"
    target_class: int = 0
    precision: str = PRECISIONS[0]

    def __post_init__(self) -> None:
        check_positive("eps", self.eps, allow_zero=True)
        check_positive("eta", self.eta)
        check_open_interval("tau", self.tau, 0.0, 1.0)
        check_int("steps", self.steps, minimum=1)
        check_positive("alpha_factor", self.alpha_factor)
        check_positive("alpha_raw", self.alpha_raw)
        check_choice("hvp", self.hvp, tuple(HVP_LABELS))
        check_choice("step_rule", self.step_rule, tuple(STEP_RULE_LABELS))
        check_int("max_krylov", self.max_krylov, minimum=1)
        check_int("seed", self.seed, minimum=0)
        for name in self.baselines:
            check_choice("baselines", name, BASELINES)
        check_choice("precision", self.precision, PRECISIONS)
        self.target_rule  # noqa: B018 - validates the target mode and class

    @property
    def target_rule(self) -> TargetRule:
        """The :class:`soae_core.targets.TargetRule` of these settings (random targets use ``seed``)."""
        return TargetRule(self.target_mode, self.target_class if self.target_mode == "chosen" else None, self.seed)

    @property
    def targeted(self) -> bool:
        """True when the attacks aim at a target class."""
        return self.target_mode != "untargeted"

    @property
    def alpha(self) -> float:
        """The α handed to SOAE: α/ε·ε for the sign and linf rules, alpha_raw for the raw rule."""
        return self.alpha_raw if self.step_rule == "raw" else self.alpha_factor * self.eps

    def soae_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``soae_core.attacks.soae.SOAE`` (besides the model)."""
        return {"eps": self.eps, "eta": self.eta, "tau": self.tau, "steps": self.steps, "alpha": self.alpha,
                "hvp": self.hvp, "max_krylov": self.max_krylov, "step_rule": self.step_rule,
                "random_start": self.random_start, "seed": self.seed}

    def baseline_kwargs(self, name: str, dataset: str) -> dict[str, Any]:
        """Keyword arguments of baseline ``name`` at this budget, following the paper's setup.

        PGD: 20 steps of ε/4 (2/255 at the paper's 8/255). ASOD: σ by dataset (``asod.sigma_for``).
        SOAE-g: every SOAE setting (its class fixes direction="gradient").
        """
        check_choice("name", name, BASELINES)
        if name == "SOAE-g":
            return self.soae_kwargs()
        if name == "PGD":
            return {"eps": self.eps, "steps": 20, "alpha": self.eps / 4 if self.eps > 0 else 2 / 255,
                    "random_start": self.random_start, "seed": self.seed}
        if name == "AutoAttack":
            return {"eps": self.eps, "seed": self.seed}
        if name == "ASOD":
            return {"eps": self.eps, "sigma": sigma_for(dataset), "seed": self.seed}
        return {"eps": self.eps}

    @property
    def attack_names(self) -> tuple[str, ...]:
        """The attacks an Attack Lab run shows: SOAE first, then the baselines (when targeted, only
        those with a targeted mode; see :attr:`skipped`)."""
        return tuple(name for name in ("SOAE",) + self.baselines if name not in self.skipped)

    @property
    def skipped(self) -> dict[str, str]:
        """Chosen attacks left out because they cannot aim at a target: name → the reason."""
        if not self.targeted:
            return {}
        return {name: reason for name in self.baselines if (reason := targeted_support(name)) is not None}

    def untargeted(self) -> AttackSettings:
        """The same settings aiming at any wrong class (for accuracy tables over many images)."""
        return dataclasses.replace(self, target_mode="untargeted")

    def attack_kwargs(self, name: str, dataset: str) -> dict[str, Any]:
        """Keyword arguments of attack ``name`` ("SOAE" or a baseline) besides the model
        (``targeted=True`` when the settings aim at a target)."""
        kwargs = self.soae_kwargs() if name == "SOAE" else self.baseline_kwargs(name, dataset)
        return {**kwargs, "targeted": True} if self.targeted else kwargs

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (α included), for the download bundle."""
        values = dataclasses.asdict(self)
        values["baselines"] = list(self.baselines)
        values["alpha"] = self.alpha
        return values


DEFAULT_SETTINGS = AttackSettings()

PRESETS: dict[str, AttackSettings] = {
    # The paper's values for ε, η, τ and N with its finite-difference product. Its step x + (α/N)δ̃
    # barely moves the image (δ̃ has no fixed scale), so the engine's sign rule is used; pick
    # the "raw" step rule to see the literal version.
    "paper": DEFAULT_SETTINGS,
    # Exact Hessian-vector products: GMRES ends by breakdown after ≤ C−1 steps on ReLU nets.
    "exact Hessian": dataclasses.replace(DEFAULT_SETTINGS, hvp="exact", tau=1e-6),
    # Few, cheap iterations and one baseline: instant on any laptop.
    "fast classroom": dataclasses.replace(DEFAULT_SETTINGS, hvp="exact", steps=2, max_krylov=10,
                                          baselines=("FGSM",)),
}


def format_eps_255(value: float) -> str:
    """ε in multiples of 1/255 as a label: 8.0 → '8/255'."""
    return f"{value:g}/255"


def format_power(value: float) -> str:
    """A power of ten as a short label: 1e-05 → '1e-5', 1.0 → '1'."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    exponent = int(exponent)
    if exponent == 0:
        return mantissa
    return f"{mantissa}e{exponent}" if mantissa != "1" else f"1e{exponent}"


def format_factor(value: float) -> str:
    """α as a multiple of ε: 2.5 → '2.5 ε'."""
    return f"{value:g} ε"


def _nearest(value: float, choices: tuple[float, ...]) -> float:
    return min(choices, key=lambda c: abs(c - value))


def widget_values(settings: AttackSettings) -> dict[str, Any]:
    """The sidebar's widget values (keyed by widget key) that show ``settings``.

    Values not among a select-slider's choices are moved to the nearest choice.
    """
    return {"eps": _nearest(settings.eps * 255, EPS_255_CHOICES), "eta": _nearest(settings.eta, ETA_CHOICES),
            "tau": _nearest(settings.tau, TAU_CHOICES), "N": min(settings.steps, MAX_STEPS),
            "alpha": _nearest(settings.alpha_factor, ALPHA_FACTOR_CHOICES),
            "alpha_raw": _nearest(settings.alpha_raw, ALPHA_RAW_CHOICES), "hvp": settings.hvp,
            "step": settings.step_rule, "m": min(settings.max_krylov, MAX_KRYLOV),
            "rs": settings.random_start, "seed": settings.seed, "cmp": list(settings.baselines),
            "target": settings.target_mode, "tcls": settings.target_class, "prec": settings.precision}


def settings_from_widgets(values: Mapping[str, Any]) -> AttackSettings:
    """The :class:`AttackSettings` shown by widget values (missing keys take the defaults).

    Raises ValueError (naming the setting) for a value outside its allowed range.
    """
    defaults = widget_values(DEFAULT_SETTINGS)
    merged = {**defaults, **{k: v for k, v in values.items() if k in defaults and v is not None}}
    return AttackSettings(eps=float(merged["eps"]) / 255, eta=float(merged["eta"]), tau=float(merged["tau"]),
                          steps=int(merged["N"]), alpha_factor=float(merged["alpha"]),
                          alpha_raw=float(merged["alpha_raw"]), hvp=merged["hvp"], step_rule=merged["step"],
                          max_krylov=int(merged["m"]), random_start=bool(merged["rs"]), seed=int(merged["seed"]),
                          baselines=tuple(name for name in BASELINES if name in merged["cmp"]),
                          target_mode=merged["target"], target_class=int(merged["tcls"]),
                          precision=merged["prec"])


def preset_values(name: str) -> dict[str, Any]:
    """The widget values preset ``name`` sets: every attack parameter, but not the target (a preset
    is about how the attacks run, not what they aim at) nor the precision (how they are computed)."""
    values = widget_values(PRESETS[check_choice("preset", name, tuple(PRESETS))])
    return {key: value for key, value in values.items() if key not in UNPRESET_KEYS}


def preset_matching(settings: AttackSettings) -> str | None:
    """The name of the preset equal to ``settings`` in widget units (target and precision aside), or None."""
    shown = {key: value for key, value in widget_values(settings).items() if key not in UNPRESET_KEYS}
    for name in PRESETS:
        if preset_values(name) == shown:
            return name
    return None
