"""The demo page in a real browser: ``tapo demo`` as a user starts it, Debian's chromium driven by Playwright.

The page talks to the API through the ``openai`` SDK, so what it shows is what any client gets. The
first test is issue 10's acceptance: the default model answers "What is 4821 * 37?" through the code
tool, and the page shows the code step before the answer. A screenshot is saved under
``artifacts/browser/`` (its path printed on failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TAPO = str(Path(sys.executable).with_name("tapo"))

pytest.importorskip("gradio", reason="the [demo] extra")
if not Path(CHROMIUM).exists() or not shutil.which("bwrap"):
    if os.environ.get("CI"):  # make setup installs chromium and bubblewrap: missing here is a failure
        pytest.fail(f"CI needs chromium ({CHROMIUM}) and bubblewrap for the browser test", pytrace=False)
    pytest.skip("chromium or bubblewrap is not installed (make setup installs them)", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server(*args: str, startup_s: float = 300) -> Iterator[str]:
    """``tapo demo ARGS`` in its own process on a free port; yields the page's URL."""
    port = _free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log_path = SHOTS / f"tapo-demo-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([TAPO, "demo", "--port", str(port), *args], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            assert proc.poll() is None, f"tapo demo exited with {proc.returncode}; its log: {log_path}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"tapo demo did not come up; its log: {log_path}"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@contextlib.contextmanager
def screenshot_on_exit(page: Page, name: str) -> Iterator[None]:
    """Always save a screenshot; on failure say where it is."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    try:
        yield
    except BaseException:
        page.wait_for_timeout(1000)  # let transitions settle
        page.screenshot(path=path, full_page=True)
        print(f"screenshot of the failing page: {path}")
        raise
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)


def ask(page: Page, question: str) -> None:
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()


def step_titles(page: Page):
    return page.locator("#chat .thought-group .title")


def test_default_model_answers_through_the_code_step_shown_before_the_answer(browser):
    with demo_server() as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        with screenshot_on_exit(page, "demo-page-4821x37"):
            page.goto(url + "/")
            ask(page, "What is 4821 * 37?")
            answer = page.locator("#chat .bot-row").last.get_by_text("178377", exact=True)
            expect(answer).to_be_visible(timeout=180_000)
            # The answer is labelled; the chat has no label of its own over the user's question.
            expect(page.locator("#chat .bot-row").last).to_contain_text("Answer")
            expect(page.locator("#chat [data-testid='block-label']")).to_have_count(0)
            python = step_titles(page).filter(has_text="Python")
            expect(python).to_have_count(1)
            # The code step comes before the answer (document order: no layout to wait for), and opens
            # to show the program and its output.
            before = python.evaluate("(step, answer) => Boolean(step.compareDocumentPosition(answer) & "
                                     "Node.DOCUMENT_POSITION_FOLLOWING)", answer.element_handle())
            assert before
            python.click()
            step = page.locator("#chat .thought-group").filter(has=page.locator(".title", has_text="Python"))
            expect(step.locator("code").filter(has_text="4821")).to_be_visible()
            expect(step.locator("code").filter(has_text="178377")).to_be_visible()
            expect(step).to_contain_text("Output")


def test_a_server_with_a_key_asks_for_it_and_refuses_the_page_without_it(browser, tiny_path):
    # tiny_path: the fixture model is built (minutes when cold) before the server's startup clock runs.
    with demo_server("--model", "tiny", "--api-key", "sesame") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        with screenshot_on_exit(page, "demo-page-key"):
            page.goto(url + "/")
            key = page.locator("#api-key input")
            expect(key).to_be_visible()
            ask(page, "What is 23 * 47?")
            expect(page.locator("#chat")).to_contain_text("refused the key", timeout=60_000)
            key.fill("sesame")
            ask(page, "What is 23 * 47?")
            replies = page.locator("#chat .bot-row")
            expect(replies).to_have_count(2, timeout=120_000)
            wait_idle(url)
            # With the key the API answered: the second reply is the model's, not an error.
            expect(replies.last).not_to_contain_text("Error:")
            assert replies.last.inner_text().strip()


def wait_idle(url: str, timeout_s: float = 120) -> None:
    """Until the server has no request in flight (the page's reply has ended)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/health", timeout=5).json()["in_flight"]:
        assert time.monotonic() < deadline, "the reply did not end"
        time.sleep(0.2)
    time.sleep(0.5)  # the page renders the last update
