//! The kernel registry's refusal paths on the real kernel, and abort on the
//! kernel backend: one QEMU run chains kexecs. In each boot a role (not
//! luod) writes, straight through `/dev/liveupdate`, a damaged `luod/registry`
//! (corrupt, then of another version, then without its token 0, then none
//! at all) beside an agent-looking kernel session `luod/0/1` holding a
//! memfd, and kexecs itself. In the next boot luod must refuse to start
//! with a clear message, keep the registry's bytes aside, refuse again on a
//! second start, and leave `luod/0/1` whole: the role retrieves it after
//! luod exited, except after the wrong version, where a luod started with
//! `--registry FILE` (a registry it reads) restores it instead. The last
//! boot runs luod for real: sessions aborted by name on the kernel backend
//! must not cross the kexec that follows.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use luo_core::FileHandler;
use luo_sys::liveupdate as lu;
use luod::registry::{seal, FileEntry, Registry, SessionEntry, MAGIC, VERSION};

use super::common::{memfd, read_text};
use super::{boot, markers, socket, vm_root, which};

/// How long the whole chain may take before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Every boot's command line; the stage is appended as `regcase=...`.
const CMDLINE: &str = "console=ttyS0 liveupdate=on panic=-1 quiet";

/// A registry as luod writes it, naming the agent-looking session.
fn registry() -> Registry {
    Registry {
        epoch: 7,
        agent: "luod vm-test".into(),
        sessions: vec![SessionEntry {
            owner: 0,
            name: "orphan".into(),
            state: "incoming".into(),
            persist: false,
            parts: vec!["luod/0/1".into()],
            files: vec![FileEntry {
                token: 1,
                handler: luo_core::handler::MemfdHandler.compatible().into(),
                part: Some(0),
            }],
        }],
    }
}

/// The damaged registry of each case (`None`: no registry bytes).
fn damaged(case: &str) -> Option<Vec<u8>> {
    match case {
        "corrupt" => {
            let mut b = registry().encode();
            // One flipped bit in the payload: the checksum no longer matches.
            let last = b.len() - 3;
            b[last] ^= 0x01;
            Some(b)
        }
        "version" => Some(seal(
            MAGIC,
            VERSION + 1,
            &serde_json::to_vec(&registry()).unwrap(),
        )),
        // A registry session without token 0 (the bytes sit at token 5).
        "notoken" => Some(registry().encode()),
        _ => None,
    }
}

/// What the agent-looking session's memfd holds in each case.
fn kept(case: &str) -> String {
    format!("agent session bytes written before the {case} registry")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("${name} is not set"))
}

fn device() -> std::os::fd::OwnedFd {
    lu::open_device(Path::new(lu::DEVICE)).unwrap()
}

#[test]
#[ignore = "runs inside the VM"]
fn role_reg_write() {
    let case = env("LUO_REG_WRITE");
    let dev = device();
    let mut keep = Vec::new();
    if let Some(bytes) = damaged(&case) {
        let reg = lu::create_session(dev.as_fd(), b"luod/registry").unwrap();
        let token = if case == "notoken" { 5 } else { 0 };
        lu::preserve_fd(reg.as_fd(), memfd(&bytes).as_fd(), token).unwrap();
        keep.push(reg);
    }
    let s = lu::create_session(dev.as_fd(), b"luod/0/1").unwrap();
    lu::preserve_fd(s.as_fd(), memfd(&kept(&case)).as_fd(), 1).unwrap();
    keep.push(s);
    let kernel = std::fs::File::open("/boot/bzImage").unwrap();
    let initrd = std::fs::File::open("/tmp/next.img").unwrap();
    lu::kexec_file_load(kernel.as_fd(), Some(initrd.as_fd()), &env("LUO_REG_NEXT")).unwrap();
    println!("@@ WRITE {case}: kexec");
    std::io::stdout().flush().unwrap();
    let e = lu::reboot_kexec();
    println!("@@ WRITE {case}: reboot failed: {e:?}");
}

/// Whether luod kept the refused registry's bytes aside, as they were.
fn check_rejected(case: &str) {
    let saved = Path::new("/run/luod/registry.rejected");
    match (damaged(case), std::fs::read(saved)) {
        (Some(want), Ok(got)) if case != "notoken" => println!(
            "@@ CHECK {case}: rejected bytes {} ({} bytes)",
            if got == want { "equal" } else { "DIFFER" },
            got.len()
        ),
        (_, Ok(_)) => println!("@@ CHECK {case}: unexpected {}", saved.display()),
        (_, Err(e)) => println!("@@ CHECK {case}: no rejected bytes ({:?})", e.kind()),
    }
}

#[test]
#[ignore = "runs inside the VM"]
fn role_reg_check() {
    let case = env("LUO_REG_CASE");
    check_rejected(&case);
    // The agent-looking session is still in the kernel, its memfd whole.
    let dev = device();
    let s = lu::retrieve_session(dev.as_fd(), b"luod/0/1").unwrap();
    let text = read_text(lu::retrieve_fd(s.as_fd(), 1).unwrap());
    let whole = if text == kept(&case) {
        "whole"
    } else {
        "CHANGED"
    };
    println!("@@ CHECK {case}: luod/0/1 {whole}");
    lu::finish(s.as_fd()).unwrap();
}

/// The operator's way back after a refusal: a registry this luod reads
/// (here the one the damaged registry was made from), for `--registry`.
#[test]
#[ignore = "runs inside the VM"]
fn role_reg_fix() {
    let case = env("LUO_REG_CASE");
    check_rejected(&case);
    std::fs::write("/tmp/fixed.reg", registry().encode()).unwrap();
}

/// luod started with `--registry` restored the session the refused
/// registry named, its memfd whole.
#[test]
#[ignore = "runs inside the VM"]
fn role_reg_recovered() {
    let case = env("LUO_REG_CASE");
    let c = luo::Client::connect_to(socket()).unwrap();
    let names: Vec<String> = c
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .collect();
    println!("@@ RECOVERED {case}: sessions {names:?}");
    let s = c.retrieve_session("orphan").unwrap();
    let text = read_text(s.retrieve_fd(1).unwrap());
    let whole = if text == kept(&case) {
        "whole"
    } else {
        "CHANGED"
    };
    println!("@@ RECOVERED {case}: orphan {whole}");
    s.finish().unwrap();
}

fn kernel_sessions(c: &luo::Client) -> u64 {
    let kernel = std::fs::File::open("/boot/bzImage").unwrap();
    let plan = luo::KexecPlan {
        kernel: kernel.as_fd(),
        initrd: None,
        cmdline: CMDLINE,
        force: false,
    };
    c.preflight(&plan).unwrap().kernel_sessions.unwrap()
}

#[test]
#[ignore = "runs inside the VM"]
fn role_reg_abort() {
    let c = luo::Client::connect_to(socket()).unwrap();
    let keep = c.create_session("keep").unwrap();
    keep.preserve(1, memfd("kept by luod")).unwrap();
    let gone = c.create_session("gone").unwrap();
    gone.preserve(1, memfd("aborted one")).unwrap();
    gone.preserve(2, memfd("aborted two")).unwrap();
    let waiting = c.create_session("waiting").unwrap();
    waiting.preserve(1, memfd("discarded")).unwrap();
    waiting.handover().unwrap();
    println!("@@ ABORT kernel sessions: {}", kernel_sessions(&c));
    c.abort("gone", None).unwrap();
    let stale = gone.preserve(3, memfd("late")).unwrap_err().errno;
    println!("@@ ABORT open session: handle {stale:?}");
    println!("@@ ABORT kernel sessions: {}", kernel_sessions(&c));
    c.abort("waiting", None).unwrap();
    println!("@@ ABORT kernel sessions: {}", kernel_sessions(&c));
    let names: Vec<String> = c
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .collect();
    println!("@@ ABORT sessions left: {names:?}");
    keep.handover().unwrap();
}

#[test]
#[ignore = "runs inside the VM"]
fn role_reg_probe() {
    // luod's kernel sessions of the aborted sessions did not cross.
    let dev = device();
    for name in ["luod/0/2", "luod/0/3"] {
        let r = lu::retrieve_session(dev.as_fd(), name.as_bytes());
        println!("@@ PROBE {name}: {:?}", r.map(|_| "present"));
    }
}

#[test]
#[ignore = "runs inside the VM"]
fn role_reg_restored() {
    let c = luo::Client::connect_to(socket()).unwrap();
    let names: Vec<String> = c
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.name).into_owned())
        .collect();
    println!("@@ RESTORED sessions: {names:?}");
    let s = c.retrieve_session("keep").unwrap();
    println!(
        "@@ RESTORED keep: {:?}",
        read_text(s.retrieve_fd(1).unwrap())
    );
    s.finish().unwrap();
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run/luod
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
mount -t debugfs debugfs /sys/kernel/debug
export PATH=/bin
export LUOD_SOCKET=/run/luod/luod.sock
export RUST_BACKTRACE=1
stage=cold
for w in $(cat /proc/cmdline); do
    case $w in regcase=*) stage=${w#regcase=} ;; esac
done
echo "@@ boot $stage"
role() {
    vmtest --exact "registry::$1" --ignored --nocapture 2>&1 | grep -v '^$'
}
# The next boot's initramfs: this one, plus /boot (the kernel and the
# initramfs itself) so that the chain can go on.
next_initrd() {
    (cd / && find boot | cpio -o -H newc > /tmp/boot.cpio 2>/dev/null)
    # An uncompressed archive must start 4-byte aligned; zeros between
    # archives are skipped.
    s=$(stat -c %s /boot/initrd.img)
    { cat /boot/initrd.img; head -c $(( (4 - s % 4) % 4 )) /dev/zero; cat /tmp/boot.cpio; } > /tmp/next.img
}
write_and_kexec() {
    next_initrd
    LUO_REG_WRITE=$1 LUO_REG_NEXT="@CMDLINE@ regcase=$1" role role_reg_write
    poweroff -f
}
refused() {
    timeout 30 luod --backend kernel > /tmp/luod.out 2>&1
    echo "@@ LUOD $stage $1: exit $?"
    sed "s/^/@@ LUOD $stage $1: /" /tmp/luod.out | grep -v ' INFO '
}
start_luod() {
    luod --backend kernel "$@" >> /tmp/luod.log 2>&1 &
    LUOD_PID=$!
    i=0
    while ! luoctl status > /dev/null 2>&1; do
        i=$((i+1))
        if [ $i -gt 600 ]; then echo "@@ luod did not start"; cat /tmp/luod.log; poweroff -f; fi
        sleep 0.1
    done
}
case $stage in
cold)
    write_and_kexec corrupt
    ;;
corrupt|version|notoken)
    refused first
    refused again
    if [ $stage = version ]; then
        # The operator's way back: a registry this luod reads.
        LUO_REG_CASE=$stage role role_reg_fix
        start_luod --registry /tmp/fixed.reg
        LUO_REG_CASE=$stage role role_reg_recovered
        kill $LUOD_PID
        wait $LUOD_PID
        grep -o 'restored [0-9]* sessions with [0-9]* files\|the registry came from [^ ]*' /tmp/luod.log | sed "s/^/@@ LUOD $stage recovered: /"
        [ -e /run/luod/registry.refused ] || echo "@@ LUOD $stage: refusal settled"
        : > /tmp/luod.log
    else
        LUO_REG_CASE=$stage role role_reg_check
    fi
    case $stage in corrupt) next=version ;; version) next=notoken ;; *) next=none ;; esac
    write_and_kexec $next
    ;;
none)
    start_luod
    kill $LUOD_PID
    wait $LUOD_PID
    echo "@@ LUOD none: exit $?"
    grep 'WARN' /tmp/luod.log | sed 's/^/@@ LUOD none: /'
    LUO_REG_CASE=none role role_reg_check
    : > /tmp/luod.log
    start_luod
    role role_reg_abort
    next_initrd
    luoctl update --kexec --kernel /boot/bzImage --initrd /tmp/next.img --append "@CMDLINE@ regcase=aborted"
    echo "@@ kexec returned: exit $?"
    cat /tmp/luod.log
    poweroff -f
    ;;
aborted)
    role role_reg_probe
    start_luod
    role role_reg_restored
    grep -o 'restored [0-9]* sessions with [0-9]* files' /tmp/luod.log | sed 's/^/@@ LUOD aborted: /'
    echo "@@ chain done"
    poweroff -f
    ;;
esac
echo "@@ unknown stage $stage"
poweroff -f
"#;

#[test]
fn kernel_registry_refusals_in_qemu() {
    if std::env::var("LUO_VM_TEST").as_deref() == Ok("skip") {
        eprintln!("LUO_VM_TEST=skip: not booting the VM");
        return;
    }
    let missing: Vec<&str> = ["qemu-system-x86_64", "busybox", "cpio", "gzip", "ldd"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "the VM test needs {missing:?}: apt-get install -y qemu-system-x86 busybox-static cpio, or set LUO_VM_TEST=skip"
    );
    let (work, root) = vm_root("luo-vm-registry");
    let vm = boot(
        &work,
        &root,
        &INIT.replace("@CMDLINE@", CMDLINE),
        CMDLINE,
        TIMEOUT,
    );
    let log = &vm.log;
    let fail = |why: &str| -> ! { vm.fail(why) };
    let markers = markers(log);
    let has = |s: &str| markers.iter().any(|l| l == s);
    let has_part = |prefix: &str, part: &str| {
        markers
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(part))
    };
    let mut want: Vec<String> = Vec::new();
    for (case, said) in [
        ("corrupt", "the registry is corrupt: its checksum is"),
        (
            "version",
            "the registry is version 2; this luod reads version 1 only",
        ),
        (
            "notoken",
            "the kernel session luod/registry holds no registry (token 0: ENOENT",
        ),
    ] {
        want.push(format!("@@ boot {case}"));
        for start in ["first", "again"] {
            want.push(format!("@@ LUOD {case} {start}: exit 1"));
            let prefix = format!("@@ LUOD {case} {start}: luod: refusing to start: ");
            let said = if start == "first" {
                said
            } else {
                "a luod of this boot already refused the previous kernel's registry"
            };
            if !has_part(&prefix, said) {
                fail(&format!(
                    "luod's {start} start in the {case} boot did not say {said:?}"
                ));
            }
            if !has_part(&prefix, "other sessions") {
                fail(&format!("luod's {start} refusal in the {case} boot does not say what became of the other sessions"));
            }
        }
        if case != "notoken" {
            let n = damaged(case).unwrap().len();
            want.push(format!("@@ CHECK {case}: rejected bytes equal ({n} bytes)"));
            if !has_part(
                &format!("@@ LUOD {case} first: "),
                &format!("its {n} bytes are saved in /run/luod/registry.rejected"),
            ) {
                fail(&format!(
                    "luod did not say where the {case} registry's bytes are"
                ));
            }
        }
        if case == "version" {
            // Recovered by a luod given the registry in a file.
            want.extend(
                [
                    "@@ RECOVERED version: sessions [\"orphan\"]",
                    "@@ RECOVERED version: orphan whole",
                    "@@ LUOD version recovered: restored 1 sessions with 1 files",
                    "@@ LUOD version recovered: the registry came from /tmp/fixed.reg",
                    "@@ LUOD version: refusal settled",
                ]
                .map(String::from),
            );
        } else {
            want.push(format!("@@ CHECK {case}: luod/0/1 whole"));
        }
    }
    want.extend(
        [
            "@@ boot none",
            "@@ LUOD none: exit 0",
            "@@ CHECK none: no rejected bytes (NotFound)",
            "@@ CHECK none: luod/0/1 whole",
            "@@ ABORT kernel sessions: 3",
            "@@ ABORT open session: handle ESTALE",
            "@@ ABORT kernel sessions: 2",
            "@@ ABORT kernel sessions: 1",
            "@@ ABORT sessions left: [\"keep\"]",
            "@@ boot aborted",
            "@@ PROBE luod/0/2: Err(ENOENT)",
            "@@ PROBE luod/0/3: Err(ENOENT)",
            "@@ RESTORED sessions: [\"keep\"]",
            "@@ RESTORED keep: \"kept by luod\"",
            "@@ LUOD aborted: restored 1 sessions with 1 files",
            "@@ chain done",
        ]
        .map(String::from),
    );
    for m in &want {
        if !has(m) {
            fail(&format!("the serial log lacks {m:?}"));
        }
    }
    if !has_part("@@ LUOD none: ", "this boot is a live update (live update number 5) but the previous kernel left no luod/registry") {
        fail("luod did not warn about the previous kernel's sessions without a registry");
    }
    eprintln!("the registry VM chain makes 5 kexecs");
    vm.done(&work);
}
