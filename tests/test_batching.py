"""Issue 17: a batched attack call gives every member what it gets alone (for the attacks
``lab.batchable`` allows), and a bad member fails alone."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cnn

from soae_core.analysis.attack_lab import batch_differences, batchable, run_attack, run_attack_batch
from soae_core.analysis.settings import DEFAULT_SETTINGS, PRESETS
from soae_core.data import load_samples
from soae_core.models import load_model


def assert_same(batched, alone) -> None:
    assert batch_differences(batched, alone) == []


@pytest.mark.parametrize("name", ["SOAE", "FGSM", "PGD"])
def test_batched_members_equal_their_runs_alone_on_a_tiny_cnn(name, images_8x8):
    model = tiny_cnn()
    kwargs = DEFAULT_SETTINGS.attack_kwargs(name, "fashion_mnist")
    images = [images_8x8[i:i + 1] for i in range(5)]
    labels = [0, 1, 2, 3, 4]
    batched = run_attack_batch(model, images, labels, name, kwargs)
    for image, label, member in zip(images, labels, batched, strict=False):
        assert_same(member, run_attack(model, image, label, name, kwargs))


@pytest.mark.parametrize("name, dtype, preset", [("FGSM", torch.float32, "paper"), ("PGD", torch.float32, "paper"),
                                                  ("SOAE", torch.float64, "paper"),
                                                  ("SOAE", torch.float64, "fast classroom")])
def test_batched_attacks_equal_alone_on_the_bundled_model(name, dtype, preset):
    """The app's batches: baselines in float32, SOAE in float64 (the app's default precision)."""
    model = load_model("fmnist-cnn-std", dtype=dtype)
    samples = load_samples("fashion_mnist")
    picks = [0, 21, 45, 77, 130, 199]
    images = [samples.images[i:i + 1].to(dtype) for i in picks]
    labels = [int(samples.labels[i]) for i in picks]
    kwargs = PRESETS[preset].attack_kwargs(name, "fashion_mnist")
    assert batchable(name, kwargs, dtype)
    for image, label, member in zip(images, labels, run_attack_batch(model, images, labels, name, kwargs), strict=False):
        assert_same(member, run_attack(model, image, label, name, kwargs))


def test_a_bad_member_fails_alone_with_its_message(images_8x8):
    model = tiny_cnn()
    kwargs = DEFAULT_SETTINGS.attack_kwargs("FGSM", "fashion_mnist")
    images = [images_8x8[0:1], images_8x8[1:2] * 3, images_8x8[2:3], images_8x8[3:4]]  # #1 leaves [0, 1]
    labels = [0, 1, 2, 9]  # #3: no class 9 (5 classes)
    batched = run_attack_batch(model, images, labels, "FGSM", kwargs)
    assert isinstance(batched[1], ValueError) and "[0, 1]" in str(batched[1])
    assert isinstance(batched[3], ValueError) and "label" in str(batched[3])
    for i in (0, 2):
        assert_same(batched[i], run_attack(model, images[i], labels[i], "FGSM", kwargs))


def test_a_member_without_an_8bit_projection_keeps_its_note_and_the_others_theirs(images_8x8):
    """ε below half a grey level: an off-grid image has no 8-bit image within ε (its note says so)
    while an on-grid one projects; batched, each gets what it gets alone."""
    from soae_core.eight_bit import on_8bit_grid, to_8bit

    model = tiny_cnn()
    kwargs = {**DEFAULT_SETTINGS.attack_kwargs("FGSM", "fashion_mnist"), "eps": 0.2 / 255}
    images = [to_8bit(images_8x8[0:1]), images_8x8[1:2], to_8bit(images_8x8[2:3])]
    assert on_8bit_grid(images[0]) and not on_8bit_grid(images[1])
    labels = [0, 1, 2]
    batched = run_attack_batch(model, images, labels, "FGSM", kwargs)
    assert batched[1][0].grid_note.startswith("No 8-bit projection")
    assert not any(batched[i][0].grid_note.startswith("No 8-bit projection") for i in (0, 2))
    for image, label, member in zip(images, labels, batched, strict=True):
        assert_same(member, run_attack(model, image, label, "FGSM", kwargs))


def test_random_starts_and_noisy_attacks_are_not_batched():
    assert batchable("SOAE", DEFAULT_SETTINGS.soae_kwargs(), torch.float64)
    assert not batchable("SOAE", DEFAULT_SETTINGS.soae_kwargs(), torch.float32)  # see batchable's docstring
    assert not batchable("SOAE", {**DEFAULT_SETTINGS.soae_kwargs(), "random_start": True}, torch.float64)
    assert not batchable("PGD", {**DEFAULT_SETTINGS.attack_kwargs("PGD", "fashion_mnist"), "random_start": True})
    assert not batchable("ASOD", DEFAULT_SETTINGS.attack_kwargs("ASOD", "fashion_mnist"))
    with pytest.raises(ValueError, match="cannot be batched"):
        run_attack_batch(tiny_cnn(), [torch.zeros(1, 1, 8, 8, dtype=torch.float64)], [0], "AutoAttack", {"eps": 0.1})


def test_the_app_batches_the_default_soae_request_and_only_in_float64():
    """The Attack Lab's default view (float64) joins other students' SOAE requests; float32 runs alone."""
    from soae_app import cache
    from soae_core.models import get_model_info

    info = get_model_info("fmnist-cnn-std")
    image = load_samples("fashion_mnist").images[0].numpy()
    kwargs = DEFAULT_SETTINGS.attack_kwargs("SOAE", "fashion_mnist")
    assert DEFAULT_SETTINGS.precision == "float64"
    default = cache.attack_job(info, image, 0, "SOAE", kwargs, target=None, precision=DEFAULT_SETTINGS.precision)
    assert default.batch is not None and default.batch.member.spec.dtype == "float64"
    assert cache.attack_job(info, image, 0, "SOAE", kwargs, target=None, precision="float32").batch is None
    assert cache.attack_job(info, image, 0, "SOAE", kwargs, target=3, precision="float64").batch is None


def test_batch_differences_names_what_differs(images_8x8):
    import dataclasses

    model = tiny_cnn()
    kwargs = DEFAULT_SETTINGS.attack_kwargs("SOAE", "fashion_mnist")
    outcome, views = run_attack(model, images_8x8[:1], 0, "SOAE", kwargs)
    assert batch_differences((outcome, views), (outcome, views)) == []
    nudged = dataclasses.replace(outcome, adv=outcome.adv + 1e-3, grad_evals=outcome.grad_evals + 1)
    assert batch_differences((nudged, views), (outcome, views)) == ["grad_evals", "adv"]
    rounded_off = dataclasses.replace(outcome, success_8bit=not outcome.success_8bit, grid_note="other",
                                      grid_adv=outcome.grid_adv + 1 / 255)
    assert batch_differences((rounded_off, views), (outcome, views)) == ["success_8bit", "grid_note", "grid_adv"]
    shifted = [dataclasses.replace(v, loss=v.loss * 1.01 + 1e-3) for v in views]
    assert batch_differences((outcome, shifted), (outcome, views)) == ["iteration images or losses"]


def _lab_runs(picks: list[int]):
    """Quick Attack Lab runs (the fast classroom preset) of bundled images on the bundled model."""
    from soae_core.analysis.attack_lab import run_lab

    model = load_model("fmnist-cnn-std")
    samples = load_samples("fashion_mnist")
    return [run_lab(model, samples.images[i:i + 1], int(samples.labels[i]), PRESETS["fast classroom"],
                    "fashion_mnist", samples.class_names) for i in picks]


def test_batched_transfer_tables_equal_their_tables_alone_and_a_bad_one_fails_alone():
    import dataclasses

    import pandas as pd

    from soae_app import compute

    names = ("fmnist-cnn-std", "fmnist-cnn-pgd")
    specs = tuple(compute.ModelSpec(name, "float32", "") for name in names)
    runs = _lab_runs([3, 60])
    requests = [compute.TransferRequest(specs, (names, run, run.first_success(), names[0])) for run in runs]
    cropped = dataclasses.replace(runs[0].first_success(), adv=runs[0].first_success().adv[:, :20])
    bad = compute.TransferRequest(specs, (names, runs[0], cropped, names[0]))
    batched = compute.transfer_batch([requests[0], bad, requests[1]])
    nets = [compute.model(spec) for spec in specs]
    for member, request in zip((batched[0], batched[2]), requests, strict=True):
        pd.testing.assert_frame_equal(member, compute.transfer_table(*nets, request.request))
    assert isinstance(batched[1], ValueError) and "same shape" in str(batched[1])


def test_the_transfer_table_started_early_is_the_job_the_page_then_waits_for(monkeypatch):
    """start_transfer_table (called as soon as the attacks are in) and transfer_table (the table's
    section, later) name one pool job: the second finds the first's result, nothing runs twice."""
    from soae_app import cache, worker_pool
    from soae_core.models import get_model_info

    service = worker_pool.JobService(workers=0)  # jobs run inline: the start computes the table
    monkeypatch.setattr(worker_pool, "_SERVICE", service)
    infos = [get_model_info("fmnist-cnn-std"), get_model_info("fmnist-cnn-pgd")]
    run = _lab_runs([11])[0]
    cache.start_transfer_table(infos, run, run.first_success(), infos[0].name)
    assert service.stats["jobs"] == 1
    table = cache.transfer_table(infos, run, run.first_success(), infos[0].name)
    assert (service.stats["jobs"], service.stats["cache hits"]) == (1, 1)
    assert list(table.index) == ["fmnist-cnn-std (attacked)", "fmnist-cnn-pgd"]


def test_first_success_is_the_first_attack_that_succeeded_else_the_first():
    import dataclasses

    run = _lab_runs([25])[0]
    failed = [dataclasses.replace(o, success=False) for o in run.outcomes]
    assert dataclasses.replace(run, outcomes=failed).first_success().name == run.outcomes[0].name
    second_only = [dataclasses.replace(o, success=i == 1) for i, o in enumerate(run.outcomes)]
    assert dataclasses.replace(run, outcomes=second_only).first_success().name == run.outcomes[1].name
