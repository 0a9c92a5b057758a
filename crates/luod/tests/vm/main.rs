//! A real kernel live update: boots the LUO kernel of `../shared/kernel`
//! under QEMU with an initramfs of luod, luoctl and this test binary, runs
//! clients and the conformance cases against the kernel, kexecs with
//! `luoctl update --kexec`, and checks everything in the second kernel.
//!
//! Needs `qemu-system-x86_64`, `busybox` (static) and `cpio` (the README's
//! test command installs them as root). `LUO_KERNEL_IMAGE` names the
//! kernel image when it is not at `../shared/kernel/bzImage` beside the
//! checkout or `/work/shared/kernel/bzImage`.
//!
//! `LUO_VM_KEEP=1` keeps the initramfs and the serial log.
//!
//! The `role_*` tests are not tests: they are what runs inside the VM
//! (`vmtest --exact role_... --ignored`).

mod cases;
#[path = "../common/mod.rs"]
mod common;
mod registry;

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cases::{Dev, Kernel, Model, EXPECTED, EXPECTED_UAPI};
use common::{assert_pattern, memfd, patterned_memfd, read_text};

const LUOD: &str = env!("CARGO_BIN_EXE_luod");
const LUOCTL: &str = env!("CARGO_BIN_EXE_luoctl");
/// Size of the big memfd the client carries across the kexec.
const BIG: u64 = 64 << 20;
/// The seed of its pattern (`common::pattern`).
const BIG_SEED: u64 = 0x5EED;
/// How long the whole VM run may take before it counts as hung. Under TCG
/// on a busy 2-core host the run took 493 s and 612 s, of which the 2,000
/// stress sessions took about 400 s (e.g. creating them 143 s, luod
/// restoring them after the kexec 93 s, retrieving and checking them
/// 162 s; the `@@ uptime` and `@@ STRESS` lines of the serial log say);
/// the rest of the run took about 90 s.
const VM_TIMEOUT: Duration = Duration::from_secs(1200);
/// The second kernel's command line.
const NEXT_CMDLINE: &str = "console=ttyS0 liveupdate=on panic=-1 quiet stage=2";
/// Sessions of one small memfd each that cross the kexec, as in the
/// kernel's `luo_stress_sessions`.
const STRESS: usize = 2000;

#[test]
fn conformance_cases_on_the_emulated_model() {
    let mut m = Model::new();
    let (mut lines, kept) = cases::stage1(&mut m);
    lines.push("--- update ---".into());
    m.update();
    lines.extend(cases::stage2(&mut m));
    drop(kept);
    assert_eq!(lines, EXPECTED);
    // Everything finished or closed: nothing left in custody.
    assert_eq!(m.0.custody_count(), 0);
}

// ------------------------------------------------------------ inside the VM

fn socket() -> PathBuf {
    luo::default_socket_path()
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_client_stage1() {
    let c = luo::Client::connect_to(socket()).unwrap();
    let big = c.create_session("big").unwrap();
    let f = patterned_memfd(BIG_SEED, BIG);
    big.preserve(1, &f).unwrap();
    big.handover().unwrap();
    let s = c.create_session("small").unwrap();
    s.preserve(10, memfd("small file one")).unwrap();
    s.preserve(20, memfd("small file two")).unwrap();
    s.handover().unwrap();
    // A socket cannot cross a kexec: the preflight must say so.
    let net = c.create_session("net").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    net.preserve(1, &listener).unwrap();
    net.preserve(2, memfd("net state")).unwrap();
    // Two eventfds share one inode; this kernel has no kcmp, so luod tells
    // them apart with F_DUPFD_QUERY (and still refuses a dup).
    let e1 = luo_sys::eventfd(0).unwrap();
    let e2 = luo_sys::eventfd(0).unwrap();
    net.preserve(3, &e1).unwrap();
    net.preserve(4, &e2).unwrap();
    assert_eq!(net.preserve(5, &e1).unwrap_err().errno, luo::Errno::EBUSY);
    net.handover().unwrap();
    println!("@@ CLIENT1 OK");
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_persist_stage1() {
    // A supervisor's persistent session: left open, with no handle, when
    // the kexec comes.
    let c = luo::Client::connect_to(socket()).unwrap();
    let sup = c.persist_session("sup").unwrap();
    sup.preserve(1, memfd("persistent bytes")).unwrap();
    drop(sup);
    println!("@@ PERSIST1 OK");
}

fn stress_name(i: usize) -> String {
    format!("stress-{i:04}")
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_stress_stage1() {
    let started = Instant::now();
    let c = luo::Client::connect_to(socket()).unwrap();
    for i in 0..STRESS {
        let s = c.create_session(&stress_name(i)).unwrap();
        s.preserve(1, memfd(&stress_name(i))).unwrap();
        s.handover().unwrap();
        if i % 500 == 499 {
            println!(
                "@@ stress: {} sessions in {} ms",
                i + 1,
                started.elapsed().as_millis()
            );
        }
    }
    let created = started.elapsed();
    // The preflight of the kexec to come, every page of it.
    let kernel = std::fs::File::open("/boot/bzImage").unwrap();
    let initrd = std::fs::File::open("/boot/initrd.img").unwrap();
    let p = c
        .preflight(&luo::KexecPlan {
            kernel: kernel.as_fd(),
            initrd: Some(initrd.as_fd()),
            cmdline: NEXT_CMDLINE,
            force: false,
        })
        .unwrap();
    let crossing = p
        .sessions
        .iter()
        .filter(|s| s.name.starts_with("stress-") && s.carried == 1 && s.lost.is_empty())
        .count();
    println!(
        "@@ STRESS1 {crossing} of {} sessions cross (created in {} ms, preflight in {} ms)",
        p.sessions.len(),
        created.as_millis(),
        (started.elapsed() - created).as_millis()
    );
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_stress_stage2() {
    let started = Instant::now();
    let c = luo::Client::connect_to(socket()).unwrap();
    let mut intact = 0;
    for i in 0..STRESS {
        let s = c.retrieve_session(&stress_name(i)).unwrap();
        if read_text(s.retrieve_fd(1).unwrap()) == stress_name(i) {
            intact += 1;
        }
        s.finish().unwrap();
    }
    println!(
        "@@ STRESS2 {intact} sessions intact (in {} ms)",
        started.elapsed().as_millis()
    );
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_client_stage2() {
    let c = luo::Client::connect_to(socket()).unwrap();
    let big = c.retrieve_session("big").unwrap();
    let f = big.retrieve_fd(1).unwrap();
    assert_pattern(&f, BIG_SEED, BIG, "the big memfd");
    big.finish().unwrap();
    println!("@@ big: {BIG} bytes intact");
    let s = c.retrieve_session("small").unwrap();
    let one = read_text(s.retrieve_fd(10).unwrap());
    let two = read_text(s.retrieve_fd(20).unwrap());
    println!("@@ small: {one:?} {two:?}");
    s.finish().unwrap();
    let net = c.retrieve_session("net").unwrap();
    let info = net.info().unwrap();
    let tokens: Vec<u64> = info.files.iter().map(|f| f.token).collect();
    println!("@@ net: tokens {tokens:?}");
    println!("@@ net state: {:?}", read_text(net.retrieve_fd(2).unwrap()));
    net.finish().unwrap();
    // The persistent session is open and persistent again, its memfd whole.
    let sup = c
        .sessions()
        .unwrap()
        .into_iter()
        .find(|s| s.name == b"sup")
        .expect("the persistent session came back");
    println!(
        "@@ sup: {} persistent={} handles={} files={}",
        sup.state.as_str(),
        sup.persistent,
        sup.handles,
        sup.file_count
    );
    let s = c.persist_session("sup").unwrap();
    println!("@@ sup bytes: {:?}", read_text(&s.fetch(&[1]).unwrap()[0]));
    // Ended: handed over, then finished by name.
    s.handover().unwrap();
    c.finish("sup", None).unwrap();
    println!("@@ CLIENT2 OK");
}

fn device() -> Kernel {
    Kernel(luo_sys::liveupdate::open_device(Path::new(luo_sys::liveupdate::DEVICE)).unwrap())
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_conformance_stage1() {
    let mut k = device();
    let (lines, kept) = cases::stage1(&mut k);
    let rules = cases::uapi_rules(k.0.as_fd());
    for l in lines.iter().chain(&rules) {
        println!("@@ CONF {l}");
    }
    // The sessions stay open in this process across the kexec; the device
    // is free for luod.
    drop(k);
    println!("@@ CONF READY");
    std::io::stdout().flush().unwrap();
    let _kept = kept;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
#[ignore = "runs inside the VM"]
fn role_vm_conformance_stage2() {
    let mut k = device();
    println!("@@ CONF --- update ---");
    for l in cases::stage2(&mut k) {
        println!("@@ CONF {l}");
    }
}

// ------------------------------------------------------------ on the host

fn kernel_image() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LUO_KERNEL_IMAGE") {
        return Some(PathBuf::from(p));
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kernel/bzImage");
    [beside, PathBuf::from("/work/shared/kernel/bzImage")]
        .into_iter()
        .find(|p| p.exists())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `bin` into `root/bin/name`, stripped, with the shared libraries
/// `ldd` lists.
fn install(root: &Path, bin: &Path, name: &str) {
    let to = root.join("bin").join(name);
    std::fs::copy(bin, &to).unwrap();
    if which("strip").is_some() {
        run(Command::new("strip").arg("--strip-debug").arg(&to));
    }
    // A static binary has no libraries (and ldd fails on it).
    let libs = Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&libs.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dest = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            if !dest.exists() {
                std::fs::copy(&lib, &dest).unwrap();
            }
        }
    }
}

/// `find . | cpio -o -H newc | gzip` in `dir`.
fn cpio_gz(dir: &Path, out: &Path) {
    let script = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        dir.display(),
        out.display()
    );
    run(Command::new("sh").arg("-c").arg(script));
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run/luod
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin
export LUOD_SOCKET=/run/luod/luod.sock
export RUST_BACKTRACE=1
stage=1
grep -q 'stage=2' /proc/cmdline && stage=2
echo "@@ stage $stage begins"
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i+1))
        if [ $i -gt 900 ]; then echo "@@ timed out waiting for '$2'"; cat "$1"; poweroff -f; fi
        sleep 0.1
    done
}
start_luod() {
    # Thousands of sessions: their memfds and kernel sessions, over the
    # 4096 descriptors init starts with.
    (ulimit -n 65536 && exec luod --backend kernel "$@" >> /tmp/luod.log 2>&1) &
    LUOD_PID=$!
    i=0
    while ! luoctl status > /dev/null 2>&1; do
        i=$((i+1))
        if [ $i -gt 1800 ]; then echo "@@ luod did not start"; cat /tmp/luod.log; poweroff -f; fi
        sleep 0.1
    done
}
if [ $stage = 1 ]; then
    vmtest --exact role_vm_conformance_stage1 --ignored --nocapture > /tmp/conf.out 2>&1 &
    wait_for /tmp/conf.out "CONF READY"
    grep '@@' /tmp/conf.out
    luo_uapi_test --stage 1 > /tmp/uapi.out 2>&1
    echo "@@ uapi stage 1: exit $?"
    sed 's/^/@@ UAPI /' /tmp/uapi.out
    start_luod --kernel-session-files 1
    vmtest --exact role_vm_client_stage1 --ignored --nocapture 2>&1 | grep -v '^$'
    luoctl sessions
    # luod crashes; the next one takes everything back from the keeper.
    kill -9 $LUOD_PID
    wait $LUOD_PID 2>/dev/null
    start_luod --kernel-session-files 1
    luoctl --json status | grep -o '"incoming":[0-9]*' | sed 's/^/@@ after the crash: /'
    luoctl agent upgrade
    echo "@@ agent upgrade: exit $?"
    luoctl update --kexec --kernel /boot/bzImage --initrd /boot/initrd.img --append "@NEXT@"
    echo "@@ kexec without --force: exit $?"
    echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): stress stage 1"
    vmtest --exact role_vm_stress_stage1 --ignored --nocapture 2>&1 | grep -v '^$'
    echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): stress stage 1 done"
    vmtest --exact role_vm_persist_stage1 --ignored --nocapture 2>&1 | grep -v '^$'
    # A C program linked against libsystemd stores its state memfd in its
    # fd store under `luoctl run`, which is still running at the kexec.
    luoctl run state -- fdstore /tmp/state.report >> /tmp/run.log 2>&1 &
    wait_for /tmp/state.report "start 1: "
    sed 's/^/@@ STATE /' /tmp/state.report
    echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): kexec"
    luoctl update --kexec --kernel /boot/bzImage --initrd /boot/initrd.img --append "@NEXT@" --force
    echo "@@ kexec returned: exit $?"
    cat /tmp/luod.log
    poweroff -f
fi
vmtest --exact role_vm_conformance_stage2 --ignored --nocapture 2>&1 | grep -v '^$'
luo_uapi_test --stage 2 > /tmp/uapi.out 2>&1
echo "@@ uapi stage 2: exit $?"
sed 's/^/@@ UAPI /' /tmp/uapi.out
echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): luod starts"
start_luod
echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): luod restored"
vmtest --exact role_vm_client_stage2 --ignored --nocapture 2>&1 | grep -v '^$'
vmtest --exact role_vm_stress_stage2 --ignored --nocapture 2>&1 | grep -v '^$'
echo "@@ uptime $(cut -d' ' -f1 /proc/uptime): stress stage 2 done"
luoctl status
echo "@@ status $(luoctl --json status)"
# The same service in the second kernel: its start finds the same bytes
# (and the start count the first kernel wrote in them).
luoctl run state -- fdstore /tmp/state.report >> /tmp/run.log 2>&1 &
RUN_PID=$!
wait_for /tmp/state.report "start "
sed 's/^/@@ STATE /' /tmp/state.report
kill $RUN_PID
wait $RUN_PID
echo "@@ luoctl run after SIGTERM: exit $?"
luoctl sessions
echo "@@ luod log:"
cat /tmp/luod.log
echo "@@ stage 2 done"
poweroff -f
"#;

/// The marker lines of the serial log: from `@@ ` to the end of each line
/// (the test harness and the terminal may put text before it).
fn markers(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.find("@@ ")
                .map(|i| l[i..].trim_end_matches('\r').to_string())
        })
        .collect()
}

/// The `@@ CONF ` markers, without the prefix.
fn conf_lines(markers: &[String]) -> Vec<String> {
    markers
        .iter()
        .filter_map(|l| l.strip_prefix("@@ CONF "))
        .filter(|l| *l != "READY")
        .map(str::to_string)
        .collect()
}

/// A work directory for one VM run (`/tmp/TAG-PID`), and in it the root of
/// its initramfs with busybox, luod, luoctl and this test binary (`vmtest`).
fn vm_root(tag: &str) -> (PathBuf, PathBuf) {
    let work = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    install(&root, &which("busybox").unwrap(), "busybox");
    install(&root, Path::new(LUOD), "luod");
    install(&root, Path::new(LUOCTL), "luoctl");
    install(&root, &std::env::current_exe().unwrap(), "vmtest");
    (work, root)
}

/// What one VM run printed, and whether it powered off in time.
struct VmRun {
    finished: bool,
    elapsed: Duration,
    log: String,
    log_path: PathBuf,
}

impl VmRun {
    /// Says how long it took, and removes `work` unless `LUO_VM_KEEP` is set.
    fn done(&self, work: &Path) {
        eprintln!("the VM run took {} s", self.elapsed.as_secs());
        if std::env::var_os("LUO_VM_KEEP").is_some() {
            eprintln!("LUO_VM_KEEP: the serial log is {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_dir_all(work);
        }
    }

    /// Fails the test with `why` and the whole serial log.
    fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\n---- serial log ({} s) ----\n{}\n---- end of serial log ({}) ----",
            self.elapsed.as_secs(),
            self.log,
            self.log_path.display()
        )
    }
}

/// Boots the LUO kernel with `root` (and `init` as its /init) for an
/// initramfs, plus an archive holding /boot (the kernel, and that initramfs
/// again without /boot) for the kexecs the run makes; waits until the VM
/// powers off, at most `timeout`, and fails the test if it did not.
fn boot(work: &Path, root: &Path, init: &str, cmdline: &str, timeout: Duration) -> VmRun {
    let bz = kernel_image().expect(
        "no LUO kernel image: set LUO_KERNEL_IMAGE, or put it at ../shared/kernel/bzImage beside the checkout",
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init).unwrap();
    run(Command::new("chmod").arg("755").arg(&init_path));
    let second = work.join("second.cpio.gz");
    cpio_gz(root, &second);
    let boot = work.join("boot");
    std::fs::create_dir_all(boot.join("boot")).unwrap();
    std::fs::copy(&bz, boot.join("boot/bzImage")).unwrap();
    std::fs::copy(&second, boot.join("boot/initrd.img")).unwrap();
    let extra = work.join("boot.cpio.gz");
    cpio_gz(&boot, &extra);
    let first = work.join("first.cpio.gz");
    let mut bytes = std::fs::read(&second).unwrap();
    bytes.extend(std::fs::read(&extra).unwrap());
    std::fs::write(&first, bytes).unwrap();

    let log_path = work.join("serial.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(&bz)
        .arg("-initrd")
        .arg(&first)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("starting qemu-system-x86_64");
    let finished = loop {
        if qemu.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > timeout {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let vm = VmRun {
        finished,
        elapsed: started.elapsed(),
        log: String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned(),
        log_path,
    };
    if !vm.finished {
        vm.fail(&format!(
            "the VM did not finish within {} s",
            timeout.as_secs()
        ));
    }
    vm
}

#[test]
fn kernel_live_update_in_qemu() {
    if std::env::var("LUO_VM_TEST").as_deref() == Ok("skip") {
        eprintln!("LUO_VM_TEST=skip: not booting the VM");
        return;
    }
    let mut missing: Vec<&str> = [
        "qemu-system-x86_64",
        "busybox",
        "cpio",
        "gzip",
        "ldd",
        "cc",
        "pkg-config",
    ]
    .into_iter()
    .filter(|t| which(t).is_none())
    .collect();
    let libsystemd = Command::new("pkg-config")
        .args(["--exists", "libsystemd"])
        .status()
        .is_ok_and(|s| s.success());
    if !libsystemd {
        missing.push("libsystemd (development files)");
    }
    assert!(
        missing.is_empty(),
        "the VM test needs {missing:?}: apt-get install -y qemu-system-x86 busybox-static cpio pkg-config libsystemd-dev (./scripts/test does this as root), or set LUO_VM_TEST=skip"
    );
    let (work, root) = vm_root("luo-vm");
    // The fd store's C program, linked against libsystemd (its libraries
    // come along).
    let flags = run(Command::new("pkg-config").args(["--cflags", "--libs", "libsystemd"]));
    let fdstore = work.join("fdstore");
    run(Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&fdstore)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run/fdstore.c"))
        .args(flags.split_whitespace()));
    install(&root, &fdstore, "fdstore");
    // The uAPI test program of the preload library, unchanged, static.
    let uapi_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../luo-preload/tests/uapi");
    run(Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(root.join("bin/luo_uapi_test"))
        .arg(uapi_src.join("luo_uapi_test.c")));
    let vm = boot(
        &work,
        &root,
        &INIT.replace("@NEXT@", NEXT_CMDLINE),
        "console=ttyS0 liveupdate=on panic=-1 quiet",
        VM_TIMEOUT,
    );
    let log = &vm.log;
    let fail = |why: &str| -> ! { vm.fail(why) };
    let markers = markers(log);
    let has = |s: &str| markers.iter().any(|l| l.split(" (in ").next() == Some(s));
    for marker in [
        "@@ stage 1 begins",
        "@@ CLIENT1 OK",
        "@@ after the crash: \"incoming\":3",
        "@@ agent upgrade: exit 0",
        "@@ kexec without --force: exit 1",
        "@@ stage 2 begins",
        "@@ big: 67108864 bytes intact",
        "@@ small: \"small file one\" \"small file two\"",
        "@@ net: tokens [2]",
        "@@ net state: \"net state\"",
        "@@ PERSIST1 OK",
        "@@ sup: open persistent=true handles=0 files=1",
        "@@ sup bytes: \"persistent bytes\"",
        "@@ CLIENT2 OK",
        "@@ STRESS2 2000 sessions intact",
        "@@ STATE start 1: created 4194304 bytes",
        "@@ STATE start 2: intact 4194304 bytes",
        "@@ luoctl run after SIGTERM: exit 0",
        "@@ stage 2 done",
    ] {
        if !has(marker) {
            fail(&format!("the serial log lacks {marker:?}"));
        }
    }
    // Every stress session was in the preflight, beside big, small and net.
    if !markers
        .iter()
        .any(|l| l.starts_with("@@ STRESS1 2000 of 2003 sessions cross"))
    {
        fail("the preflight in the VM did not list the 2000 stress sessions");
    }
    if markers.iter().any(|l| l.starts_with("@@ kexec returned")) {
        fail("luoctl update --kexec --force returned: the kexec did not happen");
    }
    // The preflight named what could not cross, and why.
    if !(log.contains("cannot cross a kexec:") && log.contains("luo-tcp-socket-v1")) {
        fail("the preflight did not list the socket that cannot cross");
    }
    // The same conformance results as the model's, then the uAPI rules.
    let conf = conf_lines(&markers);
    let want: Vec<String> = EXPECTED[..EXPECTED
        .iter()
        .position(|l| *l == "--- update ---")
        .unwrap()]
        .iter()
        .chain(EXPECTED_UAPI)
        .chain(
            &EXPECTED[EXPECTED
                .iter()
                .position(|l| *l == "--- update ---")
                .unwrap()..],
        )
        .map(|s| s.to_string())
        .collect();
    if conf != want {
        fail(&format!(
            "the kernel's conformance results differ from the model's:\n kernel: {conf:#?}\n expected: {want:#?}"
        ));
    }
    // The preload library's uAPI program printed on the real kernel exactly
    // what it prints under the library against luod.
    for m in ["@@ uapi stage 1: exit 0", "@@ uapi stage 2: exit 0"] {
        if !has(m) {
            fail(&format!("the uAPI program failed on the kernel: no {m:?}"));
        }
    }
    let uapi: Vec<&str> = markers
        .iter()
        .filter_map(|l| l.strip_prefix("@@ UAPI "))
        .collect();
    let expected = std::fs::read_to_string(uapi_src.join("expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    if uapi != expected {
        let diff: Vec<String> = expected
            .iter()
            .zip(uapi.iter().chain(std::iter::repeat(&"<missing>")))
            .filter(|(e, g)| e != g)
            .map(|(e, g)| format!("  expected: {e}\n  kernel:   {g}"))
            .collect();
        fail(&format!(
            "the uAPI program's output on the kernel differs from expected.txt ({} lines vs {}):\n{}",
            uapi.len(),
            expected.len(),
            diff.join("\n")
        ));
    }
    // luod recovered its registry, everything was finished, and the epoch advanced.
    let status = markers
        .iter()
        .find_map(|l| l.strip_prefix("@@ status "))
        .unwrap_or_else(|| fail("no status line"));
    let v: serde_json::Value =
        serde_json::from_str(status).unwrap_or_else(|e| fail(&format!("bad status JSON: {e}")));
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    if v.get("backend").and_then(serde_json::Value::as_str) != Some("kernel") {
        fail("luod in the second kernel is not on the kernel backend");
    }
    // What is left is the service "state"'s persistent session, open for
    // its next `luoctl run`: its memfd and the supervisor's manifest.
    if n("epoch") != Some(2)
        || n("outgoing") != Some(1)
        || n("incoming") != Some(0)
        || n("files") != Some(2)
    {
        fail(&format!("luoctl status after the update: {status}"));
    }
    // One agent session spread over two kernel sessions (--kernel-session-files 1).
    if !log.contains("kernel sessions: 4") {
        fail("the preflight did not count 4 kernel sessions for 3 agent sessions");
    }
    if !log.contains("restored 2003 sessions with 2004 files") {
        fail("luod did not log restoring 2003 sessions with 2004 files");
    }
    // "sup", and the service "state" (its memfd and its manifest).
    if !log.contains("2 persistent sessions with 3 files are open again") {
        fail("luod did not log the 2 persistent sessions open again");
    }
    vm.done(&work);
}
