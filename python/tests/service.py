"""The two halves of a service restart through luo, run as separate
processes by test_restart.py:

    python service.py create SOCKET SIZE   # prints the port, waits for a line
                                           # on stdin, hands over, exits
    python service.py retrieve SOCKET SIZE N   # checks the memfd byte for byte,
                                               # answers N queued connections

The state is a memfd of SIZE bytes in a known pattern (every 4 KiB page
its own bytes, so a lost, zeroed or misplaced page shows); the listening
socket is a TCP socket on 127.0.0.1.
"""

import hashlib
import mmap
import os
import socket
import sys

import luo

PAGE = 4096
STATE, LISTENER = 1, 2


def page(n: int) -> bytes:
    """The pattern's page n."""
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=64).digest() * (PAGE // 64)


def pattern(size: int) -> bytes:
    return b"".join(page(n) for n in range(size // PAGE))


def first_difference(data, size: int):
    """None when data is exactly the pattern of size bytes, else what differs."""
    if len(data) != size:
        return f"{len(data)} bytes, expected {size}"
    for n in range(size // PAGE):
        if data[n * PAGE : (n + 1) * PAGE] != page(n):
            return f"page {n} differs"
    return None


def create(sock_path: str, size: int) -> None:
    client = luo.Client(sock_path)
    state = os.memfd_create("kv-state")
    os.write(state, pattern(size))
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    print(listener.getsockname()[1], flush=True)
    sys.stdin.readline()  # a client has connected; its connection waits in the queue
    with client.create_session("kv") as s:
        s.preserve(STATE, state)
        s.preserve(LISTENER, listener)
        s.handover()
    print("handed over", flush=True)


def retrieve(sock_path: str, size: int, conns: int) -> None:
    client = luo.Client(sock_path)
    with client.retrieve_session("kv") as s:
        state = s.retrieve_mmap(STATE, access=mmap.ACCESS_READ)
        listener = s.retrieve_socket(LISTENER)
        s.finish()
    why = first_difference(state, size)
    if why is not None:
        sys.exit(f"the memfd does not hold the pattern: {why}")
    assert listener.type == socket.SOCK_STREAM and listener.family == socket.AF_INET
    listener.settimeout(10)
    for _ in range(conns):
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(b"pong " + conn.recv(64))
    print(f"checked {size} bytes, answered {conns} connections", flush=True)


if __name__ == "__main__":
    mode, sock_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "create":
        create(sock_path, size)
    else:
        retrieve(sock_path, size, int(sys.argv[4]))
