"""The console in a real browser: Debian's Chromium, headless, driven through chromium-driver.

It logs in, opens every page, filters the phones table, opens a phone and sends check-sync to a
phone that sipp plays; on every page the name a stranger asked for shows as text and no secret
shows at all. The screenshot it takes is the README's (HTEKD_CONSOLE_SCREENSHOT=docs/console.png
writes it there).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER and shutil.which("sipp") and shutil.which("atftp")),
                                reason="chromium, chromium-driver, sipp (sip-tester) and atftp are needed")
SIPP_SCENARIO = Path(__file__).resolve().parent / "sipp" / "check-sync-200.xml"
XSS = "<img src=x onerror=alert(1)>"
SECRET = "s3cret-1001"
PASSWORD = "console pass"
MAX_SCREENSHOT = 200 * 1024


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def phone_address() -> str:
    """A loopback address of its own for the phone, so its SIP port 5060 is free whatever else runs."""
    for _ in range(50):
        address = f"127.{os.getpid() % 200 + 20}.{int(time.time() * 1000) % 250 + 1}.{os.urandom(1)[0] % 250 + 2}"
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((address, 5060))
            return address
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    pytest.fail("no free loopback address for the phone")


def assert_safe(driver) -> None:
    """The page shows no secret and ran no injected script."""
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        pass
    else:
        pytest.fail(f"an alert opened on {driver.current_url}")
    assert SECRET not in driver.page_source, driver.current_url
    assert not driver.find_elements(By.CSS_SELECTOR, "main img"), driver.current_url


def test_an_administrator_uses_the_console_in_chromium(daemon, browser, tmp_path):
    ha1 = hashlib.md5(f"admin:htekd:{PASSWORD}".encode()).hexdigest()
    running = daemon({"admin": {"user": "admin", "password": f"md5-ha1:{ha1}"}})
    base = f"http://{LOOPBACK}:{running.ports['admin']}"
    address = phone_address()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "--interface", address, "-A", "Htek UC924 2.0.4.2 00:1f:c1:00:00:01",
                    running.url("http", "cfg001fc1000001.xml")], check=True, timeout=30)
    subprocess.run(["atftp", "-g", "-r", XSS, "-l", "/dev/null", LOOPBACK, str(running.ports["tftp"])],
                   capture_output=True, timeout=30)
    running.wait_log(lambda line: "onerror" in line)
    time.sleep(0.5)  # the store writes requests in batches of 0.2 s

    browser.get(f"{base}/phones")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "user").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/phones"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Phones"

    for path, heading in (("/", "Overview"), ("/phones", "Phones"), ("/requests", "Requests"), ("/problems", "Problems"),
                          ("/phones/001fc1000001", "Phone 001fc1000001")):
        browser.get(base + path)
        assert browser.find_element(By.TAG_NAME, "h1").text == heading
        assert_safe(browser)
    browser.get(f"{base}/requests")
    assert XSS in browser.find_element(By.ID, "main").text  # shown as text, as it was asked for

    browser.get(f"{base}/phones")
    search = browser.find_element(By.NAME, "q")
    search.send_keys("smith")
    search.submit()
    WebDriverWait(browser, 10).until(lambda d: "q=smith" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#phones tbody tr")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == ["001fc1000003"]
    browser.find_element(By.NAME, "q").clear()
    browser.get(f"{base}/phones")
    screenshot = tmp_path / "console.png"
    browser.save_screenshot(str(screenshot))
    assert 0 < screenshot.stat().st_size < MAX_SCREENSHOT
    if os.environ.get("HTEKD_CONSOLE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["HTEKD_CONSOLE_SCREENSHOT"])

    browser.find_element(By.LINK_TEXT, "001fc1000001").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/phones/001fc1000001"))
    assert browser.find_element(By.ID, "configuration").text.count("***") >= 1
    phone = subprocess.Popen(["sipp", "-sf", str(SIPP_SCENARIO), "-i", address, "-p", "5060", "-m", "1", "-timeout", "20s",
                              "-nostdin"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # sipp binds its port
        browser.find_element(By.ID, "check-sync").click()
        note = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "p.note"))[0].text
        assert note == f"check-sync: {address}:5060 001fc1000001 UC924 200 OK"
        assert phone.wait(20) == 0
    finally:
        if phone.poll() is None:
            phone.kill()
    assert running.wait_stderr(lambda line: line.startswith("htekd: console: check-sync to 001fc1000001 by admin from ")
                               and line.endswith("200 OK"))
    assert_safe(browser)
