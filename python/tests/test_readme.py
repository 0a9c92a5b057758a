"""The Python examples of README.md and python/README.md run as written
(against the test's luod, on a free port)."""

import os
import pathlib
import re
import socket

import pytest

from conftest import names, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


def python_blocks(readme: pathlib.Path) -> list:
    return re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)


@pytest.fixture
def at_agent(monkeypatch, agent):
    # luo.Client() finds the test's luod through $LUOD_SOCKET.
    monkeypatch.setenv("LUOD_SOCKET", agent.sock)
    return agent


def test_the_repository_readme_example(at_agent, client):
    [example] = python_blocks(ROOT / "README.md")
    data_memfd = os.memfd_create("kv-data")
    os.write(data_memfd, b"kv")
    listener = socket.create_server(("127.0.0.1", 0))
    scope = {"data_memfd": data_memfd, "listener": listener}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["data"][:] == b"kv"
    assert scope["listener"].getsockname() == listener.getsockname()
    wait_for("the finished session gone", lambda: "kv" not in names(client))


def test_the_package_readme_examples(at_agent, client, capsys):
    example, on_error = python_blocks(ROOT / "python" / "README.md")
    scope = {}
    exec(compile(example.replace("8080", "0"), "python/README.md", "exec"), scope)
    assert scope["data"][:] == b"everything the next process needs"
    wait_for("the finished session gone", lambda: "kv" not in names(client))

    with client.create_session("batch") as s:
        a, b, c = os.memfd_create("a"), os.memfd_create("b"), os.memfd_create("c")
        s.preserve(2, b)  # so that the batch is refused at token 2
        scope = {"s": s, "a": a, "b": b, "c": c}
        exec(compile(on_error, "python/README.md", "exec"), scope)
        assert capsys.readouterr().out.startswith("stopped at token 2: ")
        assert [f["token"] for f in s.info()["files"]] == [2, 1]
