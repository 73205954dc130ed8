"""Batched comparisons: per-batch results join into the same numbers as one run, and the tables
hold what the attacks and metrics compute directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_cnn
from soae_core import metrics
from soae_core.attacks import FGSM, PGD
from soae_core.analysis.compare_sweeps import CLEAN_ROW, accuracy_table, budget_table, quality_table, sweep_jobs, sweep_table
from soae_core.analysis.jobs import BatchOutcome, Job, batches, combine, image_order, run_batch

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
    assert list(table.columns) == ["Images", "Accuracy", "Fooled", "Gradient evals / image", "Time (s)"]
    assert table.loc[CLEAN_ROW, "Accuracy"] == pytest.approx(9 / 12)
    soae = results["SOAE"]
    correct = soae.clean_prediction == soae.labels
    assert table.loc["SOAE", "Fooled"] == pytest.approx(np.mean(soae.prediction[correct] != soae.labels[correct]))
    assert table.loc["SOAE", "Gradient evals / image"] == pytest.approx(soae.grad_evals_per_image)
    assert np.all(soae.krylov_m <= 4)  # exact products on a 5-class ReLU net: m ≤ C − 1
    quality = quality_table(results)
    adv = FGSM(model, eps=EPS)(images, labels).adv
    changed = metrics.perturbation_norms(images, adv)["linf"] > 0
    assert quality.loc["FGSM", "PSNR (dB)"] == pytest.approx(metrics.psnr(images, adv)[changed].mean())
    assert quality.loc["FGSM", "PSNR, paper's convention (dB)"] - quality.loc["FGSM", "PSNR (dB)"] == \
        pytest.approx(20 * math.log10(255))
    assert quality.loc["FGSM", "SSIM"] == pytest.approx(metrics.ssim(images, adv)[changed].mean())
    curve = budget_table(results)
    assert list(curve.columns) == ["Attack", "Step", "Gradient evals / image", "Accuracy"]
    assert len(curve) == 2 + 3  # FGSM: step 0 and 1; SOAE: step 0, 1, 2
    assert curve.iloc[0]["Accuracy"] == pytest.approx(9 / 12)


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
    assert list(table.columns) == ["τ", "Accuracy", "Gradient evals / image", "Time (s)",
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
    assert list(steps_table.columns) == ["Attack", "Iteration", "Gradient evals / image", "Accuracy"]
    assert len(steps_table) == 2 * 4
