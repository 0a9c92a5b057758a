"""luod's refusals reach Python as OSError with the right errno, so the
usual subclasses are raised; batches name the refused token."""

import errno
import os
import socket

import pytest

import luo


def memfd(data: bytes = b"state") -> int:
    fd = os.memfd_create("luo-test")
    os.write(fd, data)
    return fd


def test_duplicate_session_name_is_file_exists(client):
    with client.create_session("kv"):
        with pytest.raises(FileExistsError) as e:
            client.create_session("kv")
    assert e.value.errno == errno.EEXIST
    assert "kv" in e.value.strerror
    assert e.value.token is None


def test_retrieving_a_missing_session_is_file_not_found(client):
    with pytest.raises(FileNotFoundError) as e:
        client.retrieve_session("nobody")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        client.show("nobody")
    with pytest.raises(FileNotFoundError):
        client.finish("nobody")
    with pytest.raises(FileNotFoundError):
        client.handover("nobody")


def test_no_agent_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        luo.Client(tmp_path / "luod.sock")
    assert "is luod running?" in e.value.strerror


def test_bad_session_name_is_einval(client):
    for name in ("", "x" * 64, "a\0b"):
        with pytest.raises(OSError) as e:
            client.create_session(name)
        assert e.value.errno == errno.EINVAL, name


def test_token_in_use_is_file_exists_and_names_the_token(client):
    a, b = memfd(), memfd()
    with client.create_session("kv") as s:
        s.preserve(7, a)
        with pytest.raises(FileExistsError) as e:
            s.preserve(7, b)
        assert e.value.token == 7


def test_a_file_in_two_sessions_is_ebusy(client):
    fd = memfd()
    with client.create_session("one") as one, client.create_session("two") as two:
        one.preserve(1, fd)
        with pytest.raises(OSError) as e:
            two.preserve(1, fd)
        assert e.value.errno == errno.EBUSY


def test_preserve_batch_stops_at_the_refused_token(client):
    a, b = memfd(b"a"), memfd(b"b")
    with client.create_session("kv") as s:
        with pytest.raises(OSError) as e:
            # Token 3 is file a again: refused, and 1 and 2 stay preserved.
            s.preserve_batch([(1, a), (2, b), (3, a), (4, memfd())])
        assert e.value.errno == errno.EBUSY
        assert e.value.token == 3
        assert [f["token"] for f in s.info()["files"]] == [1, 2]
        # A dict works too, and the retry goes on from the refused token.
        s.preserve_batch({3: memfd(), 4: memfd()})
        assert s.info()["file_count"] == 4


def test_retrieve_errors(client):
    with client.create_session("kv") as s:
        s.preserve(1, memfd(b"hello"))
        # An outgoing session gives nothing back.
        with pytest.raises(OSError) as e:
            s.retrieve_fd(1)
        assert e.value.errno == errno.EINVAL
        s.handover()
        # The handle crossed with the session: stale.
        with pytest.raises(OSError) as e:
            s.preserve(2, memfd())
        assert e.value.errno == errno.ESTALE
    with client.retrieve_session("kv") as s:
        with pytest.raises(FileNotFoundError):
            s.retrieve_fd(99)
        with pytest.raises(FileNotFoundError) as e:
            s.retrieve_batch([1, 99])
        assert e.value.token == 99
        fd = s.retrieve_fd(1)
        try:
            assert os.pread(fd, 5, 0) == b"hello"
        finally:
            os.close(fd)
        # Retrieved and held here: not a second time.
        with pytest.raises(OSError) as e:
            client.retrieve_session("kv")
        assert e.value.errno == errno.EINVAL
        s.finish()


def test_descriptors_that_are_not(client):
    with client.create_session("kv") as s:
        fd = memfd()
        os.close(fd)
        with pytest.raises(OSError) as e:
            s.preserve(1, fd)
        assert e.value.errno == errno.EBADF
        with pytest.raises(ValueError):
            s.preserve(1, -1)
        with pytest.raises(TypeError):
            s.preserve(1, "not a file")
        with pytest.raises(TypeError):
            s.preserve_batch([1, 2])
        # A closed socket object says so itself.
        sock = socket.socket()
        sock.close()
        with pytest.raises((OSError, ValueError)):
            s.preserve(1, sock)


def test_closed_handles_raise_value_error(client):
    s = client.create_session("kv")
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(ValueError):
        s.fileno()
    with pytest.raises(ValueError):
        s.handover()
    client.close()
    assert client.closed
    with pytest.raises(ValueError):
        client.status()
