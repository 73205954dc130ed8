"""The analysis pages' interactions in a real browser (Chromium via Playwright): clicking the 2-D
toy moves the point, and Stop interrupts a running sweep, keeps what is done and offers Resume.
Server and browser fixtures come from test_browser.py."""

import pytest
from test_browser import CHROMIUM, browser, server_url, wait_for_app  # noqa: F401  (pytest fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (./lab test installs it)")]


def test_clicking_the_toy_moves_the_point(server_url, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server_url}/how-soae-works")
        wait_for_app(page)
        chart = page.locator('[data-testid="stMain"] .js-plotly-plot').first
        chart.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        # Pixel position of the data point (0.8, 0.3) — a click target of the 41 × 41 grid.
        x, y = chart.evaluate("""node => {
            const layout = node._fullLayout, box = node.getBoundingClientRect();
            return [box.left + layout.xaxis._offset + layout.xaxis.d2p(0.8),
                    box.top + layout.yaxis._offset + layout.yaxis.d2p(0.3)];
        }""")
        page.mouse.click(x, y)
        page.wait_for_timeout(1000)
        wait_for_app(page)
        sliders = page.locator('[data-testid="stMain"] [data-testid="stSlider"]')
        values = [sliders.nth(k).locator('[data-testid="stSliderThumbValue"]').inner_text() for k in range(2)]
        assert values == ["0.80", "0.30"], values
        assert page.get_by_text("At p = (0.80, 0.30)").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()


def test_stop_interrupts_a_sweep_and_resume_is_offered(server_url, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server_url}/compare-sweeps")
        wait_for_app(page)
        page.get_by_role("tab", name="τ sweep").click()
        page.get_by_role("button", name="Run the τ sweep").click()
        # The page's Stop, not Streamlit's own header "Stop" (shown while any script runs).
        stop = page.get_by_test_id("stTabs").get_by_role("button", name="Stop")
        stop.wait_for(timeout=120_000)
        page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
        stop.click()
        page.get_by_text("Stopped after").wait_for(timeout=240_000)
        wait_for_app(page)
        assert page.get_by_role("button", name="Resume").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
