"""A browser tab when its replica dies: Chromium through ``./lab serve --replicas 2 --no-restart``.

Opens the Attack Lab through the proxy (a shared link: ε = 16/255, N = 2, class Sneaker), waits
for the run to finish, finds the tab's replica from its affinity cookie, kills that replica
(SIGKILL), then records the tab's connection state until it is connected again, clicks another
class (Bag) and times the rerun on the surviving replica. Screenshots before the kill, once
reconnected and after the rerun go to screenshots/ (git-ignored) to look at; the numbers, the
URL after the rerun, the exceptions shown and which replica served each websocket (nginx's
access log) go to bench/results/replica_failover.json.

Run: ``.venv/bin/python bench/measure_replica_failover.py`` (needs Debian's chromium and nginx).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from common import machine, write_result
from playwright.sync_api import sync_playwright

from soae_app.headless import CHROMIUM, CHROMIUM_ARGS
from soae_app.protocol import first_visit
from soae_app.replicas import AFFINITY_COOKIE, spawn

ROOT = Path(__file__).resolve().parents[1]

SCREENSHOTS = ROOT / "screenshots"
APP = '[data-testid="stApp"]'


def wait_for_finished_run(page, timeout_ms: int = 600_000) -> None:
    """Wait until the app's script has run and stopped."""
    page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', timeout=timeout_ms)


def main() -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    result: dict = {"load_before": os.getloadavg()[0]}
    deployment = spawn(2, Path(tempfile.mkdtemp(prefix="replica-failover-")), restart=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            start = time.perf_counter()
            page.goto(deployment.url + "/?eps=16%2F255&N=2&cls=Sneaker")
            page.get_by_text("Metrics", exact=True).first.wait_for(timeout=600_000)
            wait_for_finished_run(page)
            result["first_render_s"] = time.perf_counter() - start
            page.screenshot(path=str(SCREENSHOTS / "replica_failover_1_before.png"))
            cookie = next(c["value"] for c in page.context.cookies() if c["name"] == AFFINITY_COOKIE)
            _, replica = first_visit(deployment.url, f"{AFFINITY_COOKIE}={cookie}")
            result["tab_replica"] = replica
            os.kill(next(r["pid"] for r in deployment.replicas if r["address"] == replica), signal.SIGKILL)
            killed = time.perf_counter()
            states: list[tuple[float, str | None]] = []
            while time.perf_counter() - killed < 120:
                state = page.locator(APP).get_attribute("data-test-connection-state")
                if not states or states[-1][1] != state:
                    states.append((round(time.perf_counter() - killed, 2), state))
                if state == "CONNECTED" and len(states) > 1:
                    break
                time.sleep(0.1)
            result["connection_states_after_kill"] = states
            page.screenshot(path=str(SCREENSHOTS / "replica_failover_2_reconnected.png"))
            start = time.perf_counter()
            page.locator('[data-testid="stSidebar"]').get_by_text("Bag", exact=True).first.click()
            page.wait_for_selector(f'{APP}[data-test-script-state="running"]', timeout=60_000)
            wait_for_finished_run(page)
            result["rerun_after_click_s"] = time.perf_counter() - start
            result["url_after"] = page.url
            result["exceptions_shown"] = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(SCREENSHOTS / "replica_failover_3_after_click.png"))
            browser.close()
        access_log = (deployment.run_dir / "nginx-access.log").read_text().splitlines()
        result["websockets"] = [line for line in access_log if "/_stcore/stream" in line]
    finally:
        deployment.stop()
    result["load_after"] = os.getloadavg()[0]
    print(machine())
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"written to {write_result('replica_failover', result)}")


if __name__ == "__main__":
    main()
