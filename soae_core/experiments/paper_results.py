"""The numbers Qian et al. publish, transcribed so that our runs can be set beside them.

Source: "Hessian-Free Second-Order Adversarial Examples for Adversarial Learning" (the paper in
``shared/paper/``), Section IV. Accuracies are fractions in [0, 1] (the paper prints percent),
all at L∞ ε = 8/255. Only the training methods this project also trains (STD, PGD, TRADES, SOAT)
are transcribed from Tables I and II; SOAR, STN and SCORPIO rows are left out.
"""

from __future__ import annotations

ATTACK_COLUMNS = ("Clean", "FGSM", "PGD", "AutoAttack", "ASOD", "SOAE")
"""Column order of Tables I and II (clean accuracy, then robust accuracy under each attack)."""

# (table, dataset, architecture) → training method → accuracies in ATTACK_COLUMNS order.
ROBUST_ACCURACY: dict[tuple[str, str, str], dict[str, tuple[float, ...]]] = {
    ("Table I", "MNIST", "ResNet18"): {
        "STD": (0.9778, 0.0007, 0.0006, 0.0001, 0.0001, 0.0001),
        "PGD": (0.8634, 0.6340, 0.5589, 0.4910, 0.2020, 0.3885),
        "TRADES": (0.8598, 0.6505, 0.5387, 0.4027, 0.3976, 0.3832),
        "SOAT": (0.8762, 0.7089, 0.6013, 0.3910, 0.4945, 0.4753),
    },
    ("Table I", "MNIST", "WideResNet"): {
        "STD": (0.9990, 0.0008, 0.0005, 0.0001, 0.0002, 0.0001),
        "PGD": (0.8455, 0.6650, 0.5712, 0.4451, 0.2176, 0.2984),
        "TRADES": (0.8056, 0.6832, 0.5649, 0.4279, 0.4137, 0.3215),
        "SOAT": (0.8523, 0.6998, 0.5773, 0.4522, 0.4596, 0.4347),
    },
    ("Table II", "CIFAR-10", "ResNet18"): {
        "STD": (0.9254, 0.3059, 0.0014, 0.0005, 0.0012, 0.0008),
        "PGD": (0.8064, 0.5096, 0.4286, 0.4059, 0.4032, 0.3819),
        "TRADES": (0.8561, 0.5306, 0.4538, 0.4134, 0.4349, 0.4026),
        "SOAT": (0.8547, 0.5624, 0.5472, 0.4598, 0.4773, 0.4927),
    },
    ("Table II", "CIFAR-10", "WideResNet"): {
        "STD": (0.9379, 0.4477, 0.0003, 0.0001, 0.0013, 0.0009),
        "PGD": (0.8183, 0.5115, 0.4366, 0.4262, 0.4186, 0.3914),
        "TRADES": (0.8654, 0.5466, 0.4570, 0.4370, 0.4422, 0.4121),
        "SOAT": (0.8638, 0.6233, 0.5767, 0.4753, 0.5050, 0.5146),
    },
}

TABLE_IV_TAUS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""τ values of Table IV, in its column order."""

KRYLOV_DIMENSION: dict[str, tuple[int, ...]] = {
    "MNIST": (152, 71, 43, 26, 17),
    "CIFAR-10": (243, 117, 65, 38, 22),
    "ImageNet-100": (2196, 1324, 746, 327, 221),
}
"""Table IV: approximation dimension m reached for each τ in TABLE_IV_TAUS."""

IMAGE_QUALITY: dict[str, dict[str, tuple[float, float]]] = {
    "FGSM": {"MNIST": (74.23, 0.86), "CIFAR-10": (74.70, 0.86), "ImageNet-100": (75.89, 0.87)},
    "PGD": {"MNIST": (72.30, 0.83), "CIFAR-10": (74.11, 0.84), "ImageNet-100": (78.41, 0.86)},
    "AutoAttack": {"MNIST": (71.49, 0.82), "CIFAR-10": (72.62, 0.85), "ImageNet-100": (77.07, 0.84)},
    "SOAE": {"MNIST": (76.08, 0.87), "CIFAR-10": (79.53, 0.86), "ImageNet-100": (81.66, 0.89)},
}
"""Table V: attack → dataset → (mean PSNR in dB as the paper computes it, mean SSIM)."""

PAPER_METHOD_OF = {"std": "STD", "pgd": "PGD", "trades": "TRADES", "soat": "SOAT"}
"""Training-method key of our model registry → the paper's row label."""
