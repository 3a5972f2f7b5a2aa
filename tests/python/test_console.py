"""The web console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven through WebDriver by Selenium signs in with the operator
token, loads each page, checks its content, and saves a screenshot of each into
target/screenshots/ (docs/OPERATIONS.md shows them)."""

import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT
from test_operator import TOKEN, edit, operator_config

SCREENSHOTS = ROOT / "target" / "screenshots"


def submit_and_wait(browser, element) -> None:
    """Submits `element`'s form (or clicks it) and waits for the next page to replace it."""
    page = browser.find_element(By.TAG_NAME, "html")
    if element.tag_name == "button":
        element.click()
    else:
        element.submit()
    WebDriverWait(browser, 15).until(expected_conditions.staleness_of(page))


@pytest.fixture
def browser():
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.fail("chromedriver not found: scripts/test installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_console_pages_in_chromium(keymux, tmp_path, browser):
    workdir = tmp_path / "keymux0"
    proxy = keymux(operator_config(str(workdir)) + "\n[batch]\nmax_batch = 64\n", env={"KEYMUX_OPERATOR_TOKEN": TOKEN})
    proxy.cli("key", "create", "payments")
    proxy.cli("key", "rotate", "payments")
    edit(proxy, "max_batch = 64", "max_batch = 4")
    proxy.cli("reload")
    base = f"http://127.0.0.1:{proxy.admin_port}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # Without credentials: no page, only the sign-in form.
    browser.get(f"{base}/console")
    assert browser.current_url.endswith("/console/login"), browser.current_url
    browser.save_screenshot(str(SCREENSHOTS / "console-login.png"))
    field = browser.find_element(By.NAME, "token")
    field.send_keys("wrong")
    submit_and_wait(browser, field)
    assert "valid operator token" in browser.page_source
    browser.get(f"{base}/console/login")
    field = browser.find_element(By.NAME, "token")
    field.send_keys(TOKEN)
    submit_and_wait(browser, field)

    # Keys: versions, states, ages; the key store is refreshed every keys.refresh_interval.
    assert browser.current_url.endswith("/console"), browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
    cells = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert any(row[0] == "default" and row[6] == "current" for row in cells), cells
    browser.save_screenshot(str(SCREENSHOTS / "console-keys.png"))

    # The audit viewer with its filters.
    browser.get(f"{base}/console/audit?op=config_reload")
    records = browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert len(records) == 1 and "batch.max_batch: 64 -> 4" in records[0].text, [r.text for r in records]
    browser.find_element(By.NAME, "op").clear()
    browser.find_element(By.NAME, "outcome").send_keys("ok")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#filters button"))
    events = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")]
    assert any("start" in text for text in events) and any("config_reload" in text for text in events), events
    browser.save_screenshot(str(SCREENSHOTS / "console-audit.png"))
    browser.get(f"{base}/console/audit?limit=nope")
    assert "parameter `limit`" in browser.page_source

    # The compliance report.
    browser.get(f"{base}/console/report")
    assert "PCI DSS 3.6.4" in browser.title or "PCI DSS 3.6.4" in browser.page_source
    assert "<td>default</td>" in browser.page_source
    browser.save_screenshot(str(SCREENSHOTS / "console-report.png"))

    # Nothing secret reaches the browser.
    for page in ("/console", "/console/audit", "/console/report"):
        browser.get(base + page)
        assert TOKEN not in browser.page_source
        assert "python-tests" not in browser.page_source  # the keystore passphrase
    assert all((SCREENSHOTS / name).stat().st_size > 1000 for name in os.listdir(SCREENSHOTS) if name.startswith("console-"))
