"""Headless Chromium for page tests: load a file, collect console errors, read the text, save a screenshot.

Debian's `chromium` runs headless and is driven over the DevTools protocol
(websocket-client), so that every error the page causes is seen: console
errors, uncaught exceptions and the browser's own log (a resource that failed
to load, a blocked request). Tests import it as `from testkit import browser`.

`render()` skips the calling test with one line when chromium is not installed.
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.processes import stop_process
from testkit.system_packages import skip_unless

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--remote-debugging-port=0")
MAX_SCREENSHOT_HEIGHT = 6000  # px: a very long page is cut here rather than making a huge PNG


@dataclass
class PageResult:
    """What a page showed.

    Attributes:
        dom: the rendered text of the page (document.body.innerText), frames excluded.
        console_errors: one line per console error, uncaught exception or browser error-level log entry.
        title: document.title.
        screenshot: where the PNG was saved.
        links: every <a href> of the page, as the browser resolved them.
    """

    dom: str
    console_errors: list[str]
    title: str
    screenshot: Path
    links: list[str] = field(default_factory=list)


def chromium() -> str | None:
    """The chromium executable, or None when it is not installed."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def artifacts_dir() -> Path:
    """Where tests save screenshots: $KEEL_TEST_ARTIFACTS, else build/test-artifacts (git-ignored with build/)."""
    path = Path(os.environ.get("KEEL_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def render(html_path: str | Path, screenshot_path: str | Path, *, width: int = 1280, height: int = 900,
           timeout: float = 60.0) -> PageResult:
    """Loads a local HTML file in headless Chromium and reports what it showed.

    Args:
        html_path: the page (a local file).
        screenshot_path: where to save a PNG of the whole page (up to MAX_SCREENSHOT_HEIGHT pixels).
        width: viewport width in CSS pixels.
        height: viewport height in CSS pixels (the screenshot extends to the page's height).
        timeout: seconds to wait for the browser to start and for the page to load.

    Returns:
        The page's text, title, links and console errors, and the screenshot's path.
    """
    executable = chromium()
    if executable is None:
        skip_unless("chromium")
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"{html_path}: no such page to render")
    screenshot_path = Path(screenshot_path)
    screenshot_path.parent.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="keel-chromium-")
    log = open(Path(profile) / "chromium.log", "wb")
    process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                "about:blank"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        endpoint = _devtools_endpoint(Path(profile), process, timeout)
        with _Session(endpoint, timeout) as session:
            return _load(session, html_path, screenshot_path, width, height)
    finally:
        stop_process(process)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_endpoint(profile: Path, process: subprocess.Popen, timeout: float) -> str:
    """The browser's websocket URL, from the DevToolsActivePort file Chromium writes once it listens."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chromium exited with status {process.returncode} before listening:\n{output}")
        lines = port_file.read_text().split("\n") if port_file.is_file() else []
        if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        time.sleep(0.05)  # a startup poll, not a test wait: Chromium gives no other signal that it listens
    raise TimeoutError(f"chromium wrote no {port_file} within {timeout:.0f} s")


class _Session:
    """One DevTools connection to the browser, with a page target attached in flat mode."""

    def __init__(self, endpoint: str, timeout: float):
        self.endpoint, self.timeout = endpoint, timeout
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.session_id: str | None = None

    def __enter__(self):
        import websocket

        self.ws = websocket.create_connection(self.endpoint, timeout=self.timeout, suppress_origin=True)
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session_id = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
        return self

    def __exit__(self, *exc):
        import websocket

        try:
            self.call("Browser.close", browser=True)
        except (websocket.WebSocketException, OSError):
            pass  # the browser may close the socket before it answers; render() ends the process either way
        self.ws.close()

    def call(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        """Sends a command and returns its result; events that arrive meanwhile are kept."""
        message = {"id": next(self.ids), "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session_id
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """Blocks until the page's event `method` arrives (or has arrived)."""
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event["method"] == method and event.get("sessionId") == self.session_id:
                return event
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv())
            if "method" in event:
                self.events.append(event)
                if event["method"] == method and event.get("sessionId") == self.session_id:
                    return event
        raise TimeoutError(f"DevTools: no {method} within {self.timeout:.0f} s")


def _load(session: _Session, html_path: Path, screenshot_path: Path, width: int, height: int) -> PageResult:
    for domain in ("Runtime", "Log", "Page"):
        session.call(f"{domain}.enable")
    session.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    navigation = session.call("Page.navigate", {"url": html_path.as_uri()})
    if navigation.get("errorText"):
        raise RuntimeError(f"chromium could not open {html_path}: {navigation['errorText']}")
    session.wait_for("Page.loadEventFired")

    def evaluate(expression: str):
        result = session.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    title = evaluate("document.title") or ""
    dom = evaluate("document.body ? document.body.innerText : ''") or ""
    links = evaluate("Array.from(document.querySelectorAll('a[href]'), a => a.href)") or []
    metrics = session.call("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics.get("contentSize") or {"width": width, "height": height}
    full = {"width": max(width, int(size["width"])), "height": max(height, min(int(size["height"]), MAX_SCREENSHOT_HEIGHT))}
    # Grow the viewport to the whole page rather than capturing beyond it: content outside the
    # viewport (an <iframe srcdoc>, for one) is not painted into a beyond-viewport capture.
    session.call("Emulation.setDeviceMetricsOverride", {**full, "deviceScaleFactor": 1, "mobile": False})
    evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # two frames: laid out and painted
    shot = session.call("Page.captureScreenshot", {"format": "png", "clip": {"x": 0, "y": 0, **full, "scale": 1}})
    screenshot_path.write_bytes(base64.b64decode(shot["data"]))
    # A round trip after the screenshot: any console message the page logged while rendering has arrived by now.
    evaluate("1")
    return PageResult(dom=dom, console_errors=_errors(session.events, session.session_id), title=title,
                      screenshot=screenshot_path, links=list(links))


def _errors(events: list[dict], session_id: str | None) -> list[str]:
    found = []
    for event in events:
        if event.get("sessionId") not in (None, session_id):
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            found.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
    return found
