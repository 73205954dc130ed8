"""App responsiveness: warm rerun of the Attack Lab and cold start to first render.

1. Warm rerun: the Attack Lab with the default model and image (N = 4, the paper preset) under
   ``streamlit.testing``'s AppTest — first a run that fills the caches, then ``--reruns`` reruns
   with nothing changed; we report their median wall time. This is the whole server-side script
   run (sidebar, cache look-ups, figures, table) plus AppTest's own harness (a script-runner thread
   and message parsing per run), so it is an upper bound on the server's time. Target ≤ 0.5 s.
2. Cold start: ``streamlit run app.py`` in a fresh process, then Debian's Chromium (Playwright)
   opens "/". We time, from the process start: the navigation shown (the app's frame, drawn before
   torch is imported), the page title shown (first render of the Attack Lab), and the end of the
   first script run (the attacks computed and shown). Target for the first render ≤ 10 s.

Run: ``.venv/bin/python bench/bench_app.py [--reruns 10] [--cold-starts 3]``; results go to
bench/results/app.json (machine line included) and are quoted in README "Benchmarks".
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import machine, write_result

from soae_app.headless import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, start_streamlit, stop, wait_until_healthy


def warm_rerun_seconds(reruns: int) -> dict:
    """Median and all times (s) of AppTest reruns of the Attack Lab after a cache-filling run."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    start = time.perf_counter()
    app.run()
    first = time.perf_counter() - start
    if app.exception or not app.dataframe:
        raise RuntimeError(f"the Attack Lab did not render: {[e.message for e in app.exception]}")
    times = []
    for _ in range(reruns):
        start = time.perf_counter()
        app.run()
        times.append(time.perf_counter() - start)
    return {"first_run_s": first, "median_s": statistics.median(times), "times_s": times,
            "rows": list(app.dataframe[0].value.index)}


def cold_start_seconds() -> dict:
    """Seconds from `streamlit run` to the first render of the title and to the finished first run."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    start = time.perf_counter()
    server = start_streamlit(port)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        healthy = time.perf_counter() - start
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator('[data-testid="stSidebarNav"]').first.wait_for(timeout=600_000)
            frame = time.perf_counter() - start
            page.get_by_role("heading", name="Attack Lab").first.wait_for(timeout=600_000)
            title = time.perf_counter() - start
            page.get_by_text("Metrics", exact=True).first.wait_for(timeout=600_000)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=600_000)
            finished = time.perf_counter() - start
            browser.close()
    finally:
        stop(server)
    return {"healthy_s": healthy, "navigation_shown_s": frame, "first_render_s": title, "first_run_done_s": finished}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--cold-starts", type=int, default=3)
    args, _ = parser.parse_known_args()
    print(machine())
    warm = warm_rerun_seconds(args.reruns)
    print(f"warm rerun of the Attack Lab ({', '.join(warm['rows'])}): median {warm['median_s']:.3f} s "
          f"over {args.reruns} reruns (cache-filling run: {warm['first_run_s']:.1f} s)")
    colds = []
    for k in range(args.cold_starts):
        cold = cold_start_seconds()
        colds.append(cold)
        print(f"cold start {k + 1}: healthy {cold['healthy_s']:.1f} s, navigation shown {cold['navigation_shown_s']:.1f} s, "
              f"title shown {cold['first_render_s']:.1f} s, first run done {cold['first_run_done_s']:.1f} s")
    summary = {key: statistics.median(c[key] for c in colds) for key in colds[0]} if colds else {}
    path = write_result("app", {"warm_rerun": warm, "cold_start_runs": colds, "cold_start_median": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
