"""Sessions as context managers, the client's queries, and the helpers that
wrap retrieved descriptors."""

import errno
import mmap
import os
import socket

import pytest

import luo
from conftest import names, wait_for


def memfd(data: bytes) -> int:
    fd = os.memfd_create("luo-test")
    os.write(fd, data)
    return fd


def test_leaving_the_with_block_aborts_an_outgoing_session(client):
    with client.create_session("tmp") as s:
        s.preserve(1, memfd(b"x" * 4096))
        assert s.name == "tmp"
        assert s.fileno() >= 0
        assert names(client) == {"tmp"}
    assert s.closed
    wait_for("the aborted session gone", lambda: "tmp" not in names(client))
    assert client.status()["files"] == 0


def test_an_exception_in_the_with_block_aborts_too(client):
    with pytest.raises(RuntimeError):
        with client.create_session("tmp") as s:
            s.preserve(1, memfd(b"x"))
            raise RuntimeError("the service failed before handing over")
    wait_for("the aborted session gone", lambda: "tmp" not in names(client))


def test_a_retrieved_session_closed_unfinished_waits_again(client):
    with client.create_session("kv") as s:
        s.preserve(1, memfd(b"state"))
        s.handover()
    with client.retrieve_session("kv") as s:
        assert s.info()["state"] == "retrieved"
    wait_for("the session waiting again", lambda: client.show("kv")[0]["state"] == "incoming")
    # So the next process can still take it.
    with client.retrieve_session("kv") as s:
        data = s.retrieve_mmap(1, access=mmap.ACCESS_READ)
        assert data[:] == b"state"
        s.finish()
    wait_for("the finished session gone", lambda: "kv" not in names(client))


def test_handover_and_finish_by_name(client):
    s = client.create_session("kv")
    s.preserve(1, memfd(b"state"))
    client.handover("kv")
    s.close()
    assert client.show("kv")[0]["state"] == "incoming"
    client.finish("kv")
    wait_for("the finished session gone", lambda: "kv" not in names(client))


def test_status_sessions_and_show(client):
    st = client.status()
    assert st["agent"].startswith("luod ")
    assert st["backend"] == "emulated"
    assert st["uid"] == os.geteuid()
    assert set(st["usage"]) == {"sessions", "files", "pinned_bytes"}
    with client.create_session("kv") as s:
        s.preserve_batch([(1, memfd(b"a" * 100)), (2, memfd(b"b" * 200))])
        [summary] = client.sessions()
        assert summary["name"] == "kv"
        assert summary["state"] == "open"
        assert summary["owner"] == os.geteuid()
        assert summary["file_count"] == 2
        assert summary["pinned_bytes"] == 300
        [detail] = client.show("kv")
        assert [(f["token"], f["type"], f["size"]) for f in detail["files"]] == [
            (1, "memfd", 100),
            (2, "memfd", 200),
        ]
        assert s.info() == detail
        assert client.status()["files"] == 2
    empty = client.create_session("empty")
    assert empty.info()["files"] == []
    assert repr(empty) == f"<luo.Session 'empty' fd={empty.fileno()}>"
    empty.close()
    assert repr(empty) == "<luo.Session 'empty' closed>"
    assert repr(client) == f"<luo.Client path={client.path!r}>"


def test_update_crosses_every_outgoing_session(client):
    epoch = client.status()["epoch"]
    with client.create_session("a") as a, client.create_session("b") as b:
        a.preserve(1, memfd(b"a"))
        b.preserve(1, memfd(b"b"))
        assert client.update() == epoch + 1
        with pytest.raises(OSError) as e:
            a.info()
        assert e.value.errno == errno.ESTALE
    for name in ("a", "b"):
        with client.retrieve_session(name) as s:
            [fd] = s.retrieve_batch([1])
            try:
                assert os.pread(fd, 1, 0) == name.encode()
            finally:
                os.close(fd)
            s.finish()


def test_sockets_and_maps_from_descriptors(client):
    left, right = socket.socketpair()
    state = memfd(b"0123456789")
    with client.create_session("kv") as s:
        s.preserve_batch({1: left, 2: state})
        s.handover()
    left.close()
    with client.retrieve_session("kv") as s:
        sock_fd, map_fd = s.retrieve_batch([1, 2])
        s.finish()
    sock = luo.socket_from_fd(sock_fd)
    with sock:
        assert sock.family == socket.AF_UNIX
        sock.sendall(b"hello")
        assert right.recv(5) == b"hello"
    m = luo.mmap_fd(map_fd)
    os.close(map_fd)  # the map keeps its own copy
    m[0:1] = b"X"
    assert os.pread(state, 10, 0) == b"X123456789"
    m.close()
    right.close()
    os.close(state)


def test_default_socket_path_follows_luod_socket(monkeypatch, agent):
    monkeypatch.setenv("LUOD_SOCKET", agent.sock)
    assert luo.default_socket_path() == agent.sock
    with luo.Client() as c:
        assert c.path == agent.sock
        assert c.status()["backend"] == "emulated"


def test_a_persistent_session_outlives_its_handles(client):
    listener = socket.create_server(("127.0.0.1", 0))
    with client.persist_session("web") as s:
        s.preserve_batch([(1, listener), (2, memfd(b"store"))])
    # Closed, and still there with its files.
    [web] = client.show("web")
    assert web["state"] == "open" and web["file_count"] == 2
    with client.persist_session("web") as s:
        sock_fd, store_fd = s.fetch([1, 2])
        with luo.socket_from_fd(sock_fd) as sock:
            assert sock.getsockname() == listener.getsockname()
        assert os.pread(store_fd, 5, 0) == b"store"
        os.close(store_fd)
        s.unpreserve([2])
        with pytest.raises(FileNotFoundError) as e:
            s.unpreserve([2])
        assert e.value.token == 2
        assert [f["token"] for f in s.info()["files"]] == [1]
    # A session that is not persistent keeps its name.
    with client.create_session("plain"):
        with pytest.raises(FileExistsError):
            client.persist_session("plain")
    listener.close()


def test_one_client_from_several_threads(client):
    import threading

    errors = []

    def work(i: int) -> None:
        try:
            for round in range(20):
                with client.create_session(f"t{i}-{round}") as s:
                    s.preserve(1, memfd(b"x"))
                    assert s.info()["file_count"] == 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    wait_for("every session aborted", lambda: names(client) == set())
