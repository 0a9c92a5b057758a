//! The floor agent (`luo-bench __floor-agent`): the least any agent that
//! keeps luod's promises must do per file, to measure luod against in the
//! same run. On preserve it receives a batch (253 descriptors a message,
//! tokens as raw `u64`s), refuses `O_PATH` (`F_GETFL`), takes each file's
//! identity (`fstat`) and, for a socket, its kind as luod reads it
//! (`SO_DOMAIN`, and `SO_TYPE`/`SO_PROTOCOL` for TCP and UDP), sends the
//! batch to its mirror (a second process that only holds what it gets: the
//! crash-safety copy luod's keeper keeps) and replies. On retrieve it sends
//! the descriptors it holds back (no copy); on finish it closes them and
//! tells the mirror to close its copies. No JSON, no index, no map: a `Vec`.
//! Without a keeper (luod's `--keeper off`) it has no mirror either.
//!
//! One session at a time, whatever its name; any number of connections
//! (the proxy's old and new process each have one), served by one epoll
//! loop as luod's are.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use luo_sys::{sock, SCM_MAX_FD};

use crate::agent::TempDir;
use crate::cli::Failure;
use crate::fds::Peer;

/// Requests: a tag, then tokens (little-endian `u64`s) for preserve and
/// retrieve.
const CREATE: u8 = b'C';
const PRESERVE: u8 = b'P';
const HANDOVER: u8 = b'H';
const RETRIEVE: u8 = b'R';
const FINISH: u8 = b'X';
const QUIT: u8 = b'Q';
/// Answered at once (a round's untimed warm-up).
const PING: u8 = b'?';
/// Replies: done (with the descriptors of a retrieve), or refused with a
/// reason.
const DONE: u8 = b'K';
const REFUSED: u8 = b'!';
/// What the mirror is sent: a batch to hold (as the raw baseline's peer
/// takes it, tokens after the tag), and "close them all".
pub(crate) const MIRROR_HOLD: u8 = b'F';
pub(crate) const MIRROR_DROP: u8 = b'X';

/// The longest message: a tag and 253 tokens.
pub(crate) const MESSAGE: usize = 1 + 8 * SCM_MAX_FD;

/// `tag` followed by `tokens`.
pub(crate) fn message(tag: u8, tokens: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut m = vec![tag];
    for t in tokens {
        m.extend_from_slice(&t.to_le_bytes());
    }
    m
}

fn tokens_of(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    body.chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The checks any agent makes of a file it is given: not `O_PATH`, its
/// identity, and a socket's kind (a Unix socket's domain alone, as luod's
/// handlers read it).
pub(crate) fn check(fd: BorrowedFd<'_>) -> Result<(), String> {
    if luo_sys::is_o_path(fd).map_err(|e| format!("F_GETFL: {e}"))? {
        return Err("an O_PATH descriptor holds no file".into());
    }
    let st = luo_sys::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    if st.is_socket() {
        let domain = luo_sys::socket_domain(fd).map_err(|e| format!("SO_DOMAIN: {e}"))?;
        if domain == sock::AF_INET || domain == sock::AF_INET6 {
            luo_sys::socket_type_protocol(fd).map_err(|e| format!("SO_TYPE/SO_PROTOCOL: {e}"))?;
        }
    }
    Ok(())
}

/// A floor agent process listening on a socket of its own; told to quit
/// (and reaped) on drop.
#[derive(Debug)]
pub struct FloorAgent {
    child: Child,
    path: PathBuf,
    /// Its mirror's pid, if it has one.
    mirror: Option<u32>,
    _dir: TempDir,
}

impl FloorAgent {
    /// Starts one, with a mirror iff `keeper`.
    pub fn spawn(keeper: bool, tag: &str) -> Result<FloorAgent, Failure> {
        let dir = TempDir::new(&format!("floor-{tag}"))?;
        let path = dir.0.join("floor.sock");
        let listener = luo_sys::seqpacket_listen(&path, 16)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "__floor-agent",
                "--keeper",
                if keeper { "on" } else { "off" },
            ])
            .stdin(Stdio::from(listener))
            .stdout(Stdio::piped())
            .spawn()?;
        // "ready PID" once its mirror runs (PID 0: none).
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let mirror = match line.trim().strip_prefix("ready ").map(str::parse::<u32>) {
            Some(Ok(0)) => None,
            Some(Ok(pid)) => Some(pid),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::run(format!(
                    "the floor agent did not start: {line:?}"
                )));
            }
        };
        Ok(FloorAgent {
            child,
            path,
            mirror,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn has_mirror(&self) -> bool {
        self.mirror.is_some()
    }

    pub fn connect(&self) -> Result<FloorClient, Failure> {
        FloorClient::connect(&self.path)
    }

    /// Waits until the mirror has closed a finished session's copies
    /// (it does so after the finish is answered, as luod's keeper does).
    pub fn settle(&self) {
        if let Some(pid) = self.mirror {
            crate::requests::wait_idle(pid);
        }
    }
}

impl Drop for FloorAgent {
    fn drop(&mut self) {
        let quit = self
            .connect()
            .and_then(|c| c.call(&[QUIT], &[], 0).map(drop));
        if quit.is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A connection to a floor agent, with luo's session calls.
#[derive(Debug)]
pub struct FloorClient {
    sock: OwnedFd,
}

impl FloorClient {
    pub fn connect(path: &std::path::Path) -> Result<FloorClient, Failure> {
        let sock = luo_sys::seqpacket_connect(path)
            .map_err(|e| Failure::run(format!("connecting to the floor agent: {e}")))?;
        Ok(FloorClient { sock })
    }

    fn call(
        &self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        max_fds: usize,
    ) -> Result<Vec<OwnedFd>, Failure> {
        luo_sys::send_with_fds(self.sock.as_fd(), msg, fds)?;
        let mut buf = [0u8; 512];
        let got = luo_sys::recv_with_fds(self.sock.as_fd(), &mut buf, max_fds)?;
        match buf[..got.len] {
            [] => Err(Failure::run("the floor agent hung up")),
            [DONE] if !got.ctrunc => Ok(got.fds),
            [REFUSED, ref why @ ..] => Err(Failure::run(format!(
                "the floor agent refused: {}",
                String::from_utf8_lossy(why)
            ))),
            _ => Err(Failure::run("the floor agent said something else")),
        }
    }

    pub fn ping(&self) -> Result<(), Failure> {
        self.call(&[PING], &[], 0).map(drop)
    }

    pub fn create_session(&self) -> Result<(), Failure> {
        self.call(&[CREATE], &[], 0).map(drop)
    }

    /// As `Session::preserve_batch`: 253 files a request.
    pub fn preserve_batch(&self, files: &[(u64, BorrowedFd<'_>)]) -> Result<(), Failure> {
        for chunk in files.chunks(SCM_MAX_FD) {
            let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|&(_, f)| f).collect();
            self.call(&message(PRESERVE, chunk.iter().map(|&(t, _)| t)), &fds, 0)?;
        }
        Ok(())
    }

    pub fn handover(&self) -> Result<(), Failure> {
        self.call(&[HANDOVER], &[], 0).map(drop)
    }

    /// As `Session::retrieve_batch`: 253 tokens a request.
    pub fn retrieve_batch(&self, tokens: &[u64]) -> Result<Vec<OwnedFd>, Failure> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(SCM_MAX_FD) {
            let fds = self.call(&message(RETRIEVE, chunk.iter().copied()), &[], chunk.len())?;
            if fds.len() != chunk.len() {
                return Err(Failure::run(format!(
                    "the floor agent returned {} of {} files",
                    fds.len(),
                    chunk.len()
                )));
            }
            out.extend(fds);
        }
        Ok(out)
    }

    pub fn finish(&self) -> Result<(), Failure> {
        self.call(&[FINISH], &[], 0).map(drop)
    }
}

/// `luo-bench __floor-agent`: serves the listening socket on its stdin,
/// with a mirror iff `keeper`, until told to quit.
pub fn agent_main(keeper: bool) -> Result<(), Failure> {
    luo_sys::raise_nofile_limit()?;
    let mirror = if keeper { Some(Peer::spawn()?) } else { None };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", mirror.as_ref().map_or(0, Peer::pid))?;
    out.flush()?;
    drop(out);
    let stdin = std::io::stdin();
    serve(stdin.as_fd(), mirror.as_ref().map(Peer::sock))
    // The mirror, dropped, is told to quit and reaped.
}

/// What the agent holds: the session's files in preservation order, and
/// where the next retrieve is expected to start.
#[derive(Debug, Default)]
struct Held {
    files: Vec<(u64, OwnedFd)>,
    next: usize,
}

impl Held {
    /// The index of `token`'s file: where a retrieve in preservation
    /// order finds it at once, else by a scan.
    fn find(&self, token: u64) -> Option<usize> {
        match self.files.get(self.next) {
            Some(&(t, _)) if t == token => Some(self.next),
            _ => self.files.iter().position(|&(t, _)| t == token),
        }
    }
}

/// The floor agent's loop: `listener` for connections, each request
/// answered in turn; `mirror` gets a copy of every preserved batch.
pub fn serve(listener: BorrowedFd<'_>, mirror: Option<BorrowedFd<'_>>) -> Result<(), Failure> {
    const LISTENING: u64 = u64::MAX;
    let epoll = luo_sys::Epoll::new()?;
    epoll.add(listener, LISTENING, luo_sys::epoll::EPOLLIN)?;
    let mut conns: Vec<Option<OwnedFd>> = Vec::new();
    let mut held = Held::default();
    let mut events = Vec::new();
    let mut buf = vec![0u8; MESSAGE];
    loop {
        match epoll.wait(&mut events, 64, -1) {
            Ok(()) | Err(luo_sys::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        for &(key, _) in &events {
            if key == LISTENING {
                match luo_sys::accept(listener) {
                    Ok(c) => {
                        // Replies block as luod's client calls do.
                        luo_sys::set_nonblocking(c.as_fd(), false)?;
                        epoll.add(c.as_fd(), conns.len() as u64, luo_sys::epoll::EPOLLIN)?;
                        conns.push(Some(c));
                    }
                    Err(luo_sys::Errno::EAGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            let i = key as usize;
            let Some(c) = conns.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let got = match luo_sys::recv_with_fds(c.as_fd(), &mut buf, SCM_MAX_FD) {
                Ok(g) if g.len > 0 => g,
                _ => {
                    conns[i] = None;
                    continue;
                }
            };
            let (tag, body) = (buf[0], &buf[1..got.len]);
            if tag == QUIT {
                luo_sys::send_with_fds(c.as_fd(), &[DONE], &[])?;
                return Ok(());
            }
            let reply = answer(tag, body, got.fds, got.ctrunc, &mut held, mirror);
            let sent = match reply {
                Ok(fds) => luo_sys::send_with_fds(c.as_fd(), &[DONE], &fds),
                Err(why) => {
                    let mut m = vec![REFUSED];
                    m.extend_from_slice(why.as_bytes());
                    m.truncate(256);
                    luo_sys::send_with_fds(c.as_fd(), &m, &[])
                }
            };
            if sent.is_err() {
                conns[i] = None;
            }
        }
    }
}

/// One request's work; the descriptors to send back with the reply.
fn answer<'h>(
    tag: u8,
    body: &[u8],
    fds: Vec<OwnedFd>,
    ctrunc: bool,
    held: &'h mut Held,
    mirror: Option<BorrowedFd<'_>>,
) -> Result<Vec<BorrowedFd<'h>>, String> {
    match tag {
        PING | CREATE | HANDOVER => Ok(Vec::new()),
        PRESERVE => {
            let tokens: Vec<u64> = tokens_of(body).collect();
            if ctrunc || tokens.len() != fds.len() {
                return Err(format!(
                    "{} tokens for {} descriptors",
                    tokens.len(),
                    fds.len()
                ));
            }
            for (t, f) in tokens.iter().zip(&fds) {
                check(f.as_fd()).map_err(|e| format!("token {t}: {e}"))?;
            }
            if let Some(m) = mirror {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                luo_sys::send_with_fds(m, &message(MIRROR_HOLD, tokens.iter().copied()), &borrowed)
                    .map_err(|e| format!("sending to the mirror: {e}"))?;
            }
            held.files.extend(tokens.into_iter().zip(fds));
            Ok(Vec::new())
        }
        RETRIEVE => {
            let mut at = Vec::new();
            for t in tokens_of(body) {
                let i = held.find(t).ok_or(format!("token {t}: not preserved"))?;
                held.next = i + 1;
                at.push(i);
            }
            let files = &held.files;
            Ok(at.into_iter().map(|i| files[i].1.as_fd()).collect())
        }
        FINISH => {
            *held = Held::default();
            if let Some(m) = mirror {
                luo_sys::send_with_fds(m, &[MIRROR_DROP], &[])
                    .map_err(|e| format!("telling the mirror: {e}"))?;
            }
            Ok(Vec::new())
        }
        other => Err(format!("unknown request {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn bytes(fd: &OwnedFd) -> Vec<u8> {
        let f = std::fs::File::from(fd.try_clone().unwrap());
        let mut b = vec![0u8; 64];
        let n = f.read_at(&mut b, 0).unwrap();
        b.truncate(n);
        b
    }

    /// The agent's loop and a mirror's end in this process: files come
    /// back as the files given (their bytes), the mirror got a copy of
    /// each under its token, and finish tells it to let go.
    #[test]
    fn the_floor_agent_returns_the_files_it_was_given_and_mirrors_them() {
        let dir = TempDir::new("floor-unit").unwrap();
        let path = dir.0.join("floor.sock");
        let listener = luo_sys::seqpacket_listen(&path, 4).unwrap();
        let (m_agent, m_test) = luo_sys::socketpair(sock::SOCK_SEQPACKET).unwrap();
        let agent = std::thread::spawn(move || serve(listener.as_fd(), Some(m_agent.as_fd())));

        let n = 300u64;
        let files: Vec<OwnedFd> = (0..n)
            .map(|t| {
                let m = luo_sys::memfd_create("floor-test", 0).unwrap();
                luo_sys::write_all(m.as_fd(), format!("file {t}").as_bytes()).unwrap();
                m
            })
            .collect();
        let c = FloorClient::connect(&path).unwrap();
        c.create_session().unwrap();
        let given: Vec<(u64, BorrowedFd<'_>)> =
            (0..n).zip(files.iter().map(|f| f.as_fd())).collect();
        c.preserve_batch(&given).unwrap();
        c.handover().unwrap();
        drop(given);
        drop(files);

        // The successor: a new connection, the files in another order.
        let next = FloorClient::connect(&path).unwrap();
        let tokens: Vec<u64> = (0..n).rev().collect();
        let back = next.retrieve_batch(&tokens).unwrap();
        assert_eq!(back.len(), n as usize);
        for (t, f) in tokens.iter().zip(&back) {
            assert_eq!(bytes(f), format!("file {t}").into_bytes());
        }
        let e = next.retrieve_batch(&[n]).unwrap_err();
        assert!(e.to_string().contains("not preserved"), "{e}");

        // What the mirror holds: every file under its token.
        let mut buf = vec![0u8; MESSAGE];
        let mut mirrored = 0;
        while mirrored < n as usize {
            let got = luo_sys::recv_with_fds(m_test.as_fd(), &mut buf, SCM_MAX_FD).unwrap();
            assert_eq!(buf[0], MIRROR_HOLD);
            let ts: Vec<u64> = tokens_of(&buf[1..got.len]).collect();
            assert_eq!(ts.len(), got.fds.len());
            for (t, f) in ts.iter().zip(&got.fds) {
                assert_eq!(bytes(f), format!("file {t}").into_bytes());
            }
            mirrored += ts.len();
        }
        assert_eq!(mirrored, n as usize);

        // O_PATH is refused, and nothing of its batch is kept or mirrored.
        let o_path = luo_sys::open_path(std::path::Path::new("/")).unwrap();
        let e = next.preserve_batch(&[(n, o_path.as_fd())]).unwrap_err();
        assert!(e.to_string().contains("O_PATH"), "{e}");

        next.finish().unwrap();
        let got = luo_sys::recv_with_fds(m_test.as_fd(), &mut buf, SCM_MAX_FD).unwrap();
        assert_eq!(&buf[..got.len], &[MIRROR_DROP]);
        assert!(next.retrieve_batch(&[0]).is_err(), "finish let go");

        next.call(&[QUIT], &[], 0).unwrap();
        agent.join().unwrap().unwrap();
    }
}
