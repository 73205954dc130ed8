"""Model-zoo tables: card numbers land in the right cells; Table I holds measured accuracies."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from soae_core.analysis.jobs import JobResult
from soae_core.analysis.models import (
    bundled_models,
    card_accuracy,
    card_column,
    method_name,
    table_one,
    table_one_tasks,
    training_summary,
    zoo_table,
)
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.defaults import PAPER_EPS
from soae_core.models import get_model_info

CARD = {
    "method": "pgd", "epochs": 6, "clean_accuracy": 0.81, "test_images": 10000,
    "hyperparameters": {"optimizer": "adam", "lr": 0.001, "train_subset": None,
                        "objective": {"method": "pgd", "eps": 0.1, "attack_steps": 7}},
    "wall_time_s": {"training": 612.4}, "machine": {"cpu": "AMD EPYC", "cores": 2},
    "robust_accuracy": [{"attack": "PGD-20", "eps": PAPER_EPS, "accuracy": 0.66},
                        {"attack": "SOAE", "eps": PAPER_EPS, "accuracy": 0.7},
                        {"attack": "PGD-20", "eps": 0.1, "accuracy": 0.41}],
}


def with_card(name: str, card):
    info = get_model_info(name)
    return type(info)(**{**info.__dict__, "card": card})


def test_card_accuracy_picks_attack_and_budget():
    assert card_accuracy(CARD, "PGD-20", PAPER_EPS) == 0.66
    assert card_accuracy(CARD, "PGD-20", 0.1) == 0.41
    assert math.isnan(card_accuracy(CARD, "SOAE", 0.1))
    assert math.isnan(card_accuracy(None, "SOAE", PAPER_EPS))


def test_training_summary_says_how_the_model_was_trained():
    text = training_summary(CARD)
    assert "6 epochs" in text and "adam lr 0.001" in text and "PGD with 7-step PGD, ε = 0.1" in text
    assert "612 s on AMD EPYC (2 cores)" in text
    assert training_summary(None) == ""
    assert method_name("trades") == "TRADES" and method_name("other") == "other"


def test_zoo_table_has_one_row_per_model_with_card_values():
    infos = [with_card("fmnist-cnn-pgd", CARD), with_card("cifar10-wrn", None)]
    table = zoo_table(infos)
    assert list(table.index) == ["fmnist-cnn-pgd", "cifar10-wrn"]
    assert list(table.columns) == ["Dataset", "Architecture", "Method", "Available", "Clean accuracy",
                                   "PGD-20 @ 8/255", "SOAE @ 8/255", "Test images", "Training", "Note"]
    row = table.loc["fmnist-cnn-pgd"]
    assert (row["Clean accuracy"], row["PGD-20 @ 8/255"], row["SOAE @ 8/255"]) == (0.81, 0.66, 0.7)
    assert row["Method"] == "PGD"
    assert math.isnan(table.loc["cifar10-wrn", "Clean accuracy"])
    assert "weights" in table.loc["cifar10-wrn", "Note"]  # why it is unavailable


def result(accuracy_after: float, n: int = 10) -> JobResult:
    labels = np.zeros(n, dtype=np.int64)
    prediction = np.where(np.arange(n) < round(accuracy_after * n), 0, 1)
    clean = np.where(np.arange(n) < n - 1, 0, 1)  # 90% clean accuracy
    nan = np.full(n, math.nan)
    return JobResult(labels=labels, clean_prediction=clean, prediction=prediction, budget_grad_evals=np.ones(1),
                     budget_accuracy=np.ones(1), grad_evals_per_image=1.0, psnr_db=nan, ssim=nan, linf=nan,
                     krylov_m=nan, krylov_capped=nan, wall_time_s=0.0)


def test_table_one_layout_with_missing_cells():
    infos = [get_model_info("fmnist-cnn-std"), get_model_info("fmnist-cnn-pgd")]
    tasks = table_one_tasks(infos, ["FGSM", "SOAE"], DEFAULT_SETTINGS)
    assert [job.label for _, job in tasks] == ["fmnist-cnn-std · FGSM", "fmnist-cnn-std · SOAE",
                                                "fmnist-cnn-pgd · FGSM", "fmnist-cnn-pgd · SOAE"]
    results = {"fmnist-cnn-std · FGSM": result(0.3), "fmnist-cnn-std · SOAE": result(0.5, n=4),
               "fmnist-cnn-pgd · FGSM": result(0.7)}
    table = table_one(tasks, results, infos, ["FGSM", "SOAE"])
    assert list(table.index) == ["fmnist-cnn-std", "fmnist-cnn-pgd"]
    assert list(table.columns) == ["Architecture", "Training method", "Images", "Clean", "FGSM", "SOAE"]
    assert table.loc["fmnist-cnn-std", "FGSM"] == pytest.approx(0.3)
    assert table.loc["fmnist-cnn-std", "SOAE"] == pytest.approx(0.5)
    assert table.loc["fmnist-cnn-std", "Images"] == 4  # the smaller count of the row
    assert table.loc["fmnist-cnn-std", "Clean"] == pytest.approx(0.9)
    assert table.loc["fmnist-cnn-pgd", "Training method"] == "PGD"
    assert math.isnan(table.loc["fmnist-cnn-pgd", "SOAE"])


def test_bundled_models_are_the_available_ones_with_bundled_images():
    infos = [get_model_info("fmnist-cnn-std"), get_model_info("imagenet-resnet18")]
    infos = [dataclasses.replace(info, available=True) for info in infos] + [
        dataclasses.replace(get_model_info("fmnist-cnn-pgd"), available=False)]
    assert [info.name for info in bundled_models(infos)] == ["fmnist-cnn-std"]
    assert card_column("PGD-20", PAPER_EPS) == "PGD-20 @ 8/255"
