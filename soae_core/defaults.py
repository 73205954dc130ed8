"""The paper's SOAE settings and the η/τ grids the app and the studies use: one home for each.

Qian et al. attack at ε = 8/255 with N = 4 outer iterations, finite-difference step η = 1e-5 and
GMRES threshold τ = 1e-3; the Krylov cap m ≤ 30 is ours (the paper gives none). The attacks,
the app's default settings, the model cards' SOAE evaluation and the sweeps read them from here.
"""

from __future__ import annotations


def decades(largest_exponent: int, smallest_exponent: int) -> tuple[float, ...]:
    """Powers of ten 10^largest … 10^smallest, largest first, each exactly the float literal
    (``decades(-1, -3) == (1e-1, 1e-2, 1e-3)``)."""
    return tuple(float(f"1e{k}") for k in range(largest_exponent, smallest_exponent - 1, -1))


PAPER_EPS = 8 / 255          # L∞ budget in [0, 1] pixel units (every attack's default)
PAPER_ETA = 1e-5             # finite-difference step η, input units
PAPER_TAU = 1e-3             # GMRES relative-residual threshold τ
PAPER_STEPS = 4              # N, SOAE's outer iterations
DEFAULT_MAX_KRYLOV = 30      # cap on the Krylov dimension m per outer iteration (ours)

# η and τ the app's sidebar offers; the τ grid is also the Krylov Inspector's τ → m table.
ETA_CHOICES: tuple[float, ...] = decades(-1, -8)
TAU_CHOICES: tuple[float, ...] = decades(-1, -6) + (1e-8,)
# η of the Krylov Inspector's finite-difference accuracy curve (round-off shows below 1e-8 in float64).
FD_ACCURACY_ETAS: tuple[float, ...] = decades(-1, -10)
# The paper's studies: η (Figure 1, smallest first) and τ (Figure 2, Table IV), in the app's sweeps
# and the evaluation CLI alike.
STUDY_ETAS: tuple[float, ...] = decades(-2, -7)[::-1]
STUDY_TAUS: tuple[float, ...] = decades(-1, -6)
