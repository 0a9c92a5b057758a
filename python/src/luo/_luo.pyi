"""Type stubs of luo._luo, the extension module behind the luo package.

Errors are OSError (of the subclass for their errno) with one more
attribute, token: the refused token of a batch, else None. The builtin
exceptions' stubs do not declare it: read it as getattr(e, "token", None)
where a type checker objects.
"""

import mmap
import os
import socket
import types
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    Union,
    final,
)

__all__ = [
    "Client",
    "Session",
    "__version__",
    "default_socket_path",
    "mmap_fd",
    "socket_from_fd",
]
__version__: str

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

#: A descriptor: an int, or an object with fileno() (a socket, a file object).
_FileLike = Union[int, _HasFileno]

@final
class Client:
    """A connection to luod: create, retrieve and inspect sessions."""

    def __new__(cls, path: Optional[Union[str, "os.PathLike[str]"]] = None) -> "Client":
        """Connects to luod at path, or at default_socket_path()."""
    @property
    def path(self) -> str:
        """The socket path this client connected to."""
    @property
    def closed(self) -> bool:
        """Whether close() was called."""
    def close(self) -> None:
        """Closes the connection; sessions keep their own handles."""
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> bool: ...
    def create_session(self, name: str) -> "Session":
        """Creates an outgoing session named name and returns its handle."""
    def persist_session(self, name: str) -> "Session":
        """Opens (or creates) the persistent outgoing session named name."""
    def retrieve_session(self, name: str, owner: Optional[int] = None) -> "Session":
        """Retrieves the incoming session named name (of uid owner, for root)."""
    def update(self) -> int:
        """An emulated live update: every outgoing session crosses; returns the new epoch."""
    def status(self) -> Dict[str, Any]:
        """The agent's state: agent, backend, epoch, counts, quota, usage, store."""
    def sessions(self) -> List[Dict[str, Any]]:
        """Summaries of the caller's sessions (every session, for root)."""
    def show(self, name: str, owner: Optional[int] = None) -> List[Dict[str, Any]]:
        """Details, with files, of the sessions named name."""
    def handover(self, name: str, owner: Optional[int] = None) -> None:
        """Hands over the outgoing session named name without its handle."""
    def finish(self, name: str, owner: Optional[int] = None) -> None:
        """Retrieves and finishes the incoming session named name in one step."""
    def upgrade_agent(
        self, binary: Optional[Union[str, "os.PathLike[str]"]] = None
    ) -> Dict[str, Any]:
        """Upgrades luod in place; returns the new agent's pid, agent and previous."""

@final
class Session:
    """A handle on one session; closing it aborts an outgoing session."""

    @property
    def name(self) -> str:
        """The session's name."""
    @property
    def closed(self) -> bool:
        """Whether the handle was closed."""
    def fileno(self) -> int:
        """The handle's descriptor."""
    def close(self) -> None:
        """Closes the handle (an outgoing session is aborted)."""
    def __enter__(self) -> "Session": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> bool: ...
    def info(self) -> Dict[str, Any]:
        """The session's detail, with its files."""
    def preserve(self, token: int, f: _FileLike) -> None:
        """Preserves the file f under token."""
    def preserve_batch(
        self, files: Union[Iterable[Tuple[int, _FileLike]], Mapping[int, _FileLike]]
    ) -> None:
        """Preserves (token, file) pairs in order; stops at the first refusal."""
    def handover(self) -> None:
        """Hands the outgoing session over; the handle is stale afterwards."""
    def finish(self) -> None:
        """Finishes the retrieved session: luod lets go of its files."""
    def retrieve_fd(self, token: int) -> int:
        """A new descriptor of the file under token; the caller owns it."""
    def retrieve_batch(self, tokens: Sequence[int]) -> List[int]:
        """New descriptors of the files under tokens, in order; the caller owns them."""
    def fetch(self, tokens: Sequence[int]) -> List[int]:
        """New descriptors of files of a persistent session; they stay preserved."""
    def unpreserve(self, tokens: Sequence[int]) -> None:
        """Removes the files under tokens from the outgoing session."""
    def retrieve_socket(self, token: int) -> socket.socket:
        """The socket under token as a socket.socket."""
    def retrieve_mmap(
        self, token: int, length: int = 0, access: Optional[int] = None
    ) -> mmap.mmap:
        """The file under token (a memfd) mapped into memory."""

def default_socket_path() -> str:
    """Where luod listens by default."""

def socket_from_fd(fd: int) -> socket.socket:
    """A socket.socket owning the descriptor fd."""

def mmap_fd(fd: int, length: int = 0, access: Optional[int] = None) -> mmap.mmap:
    """The file behind fd mapped into memory; fd stays the caller's."""
