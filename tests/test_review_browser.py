"""The review page in a real browser (headless Chromium): answer by key, reload, a server killed mid-review, two tabs."""

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from review_run import make_review_run

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and os.environ.get("CI"):
    raise RuntimeError("the review page's browser test needs Debian's chromium and chromium-driver: .ci/run installs them")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver "
                                "(apt-get install chromium chromium-driver; CI installs them)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "reid_lightning.review", str(run), "--port", str(port),
                               "--reviewer", "ann"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(server.stdout.read()) from None
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the review server did not start in 60 s")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def answer_by_key(browser) -> None:
    """Press C: save the question on screen as it is shown."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.TAG_NAME, "body").send_keys("c")


def wait_for(browser, element_id: str, text: str | None = None) -> str:
    """The text of element ``element_id`` once it is on the page (and reads ``text``): the answer's page load may
    replace the element while it is read."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(driver):
        value = driver.find_element(By.ID, element_id).text
        return value if text is None or value == text else False

    return WebDriverWait(browser, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(shown)


def test_answers_survive_reloads_restarts_and_a_second_tab(browser, tmp_path):
    from selenium.webdriver.common.by import By

    run, _ = make_review_run(tmp_path)
    port = free_port()
    server = start_server(run, port)
    try:
        address = f"http://127.0.0.1:{port}/"
        browser.get(address)
        assert browser.find_element(By.ID, "decisions").text == "0"
        first = browser.find_element(By.NAME, "task").get_attribute("value")
        answer_by_key(browser)
        wait_for(browser, "decisions", "1")
        browser.refresh()
        assert browser.find_element(By.ID, "decisions").text == "1"
        assert browser.find_element(By.NAME, "task").get_attribute("value") != first

        server.kill()  # mid-review, no clean shutdown
        server.wait()
        server = start_server(run, port)
        browser.refresh()
        assert browser.find_element(By.ID, "decisions").text == "1"
        rows = sqlite3.connect(run / "review" / "decisions.sqlite").execute(
            "SELECT reviewer, task FROM decisions WHERE reviewer = 'ann'").fetchall()
        assert {task for _, task in rows} == {first}

        # two tabs on the same question: the first answer is kept, the second tab is told
        browser.switch_to.new_window("tab")
        browser.get(address)
        second_tab, first_tab = browser.current_window_handle, browser.window_handles[0]
        question = browser.find_element(By.NAME, "task").get_attribute("value")
        browser.switch_to.window(first_tab)
        browser.refresh()
        assert browser.find_element(By.NAME, "task").get_attribute("value") == question
        answer_by_key(browser)
        wait_for(browser, "decisions", "2")
        browser.switch_to.window(second_tab)
        answer_by_key(browser)
        message = wait_for(browser, "message")
        assert "already answered by ann" in message and "not saved" in message
        assert browser.find_element(By.ID, "decisions").text == "2"
        answers = sqlite3.connect(run / "review" / "decisions.sqlite").execute(
            "SELECT COUNT(DISTINCT answer) FROM decisions WHERE task = ?", (question,)).fetchone()[0]
        assert answers == 1
    finally:
        server.kill()
        server.wait()
