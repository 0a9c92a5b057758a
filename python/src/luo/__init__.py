"""Client of luod, the Live Update Orchestrator agent.

A service keeps files (memfds, listening and connected sockets, eventfds,
pipes) across its own restart by handing them to luod in a named session;
the next instance of the service retrieves the session by name, takes its
files back by token, and finishes the session::

    import luo

    # The running version: hand the state and the listening socket over.
    client = luo.Client()
    with client.create_session("kv") as s:
        s.preserve(1, state_memfd)
        s.preserve(2, listener)
        s.handover()

    # The next version: take them back, then release luod's copies.
    with client.retrieve_session("kv") as s:
        state = s.retrieve_mmap(1)
        listener = s.retrieve_socket(2)
        s.finish()

Errors are OSError with luod's errno, so FileExistsError,
FileNotFoundError, PermissionError, ... are raised where Python programmers
expect them; a refused batch names the refused token in the exception's
``token`` attribute.
"""

from ._luo import (
    Client,
    Session,
    __version__,
    default_socket_path,
    mmap_fd,
    socket_from_fd,
)

__all__ = [
    "Client",
    "Session",
    "__version__",
    "default_socket_path",
    "mmap_fd",
    "socket_from_fd",
]
