"""The evaluation CLI end to end, and its budget bookkeeping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import soae_core
from soae_core.attacks import PGD, SOAE, budget_points
from soae_core.evaluate import main, parse_fraction
from soae_core.experiments.evaluation_report import accuracy_at_budget, jsonable
from soae_core.models import build_model, save_state_dict


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights for the standard CNN, so the CLI runs without the bundled checkpoints."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "std.safetensors"
    save_state_dict(build_model("fmnist-cnn-std"), path)
    return path


def run_cli(weights: Path, out: Path, *extra: str) -> dict:
    code = main(["--models", "fmnist-cnn-std", "--weights", f"fmnist-cnn-std={weights}", "--n", "2",
                 "--batch-size", "2", "--out", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "results.json").read_text())


def test_cli_end_to_end_writes_markdown_json_html(untrained_weights: Path, tmp_path: Path) -> None:
    results = run_cli(untrained_weights, tmp_path, "--attacks", "FGSM", "PGD", "--eps", "8/255", "0.1")
    assert results["meta"]["n"] == 2
    assert results["meta"]["soae_lab_version"] == soae_core.__version__
    records = results["attacks"]
    assert [(r["attack"], round(r["eps"], 6)) for r in records] == [
        ("FGSM", round(8 / 255, 6)), ("PGD", round(8 / 255, 6)), ("FGSM", 0.1), ("PGD", 0.1)]
    clean = results["models"]["fmnist-cnn-std"]["clean_accuracy"]
    for record in records:
        assert 0 <= record["robust_accuracy"] <= clean
        assert record["linf"] <= record["eps"] + 1e-6
        assert record["psnr_paper_db"] == pytest.approx(record["psnr_db"] + 20 * math.log10(255))
    for record in records:  # successful-only metrics: images correct when clean and wrong when attacked
        fooled = record["successful"]["images"]
        assert round(2 * (clean - record["robust_accuracy"])) <= fooled <= round(2 * clean)
        assert ("edge_alignment" in record["successful"]) == (fooled > 0)
    pgd = records[1]
    assert pgd["grad_evals_per_image"] == 20 and len(pgd["budget_curve"]) == 20
    assert set(pgd["feature_distortion"]) == {"features.0", "features.3", "classifier.1", "classifier.3"}
    report = (tmp_path / "report.md").read_text()
    assert "ε = 8/255" in report and "| fmnist-cnn-std |" in report and "PSNR, paper convention" in report
    assert "over successful adversarial examples only" in report
    html = (tmp_path / "figures.html").read_text()
    assert "Accuracy versus gradient evaluations per image" in html and "plotly" in html.lower()


def test_cli_runs_soae_without_curvature_and_the_quadratic_direction(untrained_weights: Path, tmp_path: Path) -> None:
    results = run_cli(untrained_weights, tmp_path, "--attacks", "SOAE", "SOAE-g", "--eps", "0.1", "--soae-hvp", "exact",
                      "--soae-direction", "quadratic")
    soae, no_curvature = results["attacks"]
    assert results["config"]["soae"] == {"hvp": "exact", "direction": "quadratic"}
    assert soae["grad_evals_per_image"] == 4 * 11 and soae["krylov"] is None  # eq. (4): 1 + 10 products per step
    assert no_curvature["attack"] == "SOAE-g" and no_curvature["grad_evals_per_image"] == 4
    assert no_curvature["krylov"] is None and len(no_curvature["budget_curve"]) == 4
    assert "| SOAE-g" in (tmp_path / "report.md").read_text()


def test_cli_studies(untrained_weights: Path, tmp_path: Path) -> None:
    results = run_cli(untrained_weights, tmp_path, "--attacks", "SOAE", "--soae-max-krylov", "2",
                      "--studies", "eta", "tau", "iterations", "--etas", "1e-5", "1e-3", "--taus", "0.1", "0.001",
                      "--study-max-krylov", "2", "--iteration-steps", "3")
    studies = results["studies"]
    assert [row["eta"] for row in studies["eta"]] == [1e-5, 1e-3]
    assert [row["tau"] for row in studies["tau"]] == [0.1, 0.001]
    assert all(row["m_max"] <= 2 for row in studies["tau"])
    assert [(row["attack"], row["iteration"]) for row in studies["iterations"]] == [
        ("PGD", 1), ("PGD", 2), ("PGD", 3), ("SOAE", 1), ("SOAE", 2), ("SOAE", 3)]
    assert results["attacks"][0]["krylov"]["m_max"] <= 2
    report = (tmp_path / "report.md").read_text()
    assert "Figure 1" in report and "Table IV" in report and "Figure 3" in report


@pytest.mark.parametrize("args, message", [
    (["--attacks", "CW"], "attack"), (["--eps", "-0.1"], "eps"), (["--soae-tau", "2"], "tau"),
    (["--weights", "no-equals-sign"], "NAME=PATH"), (["--n", "20000"], "n must be at most"),
    (["--jobs", "0"], "jobs must be an integer >= 1"),
    (["--device", "tpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["--device", "cuda:7"], "'cuda:7' is not available"),
])
def test_cli_bad_arguments_exit_2_with_message(untrained_weights: Path, tmp_path: Path, capsys, args, message) -> None:
    base = ["--models", "fmnist-cnn-std", "--weights", f"fmnist-cnn-std={untrained_weights}", "--quiet",
            "--out", str(tmp_path)]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_budget_points_of_pgd_and_soae() -> None:
    torch.manual_seed(0)
    model = build_model("fmnist-cnn-std").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(3, 1, 28, 28)
    y = model(x).argmax(1)
    pgd_points = budget_points(PGD(model, eps=0.05, steps=4)(x, y))
    assert [g for g, _ in pgd_points] == [1, 2, 3, 4]
    result = SOAE(model, eps=0.05, steps=2, max_krylov=3)(x, y)
    points = budget_points(result)
    assert len(points) == 2
    # Per image and iteration: 1 gradient + its own forward-difference products, on average
    # over the batch; the attack's own count rounds that mean up.
    per_iteration = [points[0][0], points[1][0] - points[0][0]]
    for spent, iteration in zip(per_iteration, result.trace.iterations, strict=False):
        own_products = iteration.krylov.products_per_sample.double().mean().item()
        assert spent == pytest.approx(1 + own_products)
        assert spent <= iteration.grad_evals < spent + 1


def test_accuracy_at_budget_and_json_helpers() -> None:
    curve = [{"grad_evals": 1, "accuracy": 0.8}, {"grad_evals": 10, "accuracy": 0.5}, {"grad_evals": 20, "accuracy": 0.4}]
    assert accuracy_at_budget(curve, 0.5) is None
    assert accuracy_at_budget(curve, 1) == 0.8
    assert accuracy_at_budget(curve, 15) == 0.5
    assert accuracy_at_budget(curve, 500) == 0.4
    assert jsonable({"a": [math.inf, math.nan, 1.5]}) == {"a": [None, None, 1.5]}
    assert parse_fraction("8/255") == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="8/255"):
        parse_fraction("eight")


def test_two_ranks_give_the_same_numbers_as_one(untrained_weights: Path, tmp_path: Path) -> None:
    # 6 images in blocks of 2: every cell is cut into 3 units, spread over the ranks.
    args = ("--attacks", "FGSM", "PGD", "ASOD", "SOAE", "--eps", "8/255", "0.1", "--soae-max-krylov", "2",
            "--studies", "tau", "iterations", "--taus", "0.1", "0.001", "--study-max-krylov", "2",
            "--iteration-steps", "2", "--n-images", "6", "--study-n", "4", "--device", "cpu")
    serial = run_cli(untrained_weights, tmp_path / "serial", *args)
    # --jobs 2 is torchrun with 2 ranks on this machine (gloo): the same code path as torchrun itself
    parallel = run_cli(untrained_weights, tmp_path / "parallel", *args, "--jobs", "2")
    assert parallel["meta"]["ranks"] == 2 and serial["meta"]["ranks"] == 1
    assert [r["rank"] for r in parallel["meta"]["per_rank"]] == [0, 1]
    assert all(r["device"] == "cpu" and r["machine"] and r["grid_units"] >= 1 and r["grid_busy_s"] > 0
               for r in parallel["meta"]["per_rank"])  # both ranks worked, each recorded its machine and time
    assert sum(r["grid_units"] for r in parallel["meta"]["per_rank"]) == 4 * 2 * 3
    assert parallel["meta"]["grid_duration_s"] <= parallel["meta"]["duration_s"]
    assert parallel["meta"]["command"].startswith("torchrun --nproc-per-node 2 -m soae_core.evaluate")
    drop = ("wall_time_s",)
    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in drop} for row in rows]
    assert strip(parallel["attacks"]) == strip(serial["attacks"])  # same order, same numbers
    assert parallel["models"] == serial["models"]
    for study in ("tau", "iterations"):
        assert strip(parallel["studies"][study]) == strip(serial["studies"][study])
