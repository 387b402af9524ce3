"""Look at a run report as a person would: open it in headless Chromium and
take a full-page screenshot.

    apt-get install -y chromium          # Debian's package
    python experiments/screenshot_report.py runs/x/report.html [--out shot.png] [--width 1500]

Talks to Chromium over its DevTools pipe (`--remote-debugging-pipe`: JSON
messages on file descriptors 3 and 4, each ended by a NUL byte), so it needs
no Python package: it loads the page, measures its full height, and captures
it beyond the viewport. Prints the screenshot's path and the page's size.
"""
import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


class DevTools:
    """A minimal client of Chromium's DevTools protocol over the pipe."""

    def __init__(self, binary: str, width: int, height: int):
        to_browser_r, self._write = os.pipe()     # chromium reads commands on fd 3
        self._read, from_browser_w = os.pipe()    # and writes answers on fd 4
        self._profile = tempfile.mkdtemp(prefix="dcjax-shot-")

        def fds():   # in the child: the pipe ends as fds 3 and 4 (first moved above 9, so neither dup2 clobbers the other)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4, to_browser_r, from_browser_w),   # 3, 4: kept after fds()
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._id = b"", 0

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def wait_for(self, event: str, timeout: float = 60.0):
        end = time.time() + timeout
        while time.time() < end:
            if self._receive().get("method") == event:
                return
        raise TimeoutError(event)

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        self.proc.wait(timeout=30)
        shutil.rmtree(self._profile, ignore_errors=True)


def screenshot(page: Path, out: Path, width: int = 1500, binary: str = "chromium") -> tuple[int, int]:
    """Save a full-page PNG of `page` to `out`; return the page's (width, height) in CSS pixels."""
    tools = DevTools(binary, width, 1000)
    try:
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tools.call("Page.enable", session)
        tools.call("Page.navigate", session, url=page.absolute().as_uri())
        tools.wait_for("Page.loadEventFired")
        size = tools.call("Page.getLayoutMetrics", session)["cssContentSize"]
        w, h = int(size["width"]), int(size["height"])
        tools.call("Emulation.setDeviceMetricsOverride", session, width=width, height=h, deviceScaleFactor=1,
                   mobile=False)
        shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return w, h
    finally:
        tools.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path, help="the report (report.html)")
    ap.add_argument("--out", type=Path, help="the PNG (default: <page>.png beside it)")
    ap.add_argument("--width", type=int, default=1500, help="viewport width in CSS pixels")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = ap.parse_args()
    out = args.out or args.page.with_suffix(".png")
    w, h = screenshot(args.page, out, args.width, args.chromium)
    print(f"{out}: full page {w} x {h} CSS pixels")


if __name__ == "__main__":
    main()
