//! examples/timedrive.rs (Time Drive's backend class on `dup::api`) run as
//! a program against a file:// archive and over S3 on loopback.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs the example (built by cargo if needed) on `url` with `env`; its
/// standard output.
fn timedrive(work: &Path, url: &str, env: &[(String, String)]) -> String {
    let src = work.join("src");
    hard_tree(&src);
    std::fs::write(src.join("timedrive.txt"), b"first version\n").unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["run", "-q", "--example", "timedrive", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--")
        .args([url, src.to_str().unwrap(), work.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The example's steps, checked from its output and the restored file.
fn check(work: &Path, out: &str) {
    let line = |p: &str| out.lines().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no '{p}' in\n{out}"));
    let times: Vec<i64> = line("backups ").split(' ').skip(1).take(2).map(|t| t.parse().unwrap()).collect();
    assert_eq!(line("snapshots "), format!("snapshots {:?}", times), "{out}");
    assert!(out.contains("item dir dir1 ") && out.contains("item file timedrive.txt "), "{out}");
    assert!(!out.contains("item file dir1/"), "one directory's items only:\n{out}");
    assert_eq!(std::fs::read(work.join("restored.txt")).unwrap(), b"first version\n");
    let coalesced = line("coalesced ");
    let full: i64 = coalesced.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(full > times[1] && coalesced.ends_with(&format!("snapshots [{full}]")), "{out}");
    let deleted: usize = line("deleted ").split(' ').nth(1).unwrap().parse().unwrap();
    assert!(deleted >= 3, "the coalesced full's manifest, volume and signatures: {out}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("snapshots [") && !last.contains(&full.to_string()) && !last.contains(','), "{out}");
}

#[test]
fn timedrive_on_a_file_archive() {
    let t = World::new();
    let out = timedrive(t.path(), &t.url("arch"), &[]);
    assert!(out.starts_with("connection not_found: "), "no archive directory yet: {out}");
    check(t.path(), &out);
}

#[test]
fn timedrive_over_s3() {
    let (Some(bucket), Some(endpoint), Some(key), Some(secret)) = (
        var("DUP_TEST_S3_BUCKET"),
        var("DUP_TEST_S3_ENDPOINT"),
        var("DUP_TEST_S3_ACCESS_KEY"),
        var("DUP_TEST_S3_SECRET_KEY"),
    ) else {
        return no_servers("api_example::timedrive_over_s3");
    };
    let t = World::new();
    let env = [
        ("DUP_S3_ENDPOINT".to_string(), endpoint),
        ("AWS_ACCESS_KEY_ID".to_string(), key),
        ("AWS_SECRET_ACCESS_KEY".to_string(), secret),
    ];
    let url = format!("s3://{bucket}/{}", fresh("timedrive"));
    let out = timedrive(t.path(), &url, &env);
    assert!(out.starts_with("connection ok\n"), "{out}");
    check(t.path(), &out);
}
