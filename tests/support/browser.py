"""Headless Chromium driven over the DevTools protocol, for tests of the profile explorer.

The system's Chromium (Debian's `chromium` package) and aiohttp's websocket client, which the
project has already: nothing is downloaded at run time. A `Page` collects everything the
browser reports as an error (console errors, uncaught exceptions, failed loads, CSP
violations), so a test can require that there were none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

# Flags that work in this project's CI containers: no sandbox (root), no GPU, nothing fetched.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
INSTALL_HINT = "apt-get install -y chromium  (Debian/Ubuntu; or set IDSTREAM_CHROMIUM to a binary)"
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserMissingError(RuntimeError):
    """No Chromium on this machine (not retriable: install it)."""


def find_chromium() -> str:
    """The Chromium binary: $IDSTREAM_CHROMIUM, else `chromium` (or a Chrome) on the PATH."""
    given = os.environ.get("IDSTREAM_CHROMIUM")
    if given:
        found = shutil.which(given)
        if found is None:
            raise BrowserMissingError(f"IDSTREAM_CHROMIUM={given} is no program; {INSTALL_HINT}")
        return found
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissingError(f"no Chromium found; install it: {INSTALL_HINT}")


class Page:
    """One tab, attached over the browser's connection (flat session)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.errors: list[str] = []
        self.responses: dict[str, dict[str, Any]] = {}

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.errors.append("console: " + " ".join(map(str, args)))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log ({entry.get('source')}): {entry.get('text')}")
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            self.responses[response.get("url", "")] = response
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.errors.append(f"load failed: {params.get('errorText')}")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        found = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in found:
            raise AssertionError(f"{expression!r} raised: {found['exceptionDetails']}")
        return found["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20, message: str = "") -> Any:
        """Evaluate until the expression is truthy; fail after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"timed out waiting for {message or expression!r}; page text:\n{text}\n"
                    f"errors: {self.errors}"
                )
            await asyncio.sleep(0.05)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", message=f"{url} to load")

    async def text(self) -> str:
        return str(await self.evaluate("document.body.innerText"))

    async def screenshot(self, path: Path, *, height: int | None = None) -> None:
        """A PNG of the page: all of it, or its top `height` pixels."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if height is not None:
            width = await self.evaluate("document.documentElement.scrollWidth")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = await self.send("Page.captureScreenshot", **params)
        path.write_bytes(base64.b64decode(shot["data"]))


class Browser:
    """A headless Chromium process and its DevTools connection."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary = binary
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader: asyncio.Task[None] | None = None
        self.log = b""

    async def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        url = await asyncio.wait_for(self._devtools_url(), timeout)
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _devtools_url(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        stderr = self.proc.stderr
        while True:
            line = await asyncio.to_thread(stderr.readline)
            if not line:
                raise RuntimeError(f"chromium exited: {self.log.decode(errors='replace')}")
            self.log += line
            found = _LISTENING.search(line.decode(errors="replace"))
            if found:
                # Keep draining stderr so the browser never blocks on a full pipe.
                asyncio.get_running_loop().run_in_executor(None, self._drain, stderr)
                return found.group(1)

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.log = (self.log + line)[-20_000:]

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
            elif (page := self._pages.get(data.get("sessionId", ""))) is not None:
                page.on_event(data["method"], data.get("params", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        assert self.ws is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    async def new_page(self, width: int = 1400, height: int = 1000) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Runtime", "Log", "Page", "Network"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.send("Browser.close")
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.http is not None:
            await self.http.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@contextlib.asynccontextmanager
async def chromium(binary: str | None = None) -> AsyncIterator[Browser]:
    """A started headless Chromium with a fresh profile; closed and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="idstream-chromium-") as profile:
        browser = Browser(binary or find_chromium(), Path(profile))
        try:
            await browser.start()
            yield browser
        finally:
            await browser.close()


def no_errors(page: Page, allowed: Callable[[str], bool] = lambda _: False) -> list[str]:
    """The errors the page reported, but those `allowed`."""
    return [e for e in page.errors if not allowed(e)]
