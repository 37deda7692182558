"""
Headless Chromium (Debian's package) driven over the DevTools protocol with
websocket-client: open a page, evaluate JavaScript in it. No browser download,
no Node.js.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request

from tests.servers import free_port, wait_until


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    def __init__(self):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="lorrygate-chromium-")
        self.process = None
        self.socket = None
        self._id = 0

    def start(self) -> "Chromium":
        binary = find_chromium()
        if binary is None:
            raise RuntimeError("chromium is not installed: run `make test`, which installs it")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", f"--remote-debugging-port={self.port}",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            # (its singleton's directory, org.chromium.Chromium.*, in the profile: it was left in /tmp each run)
            env={**os.environ, "TMPDIR": self.profile})
        wait_until(lambda: self._targets() is not None or self.process.poll() is not None, 60, "chromium to start")
        if self.process.poll() is not None:
            raise RuntimeError(f"chromium exited with {self.process.returncode}")
        return self

    def _targets(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    def open(self, url: str) -> None:
        import websocket

        page = next(t for t in self._targets() if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=10)
        self.call("Page.navigate", url=url)

    def call(self, method: str, **params):
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            answer = json.loads(self.socket.recv())
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def stop(self) -> None:
        if self.socket is not None:
            self.socket.close()
        if self.process is not None:
            # the whole group: the browser's network service writes into the profile as it ends, after the
            # browser itself (the profile was left behind, removed before that write)
            group = self.process.pid
            _signal_group(group, signal.SIGTERM)
            try:
                self.process.wait(20)
                wait_until(lambda: not _signal_group(group, 0), 20, "chromium's processes to end")
            except (subprocess.TimeoutExpired, AssertionError):
                _signal_group(group, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _signal_group(group: int, number: int) -> bool:
    """Send ``number`` to the process group; whether it still has a process."""
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        return False
    return True
