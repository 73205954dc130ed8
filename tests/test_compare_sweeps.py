"""Batched comparisons: per-batch results join into the same numbers as one run, and the tables
hold what the attacks and metrics compute directly."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_cnn
from test_eight_bit import Threshold

from soae_core import metrics
from soae_core.analysis.compare_sweeps import (
    ACCURACY_8BIT,
    CLEAN_ROW,
    accuracy_table,
    budget_table,
    image_counts,
    quality_table,
    sweep_jobs,
    sweep_table,
    tables_json,
    transfer_setup,
)
from soae_core.analysis.jobs import BatchOutcome, Job, batches, combine, image_order, run_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, AttackSettings
from soae_core.attacks import FGSM, PGD, SOAE
from soae_core.eight_bit import EIGHT_BIT_COLUMN, rounding_check, to_8bit

EPS = 0.1


@pytest.fixture
def data():
    model = tiny_cnn()
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(12, 1, 8, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[:3] = (labels[:3] + 1) % 5  # three images start misclassified
    return model, images, labels


def run_job(model, job, images, labels, batch_size):
    outcomes = [run_batch(model, job, images[a:b], labels[a:b], np.arange(a, b)) for a, b in batches(len(labels), batch_size)]
    return combine(outcomes)


def test_image_order_alternates_classes_and_batches_cover_everything():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    order = image_order(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert sorted(order.tolist()) == list(range(9))
    assert batches(7, 3) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="batch_size"):
        batches(7, 0)


def test_fgsm_batch_predictions_match_the_attack_run_directly(data):
    model, images, labels = data
    job = Job.of("FGSM", "FGSM", {"eps": EPS})
    result = run_job(model, job, images, labels, batch_size=5)
    adv = FGSM(model, eps=EPS)(images, labels).adv
    with torch.no_grad():
        expected = model(adv).argmax(1).numpy()
        clean = model(images).argmax(1).numpy()
    np.testing.assert_array_equal(result.prediction, expected)
    np.testing.assert_array_equal(result.clean_prediction, clean)
    assert result.accuracy == pytest.approx(np.mean(expected == labels.numpy()))
    assert result.budget_grad_evals.tolist() == [1.0] and result.grad_evals_per_image == 1.0
    np.testing.assert_allclose(result.psnr_db, metrics.psnr(images, adv))
    assert np.isnan(result.krylov_m).all()


def test_batches_join_into_the_same_curve_as_one_batch(data):
    model, images, labels = data
    job = Job.of("PGD", "PGD", {"eps": EPS, "steps": 5, "alpha": EPS / 4})
    split, whole = run_job(model, job, images, labels, 5), run_job(model, job, images, labels, 12)
    np.testing.assert_array_equal(split.prediction, whole.prediction)
    np.testing.assert_allclose(split.budget_accuracy, whole.budget_accuracy)
    np.testing.assert_allclose(split.budget_grad_evals, [1, 2, 3, 4, 5])
    # The curve's last point is the final accuracy; it never exceeds the clean accuracy here.
    assert split.budget_accuracy[-1] == pytest.approx(split.accuracy)
    adv = PGD(model, eps=EPS, steps=5, alpha=EPS / 4)(images, labels).adv
    with torch.no_grad():
        np.testing.assert_array_equal(whole.prediction, model(adv).argmax(1).numpy())


def _outcome(labels, budget_predictions, grad_evals):
    n = len(labels)
    nan = np.full(n, math.nan)
    return BatchOutcome(positions=np.arange(n), labels=np.asarray(labels), clean_prediction=np.asarray(labels),
                        prediction=np.asarray(budget_predictions[-1]), budget_grad_evals=np.asarray(grad_evals, float),
                        budget_predictions=np.asarray(budget_predictions), grad_evals_per_image=float(grad_evals[-1]),
                        psnr_db=nan, ssim=nan, linf=np.zeros(n), krylov_m=nan, krylov_capped=nan, wall_time_s=1.0)


def test_combine_pads_a_shorter_budget_curve_with_its_last_point():
    long = _outcome([0, 1], [[0, 1], [1, 0]], [2, 4])  # both right, then both wrong
    short = _outcome([0, 0, 0, 0], [[1, 0, 0, 0]], [10])  # one wrong after its only step
    joined = combine([long, short])
    np.testing.assert_allclose(joined.budget_accuracy, [(2 + 3) / 6, (0 + 3) / 6])
    np.testing.assert_allclose(joined.budget_grad_evals, [(2 * 2 + 10 * 4) / 6, (4 * 2 + 10 * 4) / 6])
    assert joined.wall_time_s == 2.0 and joined.n == 6


def test_tables_hold_accuracies_fooled_shares_and_quality_means(data):
    model, images, labels = data
    jobs = [Job.of("FGSM", "FGSM", {"eps": EPS}), Job.of("SOAE", "SOAE", {"eps": EPS, "hvp": "exact", "steps": 2})]
    results = {job.label: run_job(model, job, images, labels, 6) for job in jobs}
    table = accuracy_table(results)
    assert list(table.index) == [CLEAN_ROW, "FGSM", "SOAE"]
    assert list(table.columns) == ["Images", "Accuracy", ACCURACY_8BIT, "Fooled", EIGHT_BIT_COLUMN,
                                   "Gradient evals / image", "Time (s)"]
    assert table.loc[CLEAN_ROW, "Accuracy"] == pytest.approx(9 / 12)
    soae = results["SOAE"]
    correct = soae.clean_prediction == soae.labels
    assert table.loc["SOAE", "Fooled"] == pytest.approx(np.mean(soae.prediction[correct] != soae.labels[correct]))
    assert table.loc["SOAE", "Gradient evals / image"] == pytest.approx(soae.grad_evals_per_image)
    assert np.all(soae.krylov_m <= 4)  # exact products on a 5-class ReLU net: m ≤ C − 1
    quality = quality_table(results)
    adv = FGSM(model, eps=EPS)(images, labels).adv
    assert table.loc["FGSM", ACCURACY_8BIT] == pytest.approx(metrics.accuracy(model, to_8bit(adv), labels))
    assert table.loc[CLEAN_ROW, ACCURACY_8BIT] == table.loc[CLEAN_ROW, "Accuracy"]
    changed = metrics.perturbation_norms(images, adv)["linf"] > 0
    assert quality.loc["FGSM", "PSNR (dB)"] == pytest.approx(metrics.psnr(images, adv)[changed].mean())
    assert quality.loc["FGSM", "PSNR, paper's convention (dB)"] - quality.loc["FGSM", "PSNR (dB)"] == \
        pytest.approx(20 * math.log10(255))
    assert quality.loc["FGSM", "SSIM"] == pytest.approx(metrics.ssim(images, adv)[changed].mean())
    curve = budget_table(results)
    assert list(curve.columns) == ["Attack", "Step", "Gradient evals / image", "Accuracy", EIGHT_BIT_COLUMN]
    assert len(curve) == 2 + 3  # FGSM: step 0 and 1; SOAE: step 0, 1, 2
    assert curve.iloc[0]["Accuracy"] == pytest.approx(9 / 12)


def test_every_table_reports_the_share_still_adversarial_after_8bit_rounding(data):
    # One-pixel images below a threshold at 100.3/255; FGSM adds 0.5/255: 99.9 → 100.4 is adversarial
    # until rounding takes it to 100, 100.1 → 100.6 stays adversarial (101), the others are not.
    threshold = Threshold(boundary_255=100.3)
    pixels = torch.tensor([99.9, 99.7, 99.0, 100.1], dtype=torch.float64).view(4, 1, 1, 1) / 255
    zeros = torch.zeros(4, dtype=torch.long)
    eps = 0.5 / 255
    results = {"FGSM": run_job(threshold, Job.of("FGSM", "FGSM", {"eps": eps}), pixels, zeros, 3)}
    check = rounding_check(threshold, FGSM(threshold, eps=eps)(pixels, zeros).adv, zeros)
    expected = float(np.mean(check.adversarial & check.adversarial_8bit))
    fooled = float(np.mean(check.adversarial))
    assert (fooled, expected) == (0.5, 0.25)
    accuracy, quality = accuracy_table(results), quality_table(results)
    for table in (accuracy, quality):
        assert table.loc["FGSM", EIGHT_BIT_COLUMN] == pytest.approx(expected)
        assert table.loc["FGSM", "Fooled"] == pytest.approx(fooled)
    assert math.isnan(accuracy.loc[CLEAN_ROW, EIGHT_BIT_COLUMN])
    curve = budget_table(results)
    assert curve[EIGHT_BIT_COLUMN].iloc[-1] == pytest.approx(expected)
    assert curve[EIGHT_BIT_COLUMN].iloc[:-1].isna().all()  # no intermediate images to round
    model, images, labels = data
    correct = (metrics.predictions(model, images) == labels).numpy()
    jobs = sweep_jobs("eta", {"eps": eps, "steps": 1}, values=(1e-3,))
    sweep = sweep_table("eta", jobs, {jobs[0].label: run_job(model, jobs[0], images, labels, 12)})
    soae = SOAE(model, eps=eps, steps=1, eta=1e-3, hvp="finite_difference")(images, labels).adv
    check = rounding_check(model, soae, labels)
    assert sweep.loc[0, EIGHT_BIT_COLUMN] == pytest.approx(np.mean((check.adversarial & check.adversarial_8bit)[correct]))


def test_sweep_jobs_set_the_swept_parameter():
    soae = {"eps": EPS, "hvp": "exact", "steps": 4, "alpha": 2.5 * EPS}
    eta = sweep_jobs("eta", soae, values=(1e-3, 1e-5))
    assert [dict(j.kwargs)["eta"] for j in eta] == [1e-3, 1e-5]
    assert all(dict(j.kwargs)["hvp"] == "finite_difference" for j in eta)
    tau = sweep_jobs("tau", soae, values=(1e-2,), max_krylov=50)
    assert dict(tau[0].kwargs)["max_krylov"] == 50 and dict(tau[0].kwargs)["tau"] == 1e-2
    pgd, soae_long = sweep_jobs("steps", soae, pgd_kwargs={"eps": EPS, "alpha": EPS / 4}, steps=20)
    assert dict(pgd.kwargs)["steps"] == 20 and dict(soae_long.kwargs)["steps"] == 20
    assert dict(soae_long.kwargs)["alpha"] == pytest.approx(2.5 * EPS / 4 * 20)  # same move per iteration
    with pytest.raises(ValueError, match="sweep"):
        sweep_jobs("gamma", soae)
    with pytest.raises(ValueError, match="pgd_kwargs"):
        sweep_jobs("steps", soae)
    with pytest.raises(ValueError, match="attack"):
        Job.of("x", "CW", {})


def test_sweep_tables_have_one_row_per_value(data):
    model, images, labels = data
    jobs = sweep_jobs("tau", {"eps": EPS, "hvp": "exact", "steps": 1}, values=(1e-1, 1e-6), max_krylov=10)
    results = {job.label: run_job(model, job, images, labels, 12) for job in jobs}
    table = sweep_table("tau", jobs, results)
    assert list(table.columns) == ["τ", "Accuracy", "Fooled", EIGHT_BIT_COLUMN, "Gradient evals / image", "Time (s)",
                                   "Time ÷ time at the largest τ", "Gradient evals ÷ at the largest τ", "m mean",
                                   "At the cap"]
    assert table["τ"].tolist() == [1e-1, 1e-6]
    assert table.loc[0, "Time ÷ time at the largest τ"] == pytest.approx(1.0)
    assert table.loc[1, "Gradient evals ÷ at the largest τ"] == pytest.approx(
        results[jobs[1].label].grad_evals_per_image / results[jobs[0].label].grad_evals_per_image)
    assert table.loc[1, "m mean"] >= table.loc[0, "m mean"]  # a tighter τ never needs fewer steps
    assert table.loc[1, "m mean"] == pytest.approx(np.nanmean(results[jobs[1].label].krylov_m))
    partial = sweep_table("tau", jobs, {jobs[0].label: results[jobs[0].label]})
    assert len(partial) == 1
    steps_jobs = sweep_jobs("steps", {"eps": EPS, "hvp": "exact", "steps": 1}, {"eps": EPS, "alpha": EPS / 4}, steps=3)
    steps_results = {job.label: run_job(model, job, images, labels, 12) for job in steps_jobs}
    steps_table = sweep_table("steps", steps_jobs, steps_results)
    assert list(steps_table.columns) == ["Attack", "Iteration", "Gradient evals / image", "Accuracy", EIGHT_BIT_COLUMN]
    assert len(steps_table) == 2 * 4


def test_tables_json_holds_every_table_and_the_settings():
    table = pd.DataFrame({"Attack": ["FGSM"], "Accuracy": [0.5]}).set_index("Attack")
    document = json.loads(tables_json({"accuracy": table}, "fmnist-cnn-std", 20, False, DEFAULT_SETTINGS))
    assert (document["model"], document["images"], document["complete"]) == ("fmnist-cnn-std", 20, False)
    assert document["tables"]["accuracy"] == [{"Attack": "FGSM", "Accuracy": 0.5}]
    assert document["settings"]["seed"] == DEFAULT_SETTINGS.seed


def test_image_counts_offer_what_the_set_holds():
    assert image_counts(200) == [10, 20, 50, 100, 150, 200]
    assert image_counts(60) == [10, 20, 50]
    assert image_counts(5) == [5]


def test_transfer_setup_follows_the_target_rule(data):
    model, images, labels = data
    names = tuple(f"c{k}" for k in range(5))
    plain = transfer_setup(model, images, labels, AttackSettings(), names)
    assert plain.targets is None and plain.kept.tolist() == list(range(12)) and "accuracy" in plain.note
    common = int(labels.mode().values)  # a class some images have: they are left out
    chosen = transfer_setup(model, images, labels, AttackSettings(target_mode="chosen", target_class=common), names)
    others = (labels != common).numpy()
    assert 0 < others.sum() < 12
    assert chosen.kept.tolist() == np.flatnonzero(others).tolist() and (chosen.targets == common).all()
    assert f"The {int((~others).sum())} image" in chosen.note and "classifies as their target" in chosen.note
    least = transfer_setup(model, images, labels, AttackSettings(target_mode="least_likely"), names)
    with torch.no_grad():
        logits = model(images)
    logits[torch.arange(12), labels] = torch.inf
    assert least.targets.tolist() == logits.argmin(1).tolist() and least.kept.tolist() == list(range(12))
    assert "Targeted at each image's least likely class" in least.note
    with pytest.raises(ValueError, match="every image"):
        transfer_setup(model, images[labels == common], labels[labels == common],
                       AttackSettings(target_mode="chosen", target_class=common), names)
