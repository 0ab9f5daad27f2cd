"""Headless Chromium for the browser tests: Debian's chromium and chromedriver, driven by selenium.

Each browser has a new empty profile and the flags that keep Chromium off the network it would
otherwise call on its own. Its console and network logs are collected as the test goes, so a
test can say at the end that nothing was logged as an error and nothing left the page's origin.
"""

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", ROOT / "artifacts" / "browser"))
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DESKTOP = (1200, 800)
PHONE = (390, 844)

T = TypeVar("T")


def missing_tools() -> str | None:
    """What scripts/test would have installed and is not there, or None."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs it with apt-get)"
    if not AXE.exists():
        return f"{AXE} is missing (scripts/test runs npm ci in tests/browser)"
    return None


@dataclass
class Browser:
    """One headless Chromium with its own profile, as one person at one window size."""

    name: str
    driver: webdriver.Chrome
    profile: Path
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (document, url)

    @classmethod
    def start(cls, name: str, size: tuple[int, int] = DESKTOP) -> "Browser":
        profile = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-"))
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
        driver = webdriver.Chrome(options=options, service=service)
        browser = cls(name, driver, profile)
        driver.get("about:blank")
        browser.collect_logs()  # what Chromium's own pages did before the test's page opened
        browser.console.clear()
        browser.requests.clear()
        return browser

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- finding and waiting ---------------------------------------------------------------

    def find(self, testid: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def find_all(self, testid: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 10.0) -> T:
        """`check()` once it is truthy; a timeout says `what` was awaited and the notice shown."""
        try:
            found: T = WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                lambda _: check()
            )
        except TimeoutException:
            notice = self.driver.execute_script(
                "const n = document.querySelector('.notice');"
                " return n && !n.hidden ? n.textContent.trim() : ''"
            )
            raise AssertionError(
                f"{self.name}: {what} not within {timeout}s (notice: {notice!r})"
            ) from None
        return found

    def state(self) -> str:
        return str(self.find("connection").get_attribute("data-state"))

    def conversation(self, conversation_id: str) -> WebElement | None:
        found = self.driver.find_elements(
            By.CSS_SELECTOR,
            f'[data-testid="conversation"][data-conversation-id="{conversation_id}"]',
        )
        return found[0] if found else None

    def unread(self, conversation_id: str) -> int | None:
        """The unread badge's number, read in one step (the list updates live)."""
        text: str | None = self.driver.execute_script(
            "const badge = document.querySelector("
            '  `[data-testid=conversation][data-conversation-id="${arguments[0]}"]'
            " [data-testid=unread]`);"
            "return badge ? badge.textContent : null",
            conversation_id,
        )
        return None if text is None else int(text)

    def messages(self) -> list[tuple[int, str]]:
        """The open conversation's messages as shown: (index, text), in page order."""
        shown: list[tuple[int, str]] = self.driver.execute_script(
            "return [...document.querySelectorAll('[data-testid=message]')].map("
            "  m => [Number(m.dataset.index), m.querySelector('.text').textContent])"
        )
        return [(index, text) for index, text in shown]

    def receipt(self) -> int | None:
        """The read receipt's index, read in one step."""
        index: str | None = self.driver.execute_script(
            "const r = document.querySelector('[data-testid=read-receipt]');"
            "return r && r.isConnected ? r.dataset.index : null"
        )
        return None if index is None else int(index)

    def notice(self) -> str:
        text: str = self.driver.execute_script(
            "const n = document.querySelector('.notice');"
            " return n && !n.hidden ? n.querySelector('.notice-text').textContent : ''"
        )
        return text

    # --- what the browser logged -----------------------------------------------------------

    def collect_logs(self) -> None:
        self.console.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                params = message["params"]
                self.requests.append((params.get("documentURL", ""), params["request"]["url"]))

    def console_errors(self) -> list[str]:
        self.collect_logs()
        return [entry["message"] for entry in self.console if entry["level"] == "SEVERE"]

    def foreign_requests(self, origin: str) -> list[str]:
        """Every URL that a document of `origin` asked for, whose origin is not `origin`.

        Only the pages of `origin` count: Chromium's own pages (its new-tab page) are not the
        page under test."""
        self.collect_logs()
        return [
            url
            for document, url in self.requests
            if origin_of(document) == origin and origin_of(url) != origin
        ]

    # --- accessibility and pictures ---------------------------------------------------------

    def accessibility_violations(self) -> list[str]:
        """axe-core's serious and critical violations on the page as it is now."""
        self.driver.execute_script(AXE.read_text())
        found: list[dict[str, Any]] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            "  .then(r => done(r.violations), e => done([{id: 'axe failed', impact: 'critical',"
            "   help: String(e), nodes: []}]));"
        )
        return [
            f"{item['id']} ({item['impact']}): {item['help']}: "
            + "; ".join(str(node.get("target")) for node in item["nodes"][:5])
            for item in found
            if item["impact"] in ("serious", "critical")
        ]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def side_by_side(self, name: str, pictures: list[Path]) -> Path:
        """One picture of `pictures` next to each other, drawn in a tab of this browser."""
        window = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        try:
            sources = [
                "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
                for picture in pictures
            ]
            gap = 12
            sizes = self.driver.execute_async_script(
                "const [sources, gap, done] = [arguments[0], arguments[1], arguments[2]];"
                "document.body.style.cssText ="
                "  `margin:0;display:flex;gap:${gap}px;padding:${gap}px;background:#1b2333`;"
                "const images = sources.map(src => Object.assign(new Image(), {src}));"
                "document.body.append(...images);"
                "Promise.all(images.map(i => i.decode())).then(() =>"
                "  done(images.map(i => [i.naturalWidth, i.naturalHeight])));",
                sources,
                gap,
            )
            width = sum(w for w, _ in sizes) + gap * (len(sizes) + 1)
            height = max(h for _, h in sizes) + 2 * gap
            # A viewport of exactly the pictures' size, one device pixel per CSS pixel.
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
            path = ARTIFACTS / f"{name}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            print(f"screenshot: {path}")
            return path
        finally:
            self.driver.close()
            self.driver.switch_to.window(window)

    def resize(self, size: tuple[int, int]) -> None:
        self.driver.set_window_size(*size)
        time.sleep(0.2)  # a layout pass


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
