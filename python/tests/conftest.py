"""Fixtures: a real luod, started for each test on a socket of its own.

The agent is the workspace's luod (the newest of target/debug/luod and
target/release/luod, or $LUOD_BIN), on the emulated backend, without a
keeper, in a fresh directory under /tmp that other uids may traverse (the
two-uid test connects as uid 1000).
"""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import luo

ROOT = pathlib.Path(__file__).resolve().parents[2]
PATIENCE = 10.0


def luod_binary() -> str:
    if os.environ.get("LUOD_BIN"):
        return os.environ["LUOD_BIN"]
    built = [ROOT / "target" / p / "luod" for p in ("debug", "release")]
    built = [p for p in built if p.exists()]
    if not built:
        pytest.fail("no luod binary: run `cargo build -p luod` first, or set LUOD_BIN")
    return str(max(built, key=lambda p: p.stat().st_mtime))


class Agent:
    """A luod process, its socket and its log."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="luo-py-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "luod.sock")
        self.log_path = os.path.join(self.dir, "luod.log")
        env = dict(os.environ, LUOD_LOG="info")
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [luod_binary(), "--socket", self.sock, "--backend", "emulated", "--keeper", "off"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                    s.connect(self.sock)
                return
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"luod exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"luod not ready after {PATIENCE} s:\n{self.log()}")
            time.sleep(0.01)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self) -> luo.Client:
        return luo.Client(self.sock)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def agent():
    a = Agent()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def client(agent):
    with agent.client() as c:
        yield c


def wait_for(what: str, cond, timeout: float = PATIENCE):
    """Polls cond() until it is true: luod notices a closed handle on its
    own time, after the close returned."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def names(client: luo.Client) -> set:
    return {s["name"] for s in client.sessions()}
