"""The demo in a real browser: Debian's chromium, driven by Selenium, against `streamlit run
demo/app.py` (as `make demo` starts it) and the real API server (as `make run` serves it; chat
answered by the wire-level fake provider).

The path a person takes: the dev key is prefilled and connects; a PDF over MAX_UPLOAD_MB is refused
by the page before a byte is sent; a PDF is processed with its title and tags and the progress bar
reaches 100 %; a question streams its answer in, with the sources under it; a reload keeps the
conversation; and an answer that plants a remote image makes the browser fetch nothing.

Screenshots are saved under the test's tmp dir (the path is printed) and the answer's also as
docs/demo-screenshot.png for the README. Without chromium the test installs it (as root, with
apt-get) or is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.debian import ensure_debian_packages
from tests.support.demo import MAX_UPLOAD_MB, DemoApi, running_demo_api
from tests.support.documents import make_pdf
from tests.support.server import ROOT, free_port
from tests.support.services import RedisForTests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 90
README_SCREENSHOT = ROOT / "docs" / "demo-screenshot.png"
POLICY = [
    "Returns policy. Refunds are issued within 30 days of delivery, to the original payment card. "
    "Items must be unused and in their original packaging.",
    "Exchanges. A size or colour exchange ships free of charge once the returned item is received. "
    "Gift cards and final-sale items cannot be returned.",
]
ANSWER = (
    "Refunds are issued within 30 days of delivery, to the original payment card [1]. "
    "Items must be unused and in their original packaging [1]."
)


def ensure_chromium() -> None:
    """Debian's chromium and its driver; installed here when missing and we may (root, apt-get)."""
    ensure_debian_packages([str(CHROMIUM), str(CHROMEDRIVER)], ["chromium", "chromium-driver"])


@dataclass
class Beacon:
    """A local HTTP server counting every request: a planted image must never reach it."""

    url: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def beacon() -> Iterator[Beacon]:
    found: Beacon

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found.hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found = Beacon(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def demo_api(
    database_url: str, redis_server: RedisForTests, fake: FakeLLMServer, tmp_path: Path
) -> Iterator[DemoApi]:
    with running_demo_api(database_url, redis_server.url, fake, tmp_path / "api") as api:
        yield api


@dataclass(frozen=True)
class Demo:
    url: str
    dev_key: str


@pytest.fixture
def demo(demo_api: DemoApi, tmp_path: Path) -> Iterator[Demo]:
    """`make demo`: streamlit serving demo/app.py, with the dev key where `make run` leaves it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dev_key = demo_api.new_key("editor")
    (data_dir / "dev-api-key").write_text(dev_key + "\n")
    port = free_port()
    log = tmp_path / "streamlit.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "demo/app.py", "--server.port", str(port)],
            cwd=ROOT,
            env={**os.environ, "API_URL": demo_api.url, "DATA_DIR": str(data_dir)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "streamlit did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield Demo(url, dev_key)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1100"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        # The page as the test left it, to look at when it failed.
        driver.save_screenshot(str(tmp_path / "last-page.png"))
        (tmp_path / "last-page.html").write_text(driver.page_source)
        print(f"last page: {tmp_path / 'last-page.png'}")
        driver.quit()


class Page:
    """What the test does to the page, in a person's terms."""

    def __init__(self, driver: Any, shots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.by = By
        self.shots = shots

    def text(self) -> str:
        return str(self.driver.find_element(self.by.TAG_NAME, "body").text)

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = WAIT_S) -> str:
        from selenium.webdriver.support.ui import WebDriverWait

        check = what if callable(what) else (lambda text: what in text)
        WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: check(self.text()))
        return self.text()

    def _clickable(self, xpath: str) -> Any:
        """The element once it exists and takes clicks (widgets are disabled while a script run
        replaces them)."""
        from selenium.common.exceptions import NoSuchElementException
        from selenium.webdriver.support.ui import WebDriverWait

        def ready(_: Any) -> Any:
            try:
                element = self.driver.find_element(self.by.XPATH, xpath)
            except NoSuchElementException:
                return False
            disabled = element.get_attribute("data-disabled") == "true" or not element.is_enabled()
            return False if disabled else element

        element = WebDriverWait(self.driver, WAIT_S, poll_frequency=0.1).until(ready)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        return element

    def click(self, label: str) -> None:
        """The button whose text is ``label``, or the expander whose title contains it."""
        self._clickable(
            f"//button[normalize-space(.)='{label}'] | //summary[contains(normalize-space(.), '{label}')]"
        ).click()

    def choose(self, option: str) -> None:
        """The radio option whose text ends with ``option`` (after its icon)."""
        self._clickable(
            f"//label[@data-testid='stRadioOption'][contains(normalize-space(.), '{option}')]"
        ).click()

    def type_into(self, aria_label: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field_ = self._clickable(f"//input[@aria-label='{aria_label}']")
        field_.send_keys(text, Keys.TAB)

    def choose_file(self, path: Path) -> None:
        inputs = self.driver.find_elements(self.by.CSS_SELECTOR, "input[type='file']")
        inputs[0].send_keys(str(path))

    def ask(self, question: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self._clickable("//textarea[@data-testid='stChatInputTextArea']")
        box.send_keys(question, Keys.ENTER)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path


def test_upload_process_ask_and_see_the_streamed_answer_with_sources_in_a_real_browser(
    demo: Demo,
    browser: Any,  # after ``demo``: the browser closes (saving the last page) before streamlit stops
    demo_api: DemoApi,
    fake: FakeLLMServer,
    beacon: Beacon,
    tmp_path: Path,
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = Page(browser, shots)
    browser.get(demo.url)
    page.wait_for("Connected as")  # the dev key, prefilled from DATA_DIR, was accepted
    assert "Deploy" not in page.text()  # client.toolbarMode = "minimal"

    page.choose("Documents")
    page.wait_for(f"up to {MAX_UPLOAD_MB} MB")  # the uploader's limit, from /api/v1/limits
    too_big = tmp_path / "too-big.pdf"
    too_big.write_bytes(make_pdf(["x"]) + b"\n%" + b"0" * (MAX_UPLOAD_MB * 1024 * 1024))
    uploads = uploads_left(demo_api, demo.dev_key)
    page.choose_file(too_big)
    page.wait_for(lambda text: "must be" in text and "MB or smaller" in text)  # Streamlit's own refusal
    page.screenshot("00-too-big-refused")
    assert uploads_left(demo_api, demo.dev_key) == uploads  # nothing reached the API

    policy = tmp_path / "returns-policy.pdf"
    policy.write_bytes(make_pdf(POLICY))
    page.choose_file(policy)
    page.wait_for("returns-policy.pdf")
    page.type_into("Title", "Returns policy")
    page.type_into("Tags", "policy, support")
    page.click("Process")
    page.wait_for("Ingested · 100 %")
    page.wait_for("Ready: version 1 is searchable.")
    page.screenshot("01-processed")

    fake.configure("openai", text=ANSWER, token_delay_s=0.1)
    page.choose("Chat")
    page.ask("How long do refunds take?")
    streaming = page.wait_for("▌")  # text arrived before the answer was complete
    assert ANSWER not in streaming
    page.wait_for(lambda text: "cache miss" in text and "▌" not in text)
    page.click("Sources (")
    shown = page.wait_for("tags: policy, support")
    assert "Refunds are issued within 30 days of delivery" in shown
    assert "[1] Returns policy · page 1 · version 1 · tags: policy, support · relevance " in shown
    assert "1 cited)" in shown and "check_circle cited" in shown
    answer_shot = page.screenshot("02-answer-with-sources")
    README_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(answer_shot, README_SCREENSHOT)

    browser.refresh()  # the session id is in the URL: the conversation is still there
    page.wait_for("How long do refunds take?")
    page.wait_for("Refunds are issued within 30 days")

    planted = f"![tracker]({beacon.url}/pixel.png?q=secret) <img src='{beacon.url}/img.png'>"
    fake.configure("openai", text=f"Returns are free [1]. {planted}")
    page.ask("Are returns free?")
    page.wait_for("[image: tracker]")
    page.screenshot("03-planted-image-not-fetched")
    assert beacon.hits == []
    assert (
        browser.find_elements(page.by.CSS_SELECTOR, f"img[src^='{beacon.url}'], a[href^='{beacon.url}']")
        == []
    )


def uploads_left(demo_api: DemoApi, key: str) -> int | None:
    status = httpx.get(
        demo_api.url + "/api/v1/rate-limit/status", headers={"X-API-Key": key}, timeout=10
    ).json()
    remaining: int | None = next(b["remaining"] for b in status["budgets"] if b["budget"] == "uploads")
    return remaining
