"""Drive the demo in a real browser: start ``saesteer demo`` on a free port, open headless Chromium
(Debian's ``chromium`` + ``chromium-driver``, no driver download) and read and write the page.

The browser runs offline: every host name except 127.0.0.1 resolves to nothing, so a page that
needed the network would fail here. Screenshots go to ``$SAESTEER_ARTIFACTS`` (default
``artifacts/demo`` in the repo, git-ignored); with ``SAESTEER_DOCS_SCREENSHOTS=docs`` a small copy
of each also goes there (how README's screenshots are made).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(exe):
            return f"{exe} is missing (apt-get install chromium chromium-driver; `make install` does it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoServer:
    """A ``saesteer demo`` subprocess; :meth:`wait` returns its address once it answers."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.ready = False

    def wait(self, timeout: float = 300.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    self.ready = r.status == 200
            except OSError:
                pass
            if not self.ready:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the demo did not answer at {self.url} within {timeout:.0f} s")
                time.sleep(0.5)
        return self.url


@contextmanager
def demo_server(*args: str) -> Iterator[DemoServer]:
    """Start ``saesteer demo --port P *args`` in a subprocess, offline, and yield at once (call
    ``wait()`` for its address: other work can run while it loads); always stop it (its whole
    process group) afterwards."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    path = artifacts_dir() / "demo-server.log"
    log = open(path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "saesteer.cli", "demo", "--port", str(port), *args],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield DemoServer(proc, f"http://127.0.0.1:{port}/", path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@contextmanager
def running_demo(*args: str, timeout: float = 300.0) -> Iterator[str]:
    """``saesteer demo`` in a subprocess; yields its address once it answers."""
    with demo_server(*args) as server:
        yield server.wait(timeout)


@contextmanager
def chromium(width: int = 1280, height: int = 1400) -> Iterator["Page"]:
    """A headless Chromium session with no network beyond 127.0.0.1; always quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run", f"--window-size={width},{height}",
              "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield Page(driver)
    finally:
        driver.quit()


class Page:
    """A Gradio page in Selenium, addressed by the components' ``elem_id``."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def open(self, url: str, timeout: float = 120) -> None:
        self.driver.get(url)
        self.wait_for(lambda: self.driver.find_elements("css selector", "#steer-generate"), timeout,
                      "the page never showed its Steer tab")

    def wait_for(self, cond, timeout: float, what: str):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # Gradio re-renders components: an element found a moment ago may be gone; look again
        ignored = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(
            lambda d: cond(), message=what)

    def find(self, css: str):
        return self.driver.find_element("css selector", css)

    def field(self, elem_id: str, timeout: float = 30):
        """The text area or input inside component ``elem_id`` (waiting for it to render)."""
        css = f"#{elem_id} textarea, #{elem_id} input"
        return self.wait_for(lambda: self.driver.find_elements("css selector", css), timeout,
                             f"no field in #{elem_id}")[0]

    def type(self, elem_id: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        # on a loaded machine the select-all can land before the box has focus, and the text is then
        # appended to the old value ("80.01e9", which a number box reads as empty): check, and type again
        for _ in range(3):
            el = self.field(elem_id)
            el.send_keys(Keys.CONTROL, "a")
            el.send_keys(text or Keys.DELETE)  # typing replaces the selection: one input event, not two
            if _holds(el.get_property("value"), text):
                break
        el.send_keys(Keys.TAB)  # Gradio reads numbers on change (blur)

    def value(self, elem_id: str) -> str:
        return self.field(elem_id).get_property("value")

    def text(self, elem_id: str) -> str:
        return self.find(f"#{elem_id}").text

    def error(self, elem_id: str) -> str:
        """The message in error box ``elem_id`` ("" when it shows none)."""
        return " ".join(e.text for e in self.driver.find_elements("css selector", f"#{elem_id} .saesteer-error"))

    def gradio_errors(self) -> list[str]:
        """The red "Error" badges Gradio itself puts on components (its status tracker's error, shown
        when its own processing of an input or output failed), visible or not; [] when there are none."""
        css = "[data-testid='status-tracker'] .error"
        return [e.get_attribute("textContent") for e in self.driver.find_elements("css selector", css)]

    def bars(self, elem_id: str) -> list[tuple[dict[str, str], float, float]]:
        """The bars plot ``elem_id`` draws, left to right, as (its aria-label's fields, e.g.
        ``{"feature": ..., "contribution": ...}``, x and height in pixels)."""
        script = ("return [...document.querySelectorAll(arguments[0])].map(e => {const r = e.getBoundingClientRect(); "
                  "return [e.getAttribute('aria-label') || '', r.x, r.height]})")
        rows = self.driver.execute_script(script, f"#{elem_id} [aria-roledescription='bar']")
        out = [(dict(p.split(": ", 1) for p in label.split("; ") if ": " in p), x, h) for label, x, h in rows]
        return sorted(out, key=lambda bar: bar[1])

    def set_text(self, elem_id: str, text: str) -> None:
        """Put ``text`` in text box ``elem_id`` as a script would (past its ``maxlength``: what the
        page's API accepts but typing cannot do)."""
        script = ("const t = arguments[0]; t.value = arguments[1]; "
                  "t.dispatchEvent(new Event('input', {bubbles: true}));")
        self.driver.execute_script(script, self.field(elem_id), text)

    def click(self, elem_id: str) -> None:
        el = self.find(f"#{elem_id}")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()

    def choose(self, elem_id: str, option: str) -> None:
        """Pick ``option`` of a radio group."""
        self.find(f"#{elem_id} input[value='{option}']").click()

    def expand(self, title: str) -> None:
        """Open the accordion whose title starts with ``title``."""
        for el in self.driver.find_elements("css selector", ".label-wrap"):
            if el.text.strip().startswith(title):
                if "open" not in (el.get_attribute("class") or ""):
                    el.click()
                return
        raise AssertionError(f"no accordion titled {title!r}")

    def open_tab(self, name: str) -> None:
        buttons = self.driver.find_elements("css selector", "button[role='tab']")
        next(b for b in buttons if b.text.strip() == name).click()

    def screenshot(self, name: str, docs: bool = True) -> Path:
        """Save the whole page as ``<artifacts>/<name>.png`` (and, with ``docs``, a small copy for the
        README when ``SAESTEER_DOCS_SCREENSHOTS`` names a folder)."""
        path = artifacts_dir() / f"{name}.png"
        h = self.driver.execute_script("return document.documentElement.scrollHeight")
        w = self.driver.get_window_size()["width"]
        self.driver.set_window_size(w, min(max(int(h) + 120, 800), 4000))
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(path))
        folder = os.environ.get("SAESTEER_DOCS_SCREENSHOTS")
        if docs and folder:
            from PIL import Image

            out = REPO / folder / f"demo-{name}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            im = Image.open(path).convert("RGB")
            im = im.resize((900, round(im.height * 900 / im.width)), Image.LANCZOS)
            im.quantize(colors=128).save(out, optimize=True)
        return path


def artifacts_dir() -> Path:
    d = Path(os.environ.get("SAESTEER_ARTIFACTS", REPO / "artifacts" / "demo"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _holds(shown: str | None, typed: str) -> bool:
    """Whether a box showing ``shown`` holds what was typed (numbers compared as numbers)."""
    shown = shown or ""
    if shown == typed:
        return True
    try:
        return float(shown) == float(typed)
    except ValueError:
        return False
