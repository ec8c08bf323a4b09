"""The Backtests page and the report in a real browser: `airflow api-server` with the project's plugin,
driven in headless Chromium by Selenium.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`; `.ci/run` installs
them); skips without them. Screenshots are saved in tests/artifacts/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from backtest_airflow.layout import run_folder_name
from tests.support import REPO, free_port
from tests.support.dag import load_daily_dag

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"
DAG_ID = "crypto_backtest_daily"
PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT"]
LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
SERVER_START_SECONDS = 180
WAIT_SECONDS = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Chromium and chromedriver not found on PATH (apt-get install chromium chromium-driver)",
    ),
]
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements.txt)")


@pytest.fixture(scope="module")
def finished_run(airflow_db, tmp_path_factory) -> dict:
    """One finished daily run (dag.test, local mode, synthetic data) in a fresh store and the session DB."""
    data_url = tmp_path_factory.mktemp("browser") / "store"
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic", BACKTEST_DATA_URL=str(data_url))
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf={"pairs": PAIRS, "window": "2d", "lookback_days": 30})
    assert dag_run.state == "success"
    folder = run_folder_name(dag_run.run_id)
    assert (data_url / "results" / DAG_ID / "date=2026-10-01" / f"run={folder}" / "report.html").is_file()
    return {"data_url": data_url, "run_id": dag_run.run_id, "date": "2026-10-01", "folder": folder}


def wait_until_healthy(process: subprocess.Popen, base: str, log: Path) -> None:
    """Poll the api-server's health endpoint until it answers, the process dies, or the deadline passes."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"api-server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=3) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"api-server not healthy after {SERVER_START_SECONDS}s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop the api-server and its workers (its own process group), politely first."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_api_server(log: Path, data_url, **airflow_env: str):
    """`airflow api-server` on a free loopback port with the session's AIRFLOW_HOME and DB, the
    project's plugins folder, a store and more settings; yields its base URL, stopped afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BACKTEST_DATA_URL": str(data_url),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__API__BASE_URL": base,
        **airflow_env,
    }
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(process, base, log)
        yield base
    finally:
        stop(process)
        print(f"api-server log: {log}")


@pytest.fixture(scope="module")
def api_server(finished_run, tmp_path_factory):
    """The api-server with the run's store, every user an admin (no login form)."""
    log = tmp_path_factory.mktemp("api-server") / "api-server.log"
    with running_api_server(
        log, finished_run["data_url"], AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True"
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = WAIT_SECONDS):
    """Wait for a condition; on a timeout, keep a screenshot and the page source for the post-mortem."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "timeout.png"))
        (ARTIFACTS / "timeout.html").write_text(driver.page_source)
        pytest.fail(f"timed out on {driver.current_url}; see {ARTIFACTS / 'timeout.png'} and timeout.html")


def visible(css: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    return EC.visibility_of_element_located((By.CSS_SELECTOR, css))


def screenshot(driver, name: str, full_page: bool = False) -> Path:
    """Save a PNG in tests/artifacts/ (the whole page when asked) and print where."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(max(height + 200, size["height"]), 12000))
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    print(f"screenshot: {path}")
    return path


def leaderboard_css(run: dict) -> str:
    """The run's leaderboard table on the Backtests page (an id with run-id characters: quoted)."""
    return f'table[id="leaderboard-{run["date"]}-{run["folder"]}"]'


def visible_rows(driver, table_css: str) -> dict[str, str]:
    """Symbol -> visible text of each row of a leaderboard table."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"{table_css} tbody tr")
    return {row.get_attribute("data-symbol"): row.text for row in rows if row.is_displayed()}


def test_backtests_page_shows_the_leaderboard(api_server, browser, finished_run):
    from selenium.webdriver.common.by import By

    browser.get(f"{api_server}/backtests/")
    table = leaderboard_css(finished_run)
    wait(browser, visible(f"{table} tbody tr"))
    rows = visible_rows(browser, table)
    assert sorted(rows) == sorted(PAIRS)
    for symbol, text in rows.items():
        assert text.split()[1] == symbol and "ok" in text and "%" in text  # rank, symbol, status, figures
    assert "SYNTHETIC DATA" in browser.find_element(By.CSS_SELECTOR, ".badge.synthetic").text
    screenshot(browser, "backtests-page.png", full_page=True)

    # Sorting by clicking a header (inline script): symbol ascending, then descending.
    header = browser.find_element(By.CSS_SELECTOR, f"{table} thead th:nth-child(2) button")
    header.click()
    assert list(visible_rows(browser, table)) == sorted(PAIRS)
    header.click()
    assert list(visible_rows(browser, table)) == sorted(PAIRS, reverse=True)


def test_backtests_page_inside_the_airflow_ui(api_server, browser, finished_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    browser.get(f"{api_server}/plugin/backtests")
    nav = "//a[contains(@href, 'plugin/backtests')][normalize-space()='Backtests']"  # the navigation entry
    assert wait(browser, EC.visibility_of_element_located((By.XPATH, nav))).is_displayed()
    frame = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Backtests']")))
    browser.switch_to.frame(frame)
    try:
        table = leaderboard_css(finished_run)
        wait(browser, visible(f"{table} tbody tr"))
        assert sorted(visible_rows(browser, table)) == sorted(PAIRS)
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "airflow-ui-backtests.png")


def test_the_pair_history_form_submits_in_the_browser(api_server, browser, finished_run):
    """The page's CSP lets its own form submit (form-action 'self'); the history page answers with the pair's run."""
    import pandas as pd
    from selenium.webdriver.common.by import By

    browser.get(f"{api_server}/backtests/")
    field = wait(browser, visible("#history-form input[name=symbol]"))
    field.send_keys(PAIRS[0])
    browser.find_element(By.CSS_SELECTOR, "#history-form button[type=submit]").click()
    wait(browser, visible("#pair-history"))
    assert browser.current_url.startswith(f"{api_server}/backtests/history?symbol={PAIRS[0]}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#pair-history tbody tr")
    assert [row.get_attribute("data-date") for row in rows] == [finished_run["date"]]  # the one run so far
    board = pd.read_parquet(
        finished_run["data_url"] / "results" / DAG_ID / f"date={finished_run['date']}" / f"run={finished_run['folder']}"
        / "leaderboard.parquet"
    )  # fmt: skip
    expected = board[board["symbol"] == PAIRS[0]].iloc[0]
    cells = [cell.text for cell in rows[0].find_elements(By.CSS_SELECTOR, "td")]
    assert cells[2] == str(expected["rank"]) and cells[5] == expected["position_now"]
    screenshot(browser, "pair-history.png")


def test_report_opens_from_the_page_with_charts(api_server, browser, finished_run):
    from selenium.webdriver.common.by import By

    browser.get(f"{api_server}/backtests/")
    wait(browser, visible("a.report-link")).click()
    banner = wait(browser, visible("#synthetic-banner"))
    assert "SYNTHETIC DATA" in banner.text
    assert browser.current_url == f"{api_server}/backtests/report/{finished_run['date']}/{finished_run['folder']}"
    assert sorted(visible_rows(browser, "#leaderboard-table")) == sorted(PAIRS)
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart > svg")  # not the log-scale ones (hidden)
    portfolios = len(browser.find_elements(By.CSS_SELECTOR, "figure.portfolio-chart"))
    assert len(charts) == len(PAIRS) + 1 + portfolios  # 4 pairs are all top-3 or bottom-3, the returns chart
    for chart in charts:
        browser.execute_script("arguments[0].scrollIntoView()", chart)
        assert chart.is_displayed() and chart.size["width"] > 400 and chart.size["height"] > 200
    lines = browser.find_elements(By.CSS_SELECTOR, "figure.pair-chart svg path")
    assert len(lines) > 50  # curves, fills, axes: really drawn
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "report.png", full_page=True)


def test_rank_task_links_to_its_report(api_server, browser, finished_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    run = quote(finished_run["run_id"], safe="")
    browser.get(f"{api_server}/dags/{DAG_ID}/runs/{run}/tasks/rank/details")  # extra links: the Details tab
    link = wait(browser, EC.visibility_of_element_located((By.XPATH, "//a[normalize-space()='Backtest report']")))
    href = link.get_attribute("href")
    assert href == f"{api_server}/backtests/report/{finished_run['date']}/{finished_run['folder']}"
    screenshot(browser, "rank-task-extra-link.png")
    browser.get(href)
    assert "SYNTHETIC DATA" in wait(browser, visible("#synthetic-banner")).text


def test_a_script_written_into_a_stored_report_does_not_run(api_server, browser, finished_run):
    """Anyone who can write results/* could once run script in every user's browser ('unsafe-inline')."""
    import shutil

    from selenium.webdriver.common.by import By

    date_dir = finished_run["data_url"] / "results" / DAG_ID / f"date={finished_run['date']}"
    tampered = date_dir / "run=tampered"
    shutil.copytree(date_dir / f"run={finished_run['folder']}", tampered, dirs_exist_ok=True)
    page = tampered / "report.html"
    injected = "<script>document.title = 'pwned'; document.body.dataset.pwned = 'yes';</script>"
    page.write_text(page.read_text().replace("</main>", injected + '<img id="x" src="x" onerror="alert(1)"></main>'))
    browser.get(f"{api_server}/backtests/report/{finished_run['date']}/tampered")
    wait(browser, visible("#leaderboard-table tbody tr"))
    header = browser.find_element(By.CSS_SELECTOR, "#leaderboard-table thead th:nth-child(2) button")
    header.click()  # the report's own script still runs (sorting)...
    assert list(visible_rows(browser, "#leaderboard-table")) == sorted(PAIRS)
    assert browser.title != "pwned"  # ...the injected one does not
    assert browser.execute_script("return document.body.dataset.pwned || null") is None
    assert browser.execute_script("return 1") == 1  # an open alert() would make this call fail


# -- the report's readability at 1,400 px (opened from its file: no api-server needed) ---------


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """A report whose leaderboard is wider than the window: a grid and one combination, trade statistics."""
    from tests.support.dag import make_run

    store = str(tmp_path_factory.mktemp("wide") / "store")
    strategies = [{"name": "sma_trend", "params": {"window": "2d"}},
                  {"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d,2d"}}]  # fmt: skip
    run = make_run(store, PAIRS, lookback_days=20, strategies=strategies, rank_by="sharpe")
    return Path(run["plan"].results_url) / "report.html"


def rect(driver, element) -> dict:
    return driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", element)


def test_report_leaderboard_keeps_the_pair_columns_in_view_when_scrolled_sideways(browser, wide_report):
    from selenium.webdriver.common.by import By

    browser.set_window_size(1400, 1000)
    browser.get(wide_report.as_uri())
    wait(browser, visible("#leaderboard-table tbody tr"))
    box = browser.find_element(By.CSS_SELECTOR, "#leaderboard-table")
    scroller = browser.execute_script("return arguments[0].parentElement", box)
    assert "board-scroll" in scroller.get_attribute("class")
    width, visible_width = browser.execute_script(
        "return [arguments[0].scrollWidth, arguments[0].clientWidth]", scroller
    )
    assert width > visible_width + 200, "the leaderboard should be wider than the page at 1,400 px"
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")
    before = [rect(browser, row.find_elements(By.TAG_NAME, "td")[1]) for row in rows]  # symbol
    status = rect(browser, rows[0].find_elements(By.TAG_NAME, "td")[3])
    browser.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", scroller)
    assert browser.execute_script("return arguments[0].scrollLeft", scroller) > 200
    view = rect(browser, scroller)
    for row, was in zip(rows, before, strict=True):
        symbol = row.find_elements(By.TAG_NAME, "td")[1]
        now = rect(browser, symbol)
        assert now["left"] == pytest.approx(was["left"], abs=1) and view["left"] <= now["left"] < view["right"]
        x, y = now["left"] + now["width"] / 2, now["top"] + now["height"] / 2
        on_top = browser.execute_script("return document.elementFromPoint(arguments[0], arguments[1])", x, y)
        assert on_top == symbol and symbol.text == row.get_attribute("data-symbol")  # not covered by scrolled cells
    moved = rect(browser, rows[0].find_elements(By.TAG_NAME, "td")[3])
    assert moved["left"] < status["left"] - 200  # an unpinned column (status) did scroll away
    heads = browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table thead th.pin")
    assert [h.text for h in heads] == ["rank", "symbol", "strategy", "sharpe"]
    for head in heads:
        assert view["left"] <= rect(browser, head)["left"] < view["right"]
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "leaderboard"))
    screenshot(browser, "report-leaderboard-scrolled.png")


def test_report_log_scale_toggle_switches_the_equity_charts(browser, wide_report):
    from selenium.webdriver.common.by import By

    browser.set_window_size(1400, 1000)
    browser.get(wide_report.as_uri())
    figure = wait(browser, visible("figure.pair-chart"))
    linear = figure.find_element(By.CSS_SELECTOR, ":scope > svg")
    log = figure.find_element(By.CSS_SELECTOR, ":scope > .scale-log > svg")
    assert linear.is_displayed() and not log.is_displayed()
    label = browser.find_element(By.CSS_SELECTOR, "label[for=log-scale]")
    browser.execute_script("arguments[0].scrollIntoView()", label)
    label.click()
    assert browser.find_element(By.ID, "log-scale").is_selected()
    assert not linear.is_displayed() and log.is_displayed()
    assert "growth of 1 (log scale)" in log.get_attribute("innerHTML")
    assert rect(browser, log)["width"] > 400 and rect(browser, log)["height"] > 200
    for other in browser.find_elements(By.CSS_SELECTOR, "figure.pair-chart"):  # every chart switches
        assert not other.find_element(By.CSS_SELECTOR, ":scope > svg").is_displayed()
    screenshot(browser, "report-log-scale.png")
    label.click()
    assert linear.is_displayed() and not log.is_displayed()
