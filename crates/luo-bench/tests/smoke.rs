//! The suite at toy sizes: every section runs end to end and reports
//! positive figures. Timings are not checked; benchmarks are not tests.

use std::path::PathBuf;
use std::process::Command;

use luo_proto::Value;

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for k in path {
        cur = cur
            .get(k)
            .unwrap_or_else(|| panic!("no {path:?} in the JSON (missing {k:?})"));
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {cur:?}"))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array {key:?} in the JSON"))
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[test]
fn the_whole_suite_runs_at_toy_sizes_and_reports_every_section() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_luo-bench"));
    let dir = exe.parent().unwrap();
    let (luod, demo) = (dir.join("luod"), dir.join("examples/service-restart"));
    if !luod.is_file() || !demo.is_file() {
        // `cargo test --workspace` and nextest build both; `-p luo-bench` alone does not.
        eprintln!(
            "skipped: {} or {} is not built (run the workspace's tests)",
            luod.display(),
            demo.display()
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("luo-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let (json, svg) = (out.join("results.json"), out.join("blackout.svg"));
    let memcached = on_path("memcached");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "all",
        "--quick",
        "--fds",
        "50",
        "--sizes",
        "8M",
        "--index-sizes",
        "50,100",
    ])
    .args([
        "--restarts",
        "1",
        "--rounds",
        "1",
        "--reps",
        "1",
        "--no-install",
    ])
    .arg("--json")
    .arg(&json)
    .arg("--svg")
    .arg(&svg);
    if !memcached {
        eprintln!("memcached is not installed: running without that baseline (--no-memcached)");
        cmd.arg("--no-memcached");
    }
    let run = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("fd round trip, 50 memfds"), "{stdout}");
    assert!(
        stdout.contains("fd round trip, 50 memfds, vs the floor agent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("blackout at 8 MiB, vs reload from tmpfs"),
        "{stdout}"
    );

    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(!arr(&v, "summary").is_empty());

    let agent = v.get("agent").unwrap();
    assert!(num(agent, &["startup", "luod_ms"]) > 0.0);
    for m in arr(agent, "memory") {
        assert_eq!(num(m, &["fds"]), 50.0);
        assert!(num(m, &["rss_after_bytes"]) > 0.0);
    }

    let fds = arr(&v, "fd_throughput");
    let kinds: Vec<&str> = fds
        .iter()
        .map(|t| t.get("kind").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["memfd", "socket", "eventfd"]);
    for t in fds {
        assert!(num(t, &["luo_over_raw"]) > 0.0, "{t:?}");
        assert!(
            num(t, &["luo_ns_per_fd", "preserve", "wall"]) > 0.0,
            "{t:?}"
        );
        // The floor agent ran the same round trip (each round checks that
        // the files that came back are the ones sent), with a mirror as
        // luod has its keeper.
        assert!(num(t, &["floor_over_raw"]) > 0.0, "{t:?}");
        assert!(num(t, &["luo_over_floor"]) > 0.0, "{t:?}");
        assert!(
            num(t, &["floor_ns_per_fd", "preserve", "agent_cpu"]) > 0.0,
            "{t:?}"
        );
        assert_eq!(t.get("floor_mirror"), Some(&Value::Bool(true)), "{t:?}");
    }

    let rows = arr(v.get("identity").unwrap(), "per_insert");
    assert_eq!(rows.len(), 4, "2 sizes x eventfd, memfd");
    for r in rows {
        assert!(num(r, &["linear_over_luo"]) > 0.0, "{r:?}");
    }

    let b = arr(&v, "blackout");
    assert_eq!(b.len(), 1);
    assert_eq!(num(&b[0], &["bytes"]), (8u64 << 20) as f64);
    assert!(num(&b[0], &["reload_over_luo"]) > 0.0);
    assert_eq!(num(&b[0], &["luo", "requests_failed"]), 0.0);
    assert_eq!(num(&b[0], &["reload", "requests_failed"]), 0.0);
    if memcached {
        assert!(num(&b[0], &["memcached_over_luo"]) > 0.0);
        assert_eq!(
            num(&b[0], &["memcached", "items"]),
            (8u64 << 20) as f64 / 64.0
        );
    } else {
        assert!(b[0].get("memcached").unwrap().is_null());
    }

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains(">luo<"), "{plot}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_short_soak_survives_crashes_upgrades_and_updates_and_loses_nothing() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_luo-bench"));
    let luod = exe.parent().unwrap().join("luod");
    if !luod.is_file() {
        eprintln!("skipped: {} is not built", luod.display());
        return;
    }
    if luo_sys::geteuid() != 0 {
        eprintln!("skipped: the soak runs as root (its clients switch uid)");
        return;
    }
    let json = std::env::temp_dir().join(format!("luo-bench-soak-{}.json", std::process::id()));
    let run = Command::new(&exe)
        .args(["soak", "--minutes", "0.33", "--seed", "7", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("files lost        0"), "{stdout}");
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v.get("ok"), Some(&Value::Bool(true)));
    let s = v.get("summary").unwrap();
    assert_eq!(num(s, &["files_lost"]), 0.0);
    assert!(num(s, &["files_checked"]) > 0.0, "{s}");
    assert!(num(s, &["checks"]) >= 2.0, "{s}");
    // The seeded schedule's events ran (each cycle has one, or a pause).
    let events = ["upgrades", "luod_killed", "keeper_killed", "updates"]
        .iter()
        .map(|k| num(s, &[k]))
        .sum::<f64>();
    assert!(events > 0.0, "{s}");
    // Every client finished what it handed over: the keeper is back to
    // what an empty one holds.
    assert_eq!(num(s, &["keeper_fds_end"]), num(s, &["keeper_fds_empty"]));
    let _ = std::fs::remove_file(&json);
}

/// luod and libluo_preload.so next to luo-bench, or `None` (with a note)
/// when this build did not make them.
fn luod_and_preload() -> Option<(PathBuf, PathBuf)> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_luo-bench"));
    let dir = exe.parent().unwrap();
    let (luod, lib) = (dir.join("luod"), dir.join("libluo_preload.so"));
    for p in [&luod, &lib] {
        if !p.is_file() {
            eprintln!(
                "skipped: {} is not built (cargo build -p luod -p luo-preload)",
                p.display()
            );
            return None;
        }
    }
    Some((luod, lib))
}

fn json_of(args: &[&str], tag: &str) -> Value {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_luo-bench"));
    let json = std::env::temp_dir().join(format!("luo-bench-{tag}-{}.json", std::process::id()));
    let run = Command::new(&exe)
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    v
}

#[test]
fn requests_runs_the_floors_the_native_client_and_the_preload_library() {
    let Some((luod, lib)) = luod_and_preload() else {
        return;
    };
    let v = json_of(
        &[
            "requests",
            "--files",
            "40",
            "--at",
            "10,40",
            "--window",
            "5",
            "--rounds",
            "1",
            "--luod",
            luod.to_str().unwrap(),
            "--preload",
            lib.to_str().unwrap(),
        ],
        "requests",
    );
    let rows = arr(&v, "rows");
    let ways: Vec<(&str, Option<bool>)> = rows
        .iter()
        .map(|r| {
            (
                r.get("way").unwrap().as_str().unwrap(),
                r.get("keeper").unwrap().as_bool(),
            )
        })
        .collect();
    assert_eq!(
        ways,
        [
            ("bare SOCK_SEQPACKET", None),
            ("SOCK_SEQPACKET + checks", None),
            ("SOCK_SEQPACKET + mirror", None),
            ("native client", Some(true)),
            ("libluo_preload.so", Some(true)),
            ("native client", Some(false)),
            ("libluo_preload.so", Some(false)),
        ]
    );
    for r in rows {
        let at = arr(r, "at");
        assert_eq!(at.len(), 2, "{r:?}");
        let way = r.get("way").unwrap().as_str().unwrap();
        // The bare and the checking floor run in both keeper settings'
        // rounds.
        let rounds = if way == "bare SOCK_SEQPACKET" || way == "SOCK_SEQPACKET + checks" {
            2.0
        } else {
            1.0
        };
        for a in at {
            assert!(num(a, &["request", "median_ns"]) > 0.0, "{r:?}");
            assert_eq!(num(a, &["request", "samples"]), 5.0 * rounds);
            // Each luod way is given to the checking floor.
            let luod_way = r.get("keeper").unwrap().as_bool().is_some();
            assert_eq!(a.get("to_checked_floor").is_some(), luod_way, "{r:?}");
        }
        assert!(num(r, &["request_at_million_ns"]) > 0.0, "{r:?}");
    }
}

#[test]
fn proxy_hands_established_connections_over_every_way() {
    let Some((luod, _)) = luod_and_preload() else {
        return;
    };
    let v = json_of(
        &[
            "proxy",
            "--connections",
            "300",
            "--rounds",
            "1",
            "--luod",
            luod.to_str().unwrap(),
        ],
        "proxy",
    );
    assert_eq!(num(&v, &["connections"]), 300.0);
    let ways = arr(&v, "ways");
    let names: Vec<&str> = ways
        .iter()
        .map(|w| w.get("way").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(names, ["direct", "floor", "luod"]);
    for w in ways {
        assert!(num(w, &["blackout", "median_ns"]) > 0.0, "{w:?}");
    }
    assert!(num(&v, &["ratio"]) > 0.0);
    assert!(num(&v, &["floor_over_direct"]) > 0.0);
    assert!(num(&v, &["luod_over_floor"]) > 0.0);
}
