//! Issue 11, cases 1-3: no backup is silently damaged by two jobs on one
//! archive (in one process, or with two caches), nor by an incremental under
//! another passphrase. Each test failed before its fix.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use dup::api::{self, ArchiveOptions, BackupMode, BackupOptions, Cancel};
use dup::progress::Event;

// ---------------------------------------------------------------------------
// Case 1: two jobs on one archive inside one process.

/// Two `api::backup` calls on the same URL in two threads, overlapping for
/// sure (each waits, at its first progress event, until the other has started
/// or ended): exactly one succeeds, the other gets `Kind::Locked` naming the
/// holder; the archive then holds one set, restores exactly, and the lock
/// is free again for the next job.
#[test]
fn two_backups_of_one_archive_in_one_process() {
    let t = World::new();
    let src = t.path().join("src");
    hard_tree(&src);
    let (arch, cache) = (t.path().join("arch"), t.path().join("cache"));
    let url = file_url(&arch);
    let started = [AtomicBool::new(false), AtomicBool::new(false)];
    let done = [AtomicBool::new(false), AtomicBool::new(false)];
    let results: Vec<dup::Result<api::BackupReport>> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..2)
            .map(|i| {
                let (started, done) = (&started, &done);
                let mut o = BackupOptions::new(&src, url.clone());
                o.archive.archive_dir = Some(cache.clone());
                o.volsize = 1 << 20;
                s.spawn(move || {
                    let progress = move |_: Event| {
                        if !started[i].swap(true, Ordering::SeqCst) {
                            let t0 = Instant::now();
                            while !(started[1 - i].load(Ordering::SeqCst) || done[1 - i].load(Ordering::SeqCst))
                                && t0.elapsed() < Duration::from_secs(20)
                            {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    };
                    let r = api::backup(&o, &progress, &Cancel::new());
                    done[i].store(true, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let locked: Vec<&dup::Error> =
        results.iter().filter_map(|r| r.as_ref().err()).filter(|e| e.kind == dup::Kind::Locked).collect();
    let shown: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(r) => format!("ok at {}", r.time),
            Err(e) => format!("{:?}: {}", e.kind, e.message),
        })
        .collect();
    assert!(ok == 1 && locked.len() == 1, "one job must succeed and the other be refused as locked: {shown:?}");
    assert!(locked[0].message.contains("this process"), "the message names the holder: {}", locked[0].message);

    // One set, nothing else on the backend, and it restores exactly.
    let files = names(&arch);
    assert_eq!(files.iter().filter(|n| n.contains(".manifest")).count(), 1, "{files:?}");
    assert!(files.iter().all(|n| n.starts_with("duplicity-full")), "{files:?}");
    let c = format!("--archive-dir {}", q(&cache));
    let out = t.path().join("out");
    sh_ok(t.path(), &format!("dup-get {c} {} {}", q(&url), q(&out)));
    assert_same_tree(&src, &out);
    sh_ok(t.path(), &format!("dup-get {c} --verify {} {}", q(&src), q(&url)));

    // The refused job left the holder's lock alone, and it is free now: a
    // process can take it, then a job of this process again.
    sh_ok(t.path(), &format!("dup-sync {c} {}", q(&url)));
    let mut o = BackupOptions::new(&src, url.clone());
    o.archive.archive_dir = Some(cache.clone());
    o.mode = BackupMode::Incremental;
    api::backup(&o, &dup::progress::Silent, &Cancel::new()).unwrap();
}

// ---------------------------------------------------------------------------
// Case 2: two runs with different caches racing on one archive.

/// Where the race runs: file:// or the loopback S3 server.
struct Target {
    name: &'static str,
    url: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn file(dir: &Path) -> Target {
        Target { name: "file", url: file_url(&dir.join("arch")), env: Vec::new() }
    }

    /// The S3 server of scripts/test-servers, or None (with a note).
    fn s3(what: &str) -> Option<Target> {
        let found = (|| {
            Some(Target {
                name: "s3",
                url: format!("s3://{}/{}", var("DUP_TEST_S3_BUCKET")?, fresh(what)),
                env: vec![
                    ("DUP_S3_ENDPOINT".into(), var("DUP_TEST_S3_ENDPOINT")?),
                    ("AWS_ACCESS_KEY_ID".into(), var("DUP_TEST_S3_ACCESS_KEY")?),
                    ("AWS_SECRET_ACCESS_KEY".into(), var("DUP_TEST_S3_SECRET_KEY")?),
                ],
            })
        })();
        if found.is_none() {
            no_servers("trust_lock s3");
        }
        found
    }

    fn command(&self, cwd: &Path, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("set -o pipefail; {script}"))
            .current_dir(cwd)
            .env("PATH", bin_path())
            .env("LANG", "C.UTF-8")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    fn sh(&self, cwd: &Path, script: &str) -> Output {
        self.command(cwd, script).output().unwrap()
    }

    fn sh_ok(&self, cwd: &Path, script: &str) -> Output {
        let out = self.sh(cwd, script);
        assert!(
            out.status.success(),
            "{}: `{script}` failed ({:?}):\n{}",
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// One host of the race: its source tree and its own cache.
struct Host {
    src: PathBuf,
    cache: PathBuf,
}

impl Host {
    fn new(dir: &Path, name: &str, seed: u64) -> Host {
        let src = dir.join(format!("src-{name}"));
        fs::create_dir_all(&src).unwrap();
        for i in 0..4 {
            fs::write(src.join(format!("f{i}")), random_bytes(seed * 10 + i, 150_000 + (seed * 7919) as usize))
                .unwrap();
        }
        fs::write(src.join("host"), name).unwrap();
        Host { src, cache: dir.join(format!("cache-{name}")) }
    }

    fn c(&self) -> String {
        format!("--archive-dir {}", q(&self.cache))
    }

    /// A backup pipeline of this host (unencrypted); an incremental when
    /// `inc`; `stall` inserts a stage before dup-put.
    fn pipeline(&self, url: &str, inc: bool, time: &str, stall: &str) -> String {
        let (c, u) = (self.c(), q(url));
        let basis = if inc { format!("--basis <(dup-sig {c} --archive {u})") } else { String::new() };
        format!(
            "dup-scan {} | dup-delta {basis} | dup-pack --no-encryption --json {time} {stall} | dup-put {c} {u}",
            q(&self.src)
        )
    }
}

/// Starts `a`'s backup stopped just before its manifest (its volume and
/// signature stored), runs `b`'s backup to its end, then lets `a` go on.
/// Returns the exit codes of a and b.
fn race(t: &Target, dir: &Path, a: &Host, b: &Host, inc: bool, time: &str) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::CommandExt;
    let flag = dir.join("go");
    let _ = fs::remove_file(&flag);
    let stall = format!(
        "| awk '/\"role\":\"manifest\"/{{system(\"while [ ! -e {} ]; do sleep 0.05; done\")}} {{print; fflush()}}'",
        flag.display()
    );
    let mut child: Child = t
        .command(dir, &a.pipeline(&t.url, inc, time, &stall))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let journal = a.cache.join(dup::io::cache::backup_name(&t.url)).join(dup::io::cache::journal::JOURNAL);
    // Lines of this set (an earlier refused set's may still be there).
    let this_set = if inc { ".to." } else { "duplicity-full" };
    let t0 = Instant::now();
    while !fs::read_to_string(&journal).is_ok_and(|j| j.lines().filter(|l| l.contains(this_set)).count() >= 2) {
        if t0.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            kill_group(&mut child);
            panic!("{}: the first run did not store its volume and signature", t.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The second run's set has another time unless both are given one.
    if time.is_empty() {
        std::thread::sleep(Duration::from_millis(1100));
    }
    let ob = t.sh(dir, &b.pipeline(&t.url, inc, time, ""));
    fs::write(&flag, b"").unwrap();
    let oa = child.wait_with_output().unwrap();
    eprintln!(
        "{}: first run {:?}: {}\n{}: second run {:?}: {}",
        t.name,
        oa.status.code(),
        String::from_utf8_lossy(&oa.stderr).trim(),
        t.name,
        ob.status.code(),
        String::from_utf8_lossy(&ob.stderr).trim()
    );
    (oa.status.code(), ob.status.code())
}

/// After a race: exactly one run succeeded and the other exited 11; a fresh
/// cache sees `sets` sets and the restore is exactly the winner's tree.
fn check_race(t: &Target, dir: &Path, codes: (Option<i32>, Option<i32>), hosts: [&Host; 2], sets: usize, round: &str) {
    let (winner, loser) = match codes {
        (Some(0), Some(11)) => (hosts[0], hosts[1]),
        (Some(11), Some(0)) => (hosts[1], hosts[0]),
        other => panic!("{}: {round}: one run must publish and the other exit 11, got {other:?}", t.name),
    };
    let fresh = dir.join(format!("fresh-{round}"));
    let c = format!("--archive-dir {}", q(&fresh));
    let u = q(&t.url);
    let table = t.sh_ok(dir, &format!("dup-sync {c} {u} && dup-ls --table {c} {u}"));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert_eq!(table.lines().count(), sets, "{}: {round}: {table}", t.name);
    let out = dir.join(format!("out-{round}"));
    t.sh_ok(dir, &format!("dup-get {c} {u} {}", q(&out)));
    assert_same_tree(&winner.src, &out);
    // The refused run left no copy of its own set in its cache: synced, it
    // holds what a fresh cache holds.
    t.sh_ok(dir, &format!("dup-sync {} {u}", loser.c()));
    let name = dup::io::cache::backup_name(&t.url);
    assert_eq!(metadata(&loser.cache.join(&name)), metadata(&fresh.join(&name)), "{}: {round}", t.name);
}

/// The manifests and signatures of a cache directory, with their content.
fn metadata(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".manifest") || n.ends_with(".sigtar.gz"))
        .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
        .collect();
    v.sort();
    v
}

fn two_caches_race(t: &Target, dir: &Path) {
    let a = Host::new(dir, "a", 1);
    let b = Host::new(dir, "b", 2);
    // Two full backups with the same time: the same set name.
    let codes = race(t, dir, &a, &b, false, "--time 1700000000");
    check_race(t, dir, codes, [&a, &b], 1, "full");

    // Both caches up to date, then two incrementals on the same basis, the
    // second published while the first is about to publish: a fork.
    for h in [&a, &b] {
        t.sh_ok(dir, &format!("dup-sync {} {}", h.c(), q(&t.url)));
    }
    for (h, seed) in [(&a, 11), (&b, 12)] {
        fs::write(h.src.join("f1"), random_bytes(seed, 99_000)).unwrap();
        fs::write(h.src.join("new"), format!("inc {seed}")).unwrap();
        // A change at another second than the full's reading of the file.
        set_mtime(&h.src.join("f1"), 1_800_000_000 + seed as i64);
    }
    let codes = race(t, dir, &a, &b, true, "");
    assert_eq!(codes, (Some(11), Some(0)), "{}: the run whose basis is no longer the chain's end is refused", t.name);
    check_race(t, dir, codes, [&a, &b], 2, "inc");
}

#[test]
fn two_caches_racing_on_file() {
    let t = World::new();
    two_caches_race(&Target::file(t.path()), t.path());
}

#[test]
fn two_caches_racing_on_s3() {
    let Some(target) = Target::s3("race") else { return };
    let t = World::new();
    two_caches_race(&target, t.path());
}

// ---------------------------------------------------------------------------
// Case 3: an incremental under another passphrase.

/// The README's pipeline, with PASSPHRASE as given: a full, then an
/// incremental under another passphrase is refused (nothing published),
/// also when only dup-pack has the other one; the right one goes through and
/// restores exactly.
#[test]
fn incremental_under_another_passphrase_is_refused_by_the_pipeline() {
    let t = World::new();
    let src = t.path().join("src");
    hard_tree(&src);
    let arch = t.path().join("arch");
    let (u, c, s) = (q(file_url(&arch)), format!("--archive-dir {}", q(t.path().join("cache"))), q(&src));
    let full = format!("dup-scan {s} | dup-delta | dup-pack --volsize 1 | dup-put {c} {u}");
    sh_ok(t.path(), &format!("export PASSPHRASE=one; {full}"));
    let before = names(&arch);
    mutate(&src, 1);
    let inc = |sig_env: &str, pack: &str| {
        format!(
            "dup-scan {s} | dup-delta --basis <({sig_env} dup-sig {c} --archive {u}) | dup-pack --volsize 1 {pack} \
             | dup-put {c} {u}; echo \"codes ${{PIPESTATUS[*]}}\""
        )
    };
    // The README's incremental, under another PASSPHRASE.
    let out = sh(t.path(), &format!("PASSPHRASE=two; export PASSPHRASE; {}", inc("", "")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("codes 0 0 0 0"), "an incremental under another passphrase was accepted:\n{text}");
    assert!(text.contains("passphrase"), "the error says why:\n{text}");
    assert_eq!(names(&arch), before, "nothing published");
    // dup-sig with the chain's passphrase, dup-pack with another one.
    fs::write(t.path().join("two"), "two\n").unwrap();
    let out = sh(t.path(), &inc("PASSPHRASE=one", &format!("--passphrase-file {}", q(t.path().join("two")))));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("codes 0 0 12 "), "dup-pack refuses a passphrase the chain was not made with:\n{text}");
    assert_eq!(names(&arch), before, "nothing published");
    // The chain's passphrase: accepted, and the chain restores.
    let out = sh_ok(t.path(), &format!("PASSPHRASE=one; export PASSPHRASE; {}", inc("", "")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("codes 0 0 0 0"));
    let dest = t.path().join("out");
    sh_ok(t.path(), &format!("PASSPHRASE=one dup-get {c} {u} {}", q(&dest)));
    assert_same_tree(&src, &dest);
}

/// `api::backup`: an incremental with other keys than the chain's is
/// refused with `Kind::Crypto`, nothing published; with the chain's keys it
/// goes through and restores exactly.
#[test]
fn incremental_under_another_passphrase_is_refused_by_the_api() {
    let t = World::new();
    let src = t.path().join("src");
    hard_tree(&src);
    let arch = t.path().join("arch");
    let cache = t.path().join("cache");
    let opts = |pass: &str| {
        let mut o = BackupOptions::new(&src, file_url(&arch));
        o.archive.archive_dir = Some(cache.clone());
        o.volsize = 1 << 20;
        let keys = dup::crypto::Keys::with_passphrase(pass.as_bytes().to_vec());
        o.archive.keys = Some(keys);
        o
    };
    assert!(api::backup(&opts("one"), &dup::progress::Silent, &Cancel::new()).unwrap().full);
    let before = names(&arch);
    mutate(&src, 1);
    std::thread::sleep(Duration::from_millis(1100));
    let e =
        api::backup(&opts("two"), &dup::progress::Silent, &Cancel::new()).expect_err("another passphrase is refused");
    assert_eq!(e.kind, dup::Kind::Crypto, "{}", e.message);
    assert_eq!(names(&arch), before, "nothing published");
    let a = ArchiveOptions { url: file_url(&arch), archive_dir: Some(cache.clone()), name: None, keys: None };
    assert_eq!(api::snapshots(&a, &dup::progress::Silent, &Cancel::new()).unwrap().len(), 1);
    let r = api::backup(&opts("one"), &dup::progress::Silent, &Cancel::new()).unwrap();
    assert!(!r.full);
    let dest = t.path().join("out");
    let c = format!("--archive-dir {}", q(&cache));
    sh_ok(t.path(), &format!("PASSPHRASE=one dup-get {c} {} {}", q(file_url(&arch)), q(&dest)));
    assert_same_tree(&src, &dest);
}
