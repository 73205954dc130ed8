"""Our evaluation runs set beside the paper's published numbers (the tables of REPRODUCTION.md).

Reads the results.json files that ``python -m soae_core.evaluate`` writes and prints Markdown:

    python -m soae_core.reproduction_tables runs/reproduction runs/reproduction-smooth \\
        --exact runs/reproduction-soae-exact --asod runs/reproduction-asod-sigma0.1

``--exact`` is a run of SOAE with exact Hessian-vector products, ``--asod`` a run of ASOD with
another noise level, ``--no-curvature`` a run of SOAE-g (SOAE without curvature, δ̃ := g); all
are optional and add a column where they cover a model and ε. The statements of REPRODUCTION.md
that count cells ("in 7 of 8 cells") are counted here, in :func:`counted_statements`.
Nothing here is computed anew: every number comes from the JSON files or from
:mod:`soae_core.experiments.paper_results`. ``python -m soae_core.reproduction_tables`` is the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from soae_core import metrics
from soae_core.experiments import paper_results
from soae_core.experiments.evaluation_report import accuracy_at_budget, deepest_layer, eps_label, percent

FIRST_ORDER = ("FGSM", "PGD", "AutoAttack")
ITERATIONS_SHOWN = (1, 2, 3, 4, 5, 7, 10, 15, 20)


def load_results(path: str | Path) -> dict[str, Any]:
    """results.json of an evaluation run; ``path`` is the file or the run's folder (ValueError if absent)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ValueError(f"no evaluation results at {path}: pass a results.json or the --out folder of "
                         "python -m soae_core.evaluate")
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or not {"meta", "models", "attacks"} <= set(results):
        raise ValueError(f"{path} is not a results.json of python -m soae_core.evaluate "
                         "(needs meta, models and attacks)")
    return results


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs as one: models, grid records and study rows of all, in order; meta and config of the first
    (with the union of their ε)."""
    if not runs:
        raise ValueError("merge_results needs at least one run")
    merged = {**runs[0], "models": {}, "attacks": [], "studies": {}, "config": dict(runs[0]["config"])}
    for run in runs:
        merged["models"] |= run["models"]
        merged["attacks"] += run["attacks"]
        for name, rows in run.get("studies", {}).items():
            merged["studies"][name] = merged["studies"].get(name, []) + rows
    merged["config"]["eps"] = list(dict.fromkeys(eps for run in runs for eps in run["config"]["eps"]))
    merged["meta"] = {**runs[0]["meta"], "first_run_models": list(runs[0]["models"])}
    return merged


def _records(results: dict[str, Any] | None) -> dict[tuple[str, float, str], dict[str, Any]]:
    if results is None:
        return {}
    return {(r["model"], r["eps"], r["attack"]): r for r in results["attacks"]}


def _cell(records: dict, model: str, eps: float, attack: str, key: str = "robust_accuracy") -> float | None:
    record = records.get((model, eps, attack))
    return None if record is None else record.get(key)


def _rank(accuracies: dict[str, float | None], attack: str) -> str:
    """Rank of ``attack`` by accuracy left (1 = strongest); ties share the better rank."""
    known = {name: value for name, value in accuracies.items() if value is not None}
    if attack not in known:
        return ""
    return f"{1 + sum(value < known[attack] for value in known.values())} of {len(known)}"


def accuracy_beside_paper(main: dict[str, Any], exact: dict[str, Any] | None = None,
                          asod: dict[str, Any] | None = None,
                          no_curvature: dict[str, Any] | None = None) -> pd.DataFrame:
    """Tables I/II: per training method, the paper's ResNet18 rows (MNIST, CIFAR-10) and ours per ε.

    Accuracies in %; 'SOAE rank' counts the five attacks of the table (1 = lowest accuracy).
    """
    records, exact_records, asod_records = _records(main), _records(exact), _records(asod)
    no_curvature_records = _records(no_curvature)
    asod_sigma = asod["config"]["asod_sigma"] if asod else None
    rows, methods_shown = [], set()
    for model, info in main["models"].items():
        method = paper_results.PAPER_METHOD_OF.get(info["method"], info["method"])
        for (table, dataset, arch), by_method in paper_results.ROBUST_ACCURACY.items():
            if arch != "ResNet18" or method not in by_method or method in methods_shown:
                continue
            values = dict(zip(paper_results.ATTACK_COLUMNS, by_method[method], strict=False))
            attacks = {k: v for k, v in values.items() if k != "Clean"}
            rows.append({"method": method, "source": f"paper {table}, {dataset} {arch}", "ε": "8/255",
                         **{k: f"{100 * v:.2f}%" for k, v in values.items()}, "SOAE rank": _rank(attacks, "SOAE")})
        methods_shown.add(method)
        for eps in main["config"]["eps"]:
            attacks = {name: _cell(records, model, eps, name) for name in paper_results.ATTACK_COLUMNS[1:]}
            if all(value is None for value in attacks.values()):
                continue  # this model was not run at this ε (merged runs)
            row = {"method": method, "source": f"ours, {model}", "ε": eps_label(eps),
                   "Clean": percent(info["clean_accuracy"]), **{k: percent(v) for k, v in attacks.items()},
                   "SOAE rank": _rank(attacks, "SOAE")}
            if exact is not None:
                row["SOAE, exact HVP"] = percent(_cell(exact_records, model, eps, "SOAE"))
            if asod is not None:
                row[f"ASOD σ={asod_sigma:g}"] = percent(_cell(asod_records, model, eps, "ASOD"))
            if no_curvature is not None:
                row["SOAE without curvature"] = percent(_cell(no_curvature_records, model, eps, "SOAE-g"))
            rows.append(row)
    return pd.DataFrame(rows).fillna("")


def equal_budget(main: dict[str, Any], exact: dict[str, Any] | None = None) -> pd.DataFrame:
    """SOAE's accuracy and cost beside PGD stopped at the same number of gradient evaluations per image."""
    records, exact_records = _records(main), _records(exact)
    rows = []
    for model in main["models"]:
        for eps in main["config"]["eps"]:
            soae, pgd = records.get((model, eps, "SOAE")), records.get((model, eps, "PGD"))
            if soae is None or pgd is None:
                continue
            row = {"model": model, "ε": eps_label(eps),
                   "FGSM (1 grad.)": percent(_cell(records, model, eps, "FGSM")),
                   "SOAE finite diff.": percent(soae["robust_accuracy"]),
                   "grads/img (finite diff.)": round(soae["grad_evals_per_image"], 1),
                   "PGD at that budget": percent(accuracy_at_budget(pgd["budget_curve"],
                                                                    soae["grad_evals_per_image"]))}
            soae_exact = exact_records.get((model, eps, "SOAE"))
            if soae_exact is not None:
                row |= {"SOAE exact HVP": percent(soae_exact["robust_accuracy"]),
                        "grads/img (exact)": round(soae_exact["grad_evals_per_image"], 1),
                        "PGD at the exact budget": percent(accuracy_at_budget(
                            pgd["budget_curve"], soae_exact["grad_evals_per_image"]))}
            rows.append(row)
    return pd.DataFrame(rows)


def curvature_ablation(main: dict[str, Any], exact: dict[str, Any] | None,
                       no_curvature: dict[str, Any], quadratic: dict[str, Any] | None = None) -> pd.DataFrame:
    """SOAE with the paper's product, with exact products and without curvature (δ̃ := g, SOAE-g) beside
    FGSM and PGD-20, with the gradient evaluations per image of each SOAE variant; ``quadratic``: a run
    of SOAE with ``--soae-direction quadratic`` (eq. 4 taken literally), a further column."""
    records, exact_records, g_records = _records(main), _records(exact), _records(no_curvature)
    q_records = _records(quadratic)
    rows = []
    for model in main["models"]:
        for eps in main["config"]["eps"]:
            g = g_records.get((model, eps, "SOAE-g"))
            if g is None or (model, eps, "SOAE") not in records:
                continue
            fd, ex = records[(model, eps, "SOAE")], exact_records.get((model, eps, "SOAE"))
            rows.append({"model": model, "ε": eps_label(eps),
                         "FGSM": percent(_cell(records, model, eps, "FGSM")),
                         "PGD-20": percent(_cell(records, model, eps, "PGD")),
                         "SOAE finite diff.": f"{percent(fd['robust_accuracy'])} ({fd['grad_evals_per_image']:.0f})",
                         "SOAE exact HVP": "" if ex is None else
                         f"{percent(ex['robust_accuracy'])} ({ex['grad_evals_per_image']:.0f})",
                         "SOAE without curvature": f"{percent(g['robust_accuracy'])} ({g['grad_evals_per_image']:.0f})"})
            q = q_records.get((model, eps, "SOAE"))
            if q is not None:
                rows[-1]["SOAE eq. (4), exact HVP"] = f"{percent(q['robust_accuracy'])} ({q['grad_evals_per_image']:.0f})"
    table = pd.DataFrame(rows)
    table.attrs["caption"] = ("robust accuracy (gradient evaluations per image); every SOAE variant: N = 4 sign steps "
                              "of α/N = 2.5ε/4 from the clean image, projected")
    return table


def _stronger_count(records_a: dict, attack_a: str, records_b: dict, attack_b: str,
                    cells: list[tuple[str, float]]) -> str:
    """'k of n': cells (model, ε) where attack_a leaves strictly lower accuracy than attack_b (both present)."""
    pairs = [(_cell(records_a, m, e, attack_a), _cell(records_b, m, e, attack_b)) for m, e in cells]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return f"{sum(a < b for a, b in pairs)} of {len(pairs)}"


def _location_metric(record: dict[str, Any] | None, key: str, successful: bool) -> float | None:
    """edge_alignment or deepest_layer (last layer's feature distortion) of a grid record, over all
    perturbed images or over the successful adversarial examples only."""
    if record is None:
        return None
    source = (record.get("successful") or {}) if successful else record
    if key == "deepest_layer":
        return deepest_layer(source.get("feature_distortion"))
    return source.get(key)


def _below_count(records: dict, key: str, successful: bool, other: str | None,
                 cells: list[tuple[str, float]]) -> str:
    """'k of n': cells where SOAE's location metric is strictly below ``other``'s (None: below every other
    attack of the five)."""
    hits = total = 0
    for model, eps in cells:
        values = {a: _location_metric(records.get((model, eps, a)), key, successful)
                  for a in paper_results.ATTACK_COLUMNS[1:]}
        soae = values.pop("SOAE")
        rivals = [v for a, v in values.items() if v is not None and (other is None or a == other)]
        if soae is None or not rivals:
            continue
        total += 1
        hits += all(soae < v for v in rivals)
    return f"{hits} of {total}"


def counted_statements(main: dict[str, Any], exact: dict[str, Any] | None = None,
                       asod: dict[str, Any] | None = None, no_curvature: dict[str, Any] | None = None,
                       quadratic: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every statement of REPRODUCTION.md that counts cells, counted from the results (cells: model × ε;
    "main grid": the models of the first main run, the bundled ones; "all": every model). "Stronger"
    means strictly lower robust accuracy."""
    records, exact_records, asod_records = _records(main), _records(exact), _records(asod)
    first = main["meta"].get("first_run_models", list(main["models"]))
    every = [(m, e) for m in main["models"] for e in main["config"]["eps"]]
    groups = {"main grid": [(m, e) for m, e in every if m in first], "all": every}
    rows = []

    def add(statement: str, count_of: Any) -> None:
        for group, cells in groups.items():
            rows.append({"statement": statement, "cells": group, "count": count_of(cells)})

    def ranked(place: int) -> Any:
        def count(cells: list[tuple[str, float]]) -> str:
            ranks = [_rank({a: _cell(records, m, e, a) for a in paper_results.ATTACK_COLUMNS[1:]}, "SOAE")
                     for m, e in cells]
            ranks = [r for r in ranks if r]
            return f"{sum(r.startswith(f'{place} of') for r in ranks)} of {len(ranks)}"
        return count

    add("claim 1: SOAE (finite diff.) ranks 4th of the 5 attacks", ranked(4))
    add("claim 1: SOAE (finite diff.) ranks 5th of the 5 attacks", ranked(5))
    add("claim 1: FGSM stronger than SOAE (finite diff.)",
        lambda cells: _stronger_count(records, "FGSM", records, "SOAE", cells))
    add(f"claim 2: SOAE (finite diff.) stronger than ASOD σ={main['config'].get('asod_sigma', 0.7):g}",
        lambda cells: _stronger_count(records, "SOAE", records, "ASOD", cells))
    if asod is not None:
        add(f"claim 2: ASOD σ={asod['config']['asod_sigma']:g} stronger than SOAE (finite diff.)",
            lambda cells: _stronger_count(asod_records, "ASOD", records, "SOAE", cells))
    floor = metrics.paper_convention_psnr_floor(8 / 255)
    paper_psnr = [psnr for by_dataset in paper_results.IMAGE_QUALITY.values() for psnr, _ in by_dataset.values()]
    rows.append({"statement": f"claim 8: paper Table V PSNRs below {floor:.1f} dB, the least an L∞ ≤ 8/255 "
                              "perturbation can have with data_range = 255 on [0, 1] images",
                 "cells": "paper", "count": f"{sum(p < floor for p in paper_psnr)} of {len(paper_psnr)}"})
    for successful in (False, True):
        scope = ", successful only" if successful else ""
        for other in ("FGSM", "PGD"):
            add(f"claim 9: SOAE's edge alignment below {other}'s{scope}",
                lambda cells, o=other, su=successful: _below_count(records, "edge_alignment", su, o, cells))
        for other in ("PGD", "AutoAttack"):
            add(f"claim 10: SOAE's deepest-layer distortion below {other}'s{scope}",
                lambda cells, o=other, su=successful: _below_count(records, "deepest_layer", su, o, cells))
        add(f"claim 10: SOAE's deepest-layer distortion the lowest of the 5 attacks{scope}",
            lambda cells, su=successful: _below_count(records, "deepest_layer", su, None, cells))
    # "A stronger than B": (statement, records and attack of A, records and attack of B), when both runs exist.
    g_records = _records(no_curvature) if no_curvature is not None else None
    q_records = _records(quadratic) if no_curvature is not None and quadratic is not None else None
    exact_or_none = exact_records if exact is not None else None
    comparisons = [
        ("ablation: SOAE without curvature stronger than SOAE exact HVP", g_records, "SOAE-g", exact_or_none, "SOAE"),
        ("ablation: SOAE without curvature stronger than SOAE (finite diff.)", g_records, "SOAE-g", records, "SOAE"),
        ("ablation: SOAE without curvature stronger than FGSM", g_records, "SOAE-g", records, "FGSM"),
        ("ablation: PGD-20 stronger than SOAE without curvature", records, "PGD", g_records, "SOAE-g"),
        ("ablation: SOAE without curvature stronger than PGD-20", g_records, "SOAE-g", records, "PGD"),
        ("eq. (4): SOAE maximising Q stronger than SOAE exact HVP (δ̃ = H⁻¹g)", q_records, "SOAE", exact_or_none, "SOAE"),
        ("eq. (4): SOAE without curvature stronger than SOAE maximising Q", g_records, "SOAE-g", q_records, "SOAE"),
    ]
    for statement, a_records, a, b_records, b in comparisons:
        if a_records is not None and b_records is not None:
            add(statement, lambda cells, ar=a_records, a=a, br=b_records, b=b: _stronger_count(ar, a, br, b, cells))
    return pd.DataFrame(rows)


def krylov_beside_paper(main: dict[str, Any], exact: dict[str, Any] | None = None) -> pd.DataFrame:
    """Table IV: the paper's m per τ beside the median (mean) m of our τ study; exact-HVP m as a note row."""
    taus = paper_results.TABLE_IV_TAUS
    rows = [{"source": f"paper, {dataset}", **{f"τ={tau:g}": str(m) for tau, m in zip(taus, ms, strict=False)}}
            for dataset, ms in paper_results.KRYLOV_DIMENSION.items()]
    study = pd.DataFrame(main.get("studies", {}).get("tau", []))
    if not study.empty:
        for model, part in study.groupby("model", sort=False):
            by_tau = {row["tau"]: row for row in part.to_dict("records")}
            cap = int(part["max_krylov"].iloc[0])
            cells = {}
            for tau in taus:
                row = by_tau.get(tau)
                cells[f"τ={tau:g}"] = "" if row is None else (
                    f"{row['m_median']:g} ({row['m_mean']:.0f}); {100 * row['max_iter_share']:.0f}% at cap")
            rows.append({"source": f"ours, {model}, finite diff., cap {cap}", **cells})
    if exact is not None:
        for record in exact["attacks"]:
            if record["attack"] == "SOAE" and record.get("krylov"):
                k = record["krylov"]
                rows.append({"source": f"ours, {record['model']} ε={eps_label(record['eps'])}, exact HVP, "
                                       f"τ={exact['config']['soae'].get('tau', 1e-3):g}",
                             f"τ={1e-3:g}": f"{k['m_median']:g} ({k['m_mean']:.1f}); max {k['m_max']:g}"})
    return pd.DataFrame(rows).fillna("")


def quality_beside_paper(main: dict[str, Any], model: str | None = None, eps: float | None = None) -> pd.DataFrame:
    """Table V: the paper's PSNR/SSIM per attack beside ours on one model and ε (default: the first)."""
    records = _records(main)
    model = model or next(iter(main["models"]))
    eps = main["config"]["eps"][0] if eps is None else eps
    rows = []
    for attack, by_dataset in paper_results.IMAGE_QUALITY.items():
        row = {"attack": attack}
        for dataset in ("MNIST", "CIFAR-10"):
            psnr, ssim = by_dataset[dataset]
            row |= {f"paper {dataset} PSNR": f"{psnr:.2f}", f"paper {dataset} SSIM": f"{ssim:.2f}"}
        record = records.get((model, eps, attack))
        if record is not None:
            row |= {"ours PSNR, paper convention": f"{record['psnr_paper_db']:.2f}",
                    "ours PSNR, standard": f"{record['psnr_db']:.2f}", "ours SSIM": f"{record['ssim']:.3f}",
                    "ours L2": f"{record['l2']:.3f}"}
        rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    table.attrs["caption"] = f"ours: {model}, ε = {eps_label(eps)}, {main['meta']['n']} test images"
    return table


def highest_quality_counts(main: dict[str, Any]) -> pd.DataFrame:
    """Over every model × ε of the run: how often each attack has the highest PSNR / SSIM / lowest L2."""
    frame = pd.DataFrame(main["attacks"])
    frame = frame[frame["attack"].isin(list(paper_results.IMAGE_QUALITY))]
    cells = frame.groupby(["model", "eps"])
    counts = {attack: {"highest PSNR": 0, "highest SSIM": 0} for attack in paper_results.IMAGE_QUALITY}
    for _, part in cells:
        counts[part.loc[part["psnr_db"].idxmax(), "attack"]]["highest PSNR"] += 1
        counts[part.loc[part["ssim"].idxmax(), "attack"]]["highest SSIM"] += 1
    table = pd.DataFrame(counts).T
    table.attrs["caption"] = f"out of {cells.ngroups} model × ε cells"
    return table


def where_perturbation_goes(main: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Figure 4 quantified: edge alignment and deepest-layer feature distortion, rows model × ε, columns the
    paper's five attacks (others in the run, e.g. SOAE-g when the evaluation CLI ran its default, are left out)."""
    records = [r for r in main["attacks"] if r["attack"] in paper_results.ATTACK_COLUMNS[1:]]
    frame = pd.DataFrame(records)
    frame["ε"] = frame["eps"].map(eps_label)
    frame["deepest layer distortion"] = frame["feature_distortion"].map(deepest_layer)
    successful = [r.get("successful") or {} for r in records]
    frame["edge alignment, successful only"] = [s.get("edge_alignment") for s in successful]
    frame["deepest layer distortion, successful only"] = [deepest_layer(s.get("feature_distortion"))
                                                           for s in successful]
    order = list(dict.fromkeys(frame["attack"]))
    tables = {}
    for value in ("edge_alignment", "deepest layer distortion", "edge alignment, successful only",
                  "deepest layer distortion, successful only"):
        if frame[value].isna().all():
            continue  # runs made before successful-only metrics existed
        table = frame.pivot_table(index=["model", "ε"], columns="attack", values=value, sort=False, dropna=False)
        tables[value] = table.reindex(columns=order).round(3).reset_index()
    return tables


def study_tables(main: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Figures 1–3: accuracy vs η, accuracy and time vs τ, accuracy per iteration (PGD vs SOAE)."""
    studies = main.get("studies", {})
    tables = {}
    if studies.get("eta"):
        eta = pd.DataFrame(studies["eta"])
        tables["eta"] = eta.pivot(index="eta", columns="model", values="accuracy").map(percent)
    if studies.get("tau"):
        tau = pd.DataFrame(studies["tau"])
        tau["time ÷ time at τ=0.1"] = tau["wall_time_s"] / tau.groupby("model")["wall_time_s"].transform("first")
        tau["cell"] = [f"{percent(a)}, {t:.2f}×" for a, t in zip(tau["accuracy"], tau["time ÷ time at τ=0.1"], strict=False)]
        tables["tau"] = tau.pivot(index="tau", columns="model", values="cell").sort_index(ascending=False)
    if studies.get("iterations"):
        it = pd.DataFrame(studies["iterations"])
        it = it[it["iteration"].isin(ITERATIONS_SHOWN)]
        it["column"] = it["model"] + " " + it["attack"]
        tables["iterations"] = it.pivot(index="iteration", columns="column", values="accuracy").map(percent)
    return tables


def _markdown(title: str, table: pd.DataFrame, index: bool = False) -> str:
    caption = table.attrs.get("caption")
    text = f"### {title}\n\n" + (f"{caption}\n\n" if caption else "")
    return text + table.to_markdown(index=index) + "\n"


def markdown(main: dict[str, Any], exact: dict[str, Any] | None = None, asod: dict[str, Any] | None = None,
             no_curvature: dict[str, Any] | None = None, quadratic: dict[str, Any] | None = None) -> str:
    """Every comparison table as one Markdown document."""
    parts = [_markdown("Counted from the results", counted_statements(main, exact, asod, no_curvature, quadratic)),
             _markdown("Tables I/II: robust accuracy beside the paper (ResNet18 rows)",
                       accuracy_beside_paper(main, exact, asod, no_curvature))]
    if no_curvature is not None:
        parts.append(_markdown("The ablation: SOAE with and without curvature",
                               curvature_ablation(main, exact, no_curvature, quadratic)))
    parts += [_markdown("Equal budget: SOAE against PGD stopped at SOAE's gradient count", equal_budget(main, exact)),
              _markdown("Table IV: Krylov dimension m per τ — ours: median (mean); share of solves at the cap",
                        krylov_beside_paper(main, exact)),
              _markdown("Table V: image quality", quality_beside_paper(main)),
              _markdown("Table V over the whole grid", highest_quality_counts(main), index=True)]
    for name, table in where_perturbation_goes(main).items():
        parts.append(_markdown(f"Figure 4 quantified: {name.replace('_', ' ')}", table))
    titles = {"eta": "Figure 1: accuracy versus η", "tau": "Figure 2: accuracy and time versus τ",
              "iterations": "Figure 3: accuracy after each iteration"}
    for name, table in study_tables(main).items():
        parts.append(_markdown(titles[name], table, index=True))
    for name, table in (study_tables(exact) if exact is not None else {}).items():
        parts.append(_markdown(f"{titles[name]} — SOAE with exact Hessian-vector products", table, index=True))
    return "\n".join(parts)
