"""The teaching features in a real browser (Chromium via Playwright): uploading your own
.safetensors weights selects them and the Attack Lab runs on them; a pickle is refused in the
sidebar; Compare & Sweeps' transfer matrix runs and offers its CSV. Screenshots go to
``screenshots/``. Server and browser fixtures come from test_browser.py."""

import pytest
from test_browser import CHROMIUM, SCREENSHOTS, browser, screenshot_whole_app, server_url, wait_for_app  # noqa: F401

from soae_core.models import build_model, save_state_dict

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (./lab test installs it)")]


def _upload(page, path) -> None:
    page.get_by_text("Your own weights (.safetensors)").click()
    page.locator('[data-testid="stSidebar"] input[type="file"]').first.set_input_files(str(path))
    page.wait_for_timeout(1500)
    wait_for_app(page)


def test_uploaded_weights_are_selected_and_attacked(server_url, browser, tmp_path):  # noqa: F811
    weights = tmp_path / "my_model.safetensors"
    save_state_dict(build_model("fmnist-cnn-std"), weights, metadata={"architecture": "small-cnn"})
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server_url}/?cmp=FGSM")
        wait_for_app(page)
        _upload(page, weights)
        assert "model=my_model.safetensors+%28small-cnn" in page.url  # selected, and in the shareable URL
        assert page.get_by_text("Your upload: small-cnn weights from my_model.safetensors.").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.get_by_text("Does it fool the other models? (transfer)").count() == 1
        SCREENSHOTS.mkdir(exist_ok=True)
        screenshot_whole_app(page, SCREENSHOTS / "attack_lab_own_weights.png")
    finally:
        page.close()


def test_a_pickle_is_refused_in_the_sidebar(server_url, browser, tmp_path):  # noqa: F811
    import torch

    pickle_file = tmp_path / "weights.pt"
    torch.save(build_model("fmnist-cnn-std").state_dict(), pickle_file)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server_url}/?cmp=FGSM")
        wait_for_app(page)
        _upload(page, pickle_file)
        error = page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]')
        assert "it is a PyTorch pickle" in error.inner_text()
        assert "model=" not in page.url  # the default model stays selected
        assert page.locator('[data-testid="stException"]').count() == 0
        screenshot_whole_app(page, SCREENSHOTS / "sidebar_refused_pickle.png")
    finally:
        page.close()


@pytest.mark.parametrize("query, name", [("", "compare_transfer"),
                                         ("?target=least+likely", "compare_transfer_targeted")])
def test_transfer_matrix_runs_and_downloads(server_url, browser, query, name):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{server_url}/compare-sweeps{query}")
        wait_for_app(page)
        page.get_by_role("tab", name="Transfer").click()
        page.get_by_role("button", name="Run PGD on").click()
        page.get_by_role("button", name="Transfer matrix (CSV)").wait_for(timeout=240_000)
        wait_for_app(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        if query:
            assert page.get_by_text("Targeted at each image's least likely class").count() == 1
        screenshot_whole_app(page, SCREENSHOTS / f"{name}.png")
    finally:
        page.close()
