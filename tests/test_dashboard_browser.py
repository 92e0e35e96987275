"""The live dashboard and the HTML report in a real headless browser (Debian's chromium through selenium), against
crowdgate's web app under gunicorn and a private Redis: annotator rows, rendered charts, buttons that work.
Screenshots are saved under the test's tmp folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from crowdgate.report.data import read_project
from crowdgate.report.html import write_html
from routing import pausing
from routing.state import RoutingState
from scripts.services import start_web
from tests.conftest import wait_for
from tests.test_dashboard import PREFIX, PROJECT, SECRET, TOKEN, seed

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
if not (CHROMIUM and DRIVER):
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def _text(browser, element_id: str) -> str:
    """The element's text, or "" while the page that has it is not there yet."""
    from selenium.common.exceptions import WebDriverException

    try:
        return browser.find_element(By.ID, element_id).text
    except WebDriverException:
        return ""


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1600,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _chart_rendered(driver, kind: str) -> bool:
    chart = driver.find_element(By.CSS_SELECTOR, f'svg[data-chart="{kind}"]')
    return chart.size["width"] > 100 and chart.size["height"] > 100


def test_report_file_opens_offline_with_rows_and_charts(browser, redis_conn, redis_service, tmp_path: Path):
    seed(redis_conn)
    path = write_html(read_project(redis_conn, PREFIX, PROJECT), tmp_path / "report.html")
    browser.get(path.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#annotators tr.annotator")
    assert [r.get_attribute("data-annotator") for r in rows] == ["1", "2", "3", "4", "5"]
    assert _chart_rendered(browser, "intervals") and _chart_rendered(browser, "histogram")
    assert len(browser.find_elements(By.CSS_SELECTOR, 'svg[data-chart="intervals"] circle')) == 5
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_dashboard_login_rows_chart_and_buttons(browser, redis_conn, redis_service, log_dir, tmp_path: Path):
    seed(redis_conn)
    pausing.pause(redis_conn, PROJECT, 5, "always Negative", by="cron", prefix=PREFIX)
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX,
           "CROWDGATE_WEBHOOK_SECRET": SECRET, "CROWDGATE_ADMIN_TOKEN": TOKEN, "CROWDGATE_DASHBOARD_CACHE_S": "0"}
    web = start_web(env, log_dir, workers=1)
    try:
        browser.get(f"{web.url}/dashboard/{PROJECT}")
        assert "/dashboard/login" in browser.current_url  # not logged in yet
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        who = browser.find_element(By.NAME, "who")
        who.clear()
        who.send_keys("browser")
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        # a button posts a form: its answer is a new page, which may still be loading when click() returns
        wait_for(lambda: browser.current_url.endswith(f"/dashboard/{PROJECT}"), 30, what="the page after login")
        rows = browser.find_elements(By.CSS_SELECTOR, "#annotators tr.annotator")
        assert len(rows) == 5
        assert _chart_rendered(browser, "intervals") and _chart_rendered(browser, "bars")
        assert browser.save_screenshot(str(tmp_path / "dashboard.png"))

        # unpause annotator 5 with their row's button
        row = browser.find_element(By.ID, "annotator-5")
        assert "always Negative" in row.text
        row.find_element(By.CSS_SELECTOR, "button.unpause").click()
        wait_for(lambda: "unpause 5" in _text(browser, "message"), 30, what="the unpause message")
        assert pausing.status_of(redis_conn, PROJECT, 5, PREFIX).status == "cleared"
        assert not browser.find_element(By.ID, "annotator-5").find_elements(By.CSS_SELECTOR, "button.unpause")

        # move annotator 2 to the top tier with the select and its button
        top = RoutingState(redis_conn, PREFIX).policy(PROJECT).tier_names[-1]
        row = browser.find_element(By.ID, "annotator-2")
        Select(row.find_element(By.CSS_SELECTOR, 'select[name="tier"]')).select_by_visible_text(top)
        row.find_element(By.CSS_SELECTOR, "button.set-tier").click()
        wait_for(lambda: RoutingState(redis_conn, PREFIX).tiers(PROJECT).get(2) == top, 30, what="the new tier")
        wait_for(lambda: _text(browser, "message").startswith("set_tier 2"), 30,
                 what="the page after setting the tier")
        assert browser.find_element(By.CSS_SELECTOR, "#annotator-2 td.tier").text == top
        browser.find_element(By.LINK_TEXT, "2").click()  # annotator 2's audit trail
        trail = browser.find_element(By.ID, "audit-trail").text
        assert "admin_set_tier" in trail and "admin:web:browser" in trail
        assert browser.save_screenshot(str(tmp_path / "dashboard-after.png"))
    finally:
        web.stop()
