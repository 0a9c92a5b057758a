//! `luo._luo`, the extension module of the `luo` Python package: the `luo`
//! client library's [`Client`](luo::Client) and [`Session`](luo::Session)
//! for Python.
//!
//! Errors are `OSError` with the errno luod answered, so Python maps them to
//! its subclasses (`FileExistsError`, `FileNotFoundError`,
//! `PermissionError`, ...); a refused batch names the refused token in the
//! exception's `token` attribute. Every request releases the GIL while it
//! waits for the agent.
//!
//! The package (`src/luo`) re-exports this module and carries the type
//! stubs; `pyproject.toml` builds it with maturin.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

type Value = luo::Value;

// ------------------------------------------------------------------ errors

/// An `OSError` built as `OSError(errno, message)`, which Python turns into
/// the subclass for that errno (`EEXIST` is a `FileExistsError`, ...), with
/// a `token` attribute: the refused token of a batch, else `None`.
fn os_error(py: Python<'_>, errno: i32, message: String, token: Option<u64>) -> PyErr {
    let err = PyOSError::new_err((errno, message));
    // A fresh OSError instance takes attributes; if this failed, the error
    // would still carry its errno and message.
    let _ = err.value(py).setattr("token", token);
    err
}

/// The Python exception for a refusal of luod (or of the library).
fn luo_error(py: Python<'_>, e: luo::Error) -> PyErr {
    os_error(py, e.errno.0, e.message.into_owned(), e.token)
}

/// The Python exception for a failed system call of this module.
fn io_error(py: Python<'_>, e: std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(code) => os_error(py, code, luo::Errno(code).description(), None),
        None => PyOSError::new_err(e.to_string()),
    }
}

/// Maps a `luo::Result` to a `PyResult`.
trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for luo::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| luo_error(py, e))
    }
}

// ------------------------------------------------------------- descriptors

/// The descriptor `file` stands for: an `int`, or an object with a
/// `fileno()` method (a socket, a file object, an `mmap` does not count).
fn fd_number(file: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: RawFd = match file.extract::<RawFd>() {
        Ok(fd) => fd,
        Err(_) if file.hasattr("fileno")? => file.call_method0("fileno")?.extract()?,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "expected a file descriptor (an int, or an object with a fileno() method), not {}",
                file.get_type().name()?
            )))
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "file descriptor cannot be a negative integer ({fd})"
        )));
    }
    Ok(fd)
}

/// A copy (`F_DUPFD_CLOEXEC`) of the descriptor `file` stands for, taken
/// while the GIL is held: the request that sends it runs without the GIL,
/// and must not depend on the caller's descriptor staying open meanwhile.
fn dup_of(py: Python<'_>, file: &Bound<'_, PyAny>) -> PyResult<OwnedFd> {
    let fd = fd_number(file)?;
    // SAFETY: fcntl(2) with F_DUPFD_CLOEXEC reads no memory of this
    // process; on a descriptor that is not open it fails with EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(io_error(py, std::io::Error::last_os_error()));
    }
    // SAFETY: `copy` was just returned by fcntl: an open descriptor that
    // nothing else in this process knows of, which the OwnedFd now owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// `socket.socket(fileno=fd)`: a socket object of the right family and type
/// that owns `fd` from now on. On failure `fd` is closed.
fn socket_of<'py>(py: Python<'py>, fd: OwnedFd) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("fileno", fd.as_raw_fd())?;
    let sock = py
        .import("socket")?
        .getattr("socket")?
        .call((), Some(&kwargs))?;
    // The socket object closes it now.
    let _ = fd.into_raw_fd();
    Ok(sock)
}

/// `mmap.mmap(fd, length, access=access)`; the map keeps its own copy of the
/// descriptor.
fn mmap_of<'py>(
    py: Python<'py>,
    fd: RawFd,
    length: usize,
    access: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mmap = py.import("mmap")?;
    let kwargs = PyDict::new(py);
    match access {
        Some(a) => kwargs.set_item("access", a)?,
        None => kwargs.set_item("access", mmap.getattr("ACCESS_DEFAULT")?)?,
    }
    mmap.getattr("mmap")?.call((fd, length), Some(&kwargs))
}

// -------------------------------------------------------- results as dicts

/// A JSON value of luod's answer as the Python value of the same shape.
fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i)) => i.into_pyobject(py)?.into_any(),
            (None, None) => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for x in items {
                list.append(to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(members) => {
            let dict = PyDict::new(py);
            for (k, x) in members {
                dict.set_item(k, to_py(py, x)?)?;
            }
            dict.into_any()
        }
    })
}

/// `item` (a status or a session's detail) as a dict, member for member
/// as luod's protocol names them.
fn dict_of<'py>(py: Python<'py>, item: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let v = serde_json::to_value(item).map_err(|e| PyValueError::new_err(e.to_string()))?;
    to_py(py, &v)
}

/// A session's detail as a dict that always has its `files` list (the wire
/// leaves an empty one out).
fn detail_of<'py>(py: Python<'py>, info: &luo::SessionInfo) -> PyResult<Bound<'py, PyAny>> {
    let d = dict_of(py, info)?;
    if !d.contains("files")? {
        d.set_item("files", PyList::empty(py))?;
    }
    Ok(d)
}

/// What a `Client` or a `Session` holds: its handle until close() takes
/// it (a call in flight on another thread keeps its own `Arc`).
struct Slot<T> {
    inner: Mutex<Option<Arc<T>>>,
    /// The ValueError of a call after close().
    closed: &'static str,
}

impl<T: Send + Sync> Slot<T> {
    fn new(v: T, closed: &'static str) -> Self {
        Slot {
            inner: Mutex::new(Some(Arc::new(v))),
            closed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<T>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self) -> PyResult<Arc<T>> {
        self.lock()
            .clone()
            .ok_or_else(|| PyValueError::new_err(self.closed))
    }

    /// Runs `f` on the handle without the GIL.
    fn call<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&T) -> luo::Result<R> + Send,
    ) -> PyResult<R> {
        let h = self.get()?;
        py.detach(|| f(&h)).or_raise(py)
    }
}

// ------------------------------------------------------------------ Client

/// A connection to luod, the counterpart of the kernel's /dev/liveupdate:
/// sessions are created and retrieved here, and the agent is asked about
/// its state.
///
/// Client() connects to the default socket: $LUOD_SOCKET if set, else
/// /run/luod/luod.sock for root, else $XDG_RUNTIME_DIR/luod.sock, else
/// /run/user/<uid>/luod.sock. Client(path) connects to the socket at path.
///
/// The agent knows the caller by its uid: sessions belong to that uid, and
/// only root may name another uid (the owner arguments). Errors are OSError
/// with luod's errno (FileNotFoundError when luod is not listening there).
///
/// A client can be used from several threads (requests are serialised) and
/// as a context manager (closed on exit). Sessions live on in their own
/// handles after the client is closed.
#[pyclass(module = "luo", name = "Client", frozen)]
struct Client {
    inner: Slot<luo::Client>,
    path: String,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        let path = path.unwrap_or_else(luo::default_socket_path);
        let c = py.detach(|| luo::Client::connect_to(&path)).or_raise(py)?;
        Ok(Client {
            path: path.to_string_lossy().into_owned(),
            inner: Slot::new(c, "the client is closed"),
        })
    }

    /// The socket path this client connected to.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Closes the connection (a request in flight on another thread
    /// completes first). Sessions keep their own handles. Closing twice is
    /// harmless.
    fn close(&self, py: Python<'_>) {
        let c = self.inner.lock().take();
        py.detach(|| drop(c));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = PyString::new(py, &self.path).repr()?;
        let state = if self.closed() { " closed" } else { "" };
        Ok(format!("<luo.Client path={path}{state}>"))
    }

    /// Creates an outgoing session named name (1 to 63 bytes), owned by the
    /// caller's uid, and returns its handle. Closing the handle before
    /// handover() aborts the session: every file in it is let go.
    ///
    /// Raises FileExistsError (an outgoing session of that name exists),
    /// OSError EINVAL (a bad name), ENOSPC or EDQUOT (too many sessions).
    fn create_session(&self, py: Python<'_>, name: &str) -> PyResult<Session> {
        let s = self.inner.call(py, |c| c.create_session(name))?;
        Ok(Session::new(s, name))
    }

    /// Opens the caller's persistent outgoing session named name, or
    /// creates it persistent when the caller has no outgoing session of
    /// that name, and returns its handle.
    ///
    /// Closing the last handle of a persistent session does not abort it:
    /// it stays open with every file until it is opened again by name, for
    /// a supervisor that may die at any moment and must lose nothing. Its
    /// files can be taken without retrieving them (Session.fetch()) and let
    /// go one by one (Session.unpreserve()). Handing it over makes it an
    /// ordinary incoming session.
    ///
    /// Raises FileExistsError (an outgoing session of that name that is not
    /// persistent), OSError EINVAL (a bad name), ENOSPC or EDQUOT (too many
    /// sessions), EOPNOTSUPP (an agent without persistent sessions).
    fn persist_session(&self, py: Python<'_>, name: &str) -> PyResult<Session> {
        let s = self.inner.call(py, |c| c.persist_session(name))?;
        Ok(Session::new(s, name))
    }

    /// Retrieves the caller's incoming (handed-over) session named name, or
    /// for root, that of uid owner, and returns its handle.
    ///
    /// Raises FileNotFoundError (no incoming session of that name),
    /// OSError EINVAL (it is retrieved and its handle open elsewhere),
    /// PermissionError (owner names another uid and the caller is not root).
    #[pyo3(signature = (name, owner=None))]
    fn retrieve_session(
        &self,
        py: Python<'_>,
        name: &str,
        owner: Option<u32>,
    ) -> PyResult<Session> {
        let s = self.inner.call(py, |c| match owner {
            Some(uid) => c.retrieve_session_of(uid, name),
            None => c.retrieve_session(name),
        })?;
        Ok(Session::new(s, name))
    }

    /// An emulated live update: every outgoing session crosses (is handed
    /// over) at once, and the epoch advances. Returns the new epoch.
    /// Handles on the crossed sessions become stale: retrieve them anew.
    ///
    /// Raises PermissionError unless the caller is root or the agent's uid,
    /// FileExistsError when an incoming session of the same name and owner
    /// as an outgoing one is unfinished.
    fn update(&self, py: Python<'_>) -> PyResult<u64> {
        self.inner.call(py, |c| c.update())
    }

    /// The agent's state as a dict: agent (version), protocol, backend,
    /// pid, uid, epoch, outgoing, incoming, files, pinned_bytes,
    /// connections, open_fds, nofile_soft, nofile_hard, quota and usage
    /// (dicts: sessions, files, pinned_bytes; None in quota is no limit),
    /// and store.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.call(py, |c| c.status())?;
        dict_of(py, &s)
    }

    /// Summaries, as dicts, of the caller's sessions (of every session,
    /// for root): name, owner, state ('open', 'incoming', 'retrieved',
    /// 'finished'), handles, file_count, pinned_bytes, kexec_safe.
    fn sessions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = self.inner.call(py, |c| c.sessions())?;
        let list = PyList::empty(py);
        for s in &all {
            list.append(dict_of(py, s)?)?;
        }
        Ok(list)
    }

    /// Details of the sessions named name of the caller (or of uid owner,
    /// for root): one dict, or two when an outgoing and an incoming session
    /// share the name; each as in sessions() with its files, a list of
    /// dicts (token, handler, type, kexec_safe, identity, dev, ino, managed,
    /// retrieved, size, pinned_bytes).
    ///
    /// Raises FileNotFoundError (no session of that name), PermissionError.
    #[pyo3(signature = (name, owner=None))]
    fn show<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        owner: Option<u32>,
    ) -> PyResult<Bound<'py, PyList>> {
        let all = self.inner.call(py, |c| c.show(name, owner))?;
        let list = PyList::empty(py);
        for s in &all {
            list.append(detail_of(py, s)?)?;
        }
        Ok(list)
    }

    /// Hands over the outgoing session named name (of uid owner, for root)
    /// without holding its handle: as Session.handover().
    ///
    /// Raises FileNotFoundError (no outgoing session of that name),
    /// FileExistsError (an incoming one of that name is unfinished).
    #[pyo3(signature = (name, owner=None))]
    fn handover(&self, py: Python<'_>, name: &str, owner: Option<u32>) -> PyResult<()> {
        self.inner.call(py, |c| c.handover(name, owner))
    }

    /// Retrieves and finishes the incoming session named name (of uid
    /// owner, for root) in one step; files never retrieved are discarded.
    ///
    /// Raises FileNotFoundError (no such incoming session), OSError EINVAL
    /// (a process holds it), OSError EBUSY (a handler cannot finish).
    #[pyo3(signature = (name, owner=None))]
    fn finish(&self, py: Python<'_>, name: &str, owner: Option<u32>) -> PyResult<()> {
        self.inner.call(py, |c| c.finish(name, owner))
    }

    /// Upgrades the agent in place: luod re-executes itself as binary
    /// (default: the binary at its own path), same pid, keeping every
    /// connection, session and file. Returns the new agent's pid, agent
    /// (version) and previous (version) as a dict. Root or the agent's uid.
    #[pyo3(signature = (binary=None))]
    fn upgrade_agent<'py>(
        &self,
        py: Python<'py>,
        binary: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let u = self
            .inner
            .call(py, |c| c.upgrade_agent(binary.as_deref()))?;
        dict_of(py, &u)
    }
}

// ----------------------------------------------------------------- Session

/// A handle on one session, like the kernel's session fd, returned by
/// Client.create_session() and Client.retrieve_session().
///
/// Holding the handle is the permission to use the session. When its last
/// copy is closed (close(), the end of a with block, or the object being
/// collected), an outgoing session is aborted (every file let go), and a
/// retrieved session that was not finished goes back to waiting with its
/// files still in custody.
///
/// Once the session has crossed (handover(), Client.update()), the handle is
/// stale: requests on it raise OSError ESTALE.
#[pyclass(module = "luo", name = "Session", frozen)]
struct Session {
    inner: Slot<luo::Session>,
    name: String,
}

impl Session {
    fn new(s: luo::Session, name: &str) -> Session {
        Session {
            inner: Slot::new(s, "the session handle is closed"),
            name: name.to_owned(),
        }
    }

    fn retrieve_owned(&self, py: Python<'_>, token: u64) -> PyResult<OwnedFd> {
        self.inner.call(py, |s| s.retrieve_fd(token))
    }
}

#[pymethods]
impl Session {
    /// The session's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether the handle was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// The handle's descriptor, e.g. to pass it to another process (which
    /// keeps the session alive as long as it holds a copy).
    fn fileno(&self) -> PyResult<RawFd> {
        Ok(self.inner.get()?.as_fd().as_raw_fd())
    }

    /// Closes the handle: an outgoing session is aborted, a retrieved one
    /// that was not finished goes back to waiting. Closing twice is
    /// harmless.
    fn close(&self, py: Python<'_>) {
        let s = self.inner.lock().take();
        py.detach(|| drop(s));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = PyString::new(py, &self.name).repr()?;
        Ok(match &*self.inner.lock() {
            Some(s) => format!("<luo.Session {name} fd={}>", s.as_raw_fd()),
            None => format!("<luo.Session {name} closed>"),
        })
    }

    /// The session's detail as a dict, as Client.show() gives it: state,
    /// handles, file_count, ..., and its files.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = self.inner.call(py, |s| s.info())?;
        detail_of(py, &info)
    }

    /// Preserves the file f (an int descriptor, or an object with fileno():
    /// a socket, a file object) under token, which the next process uses to
    /// retrieve it. luod keeps its own reference: f may be closed afterwards.
    ///
    /// Raises, in the kernel's order: OSError EINVAL (the session is not
    /// outgoing), FileExistsError (the token is in use), OSError ENOSPC,
    /// OSError EBADF, FileNotFoundError (no handler for this kind of file),
    /// OSError EDQUOT, OSError EBUSY (the file is already in a session);
    /// then the handler's errno. The exception's token is token.
    fn preserve(&self, py: Python<'_>, token: u64, f: &Bound<'_, PyAny>) -> PyResult<()> {
        let fd = dup_of(py, f)?;
        self.inner.call(py, |s| s.preserve(token, fd.as_fd()))
    }

    /// Preserves several files in order: files is an iterable of
    /// (token, file) pairs, or a dict {token: file}. They travel in messages
    /// of at most 253 descriptors.
    ///
    /// Preserving stops at the first refusal, and the files before it stay
    /// preserved: the exception's token names the first file that was not
    /// preserved, and neither it nor any file after it was.
    fn preserve_batch(&self, py: Python<'_>, files: &Bound<'_, PyAny>) -> PyResult<()> {
        let pairs = match files.cast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) => files.clone(),
        };
        let mut batch: Vec<(u64, OwnedFd)> = Vec::new();
        for item in pairs.try_iter()? {
            let (token, f): (u64, Bound<'_, PyAny>) = item?.extract().map_err(|_| {
                PyTypeError::new_err("preserve_batch() takes (token, file) pairs or a dict")
            })?;
            batch.push((token, dup_of(py, &f)?));
        }
        self.inner.call(py, |s| {
            let fds: Vec<(u64, BorrowedFd<'_>)> =
                batch.iter().map(|(t, f)| (*t, f.as_fd())).collect();
            s.preserve_batch(&fds)
        })
    }

    /// Hands the outgoing session over: it stops accepting files and waits
    /// for the next process to retrieve it by name. This handle is stale
    /// from now on (close it, or let the with block do it).
    ///
    /// Raises OSError EINVAL (not outgoing), FileExistsError (an incoming
    /// session of the same name is unfinished), or a handler's errno when it
    /// refused to freeze (the session stays outgoing).
    fn handover(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.call(py, |s| s.handover())
    }

    /// Finishes the retrieved session: luod lets go of every file (the
    /// descriptors this process retrieved stay open).
    ///
    /// Raises OSError EINVAL (an outgoing session), OSError EBUSY.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.call(py, |s| s.finish())
    }

    /// A new descriptor (an int, close-on-exec) of the file preserved under
    /// token, in a retrieved session. The caller owns it: close it with
    /// os.close(), or hand it to an object that will (socket_from_fd(),
    /// open(fd), ...). A file may be retrieved any number of times.
    ///
    /// Raises FileNotFoundError (an unknown token), OSError EINVAL (an
    /// outgoing session), OSError ESTALE (the session has crossed).
    fn retrieve_fd(&self, py: Python<'_>, token: u64) -> PyResult<RawFd> {
        Ok(self.retrieve_owned(py, token)?.into_raw_fd())
    }

    /// Descriptors (ints, owned by the caller) of the files preserved under
    /// tokens, in order. On any error no descriptor is left open and the
    /// exception's token names the failing token.
    fn retrieve_batch(&self, py: Python<'_>, tokens: Vec<u64>) -> PyResult<Vec<RawFd>> {
        let fds = self.inner.call(py, |s| s.retrieve_batch(&tokens))?;
        Ok(fds.into_iter().map(IntoRawFd::into_raw_fd).collect())
    }

    /// New descriptors (ints, owned by the caller) of the files preserved
    /// under tokens in a persistent session (Client.persist_session()), in
    /// order, without retrieving them: the files stay preserved. On any
    /// error no descriptor is left open and the exception's token names the
    /// failing token.
    ///
    /// Raises OSError EINVAL (a session that is not persistent),
    /// FileNotFoundError (an unknown token).
    fn fetch(&self, py: Python<'_>, tokens: Vec<u64>) -> PyResult<Vec<RawFd>> {
        let fds = self.inner.call(py, |s| s.fetch(&tokens))?;
        Ok(fds.into_iter().map(IntoRawFd::into_raw_fd).collect())
    }

    /// Removes the files preserved under tokens from the outgoing session
    /// (persistent or not), in order: luod lets go of each, and the file may
    /// be preserved again, in any session. Unpreserving stops at the first
    /// refusal; the files before it stay unpreserved and the exception's
    /// token names the refused one.
    ///
    /// Raises OSError EINVAL (a session that is not outgoing),
    /// FileNotFoundError (a token it does not hold).
    fn unpreserve(&self, py: Python<'_>, tokens: Vec<u64>) -> PyResult<()> {
        self.inner.call(py, |s| s.unpreserve(&tokens))
    }

    /// The socket preserved under token as a socket.socket (family and type
    /// as the socket has them), e.g. a listening socket whose queued
    /// connections are still waiting to be accepted.
    fn retrieve_socket<'py>(&self, py: Python<'py>, token: u64) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.retrieve_owned(py, token)?;
        socket_of(py, fd)
    }

    /// The file preserved under token (a memfd) mapped into memory, as an
    /// mmap.mmap of length bytes (0: the whole file) with access (default
    /// mmap.ACCESS_DEFAULT: shared, read and write). The map keeps the file
    /// open; no descriptor is left to close.
    #[pyo3(signature = (token, length=0, access=None))]
    fn retrieve_mmap<'py>(
        &self,
        py: Python<'py>,
        token: u64,
        length: usize,
        access: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.retrieve_owned(py, token)?;
        mmap_of(py, fd.as_raw_fd(), length, access)
    }
}

// --------------------------------------------------------------- functions

/// Where luod listens by default: $LUOD_SOCKET if set and not empty; else
/// /run/luod/luod.sock for root; else $XDG_RUNTIME_DIR/luod.sock; else
/// /run/user/<uid>/luod.sock.
#[pyfunction]
fn default_socket_path() -> String {
    luo::default_socket_path().to_string_lossy().into_owned()
}

/// A socket.socket that owns the descriptor fd (as retrieve_fd() returns
/// it), of the family and type the socket has. On failure fd is left open.
#[pyfunction]
fn socket_from_fd<'py>(py: Python<'py>, fd: RawFd) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("fileno", fd)?;
    py.import("socket")?
        .getattr("socket")?
        .call((), Some(&kwargs))
}

/// The file behind descriptor fd (a memfd, a regular file) mapped into
/// memory: mmap.mmap(fd, length, access=access), length 0 for the whole
/// file. The map keeps its own copy of the descriptor: fd is still the
/// caller's to close.
#[pyfunction]
#[pyo3(signature = (fd, length=0, access=None))]
fn mmap_fd<'py>(
    py: Python<'py>,
    fd: RawFd,
    length: usize,
    access: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    mmap_of(py, fd, length, access)
}

/// Client of luod, the Live Update Orchestrator agent: keep memfds,
/// sockets and other files across a service's restart.
#[pymodule]
fn _luo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(default_socket_path, m)?)?;
    m.add_function(wrap_pyfunction!(socket_from_fd, m)?)?;
    m.add_function(wrap_pyfunction!(mmap_fd, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
