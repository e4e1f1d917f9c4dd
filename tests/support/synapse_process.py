"""One Synapse process in the foreground of the test, started with the given config files and always stopped:
for the tests that judge whether the real Synapse starts (or refuses) with a configuration. The test
homeservers of the runbook and fleet tests are tests/support/homeservers.py's."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

from . import synapse_schema


class Synapse:
    """One Synapse process, started and always stopped."""

    def __init__(self, version, configs, workdir, name):
        self.python = synapse_schema.synapse_python(version)
        self.configs = [str(c) for c in configs]
        self.log = workdir / f"{name}.log"
        self.proc = None

    def start(self):
        cmd = [self.python, "-m", "synapse.app.homeserver"]
        for config in self.configs:
            cmd += ["-c", config]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout=90) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def http(url, data=None, timeout=2):
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_healthy(synapse: Synapse, base: str, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if synapse.proc.poll() is not None:
            raise AssertionError(f"Synapse exited with {synapse.proc.returncode}:\n{synapse.output()[-4000:]}")
        try:
            status, body = http(base + "/health", timeout=1)
            if status == 200 and body == "OK":
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"Synapse did not answer /health within {timeout}s:\n{synapse.output()[-4000:]}")
