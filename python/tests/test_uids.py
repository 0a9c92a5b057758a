"""Two uids: a process running as uid 1000 cannot reach root's session.
Run as root (else skipped): the test forks a child that drops to uid 1000
and connects to the same luod, which knows callers by their credentials."""

import json
import os

import pytest

import luo

OTHER_UID = 1000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as uid 1000")


def as_other_uid(sock: str, probe) -> dict:
    """Runs probe(client) in a child process as OTHER_UID; returns its dict."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            with luo.Client(sock) as c:
                out = probe(c)
            os.write(w, json.dumps(out).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"child failed": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = json.loads(f.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def errno_of(f):
    try:
        f()
    except OSError as e:
        return [type(e).__name__, e.errno]
    return None


def test_another_uid_cannot_retrieve_roots_session(agent, client):
    state = os.memfd_create("secret")
    os.write(state, b"root's secret")
    with client.create_session("secret") as s:
        s.preserve(1, state)
        s.handover()

    def probe(c: luo.Client) -> dict:
        return {
            "uid": c.status()["uid"],
            "own namespace": errno_of(lambda: c.retrieve_session("secret")),
            "root's by owner": errno_of(lambda: c.retrieve_session("secret", owner=0)),
            "show root's": errno_of(lambda: c.show("secret", owner=0)),
            "finish root's": errno_of(lambda: c.finish("secret", owner=0)),
            "update": errno_of(c.update),
            "sessions": [s["name"] for s in c.sessions()],
        }

    out = as_other_uid(agent.sock, probe)
    assert out == {
        "uid": OTHER_UID,
        # Its own sessions have no "secret"; root's it may not name.
        "own namespace": ["FileNotFoundError", 2],
        "root's by owner": ["PermissionError", 1],
        "show root's": ["PermissionError", 1],
        "finish root's": ["PermissionError", 1],
        "update": ["PermissionError", 1],
        "sessions": [],
    }

    # Root's session is untouched.
    with client.retrieve_session("secret") as s:
        fd = s.retrieve_fd(1)
        s.finish()
    assert os.pread(fd, 64, 0) == b"root's secret"
    os.close(fd)


def test_root_may_act_on_another_uids_session(agent, client):
    def probe(c: luo.Client) -> dict:
        s = c.create_session("mine")
        s.preserve(1, os.memfd_create("mine"))
        s.handover()
        return {}

    as_other_uid(agent.sock, probe)
    [mine] = client.show("mine", owner=OTHER_UID)
    assert mine["owner"] == OTHER_UID and mine["state"] == "incoming"
    with client.retrieve_session("mine", owner=OTHER_UID) as s:
        assert s.info()["owner"] == OTHER_UID
        s.finish()
