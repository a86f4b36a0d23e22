"""The MLflow UI as a person sees it, in a real headless browser, over a store holding a finished sweep and its report:
the link masksae prints opens the runs table with the headline metrics as columns, the report run holds the training
runs, and the report page, a plot and an inspection page open among the artifacts. Screenshots are kept in
outputs/test-artifacts/mlflow-ui/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from experiments.report import build_report
from experiments.runs import load_sweep
from masksae.tracking import REPO_ROOT
from masksae.ui_links import experiment_link, run_link
from tests.experiments.conftest import EXPERIMENT, SWEEP_ID, report_cfg
from tests.ui import headless_chromium, mlflow_ui

pytestmark = pytest.mark.slow

SCREENSHOTS = REPO_ROOT / "outputs" / "test-artifacts" / "mlflow-ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = headless_chromium()
    yield driver
    driver.quit()


def _wait_for(condition: Callable[[], Any], what: str, shown: Callable[[], Any] | None = None, timeout_s: float = 30.0) -> Any:
    """`condition()`'s first truthy value, polled (the UI renders asynchronously); on time-out, fails with `shown()`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"the MLflow UI did not show {what} within {timeout_s:.0f} s" + (f"; it shows {shown()}" if shown else ""))


def _visible_texts(browser: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in browser.find_elements(By.CSS_SELECTOR, css) if element.text]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _open_artifact(browser: Any, *names: str) -> None:
    """Click through the artifact tree: folders, then the file."""
    from selenium.webdriver.common.by import By

    for name in names:
        browser.find_element(By.XPATH, f"//*[text()='{name}']").click()


def test_the_ui_shows_the_sweep_its_report_and_their_artifacts(sweep, repo_root, mlflow_uri, tmp_path, browser) -> None:
    from selenium.webdriver.common.by import By

    report = build_report(report_cfg(mlflow_uri, tmp_path / "report"))
    runs, _ = load_sweep(sweep, EXPERIMENT, SWEEP_ID)
    experiment_id = sweep.get_experiment_by_name(EXPERIMENT).experiment_id
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(repo_root, mlflow_uri, tmp_path / "artifacts") as base:
        browser.get(experiment_link(base, experiment_id))
        report_row = browser.find_element(By.XPATH, f"//*[text()='report-{SWEEP_ID}']")
        metrics = {"core/l0", "core/explained_variance", "absorption/mean_full_absorption_score"}
        _wait_for(lambda: metrics <= set(_visible_texts(browser, "[role=columnheader]")), f"the metric columns {sorted(metrics)}",
                  lambda: _visible_texts(browser, "[role=columnheader]"))
        browser.save_screenshot(str(SCREENSHOTS / "1-runs-table.png"))

        row = report_row.find_element(By.XPATH, "./ancestor::*[@role='row']")
        row.find_element(By.CSS_SELECTOR, "button").click()  # expand the report run: its nested training runs
        names = {sweep.get_run(run.run_id).info.run_name for run in runs}
        shown = _wait_for(lambda: names & set(_visible_texts(browser, "a")) == names and names, "the report run's nested runs")
        assert shown == names
        explained = [run.metrics["core/explained_variance"] for run in runs]
        cells = [_number(text) for text in _visible_texts(browser, "[role=gridcell]")]
        for value in explained:  # their metric values show in the metric columns
            assert any(cell is not None and abs(cell - value) < 1e-3 for cell in cells), (value, cells)
        browser.save_screenshot(str(SCREENSHOTS / "2-report-run-expanded.png"))

        browser.get(run_link(base, experiment_id, report.parent_run_id, "artifacts"))
        _open_artifact(browser, "report", "report.html")
        frame = browser.find_element(By.TAG_NAME, "iframe")
        browser.switch_to.frame(frame)
        assert f"sweep {SWEEP_ID}" in _wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text, "the report page")
        assert len(browser.find_elements(By.CSS_SELECTOR, "table")) >= 1 and len(browser.find_elements(By.CSS_SELECTOR, "img")) >= 2
        browser.switch_to.default_content()
        browser.save_screenshot(str(SCREENSHOTS / "3-report-page.png"))

        browser.get(run_link(base, experiment_id, runs[0].run_id, "artifacts"))
        _open_artifact(browser, "evals", "absorption_per_letter.png")
        plot = _wait_for(lambda: [image for image in browser.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
                                  if image.get_property("naturalWidth") > 300], "the absorption plot")
        assert plot
        browser.save_screenshot(str(SCREENSHOTS / "4-absorption-plot.png"))
        _open_artifact(browser, "inspection.html")
        browser.switch_to.frame(browser.find_element(By.TAG_NAME, "iframe"))
        assert _wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text, "the inspection page").startswith("SAE inspection")
        browser.switch_to.default_content()
        browser.save_screenshot(str(SCREENSHOTS / "5-inspection-page.png"))
