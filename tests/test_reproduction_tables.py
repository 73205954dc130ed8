"""The paper-beside-ours tables of REPRODUCTION.md, on small real evaluation runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from soae_core.evaluate import main as evaluate_main
from soae_core.experiments import paper_results
from soae_core.experiments.evaluation_report import percent
from soae_core.experiments.reproduction_tables import (
    _rank,
    accuracy_beside_paper,
    counted_statements,
    curvature_ablation,
    equal_budget,
    highest_quality_counts,
    krylov_beside_paper,
    load_results,
    markdown,
    merge_results,
    quality_beside_paper,
    study_tables,
    where_perturbation_goes,
)
from soae_core.reproduction_tables import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """A main run (FGSM, PGD, SOAE; τ and iteration studies) and an exact-HVP SOAE run on 4 test images,
    with the bundled standard model (so that some attacks succeed)."""
    folder = tmp_path_factory.mktemp("runs")
    base = ["--models", "fmnist-cnn-std", "--n", "4", "--batch-size", "4", "--eps", "8/255", "0.1", "--quiet", "--soae-max-krylov", "3"]
    assert evaluate_main(base + ["--attacks", "FGSM", "PGD", "SOAE", "--studies", "tau", "iterations",
                                 "--taus", "0.1", "0.001", "--study-max-krylov", "3", "--iteration-steps", "3",
                                 "--out", str(folder / "main")]) == 0
    assert evaluate_main(base + ["--attacks", "SOAE", "--soae-hvp", "exact", "--out", str(folder / "exact")]) == 0
    return load_results(folder / "main"), load_results(folder / "exact" / "results.json")


def test_rank_counts_strictly_stronger_attacks() -> None:
    assert _rank({"A": 0.2, "B": 0.5, "SOAE": 0.3}, "SOAE") == "2 of 3"
    assert _rank({"A": 0.3, "SOAE": 0.3, "B": None}, "SOAE") == "1 of 2"
    assert _rank({"A": 0.3}, "SOAE") == ""


def test_accuracy_table_sets_paper_rows_beside_ours(runs) -> None:
    main_run, exact_run = runs
    table = accuracy_beside_paper(main_run, exact_run)
    assert len(table[table["method"] == "STD"]) == 2 + 2  # two paper rows (MNIST, CIFAR-10), two ε of ours
    ours = table[table["source"] == "ours, fmnist-cnn-std"].reset_index(drop=True)
    records = {(r["eps"], r["attack"]): r["robust_accuracy"] for r in main_run["attacks"]}
    exact = {r["eps"]: r["robust_accuracy"] for r in exact_run["attacks"]}
    for row, eps in zip(ours.to_dict("records"), (8 / 255, 0.1), strict=False):
        for attack in ("FGSM", "PGD", "SOAE"):
            assert row[attack] == percent(records[(eps, attack)])
        assert row["AutoAttack"] == row["ASOD"] == ""  # not run: left empty, not invented
        assert row["SOAE, exact HVP"] == percent(exact[eps])
        accs = [records[(eps, a)] for a in ("FGSM", "PGD", "SOAE")]
        assert row["SOAE rank"] == f"{1 + sum(a < records[(eps, 'SOAE')] for a in accs)} of 3"
    # The paper's rows come straight from the transcription, with ranks derived from it.
    paper_std = dict(zip(paper_results.ATTACK_COLUMNS,
                         paper_results.ROBUST_ACCURACY[("Table II", "CIFAR-10", "ResNet18")]["STD"], strict=False))
    paper_row = table[table["source"] == "paper Table II, CIFAR-10 ResNet18"].iloc[0]
    assert paper_row["FGSM"] == f"{100 * paper_std['FGSM']:.2f}%"
    assert paper_row["SOAE rank"] == "2 of 5"  # AutoAttack (0.05%) is below SOAE (0.08%) there


def test_equal_budget_reads_pgd_at_soae_cost(runs) -> None:
    main_run, exact_run = runs
    table = equal_budget(main_run, exact_run)
    assert len(table) == 2
    for row in table.to_dict("records"):
        eps = 8 / 255 if row["ε"] == "8/255" else 0.1
        soae, pgd = ({r["attack"]: r for r in main_run["attacks"] if r["eps"] == eps}[a] for a in ("SOAE", "PGD"))
        affordable = min(math.floor(soae["grad_evals_per_image"] + 1e-9), len(pgd["budget_curve"]))
        assert row["PGD at that budget"] == percent(pgd["budget_curve"][affordable - 1]["accuracy"])
        assert row["grads/img (finite diff.)"] == round(soae["grad_evals_per_image"], 1)
        assert row["grads/img (exact)"] > 1


def test_krylov_table_has_paper_and_study_rows(runs) -> None:
    main_run, exact_run = runs
    table = krylov_beside_paper(main_run, exact_run)
    assert list(table["τ=1e-05"][:3]) == ["152", "243", "2196"]
    study_row = table[table["source"].str.contains("finite diff., cap 3")].iloc[0]
    tau_study = {r["tau"]: r for r in main_run["studies"]["tau"]}
    assert study_row["τ=0.1"].startswith(f"{tau_study[0.1]['m_median']:g} (")
    assert study_row["τ=1e-05"] == ""  # τ not studied
    assert table["source"].str.contains("exact HVP").sum() == 2


def test_quality_and_studies(runs) -> None:
    main_run, _ = runs
    quality = quality_beside_paper(main_run)
    soae = quality[quality["attack"] == "SOAE"].iloc[0]
    assert soae["paper MNIST PSNR"] == "76.08"
    record = next(r for r in main_run["attacks"] if r["attack"] == "SOAE" and r["eps"] == 8 / 255)
    assert soae["ours PSNR, standard"] == f"{record['psnr_db']:.2f}"
    assert quality[quality["attack"] == "AutoAttack"].iloc[0]["ours SSIM"] == ""
    counts = highest_quality_counts(main_run)
    assert counts["highest PSNR"].sum() == counts["highest SSIM"].sum() == 2
    tables = study_tables(main_run)
    assert set(tables) == {"tau", "iterations"}
    assert list(tables["iterations"].index) == [1, 2, 3]
    assert tables["tau"].iloc[0, 0].endswith("1.00×")  # time relative to the loosest τ


def test_markdown_and_cli(runs, tmp_path: Path, capsys) -> None:
    main_run, exact_run = runs
    text = markdown(main_run, exact_run)
    for title in ("Tables I/II", "Equal budget", "Table IV", "Table V", "Figure 4", "Figure 2", "Figure 3"):
        assert title in text
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "results.json").write_text(json.dumps(main_run))
    assert main([str(tmp_path / "main"), "--out", str(tmp_path / "tables.md")]) == 0
    assert (tmp_path / "tables.md").read_text() == markdown(main_run)


def test_bad_inputs_name_the_problem(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="no evaluation results"):
        load_results(tmp_path / "missing")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="needs meta, models and attacks"):
        load_results(tmp_path / "other.json")
    assert main([str(tmp_path / "missing")]) == 2
    assert "no evaluation results" in capsys.readouterr().err


def test_merge_keeps_every_run_and_shows_paper_rows_once(runs) -> None:
    main_run, _ = runs
    twin = json.loads(json.dumps(main_run))
    twin["models"] = {"fmnist-cnn-std-copy": twin["models"]["fmnist-cnn-std"]}
    for row in twin["attacks"] + [r for rows in twin["studies"].values() for r in rows]:
        row["model"] = "fmnist-cnn-std-copy"
    twin["config"]["eps"] = [0.2]
    merged = merge_results([main_run, twin])
    assert list(merged["models"]) == ["fmnist-cnn-std", "fmnist-cnn-std-copy"]
    assert len(merged["attacks"]) == 2 * len(main_run["attacks"])
    assert len(merged["studies"]["tau"]) == 2 * len(main_run["studies"]["tau"])
    assert merged["config"]["eps"] == [8 / 255, 0.1, 0.2]
    table = accuracy_beside_paper(merged)
    assert (table["source"] == "paper Table I, MNIST ResNet18").sum() == 1  # both models are STD
    assert (table["source"] == "ours, fmnist-cnn-std-copy").sum() == 2  # no empty row for ε = 0.2
    with pytest.raises(ValueError, match="at least one run"):
        merge_results([])


def test_exact_run_studies_get_their_own_tables(runs) -> None:
    main_run, exact_run = runs
    with_studies = {**exact_run, "studies": main_run["studies"]}
    text = markdown(main_run, with_studies)
    assert "Figure 3: accuracy after each iteration — SOAE with exact Hessian-vector products" in text


def test_location_tables_successful_only_when_recorded(runs) -> None:
    main_run, _ = runs
    tables = where_perturbation_goes(main_run)
    assert list(tables) == ["edge_alignment", "deepest layer distortion", "edge alignment, successful only",
                            "deepest layer distortion, successful only"]
    soae = next(r for r in main_run["attacks"] if r["attack"] == "SOAE" and r["eps"] == 0.1)
    row = tables["edge_alignment"].set_index("ε").loc["0.1"]
    assert row["SOAE"] == round(soae["edge_alignment"], 3)
    older = json.loads(json.dumps(main_run))
    for record in older["attacks"]:
        del record["successful"]
    assert list(where_perturbation_goes(older)) == ["edge_alignment", "deepest layer distortion"]


def _synthetic(models: dict[str, dict[str, float]], eps: float = 0.1, **config) -> dict:
    """A results dict with only what the counting needs: model → attack → robust accuracy at one ε."""
    return {"meta": {"n": 10}, "config": {"eps": [eps], "asod_sigma": 0.7, **config},
            "models": {m: {"clean_accuracy": 0.9, "method": "std"} for m in models},
            "attacks": [{"model": m, "eps": eps, "attack": a, "robust_accuracy": v}
                        for m, by_attack in models.items() for a, v in by_attack.items()]}


def test_counted_statements_count_strictly_stronger_cells_per_group() -> None:
    first = _synthetic({"m1": {"FGSM": 0.5, "PGD": 0.3, "AutoAttack": 0.3, "ASOD": 0.6, "SOAE": 0.55},
                        "m2": {"FGSM": 0.5, "PGD": 0.3, "AutoAttack": 0.3, "ASOD": 0.4, "SOAE": 0.55}})
    twin = _synthetic({"twin": {"FGSM": 0.2, "PGD": 0.1, "AutoAttack": 0.1, "ASOD": 0.2, "SOAE": 0.2}})
    main_run = merge_results([first, twin])
    exact = _synthetic({"m1": {"SOAE": 0.5}, "m2": {"SOAE": 0.5}, "twin": {"SOAE": 0.3}})
    no_curvature = _synthetic({"m1": {"SOAE-g": 0.4}, "m2": {"SOAE-g": 0.5}, "twin": {"SOAE-g": 0.1}})
    table = counted_statements(main_run, exact, None, no_curvature)
    count = {(r["statement"].split(":")[1].strip(), r["cells"]): r["count"] for r in table.to_dict("records")}
    assert count[("SOAE (finite diff.) stronger than ASOD σ=0.7", "main grid")] == "1 of 2"  # m1 only
    assert count[("SOAE (finite diff.) stronger than ASOD σ=0.7", "all")] == "1 of 3"  # a tie is not stronger
    assert count[("SOAE (finite diff.) ranks 4th of the 5 attacks", "main grid")] == "1 of 2"
    assert count[("SOAE (finite diff.) ranks 5th of the 5 attacks", "main grid")] == "1 of 2"
    assert count[("SOAE without curvature stronger than SOAE exact HVP", "main grid")] == "1 of 2"  # m2 ties
    assert count[("SOAE without curvature stronger than SOAE exact HVP", "all")] == "2 of 3"
    assert count[("PGD-20 stronger than SOAE without curvature", "all")] == "2 of 3"
    floor_row = table[table["cells"] == "paper"].iloc[0]
    below = sum(psnr < 20 * math.log10(255 ** 2 / 8) for by_dataset in paper_results.IMAGE_QUALITY.values()
                for psnr, _ in by_dataset.values())
    assert floor_row["count"] == f"{below} of 12" and "78.2 dB" in floor_row["statement"]


def test_curvature_ablation_sets_the_three_soae_variants_side_by_side() -> None:
    main_run = _synthetic({"m1": {"FGSM": 0.5, "PGD": 0.3, "SOAE": 0.55}})
    main_run["attacks"][2]["grad_evals_per_image"] = 90.0
    exact = _synthetic({"m1": {"SOAE": 0.5}})
    exact["attacks"][0]["grad_evals_per_image"] = 21.0
    no_curvature = _synthetic({"m1": {"SOAE-g": 0.4}})
    no_curvature["attacks"][0]["grad_evals_per_image"] = 4.0
    row = curvature_ablation(main_run, exact, no_curvature).iloc[0]
    assert (row["SOAE finite diff."], row["SOAE exact HVP"], row["SOAE without curvature"]) == \
        ("55.0% (90)", "50.0% (21)", "40.0% (4)")
    assert (row["FGSM"], row["PGD-20"]) == ("50.0%", "30.0%")
    quadratic = _synthetic({"m1": {"SOAE": 0.45}})
    quadratic["attacks"][0]["grad_evals_per_image"] = 44.0
    assert curvature_ablation(main_run, exact, no_curvature, quadratic).iloc[0]["SOAE eq. (4), exact HVP"] == "45.0% (44)"
    counts = counted_statements(main_run, exact, None, no_curvature, quadratic)
    counted = dict(zip(counts["statement"] + " | " + counts["cells"], counts["count"], strict=False))
    assert counted["eq. (4): SOAE maximising Q stronger than SOAE exact HVP (δ̃ = H⁻¹g) | all"] == "1 of 1"
    assert counted["eq. (4): SOAE without curvature stronger than SOAE maximising Q | all"] == "1 of 1"


def test_reproduction_md_holds_the_tables_regenerated_from_the_committed_runs(capsys) -> None:
    """Command 8 of REPRODUCTION.md on the committed outputs prints exactly its tables section."""
    results = REPO / "bench" / "results" / "reproduction"
    assert main([str(results / "main"), str(results / "smooth"), "--exact", str(results / "soae-exact"),
                 "--asod", str(results / "asod-sigma0.1"), "--no-curvature", str(results / "soae-g")]) == 0
    generated = capsys.readouterr().out.strip()
    assert generated in (REPO / "REPRODUCTION.md").read_text()


def test_tables_ignore_extra_attacks_in_the_main_run() -> None:
    """A main run made with the CLI's default --attacks also holds SOAE-g: the paper-beside-ours tables
    (and the counts) stay the same."""
    results = REPO / "bench" / "results" / "reproduction"
    main_run = merge_results([load_results(results / "main"), load_results(results / "smooth")])
    no_curvature = load_results(results / "soae-g")
    with_extra = {**main_run, "attacks": main_run["attacks"] + no_curvature["attacks"]}
    assert markdown(with_extra, None, None, no_curvature) == markdown(main_run, None, None, no_curvature)


def test_reproduction_md_holds_the_fair_soat_table_from_its_committed_runs() -> None:
    """`python bench/fair_soat_table.py` (command 10) on the committed fair-SOAT runs prints exactly the
    table, counts and verdicts of REPRODUCTION.md's "A fairer SOAT"."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO / "bench" / "fair_soat_table.py")], capture_output=True,
                          text=True, check=True)
    generated = done.stdout.strip()
    assert generated.count("\n| ") == 6  # six rows below the header: 3 models × 2 ε
    assert generated in (REPO / "REPRODUCTION.md").read_text()
