"""Writing an evaluation (the dict :func:`soae_core.experiments.evaluation.run_evaluation` returns) as
report.md (pandas → Markdown tables), results.json and figures.html (plotly express)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
from plotly.graph_objects import Figure

# Budgets (gradient evaluations per image) for the equal-budget table.
BUDGETS = (1, 5, 10, 20, 50, 100, 200, 500)


def jsonable(value: Any) -> Any:
    """Nested dicts/lists with NaN and ±inf replaced by None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def eps_label(eps: float) -> str:
    """ε as people write it: '8/255' when it is a whole number of grey levels, else '0.1'."""
    ticks = eps * 255
    return f"{round(ticks)}/255" if abs(ticks - round(ticks)) < 1e-9 else f"{eps:g}"


def _attack_frame(results: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame([{k: v for k, v in r.items()
                           if k not in ("budget_curve", "feature_distortion", "krylov", "successful")}
                          for r in results["attacks"]])
    frame["ε"] = frame["eps"].map(eps_label)
    return frame


def percent(value: float | None) -> str:
    """A fraction in [0, 1] as '12.3%'; '' for None or NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def accuracy_at_budget(curve: list[dict[str, float]], budget: float) -> float | None:
    """Accuracy at the last recorded point costing ≤ ``budget`` gradient evaluations per image."""
    affordable = [point["accuracy"] for point in curve if point["grad_evals"] <= budget + 1e-9]
    return affordable[-1] if affordable else None


def accuracy_tables(results: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Per ε: rows models, columns Clean + attacks, robust accuracy in % (the paper's Tables I/II)."""
    frame = _attack_frame(results)
    tables = {}
    for label, part in frame.groupby("ε", sort=False):
        table = part.pivot(index="model", columns="attack", values="robust_accuracy")
        table = table[list(dict.fromkeys(part["attack"]))].reindex(list(dict.fromkeys(part["model"])))
        table.insert(0, "Clean", [results["models"][m]["clean_accuracy"] for m in table.index])
        tables[label] = table.map(percent)
    return tables


def cost_table(results: dict[str, Any]) -> pd.DataFrame:
    """Gradient evaluations and forward passes per image, and wall time, per (model, ε, attack)."""
    frame = _attack_frame(results)
    return frame[["model", "ε", "attack", "grad_evals_per_image", "forward_passes_per_image", "wall_time_s"]].rename(
        columns={"grad_evals_per_image": "gradients / image", "forward_passes_per_image": "forward passes / image",
                 "wall_time_s": "time (s)"}).round(2)


def budget_table(results: dict[str, Any]) -> pd.DataFrame:
    """Robust accuracy reachable within each budget of gradient evaluations per image."""
    rows = []
    for record in results["attacks"]:
        row = {"model": record["model"], "ε": eps_label(record["eps"]), "attack": record["attack"]}
        row.update({f"≤ {b}": percent(accuracy_at_budget(record["budget_curve"], b)) for b in BUDGETS})
        rows.append(row)
    return pd.DataFrame(rows)


def quality_table(results: dict[str, Any]) -> pd.DataFrame:
    """Table V and Figure 4's claims: PSNR (standard and the paper's convention), SSIM, norms, location."""
    frame = _attack_frame(results)
    columns = {"perturbed_images": "perturbed", "psnr_db": "PSNR (dB)", "psnr_paper_db": "PSNR, paper convention (dB)",
               "ssim": "SSIM", "l2": "L2", "linf": "L∞", "edge_alignment": "edge alignment",
               "high_frequency_share": "high-freq. share", "saliency_similarity": "saliency cosine"}
    present = [c for c in columns if c in frame]
    return frame[["model", "ε", "attack", *present]].rename(columns=columns).round(3)


def feature_table(results: dict[str, Any]) -> pd.DataFrame:
    """Mean relative L2 feature distortion per layer, per (model, ε, attack)."""
    rows = [{"model": r["model"], "ε": eps_label(r["eps"]), "attack": r["attack"], **r.get("feature_distortion", {})}
            for r in results["attacks"]]
    return pd.DataFrame(rows).round(3)


def deepest_layer(distortion: dict[str, float | None] | None) -> float | None:
    """The last (deepest) layer's value of a per-layer feature-distortion dict; None if there is none."""
    return list(distortion.values())[-1] if distortion else None


def successful_table(results: dict[str, Any]) -> pd.DataFrame:
    """Quality and location metrics over the successful adversarial examples only (correct clean, wrong
    adversarial), with the deepest layer's feature distortion; empty for runs made before this existed."""
    rows = []
    for r in results["attacks"]:
        successful = r.get("successful")
        if successful is None:
            continue
        rows.append({"model": r["model"], "ε": eps_label(r["eps"]), "attack": r["attack"],
                     "fooled images": successful["images"], "PSNR (dB)": successful.get("psnr_db"),
                     "SSIM": successful.get("ssim"), "L2": successful.get("l2"),
                     "edge alignment": successful.get("edge_alignment"),
                     "deepest layer distortion": deepest_layer(successful.get("feature_distortion"))})
    return pd.DataFrame(rows).round(3)


def krylov_table(results: dict[str, Any]) -> pd.DataFrame:
    """SOAE's Krylov dimension m in the main grid."""
    rows = [{"model": r["model"], "ε": eps_label(r["eps"]), **r["krylov"]} for r in results["attacks"] if r["krylov"]]
    return pd.DataFrame(rows).round(3)


def _study_frame(results: dict[str, Any], name: str) -> pd.DataFrame:
    return pd.DataFrame(results.get("studies", {}).get(name, []))


def tau_table(results: dict[str, Any]) -> pd.DataFrame:
    """Table IV and Figure 2: accuracy, time (also relative to the largest τ) and m per τ."""
    frame = _study_frame(results, "tau")
    if frame.empty:
        return frame
    largest = frame.loc[frame.groupby("model")["tau"].idxmax()].set_index("model")
    frame["time ÷ time at largest τ"] = frame["wall_time_s"] / frame["model"].map(largest["wall_time_s"])
    # Wall time is noisy on a shared machine; gradient evaluations are not.
    frame["gradients ÷ gradients at largest τ"] = (frame["grad_evals_per_image"]
                                                   / frame["model"].map(largest["grad_evals_per_image"]))
    frame["accuracy"] = frame["accuracy"].map(percent)
    frame["tau"] = frame["tau"].map(lambda tau: f"{tau:g}")
    keep = ["model", "tau", "accuracy", "wall_time_s", "time ÷ time at largest τ", "grad_evals_per_image",
            "gradients ÷ gradients at largest τ",
            "m_mean", "m_median", "m_max", "max_iter_share", "max_krylov"]
    return frame[[c for c in keep if c in frame]].round(3)


def markdown_report(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    meta = results["meta"]
    lines = [
        "# SOAE Lab evaluation", "",
        f"- Command: `{meta['command']}`",
        f"- Data: {meta['dataset']}, first {meta['n']} test images (studies: first {meta['study_n']})",
        f"- Machine: {meta['machine']} (at the end: load avg {meta.get('machine_at_end', '?').rsplit(' ', 1)[-1]})",
        f"- Started {meta['started_utc']}, took {meta['duration_s'] / 60:.1f} min "
        f"(main grid {meta.get('grid_duration_s', math.nan) / 60:.1f} min)", "",
        "Robust accuracy counts an image as robust only if the model classifies its adversarial version "
        "correctly (images misclassified when clean count as failures). Quality metrics are means over the "
        "images the attack changed. PSNR uses data_range = 1; the paper's convention (data_range = 255 on "
        "[0, 1] images) adds 48.13 dB.", "",
    ]
    for label, table in accuracy_tables(results).items():
        lines += [f"## Clean and robust accuracy, ε = {label} (layout of Tables I/II)", "",
                  table.to_markdown(), ""]
    sections = [
        ("Cost per image", cost_table(results)),
        ("Accuracy within a budget of gradient evaluations per image (equal-budget comparison)", budget_table(results)),
        ("Image quality and where the perturbation goes (Table V, Figure 4)", quality_table(results)),
        ("Feature distortion per layer (relative L2, Figure 4)", feature_table(results)),
        ("The same over successful adversarial examples only (correct on the clean image, wrong on the "
         "adversarial one)", successful_table(results)),
        ("SOAE Krylov dimension m in the main grid", krylov_table(results)),
    ]
    eta = _study_frame(results, "eta")
    if not eta.empty:
        eta["accuracy"] = eta["accuracy"].map(percent)
        sections.append(("Study: accuracy versus η (Figure 1)", eta.pivot(index="eta", columns="model", values="accuracy")))
    sections.append(("Study: accuracy, time and Krylov dimension versus τ (Figure 2, Table IV)", tau_table(results)))
    iterations = _study_frame(results, "iterations")
    if not iterations.empty:
        iterations["accuracy"] = iterations["accuracy"].map(percent)
        iterations["run"] = iterations["model"] + " " + iterations["attack"]
        sections.append(("Study: accuracy after each iteration (Figure 3)",
                         iterations.pivot(index="iteration", columns="run", values="accuracy")))
    for title, table in sections:
        if not table.empty:
            index = not isinstance(table.index, pd.RangeIndex)
            lines += [f"## {title}", "", table.to_markdown(index=index), ""]
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> list[tuple[str, Figure]]:
    """(title, plotly figure) for every chart the data allows."""
    frame = _attack_frame(results)
    charts = [("Robust accuracy", px.bar(frame, x="model", y="robust_accuracy", color="attack", barmode="group",
                                         facet_col="ε", range_y=[0, 1]))]
    curve = pd.DataFrame([{"model": r["model"], "ε": eps_label(r["eps"]), "attack": r["attack"], **point}
                          for r in results["attacks"] for point in r["budget_curve"]])
    charts.append(("Accuracy versus gradient evaluations per image",
                   px.line(curve, x="grad_evals", y="accuracy", color="attack", facet_col="model", facet_row="ε",
                           markers=True, log_x=True, range_y=[0, 1])))
    for column in ("psnr_db", "ssim", "edge_alignment", "high_frequency_share"):
        if column in frame:
            charts.append((column, px.bar(frame, x="model", y=column, color="attack", barmode="group", facet_col="ε")))
    features = feature_table(results).melt(id_vars=["model", "ε", "attack"], var_name="layer", value_name="distortion")
    if not features.empty:
        charts.append(("Feature distortion per layer", px.line(features, x="layer", y="distortion", color="attack",
                                                               facet_col="model", facet_row="ε", markers=True)))
    eta = _study_frame(results, "eta")
    if not eta.empty:
        charts.append(("Accuracy versus η (Figure 1)", px.line(eta, x="eta", y="accuracy", color="model",
                                                               markers=True, log_x=True, range_y=[0, 1])))
    tau = _study_frame(results, "tau")
    if not tau.empty:
        charts.append(("Accuracy versus τ (Figure 2)", px.line(tau, x="tau", y="accuracy", color="model",
                                                               markers=True, log_x=True, range_y=[0, 1])))
        charts.append(("Time versus τ (Figure 2)", px.line(tau, x="tau", y="wall_time_s", color="model",
                                                           markers=True, log_x=True)))
        charts.append(("Krylov dimension m versus τ (Table IV)", px.line(tau, x="tau", y="m_mean", color="model",
                                                                         markers=True, log_x=True)))
    iterations = _study_frame(results, "iterations")
    if not iterations.empty:
        charts.append(("Accuracy versus iteration (Figure 3)", px.line(iterations, x="iteration", y="accuracy",
                                                                       color="attack", facet_col="model", markers=True,
                                                                       range_y=[0, 1])))
    return charts


def html_report(results: dict[str, Any]) -> str:
    """A self-contained HTML page (plotly.js embedded once, works offline)."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>SOAE Lab evaluation</title></head><body>",
             "<h1>SOAE Lab evaluation</h1>", f"<p><code>{results['meta']['command']}</code></p>"]
    for i, (title, figure) in enumerate(figures(results)):
        parts += [f"<h2>{title}</h2>", figure.to_html(full_html=False, include_plotlyjs=i == 0)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write report.md, results.json and figures.html into ``out_dir`` (created); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "results.json", out / "figures.html"]
    paths[0].write_text(markdown_report(results), encoding="utf-8")
    paths[1].write_text(json.dumps(jsonable(results), indent=1, allow_nan=False), encoding="utf-8")
    paths[2].write_text(html_report(results), encoding="utf-8")
    return paths
