"""A service restart through luo: one process hands a patterned memfd and a
listening TCP socket with queued connections over and exits; another
retrieves them, maps the memfd and answers the connections that waited."""

import pathlib
import socket
import subprocess
import sys

from conftest import names, wait_for

SERVICE = str(pathlib.Path(__file__).with_name("service.py"))
SIZE = 16 << 20


def run(*args, **kw):
    return subprocess.Popen(
        [sys.executable, SERVICE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_restart_keeps_the_memfd_and_the_listening_socket(agent, client):
    old = run("create", agent.sock, str(SIZE), stdin=subprocess.PIPE)
    port = int(old.stdout.readline())

    # A connection made while the old process runs waits in its queue.
    early = socket.create_connection(("127.0.0.1", port), timeout=10)
    early.sendall(b"early")
    old.stdin.write("go\n")
    old.stdin.flush()
    out, err = old.communicate(timeout=60)
    assert old.returncode == 0, err
    assert out.strip() == "handed over"

    # The old process is gone: luod alone holds the listener, and a
    # connection made now waits in the same queue.
    late = socket.create_connection(("127.0.0.1", port), timeout=10)
    late.sendall(b"late")
    [kv] = client.show("kv")
    assert kv["state"] == "incoming"
    assert [f["type"] for f in kv["files"]] == ["memfd", "tcp-socket"]
    assert kv["files"][0]["size"] == SIZE

    new = run("retrieve", agent.sock, str(SIZE), "2")
    out, err = new.communicate(timeout=60)
    assert new.returncode == 0, err
    assert out.strip() == f"checked {SIZE} bytes, answered 2 connections"
    for conn, word in ((early, b"early"), (late, b"late")):
        with conn:
            assert conn.recv(64) == b"pong " + word

    # Finished, and its last handle closed with the process: gone.
    wait_for("the finished session gone", lambda: "kv" not in names(client))
