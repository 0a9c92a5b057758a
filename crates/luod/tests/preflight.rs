//! The kexec preflight at the scale of the kernel's stress selftests, on
//! the emulated backend: 2,000 sessions, and 16,000 files in one session
//! (most of them lost), come back whole through the client library and
//! `luoctl update --kexec --dry-run`, in pages of at most one message.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Output};

use common::wire::{Value, With};

mod common;

use common::{Agent, Opts, DEFAULT};

const CMDLINE: &str = "console=ttyS0 liveupdate=on";

/// A fake kernel image (the emulated backend only measures it).
struct Image(std::path::PathBuf);

impl Image {
    fn new(dir: &std::path::Path) -> Image {
        let p = dir.join("bzImage");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        Image(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

fn luoctl(luod: &Agent, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_luoctl"))
        .arg("--socket")
        .arg(&luod.sock)
        .args(args)
        .env_remove("LUOD_SOCKET")
        .output()
        .expect("run luoctl")
}

fn dry_run(luod: &Agent, image: &Image, json: bool) -> String {
    let mut args = vec![];
    if json {
        args.push("--json");
    }
    args.extend([
        "update",
        "--kexec",
        "--kernel",
        image.path(),
        "--append",
        CMDLINE,
        "--dry-run",
    ]);
    let o = luoctl(luod, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    String::from_utf8(o.stdout).unwrap()
}

fn plan<'a>(image: &'a std::fs::File) -> luo::KexecPlan<'a> {
    luo::KexecPlan {
        kernel: image.as_fd(),
        initrd: None,
        cmdline: CMDLINE,
        force: false,
    }
}

/// The first page, as a raw request: what luod 0.1.0's luoctl reads.
fn first_page(luod: &Agent, image: &std::fs::File) -> Value {
    let req = common::wire::request("kexec")
        .with("cmdline", CMDLINE)
        .with("dry_run", true);
    let m = common::wire::call(&luod.connect(), req, &[image.as_fd()]);
    common::wire::ok(&m)
        .get("preflight")
        .cloned()
        .expect("a preflight")
}

fn start_luod() -> Agent {
    Agent::start_with(Opts {
        log: "warn",
        ..DEFAULT
    })
}

#[test]
fn two_thousand_sessions_come_back_whole() {
    const N: usize = 2000;
    let luod = start_luod();
    let baseline = luod.settled_fds();
    let image = Image::new(&luod.dir);
    let kernel = std::fs::File::open(&image.0).unwrap();
    let client = luod.client();
    // As luo_stress_sessions: many sessions, each with a small memfd.
    let handles: Vec<luo::Session> = (0..N)
        .map(|i| {
            let s = client.create_session(&format!("stress-{i:04}")).unwrap();
            s.preserve(1, common::memfd(format!("session {i}").as_bytes()))
                .unwrap();
            s
        })
        .collect();

    // The first page is a preflight of its own, with the totals, the
    // problems and where the next page starts.
    let first = first_page(&luod, &kernel);
    let n = |k: &str| first.get(k).and_then(Value::as_u64);
    assert_eq!(n("session_count"), Some(N as u64));
    assert_eq!(n("carried_files"), Some(N as u64));
    let on_first = first
        .get("sessions")
        .and_then(Value::as_array)
        .unwrap()
        .len();
    assert!(
        on_first > 0 && on_first < N,
        "{on_first} sessions on the first page"
    );
    assert!(n("next").is_some());

    // A page after the sessions changed says so by its fingerprint; a
    // `start` outside a dry run, or past the end, is refused.
    let page = |start: u64, dry_run: bool| {
        let req = common::wire::request("kexec")
            .with("cmdline", CMDLINE)
            .with("dry_run", dry_run)
            .with("start", start);
        common::wire::call(&luod.connect(), req, &[kernel.as_fd()])
    };
    let second = page(n("next").unwrap(), true);
    let second = common::wire::ok(&second)["preflight"].clone();
    assert_eq!(second["fingerprint"], first["fingerprint"]);
    let extra = client.create_session("extra").unwrap();
    let changed = page(n("next").unwrap(), true);
    assert_ne!(
        common::wire::ok(&changed)["preflight"]["fingerprint"],
        first["fingerprint"]
    );
    client.abort("extra", None).unwrap();
    drop(extra);
    assert_eq!(common::wire::errno(&page(1, false)), luo::Errno::EINVAL);
    assert_eq!(
        common::wire::errno(&page(1 << 40, true)),
        luo::Errno::EINVAL
    );

    let p = client.preflight(&plan(&kernel)).unwrap();
    let names: Vec<&str> = p.sessions.iter().map(|s| s.name.as_str()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("stress-{i:04}")).collect();
    assert_eq!(names, want);
    assert!(p.sessions.iter().all(|s| s.files == 1 && s.carried == 1));
    assert_eq!((p.carried_files, p.lost_files), (N as u64, 0));
    assert_eq!(p.next, None);

    let out = dry_run(&luod, &image, true);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let sessions = v
        .get("preflight")
        .and_then(|p| p.get("sessions"))
        .and_then(Value::as_array)
        .unwrap();
    let got: Vec<&str> = sessions
        .iter()
        .map(|s| s.get("name").and_then(Value::as_str).unwrap())
        .collect();
    assert_eq!(got, want);

    // The text stays readable: the first rows, a count of the rest, totals.
    let out = dry_run(&luod, &image, false);
    assert!(out.lines().count() < 80, "{out}");
    for needle in [
        "stress-0000",
        "... and 1960 more sessions",
        "--dry-run --json lists every one",
        "2000 files in 2000 sessions cross",
        "0 files would be lost",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    assert!(!out.contains("stress-1999"), "{out}");

    // The update itself reads the whole preflight first: its problems
    // refuse it, and --force reaches luod (which cannot kexec here).
    let update = |force: bool| {
        let mut a = vec![
            "update",
            "--kexec",
            "--kernel",
            image.path(),
            "--append",
            CMDLINE,
        ];
        if force {
            a.push("--force");
        }
        luoctl(&luod, &a)
    };
    let o = update(false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ECANCELED"), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2000 files in 2000 sessions cross"),
        "{o:?}"
    );
    let o = update(true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("EOPNOTSUPP"), "{err}");

    drop((handles, client, kernel));
    // 2,000 handles close at once: wait for luod to see every hang-up.
    luod.wait_fds(baseline);
}

#[test]
fn sixteen_thousand_files_in_one_session_list_every_lost_file() {
    const FILES: u64 = 16_000;
    let luod = start_luod();
    let image = Image::new(&luod.dir);
    let kernel = std::fs::File::open(&image.0).unwrap();
    let client = luod.client();
    let before = client.create_session("before").unwrap();
    before.preserve(1, luo_sys::eventfd(0).unwrap()).unwrap();
    let big = client.create_session("big").unwrap();
    // Three of four files cannot cross (eventfds and Unix sockets), one in
    // four is a memfd that does.
    let mut lost_want = BTreeSet::new();
    for chunk in (1..=FILES).collect::<Vec<_>>().chunks(1000) {
        let files: Vec<(u64, OwnedFd)> = chunk
            .iter()
            .map(|&t| {
                let fd = match t % 4 {
                    0 => luo::memfd_create("m").unwrap(),
                    1 => luo_sys::eventfd(0).unwrap(),
                    _ => luo_sys::socketpair(luo_sys::sock::SOCK_STREAM).unwrap().0,
                };
                if t % 4 != 0 {
                    lost_want.insert(t);
                }
                (t, fd)
            })
            .collect();
        let batch: Vec<_> = files.iter().map(|(t, f)| (*t, f.as_fd())).collect();
        big.preserve_batch(&batch).unwrap();
    }
    let after = client.create_session("after").unwrap();
    after.preserve(7, luo::memfd_create("m").unwrap()).unwrap();
    let lost = lost_want.len() as u64;

    let check = |p: &luo::Preflight| {
        let names: Vec<&str> = p.sessions.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["before", "big", "after"]);
        let s = &p.sessions[1];
        assert_eq!((s.files, s.carried), (FILES, FILES / 4));
        let tokens: BTreeSet<u64> = s.lost.iter().map(|f| f.token).collect();
        assert_eq!(s.lost.len(), tokens.len(), "a lost file listed twice");
        assert_eq!(tokens, lost_want);
        assert_eq!(p.sessions[0].lost.len(), 1);
        assert!(p.sessions[2].lost.is_empty());
        assert_eq!(p.lost_files, lost + 1);
        assert_eq!(p.carried_files, FILES / 4 + 1);
        assert!(p.sessions.iter().all(|s| !s.continued));
    };
    check(&client.preflight(&plan(&kernel)).unwrap());

    // The big session spans many pages; the first holds part of its lost
    // files.
    let first = first_page(&luod, &kernel);
    let sessions = first.get("sessions").and_then(Value::as_array).unwrap();
    let on_first: usize = sessions
        .iter()
        .map(|s| s.get("lost").and_then(Value::as_array).unwrap().len())
        .sum();
    assert!(on_first > 1 && (on_first as u64) < lost, "{on_first}");

    let out = dry_run(&luod, &image, true);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let p: luo::Preflight = serde_json::from_value(v.get("preflight").unwrap().clone()).unwrap();
    check(&p);

    let out = dry_run(&luod, &image, false);
    assert!(out.lines().count() < 80, "{out}");
    let more = lost + 1 - 40;
    for needle in [
        "cannot cross a kexec:",
        "token 1 (luo-eventfd-v1)",
        &format!(
            "... and {more} more files; in all {} files in 2 sessions",
            lost + 1
        ),
        &format!("{} files would be lost", lost + 1),
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}
