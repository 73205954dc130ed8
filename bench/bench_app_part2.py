"""Speed of the analysis pages: the Perturbation Anatomy's warm rerun and a Compare run on 100 images.

1. Anatomy warm rerun: the Perturbation Anatomy page with the default model, image and settings
   (SOAE, FGSM, PGD-20; the paper preset) under ``streamlit.testing``'s AppTest — a first run
   fills the caches, then ``--reruns`` reruns with nothing changed; we report their median. The
   whole script run (sidebar, cache look-ups, six plotly figures, tables) plus AppTest's harness,
   so an upper bound on the server's time. Target ≤ 1 s.
2. Compare run: the Compare & Sweeps page with FGSM, PGD-20 and SOAE (default settings: finite-
   difference products, τ = 1e-3, cap 30, N = 4) on n = 100 bundled images, caches cold for that
   n: wall time of the page run that computes it. Target ≤ 60 s. The progress bar moves after
   every (attack, batch of 25) unit; we also time each unit on its own (same code path,
   ``soae_core.analysis.jobs.run_batch``) and report the longest gap between two progress updates.

``--threads k`` sets torch's intra-op threads first (default: torch's own choice, one per core).
On a machine busy with other jobs, 2 threads on 2 cores oversubscribe and were measured up to
8× slower per gradient than 1 thread, so the result names the thread count and the load.

Run: ``.venv/bin/python bench/bench_app_part2.py [--reruns 10] [--threads 1] [--name app_part2]``;
results go to bench/results/<name>.json (machine line included) and are quoted in README
"Benchmarks".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, median_seconds, write_result

ROOT = Path(__file__).resolve().parents[1]

ANATOMY = "app_pages/perturbation_anatomy.py"
COMPARE = "app_pages/compare_sweeps.py"
ATTACKS = ["FGSM", "PGD", "SOAE"]


def open_page(page: str):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
    app.run()
    start = time.perf_counter()
    app.switch_page(page).run()
    if app.exception:
        raise RuntimeError(f"{page} failed: {[e.message for e in app.exception]}")
    return app, time.perf_counter() - start


def anatomy_warm_rerun(reruns: int) -> dict:
    """Median time (s) of reruns of the Perturbation Anatomy after a cache-filling run."""
    app, first = open_page(ANATOMY)
    median = median_seconds(app.run, repeats=reruns, warmup=0)
    return {"first_run_s": first, "median_s": median, "reruns": reruns, "rows": list(app.dataframe[0].value.index)}


def compare_page_run(n: int) -> dict:
    """Seconds of the Compare page run that computes FGSM, PGD-20 and SOAE on n images."""
    app, first = open_page(COMPARE)  # the default n = 20 (other batches than n = 100's)
    app.multiselect(key="compare::attacks").set_value(ATTACKS)
    app.select_slider(key="compare::n").set_value(n)
    start = time.perf_counter()
    app.run()
    seconds = time.perf_counter() - start
    if app.exception:
        raise RuntimeError(f"compare failed: {[e.message for e in app.exception]}")
    table = app.dataframe[0].value
    return {"n": n, "seconds": seconds, "first_page_run_n20_s": first,
            "accuracy": {name: float(table.loc[name, "Accuracy"]) for name in table.index},
            "grad_evals_per_image": {name: float(table.loc[name, "Gradient evals / image"]) for name in table.index},
            "attack_time_s": {name: float(table.loc[name, "Time (s)"]) for name in ATTACKS}}


def unit_times(n: int, batch_size: int = 25) -> dict:
    """Each (attack, batch) unit's seconds, run the way the page runs them (batch-major order)."""
    from soae_core.analysis import jobs
    from soae_core.analysis.settings import DEFAULT_SETTINGS
    from soae_core.data import load_samples
    from soae_core.models import DEFAULT_MODEL, get_model_info, load_model

    info = get_model_info(DEFAULT_MODEL)
    model, samples = load_model(DEFAULT_MODEL), load_samples(info.dataset)
    order = jobs.image_order(samples.labels)
    units = []
    for start, stop in jobs.batches(n, batch_size):
        positions = order[start:stop]
        for name in ATTACKS:
            job = jobs.Job.of(name, name, DEFAULT_SETTINGS.attack_kwargs(name, info.dataset))
            begin = time.perf_counter()
            jobs.run_batch(model, job, samples.images[positions], samples.labels[positions], positions)
            units.append({"attack": name, "images": f"{start + 1}-{stop}", "seconds": time.perf_counter() - begin})
    return {"units": units, "longest_gap_s": max(u["seconds"] for u in units),
            "total_s": sum(u["seconds"] for u in units)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", default="app_part2", help="result file name under bench/results/")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    print(machine())
    anatomy = anatomy_warm_rerun(args.reruns)
    print(f"Anatomy warm rerun: median {anatomy['median_s']:.3f} s over {args.reruns} reruns "
          f"(first run {anatomy['first_run_s']:.1f} s)")
    page = compare_page_run(args.n)
    print(f"Compare page, {args.n} images, {', '.join(ATTACKS)}: {page['seconds']:.1f} s; "
          f"accuracy {page['accuracy']}")
    units = unit_times(args.n)
    print(f"Progress units: longest {units['longest_gap_s']:.1f} s, total {units['total_s']:.1f} s")
    path = write_result(args.name, {"anatomy_warm_rerun": anatomy, "compare_page_run": page,
                                      "compare_units": units, "targets": {"anatomy_warm_rerun_s": 1.0,
                                                                          "compare_100_images_s": 60.0}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
