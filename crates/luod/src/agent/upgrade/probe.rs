//! `luod --upgrade-probe`: the answer this binary gives, and asking a
//! binary before executing it whether it reads this agent's state.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use luo_proto::{Errno, Error};

use super::STATE_VERSION;

/// What `luod --upgrade-probe` prints, followed by the versions it reads.
pub const PROBE_ANSWER: &str = "luod-upgrade-state";
/// How long the new binary may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Asks `binary` which state versions it reads.
pub(super) fn probe(binary: &Path) -> Result<(), Error> {
    let mut child = std::process::Command::new(binary)
        .arg("--upgrade-probe")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            let m = format!(
                "cannot run {} to probe it: {e}; the agent keeps running",
                binary.display()
            );
            Error::new(Errno::from(e), m)
        })?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::new(Errno::from(e), "waiting for the probe"))?
        {
            break s;
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                Errno::ETIMEDOUT,
                format!(
                    "{} did not answer the upgrade probe within {} s; the agent keeps running",
                    binary.display(),
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let versions: Option<Vec<u32>> = out.trim().strip_prefix(PROBE_ANSWER).map(|v| {
        v.split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    });
    match versions {
        Some(v) if status.success() && v.contains(&STATE_VERSION) => Ok(()),
        Some(v) if status.success() => Err(Error::new(
            Errno::EOPNOTSUPP,
            format!(
                "{} reads upgrade state versions {v:?}, not this agent's version {STATE_VERSION}; the agent keeps running (upgrade through a release that reads both)",
                binary.display()
            ),
        )),
        _ => Err(Error::new(
            Errno::ENOEXEC,
            format!(
                "{} is not a luod that can take over (it did not answer the upgrade probe); the agent keeps running",
                binary.display()
            ),
        )),
    }
}
/// `luod --upgrade-probe`: the state versions this binary reads.
pub fn probe_answer() -> String {
    format!("{PROBE_ANSWER} {STATE_VERSION}")
}
