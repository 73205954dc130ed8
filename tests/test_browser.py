"""The app in a real browser: start ``streamlit run app.py`` headless, open every page in Debian's
Chromium through Playwright, wait until the script has finished, assert that no exception is
shown, and save a screenshot of each page into ``screenshots/`` (git-ignored) to look at.

Uses the bundled checkpoints when the default model has one, else untrained checkpoints written
to a temporary folder (the test is about the app, not the model).
"""

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from soae_app.headless import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, start_streamlit, stop, wait_until_healthy
from soae_core.models import DEFAULT_MODEL, build_model, get_model_info, save_state_dict

SCREENSHOTS = ROOT / "screenshots"


def navigation_pages() -> list[tuple[str, str]]:
    """(URL path, title) of every page in app.py's PAGES table; the first page is served at "/"."""
    tree = ast.parse((ROOT / "app.py").read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "PAGES" for t in node.targets))
    rows = ast.literal_eval(table)
    return [("" if position == 0 else url_path, title) for position, (_, _, title, _, url_path) in enumerate(rows)]


# (URL path and query, screenshot name): a deep link as the server's first request, every page of
# the navigation, then shared links with settings in the URL.
VIEWS = [("krylov-inspector?N=2", "deep_link_krylov_inspector")] + \
    [(path, title.lower().replace(" ", "_").replace("&", "and")) for path, title in navigation_pages()] + [
    ("?eps=16%2F255&N=2&hvp=exact&cmp=FGSM&cmp=PGD&cmp=ASOD&cls=Sneaker", "attack_lab_shared_link"),
    ("krylov-inspector?hvp=exact&tau=1e-6", "krylov_inspector_exact"),
    ("?eps=25.5%2F255&target=chosen+class&tcls=Bag&cmp=PGD&cmp=AutoAttack", "attack_lab_targeted"),
    ("target-grid?eps=25.5%2F255", "target_grid_eps_0.1"),
    ("perturbation-anatomy?eps=25.5%2F255&target=chosen+class&tcls=Sneaker&cmp=FGSM", "anatomy_targeted"),
    ("krylov-inspector?hvp=exact&target=chosen+class&tcls=Bag", "krylov_inspector_targeted"),
    ("how-soae-works?target=least+likely", "how_soae_works_targeted"),
]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (./lab test installs it)")]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    env = dict(os.environ)
    if not get_model_info(DEFAULT_MODEL).available:
        folder = tmp_path_factory.mktemp("models")
        torch.manual_seed(0)
        for name in (DEFAULT_MODEL, "fmnist-cnn-smooth-std"):
            save_state_dict(build_model(name), folder / f"{name}.safetensors")
        env["SOAE_MODELS_DIR"] = str(folder)
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "streamlit.log").open("w")
    server = start_streamlit(port, env=env, log=log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, server)
        yield base_url
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def wait_for_app(page, timeout_ms: int = 240_000) -> None:
    """Until the script run is over and the page shows its title."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_timeout(600)  # let plotly finish drawing before the screenshot (assertions do not need it)


def screenshot_whole_app(page, path: Path) -> None:
    """Streamlit scrolls inside its main block, so full_page=True sees one screen only: grow the
    viewport to the content's height first."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": min(int(height) + 40, 12_000)})
    page.wait_for_timeout(600)  # the resized viewport re-lays out the charts
    page.screenshot(path=str(path))


@pytest.mark.parametrize("path, name", VIEWS, ids=[v[1] for v in VIEWS])
def test_page_renders_without_exception(server_url, browser, path, name):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(f"{server_url}/{path}")
        wait_for_app(page)
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        assert page.get_by_text("Page not found").count() == 0
        SCREENSHOTS.mkdir(exist_ok=True)
        screenshot_whole_app(page, SCREENSHOTS / f"{name}.png")
        if "?" in path:  # a shared link keeps its parameters once the app has run
            for parameter in path.split("?", 1)[1].split("&"):
                assert parameter.split("=")[0] in page.url
    finally:
        page.close()


def test_navigation_links_switch_pages(server_url, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(f"{server_url}/?N=2")
        wait_for_app(page)
        # the session holds N = 2 from the URL before the switch (once, under a loaded suite, the
        # Inspector came up with the default N = 4)
        expect(page.get_by_role("slider", name=re.compile("N — outer iterations"))).to_have_value("2", timeout=30_000)
        page.get_by_role("link", name="Krylov Inspector").click()
        page.get_by_text("τ → m", exact=True).first.wait_for(timeout=240_000)
        wait_for_app(page)
        # the sidebar's state travels along: the bound widgets write the URL after the page's run,
        # which on a loaded machine can come after the run's last element
        expect(page).to_have_url(re.compile(r"/krylov-inspector\?(.*&)?N=2(&|$)"), timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
