"""Open a page in headless Chromium and report what a person's browser would show: failed requests, console
errors, undecodable images, and a screenshot.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on the child's
fd 3, replies and events on fd 4, each JSON message ended by a NUL byte), so no WebSocket library is needed
and every failure comes back as a structured event instead of a log line to parse.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What loading a page produced."""

    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # src prefix, complete, natural width and height
    screenshot: bytes = b""


class _Pipe:
    """The browser end of `--remote-debugging-pipe`: numbered commands, and the events that arrive meanwhile."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        # Chromium expects the pipe on exactly fds 3 and 4: a small Python trampoline moves the inherited ends
        # there and execs it (a preexec_fn would do it in this process's fork, unsafe with torch's threads).
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        trampoline = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        self.process = subprocess.Popen([sys.executable, "-c", trampoline, str(to_child), str(from_child), *command],
                                        pass_fds=(to_child, from_child), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    # Generous: on a loaded CI machine Chromium can take tens of seconds to start or to render a page.
    def call(self, method: str, session: str | None = None, timeout: float = 120, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(deadline))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._read)
        os.close(self._write)


IMAGES = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
          "width: i.naturalWidth, height: i.naturalHeight})))")


def load_page(binary: str, url: str, width: int = 1280, height: int = 2400) -> PageLoad:
    """Load `url` in a fresh profile at `width` x `height` CSS pixels; collect failures, images and a screenshot."""
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(binary, Path(profile))
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            pipe.call("Page.navigate", session, url=url)
            pipe.wait_for("Page.loadEventFired")
            images = json.loads(pipe.call("Runtime.evaluate", session, expression=IMAGES)["result"]["value"])
            shot = base64.b64decode(pipe.call("Page.captureScreenshot", session, format="png")["data"])
        finally:
            pipe.close()
    return PageLoad(_failed_requests(pipe.events), _console_errors(pipe.events), images, shot)


def _failed_requests(events: list[dict[str, Any]]) -> list[str]:
    urls = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
            if e.get("method") == "Network.requestWillBeSent"}
    failed = [f"{urls.get(e['params']['requestId'], '?')}: {e['params'].get('errorText')}"
              for e in events if e.get("method") == "Network.loadingFailed"]
    failed += [f"{e['params']['response']['url']}: HTTP {e['params']['response']['status']}" for e in events
               if e.get("method") == "Network.responseReceived" and e["params"]["response"].get("status", 0) >= 400]
    return failed


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(params["entry"].get("text", ""))
    return found
