"""The status page in a real headless browser: Debian's chromium and chromedriver, driven
by selenium with the driver's path given (nothing downloads a driver) and flags that
keep the browser off the network.

The simulated fleet of tests/test_status_page.py (six firmware flavours on 127.18.5.1,
a miner named ``<script>...``, another on a pool whose URL is one, one down, one with a
dead device) is watched and served on 127.18.5.2. What the browser shows is checked
against ``cgwatchdog poll --json`` run over the same simulator (its clock is held
still, so both read the same figures). The screenshots are written under the test's
tmp dir and their paths printed (``pytest -s`` shows them).

CI installs ``chromium`` and ``chromium-driver`` (Debian) and the ``selenium`` package
(the dev extra).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from cgwatchdog.snapshot import Snapshot
from cgwatchdog.units import format_hashrate
from tests.test_status_page import HOSTILE_NAME, HOSTILE_POOL, cycle, watched_fleet

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SIM = "127.18.5.1"
HOST = "127.18.5.2"
REPO = Path(__file__).resolve().parents[1]
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--window-size=1400,1600",
)
T = TypeVar("T")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


def _browser(javascript: bool) -> WebDriver:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.skip(f"{binary} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path, given: selenium's manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    return driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = _browser(javascript=True)
    try:
        yield driver
    finally:
        driver.quit()


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    """Selenium blocks; the page is served by this test's event loop."""
    return await asyncio.to_thread(call, *args)


async def poll_json(config: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cgwatchdog", "poll", "--json", "-c", str(config),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode in (0, 1), err.decode()
    document: dict[str, Any] = json.loads(out)
    return document


def table(driver: WebDriver) -> dict[str, dict[str, str]]:
    """The miner table as the browser shows it: name -> column -> visible text (read
    again if the page's own refresh replaced the rows meanwhile)."""
    for _ in range(5):
        try:
            return _table(driver)
        except StaleElementReferenceException:
            continue
    return _table(driver)


def _table(driver: WebDriver) -> dict[str, dict[str, str]]:
    heads = [
        th.text.strip(" ▲▼")
        for th in driver.find_elements(By.CSS_SELECTOR, "#miner-table thead th")
    ]
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#miner-rows tr[data-miner]"):
        if not row.is_displayed():
            continue
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        rows[row.get_attribute("data-miner") or ""] = dict(zip(heads, cells, strict=True))
    return rows


def severe(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def no_alert_opened(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when no dialog is open
    except NoAlertPresentException:
        return True
    return False


def shoot(driver: WebDriver, path: Path) -> None:
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    print(f"screenshot: {path}")


async def test_the_browser_shows_the_fleet_as_poll_sees_it(
    tmp_path: Path, browser: WebDriver
) -> None:
    async with watched_fleet(tmp_path, SIM, HOST) as page:
        base = f"http://{HOST}:{page.port}"
        polled = await poll_json(page.config)
        by_name = {m["name"]: m for m in polled["miners"]}
        assert set(by_name) == set(page.names)

        await off_loop(browser.get, base + "/")
        rows = await off_loop(table, browser)
        assert set(rows) == set(page.names)
        for name, miner in by_name.items():
            row = rows[name]
            if miner["up"]:
                assert row["hashrate"] == format_hashrate(miner["hashrate_hs"]), name
                assert row["family"] == (miner["family"] or "")
                if miner["temperature_max_c"] is not None:
                    assert row["temperature"] == f"{miner['temperature_max_c']:.0f} °C"
                alive = sum(1 for p in miner["pools"] if p["status"] == "Alive")
                assert row["pools"].startswith(f"{alive}/{len(miner['pools'])} alive")
            else:
                assert "down" in row["name"] and row["hashrate"] == "-"
        up = sum(1 for m in by_name.values() if m["up"])
        tiles = browser.find_element(By.ID, "tiles").text
        assert f"{up}/{len(by_name)}" in tiles.replace("\n", "")
        total = sum(m["hashrate_hs"] or 0 for m in by_name.values())
        assert format_hashrate(total) in tiles
        # The hostile name is text: the cell shows it, no script ran, only page.js loaded.
        assert rows[HOSTILE_NAME]["name"].startswith(HOSTILE_NAME)
        assert await off_loop(no_alert_opened, browser)
        scripts = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
        )
        assert scripts == ["/static/page.js"]
        assert any(HOSTILE_POOL in row["pools"] for row in rows.values())
        await off_loop(shoot, browser, tmp_path / "fleet.png")

        # Filtering as one types (JavaScript), then the form (the server's filter).
        box = browser.find_element(By.ID, "filter")
        await off_loop(box.send_keys, "south")
        south = {n for i, n in enumerate(page.names) if i % 2 == 1}
        assert set(await off_loop(table, browser)) == south
        await off_loop(box.send_keys, Keys.ENTER)
        await off_loop(_wait_for_url, browser, "q=south")
        assert set(await off_loop(table, browser)) == south
        assert len(browser.find_elements(By.CSS_SELECTOR, "#miner-rows tr[data-miner]")) == 3

        # A miner page: devices and pools as poll --json has them; the hostile pool is text.
        name = page.names[2]
        await off_loop(browser.get, base + "/")
        link = browser.find_element(By.CSS_SELECTOR, f'tr[data-miner="{name}"] td.name a')
        await off_loop(link.click)
        await off_loop(_wait_for_url, browser, f"/miners/{name}")
        miner = by_name[name]
        devices = browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr[data-device]")
        assert [d.find_elements(By.TAG_NAME, "td")[3].text for d in devices] == [
            d["status"] for d in miner["devices"]
        ]
        pools = browser.find_elements(By.CSS_SELECTOR, "#pools tbody tr[data-pool]")
        assert [p.find_element(By.CSS_SELECTOR, "td.pool").text for p in pools] == [
            p["url"] for p in miner["pools"]
        ]
        assert pools[0].find_element(By.CSS_SELECTOR, "td.pool").text == HOSTILE_POOL
        figure = browser.find_element(By.CSS_SELECTOR, '[data-figure="hashrate"]').text
        assert figure == format_hashrate(miner["hashrate_hs"])
        assert await off_loop(no_alert_opened, browser)
        await off_loop(shoot, browser, tmp_path / "miner.png")

        # The miner with the dead device: its alert and its kept raw replies.
        await off_loop(browser.get, base + "/miners/" + quote(HOSTILE_NAME, safe=""))
        assert browser.find_element(By.ID, "miner-name").text.startswith(HOSTILE_NAME)
        assert "DeviceDead" in browser.find_element(By.ID, "alerts").text
        assert '"SUMMARY"' in browser.find_element(By.CSS_SELECTOR, "pre.raw").text
        assert await off_loop(no_alert_opened, browser)

        # It refreshes itself: a miner goes down, the open page says so without a reload.
        page.status.interval_s = 5.0  # the page refreshes every interval (5 s at least)
        await off_loop(browser.get, base + "/")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-refresh") == "5"
        browser.execute_script("window.stillTheSamePage = true")
        before = browser.find_element(By.CSS_SELECTOR, '[data-figure="down"]').text
        await page.fleet.set_mode(page.names[1], "down")
        await cycle(page)
        await off_loop(_wait_for_text, browser, '[data-figure="down"]', str(int(before) + 1))
        assert browser.execute_script("return window.stillTheSamePage") is True

        # No console errors on any page (a missing favicon would be one).
        assert severe(browser) == []


async def test_the_page_works_without_javascript(tmp_path: Path) -> None:
    driver = await off_loop(_browser, False)
    try:
        async with watched_fleet(tmp_path, SIM, HOST) as page:
            base = f"http://{HOST}:{page.port}"
            await off_loop(driver.get, base + "/")
            assert driver.find_elements(By.TAG_NAME, "noscript")
            assert set(await off_loop(table, driver)) == set(page.names)
            box = driver.find_element(By.ID, "filter")
            await off_loop(box.send_keys, "north")
            # Nothing filters as one types without JavaScript ...
            assert set(await off_loop(table, driver)) == set(page.names)
            await off_loop(box.send_keys, Keys.ENTER)
            await off_loop(_wait_for_url, driver, "q=north")
            # ... the form does it on the server.
            north = {n for i, n in enumerate(page.names) if i % 2 == 0}
            assert set(await off_loop(table, driver)) == north
            # Sorting is a link.
            header = driver.find_element(By.LINK_TEXT, "hashrate")
            await off_loop(header.click)
            await off_loop(_wait_for_url, driver, "sort=hashrate")
            shown = list(await off_loop(table, driver))
            rates = {r.name: r.hashrate_hs for r in page.results if isinstance(r, Snapshot)}
            hashrates = [rates[name] or 0 for name in shown if name in rates]
            assert hashrates == sorted(hashrates, reverse=True) and len(hashrates) >= 2
            await off_loop(shoot, driver, tmp_path / "fleet-no-js.png")
            assert no_alert_opened(driver)
            assert severe(driver) == []
    finally:
        await off_loop(driver.quit)


def _wait_for_url(driver: WebDriver, part: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: part in d.current_url)


def _wait_for_text(driver: WebDriver, selector: str, text: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    # The page's refresh replaces the element: one found just before may be stale.
    WebDriverWait(
        driver, 15, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: d.find_element(By.CSS_SELECTOR, selector).text == text)
