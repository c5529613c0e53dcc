"""A real browser drives ``pos-terminal web``: headless Chromium types an approved refund.

Debian's ``chromium`` and ``chromium-driver`` packages are used as installed (never a browser
build fetched at run time); ``scripts/test.sh -m browser`` installs them when missing. The page
draws the terminal on a canvas (xterm.js), so the test reads what the app sent the browser's
terminal from the page's own websocket (a hook added before the page's script runs), checks the
training journal for the approved refund, and saves a screenshot of what Chromium drew:
into ``tmp_path`` and, when ``POS_BROWSER_SCREENSHOT`` names a file, there too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("POS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("POS_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
INSTALL_HINT = ("needs Debian's chromium and chromium-driver "
                "(apt-get install -y --no-install-recommends chromium chromium-driver; "
                "scripts/test.sh -m browser installs them) and selenium (pip install selenium)")

#: Runs in the page before textual.js: every binary websocket frame (the app's output to the
#: terminal) is decoded as UTF-8 and appended to ``window.__posTty``.
TTY_HOOK = """
(() => {
  window.__posTty = "";
  const decoder = new TextDecoder("utf-8");
  const Native = window.WebSocket;
  class Recording extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (typeof event.data !== "string") {
          window.__posTty += decoder.decode(new Uint8Array(event.data), {stream: true});
        }
      });
    }
  }
  window.WebSocket = Recording;
})();
"""

#: Control sequences (CSI, OSC, DCS/APC strings, two-byte escapes) and other C0 controls.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[\]P_^X][^\x07\x1b]*(?:\x07|\x1b\\)"
                      r"|\x1b[@-Z\\-_]|\x1b.|[\x00-\x08\x0b-\x1f\x7f]")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``pos-terminal --lang en web`` on a free loopback port; yields (port, training dir)."""
    port = _free_port()
    training = tmp_path / "training"
    log = (tmp_path / "web.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "terminal.cli", "--lang", "en", "web", "--port", str(port),
         "--training-dir", str(training), "--in-process"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "web.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield port, training
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Debian's headless Chromium through Debian's chromedriver; Selenium Manager stays off."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: {INSTALL_HINT}")
    pytest.importorskip("selenium", reason=INSTALL_HINT)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never download a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TTY_HOOK})
        yield driver
    finally:
        driver.quit()


class Tty:
    """What the app has written to the page's terminal, as plain text, read from the browser."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.mark = 0

    def raw(self) -> str:
        return str(self.driver.execute_script("return window.__posTty || '';"))

    def since_mark(self) -> str:
        """The text drawn since the last :meth:`keys`, without control sequences."""
        return _CONTROL.sub("", self.raw()[self.mark:])

    def wait_for(self, *wanted: str, timeout: float = 30) -> None:
        """Until every ``wanted`` string was drawn after the last :meth:`keys`."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.since_mark()
            if all(word in seen for word in wanted):
                return
            if time.monotonic() > deadline:
                missing = [word for word in wanted if word not in seen]
                raise AssertionError(f"the browser never showed {missing}; "
                                     f"last output: {seen[-800:]!r}")
            time.sleep(0.1)

    def keys(self, *keys: str, pause: float = 0.05) -> None:
        """Type ``keys`` into the terminal the way a cashier's keyboard would."""
        from selenium.webdriver.common.action_chains import ActionChains

        self.mark = len(self.raw())
        self.driver.execute_script(
            "document.querySelector('.xterm-helper-textarea').focus();")
        chain = ActionChains(self.driver)
        for key in keys:
            chain.send_keys(key).pause(pause)
        chain.perform()


def _screenshot(driver: WebDriver, tmp_path: Path) -> Path:
    shot = tmp_path / "refund.png"
    assert driver.save_screenshot(str(shot))
    wanted = os.environ.get("POS_BROWSER_SCREENSHOT")
    if wanted:
        Path(wanted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, wanted)
    return shot


def test_browser_types_a_refund(web_server: tuple[int, Path], browser: WebDriver,
                                tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    port, training = web_server
    tty = Tty(browser)
    browser.get(f"http://127.0.0.1:{port}/")
    try:
        tty.wait_for("Operator number", "TRAINING", timeout=60)
        assert browser.execute_script(  # textual.js saw the app's first bytes and shows them
            "return document.body.classList.contains('-first-byte');")
        tty.keys("01", Keys.ENTER, "0000", Keys.ENTER)
        tty.wait_for("Refund")
        tty.keys("2")
        tty.wait_for("By voucher number")
        tty.keys("1")
        tty.wait_for("Original voucher no.")
        tty.keys("2", Keys.ENTER)
        tty.wait_for("Insert, tap or swipe the card")
        tty.keys(Keys.F1)
        tty.wait_for("Demo panel")
        tty.keys("1")
        tty.wait_for("Presented")
        tty.keys(Keys.ESCAPE)
        tty.wait_for("Refund reason")
        tty.keys("1")
        tty.wait_for("Refund amount")
        tty.keys("3000", Keys.ENTER)
        tty.wait_for("Confirm the refund", "30.00")
        tty.keys(Keys.ENTER)
        tty.wait_for("REFUND APPROVED", "30.00")
        time.sleep(0.5)  # let xterm.js paint the last frame before the picture is taken
    finally:
        shot = _screenshot(browser, tmp_path)
    assert shot.stat().st_size > 10_000  # a drawn page, not a blank one

    journal = training / "terminal" / "journal.db"
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT amount, status, response_code FROM txn "
                            "WHERE kind = 'refund'").fetchall()
    assert rows == [(3000, "approved", "00")]
