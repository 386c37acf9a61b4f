//! One conformance suite, run unchanged against every backend: file://, and
//! S3 (s3s-fs), SFTP (sshd) and WebDAV (nginx) on the loopback servers that
//! `scripts/test-servers` starts (a backend whose server is not running is
//! skipped with a note). Each backend gets: a full and an incremental
//! backup, listing the sets and the files at each time, restoring one file,
//! remove-older-than, cleanup of an unfinished set, and an upload killed
//! with SIGKILL and run again (resumed: the files already stored are not
//! sent again, and no set is ever visible without its manifest).
//!
//! Then two outages of an S3 server of the test's own (s3s-fs started on a
//! free port): one stopped for a few seconds mid-upload, which the retries
//! ride out; one that stays down, which ends with exit code 1 and a message
//! naming the backend within the time the settings allow.
//!
//! The suite runs in a child process of this test binary (`suite_child`)
//! that has the backend's environment (ssh is found through PATH and HOME).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    World, assert_same_tree, bin_dir, fresh, hard_tree, interrupt_after_three_volumes, no_servers, q, random_bytes, sh,
    sh_ok, skip, var, with_closed_port,
};
use dup::io::storage::{Storage, TEMP_PREFIX};

/// A backend under test: a fresh base URL, the environment dup needs for
/// it, and the directory where its server keeps the files (to check that
/// resumed files were not written again).
struct Backend {
    name: &'static str,
    url: String,
    env: Vec<(String, String)>,
    local: PathBuf,
    /// Keeps a file:// backend's directory.
    _tmp: Option<World>,
}

impl Backend {
    /// The backend's settings, or None (with a note) when its server is not running.
    fn get(name: &'static str) -> Option<Backend> {
        let dir = var("DUP_TEST_SERVERS_DIR").map(PathBuf::from);
        let prefix = fresh("conf");
        let found = (|| match name {
            "file" => {
                let tmp = World::new();
                let local = tmp.path().join(&prefix);
                Some(Backend { name, url: format!("file://{}", local.display()), env: vec![], local, _tmp: Some(tmp) })
            }
            "s3" => {
                let bucket = var("DUP_TEST_S3_BUCKET")?;
                Some(Backend {
                    name,
                    url: format!("s3://{bucket}/{prefix}"),
                    env: vec![
                        ("DUP_S3_ENDPOINT".into(), var("DUP_TEST_S3_ENDPOINT")?),
                        ("AWS_ACCESS_KEY_ID".into(), var("DUP_TEST_S3_ACCESS_KEY")?),
                        ("AWS_SECRET_ACCESS_KEY".into(), var("DUP_TEST_S3_SECRET_KEY")?),
                    ],
                    local: dir?.join("s3").join(bucket).join(&prefix),
                    _tmp: None,
                })
            }
            "sftp" => {
                let base = var("DUP_TEST_SFTP_URL")?;
                // sftp://user@host:port//abs/path: the server's files are at /abs/path.
                let path = base.split_once("//").map(|(_, rest)| rest)?.split_once('/').map(|(_, p)| p)?;
                Some(Backend {
                    name,
                    url: format!("{base}/{prefix}"),
                    env: vec![
                        ("PATH".into(), format!("{}:{}", var("DUP_TEST_SSH_BIN")?, var("PATH").unwrap_or_default())),
                        ("HOME".into(), var("DUP_TEST_SSH_HOME")?),
                        ("DUP_SSH_KEY".into(), var("DUP_TEST_SSH_KEY")?),
                    ],
                    local: Path::new("/").join(path.trim_start_matches('/')).join(&prefix),
                    _tmp: None,
                })
            }
            _ => {
                let base = var("DUP_TEST_WEBDAV_URL")?;
                let path = base.split_once("//").map(|(_, rest)| rest)?.split_once('/').map(|(_, p)| p)?.to_string();
                Some(Backend {
                    name,
                    url: format!("{base}/{prefix}"),
                    env: vec![("FTP_PASSWORD".into(), var("DUP_TEST_WEBDAV_PASSWORD")?)],
                    local: dir?.join("dav").join(path).join(&prefix),
                    _tmp: None,
                })
            }
        })();
        if found.is_none() {
            no_servers(&format!("conformance::{name}"));
        }
        found
    }

    /// Runs the suite in a child process with this backend's environment.
    fn run_suite(&self) {
        let t = Instant::now();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "conformance::suite_child", "--nocapture", "--test-threads", "1"])
            .env("DUP_CONF_BACKEND", self.name)
            .env("DUP_CONF_URL", &self.url)
            .env("DUP_CONF_LOCAL", &self.local)
            .env("DUP_TIMEOUT", "20")
            .env("DUP_NUM_RETRIES", "2");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("suite done"), "{}: the suite failed:\n{text}", self.name);
        for l in text.lines().filter(|l| l.starts_with(&format!("{}:", self.name))) {
            eprintln!("{l}");
        }
        eprintln!("{}: suite {:.2} s", self.name, t.elapsed().as_secs_f64());
    }
}

#[test]
fn file() {
    Backend::get("file").unwrap().run_suite();
}

#[test]
fn s3() {
    let Some(b) = Backend::get("s3") else { return };
    b.run_suite();
}

#[test]
fn sftp() {
    let Some(b) = Backend::get("sftp") else { return };
    b.run_suite();
}

#[test]
fn webdav() {
    let Some(b) = Backend::get("webdav") else { return };
    b.run_suite();
}

/// Makes the server-side directory `dir`, owned as its parent is (the
/// server's user writes in it), so that a connection check finds it.
fn make_dir_like_parent(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let parent = fs::metadata(dir.parent().unwrap()).unwrap();
    std::os::unix::fs::chown(dir, Some(parent.uid()), Some(parent.gid())).unwrap();
}

/// `dup-ls --check` on every backend there is: the check record on
/// standard output, and the exit code of each answer (no retries here).
#[test]
fn check_answers_with_exit_codes() {
    // URL, environment, the answer, the exit code.
    type Case = (String, Vec<(String, String)>, &'static str, i32);
    let mut cases: Vec<Case> = Vec::new();
    let tmp = World::new();
    std::fs::create_dir(tmp.path().join("a")).unwrap();
    cases.push((format!("file://{}", tmp.path().join("a").display()), vec![], "ok", 0));
    // A directory that is not there is not made by the check (issue 11, case 6).
    cases.push((format!("file://{}", tmp.path().join("missing").display()), vec![], "not_found", 17));
    let with = |env: &[(String, String)], k: &str, v: &str| -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = env.iter().filter(|(key, _)| key != k).cloned().collect();
        e.push((k.into(), v.into()));
        e
    };
    if let Some(b) = Backend::get("s3") {
        let dead = with_closed_port(&var("DUP_TEST_S3_ENDPOINT").unwrap());
        cases.push((b.url.clone(), b.env.clone(), "ok", 0));
        cases.push((b.url.clone(), with(&b.env, "AWS_SECRET_ACCESS_KEY", "wrong"), "auth_refused", 15));
        cases.push((b.url.clone(), with(&b.env, "DUP_S3_ENDPOINT", &dead), "unreachable", 14));
        cases.push(("s3://no-such-bucket/x".into(), b.env.clone(), "not_found", 17));
    }
    if let Some(b) = Backend::get("sftp") {
        make_dir_like_parent(&b.local);
        cases.push((b.url.clone(), b.env.clone(), "ok", 0));
        let other = var("DUP_TEST_SSH_OTHER_KEY").unwrap();
        cases.push((b.url.clone(), with(&b.env, "DUP_SSH_KEY", &other), "auth_refused", 15));
        cases.push((with_closed_port(&b.url), b.env.clone(), "unreachable", 14));
    }
    if let Some(b) = Backend::get("webdav") {
        make_dir_like_parent(&b.local);
        cases.push((b.url.clone(), b.env.clone(), "ok", 0));
        cases.push((b.url.clone(), with(&b.env, "FTP_PASSWORD", "wrong"), "auth_refused", 15));
        cases.push((var("DUP_TEST_WEBDAV_RO_URL").unwrap(), b.env.clone(), "permission_denied", 16));
        cases.push((with_closed_port(&b.url), b.env.clone(), "unreachable", 14));
    }
    for (url, env, status, code) in &cases {
        let t = Instant::now();
        let out = Command::new(bin_dir().join("dup-ls"))
            .args(["--check", "--json", url])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("DUP_NUM_RETRIES", "0")
            .env("DUP_TIMEOUT", "5")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let checks = json_lines(&out.stdout, "check");
        assert_eq!(checks.len(), 1, "{url}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(checks[0]["status"], *status, "{url}: {checks:?} {err}");
        assert_eq!(out.status.code(), Some(*code), "{url}: {err}");
        if *code == 0 {
            assert!(err.is_empty(), "{url}: {err}");
        } else {
            let shown = dup::io::storage::redact(url);
            assert!(err.contains(&format!("dup-ls: {shown}: ")) && err.contains("dup-ls: hint: "), "{url}: {err}");
            assert!(checks[0]["hint"].is_string(), "{checks:?}");
        }
        eprintln!("check {status} ({code}) {url}: {:.2} s", t.elapsed().as_secs_f64());
    }
    assert!(!tmp.path().join("missing").exists(), "the check made the missing directory");
    let table = Command::new(bin_dir().join("dup-ls")).args(["--check", "--table", &cases[0].0]).output().unwrap();
    let line = String::from_utf8_lossy(&table.stdout);
    assert!(line.starts_with("check     ok ") && line.contains("(0 files, no backup)"), "{line}");
}

/// A refusal (WebDAV's 403 on a read-only path) is answered at once with the
/// default retry settings: retrying cannot change it, so it is not retried.
#[test]
fn permission_denied_is_not_retried() {
    let (Some(url), Some(b)) = (var("DUP_TEST_WEBDAV_RO_URL"), Backend::get("webdav")) else { return };
    let t = Instant::now();
    let out = Command::new(bin_dir().join("dup-ls"))
        .args(["--check", "--json", &url])
        .envs(b.env.iter().map(|(k, v)| (k, v)))
        .env_remove("DUP_NUM_RETRIES")
        .env_remove("DUP_TIMEOUT")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let checks = json_lines(&out.stdout, "check");
    assert_eq!(checks.len(), 1, "{url}: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(checks[0]["status"], "permission_denied", "{url}: {checks:?} {err}");
    assert_eq!(out.status.code(), Some(16), "{url}: {err}");
    assert!(!err.contains("retry"), "{url}: a refusal was retried: {err}");
    assert!(took < Duration::from_secs(10), "{url}: answered in {:.1} s: {err}", took.as_secs_f64());
}

/// Not a test on its own: the suite, in the process `run_suite` starts.
#[test]
fn suite_child() {
    let (Some(name), Some(base)) = (var("DUP_CONF_BACKEND"), var("DUP_CONF_URL")) else { return };
    let local = PathBuf::from(var("DUP_CONF_LOCAL").unwrap());
    let s = Suite { name, base, local };
    println!();
    s.step("chain", || s.chain());
    s.step("resume", || s.resume());
    s.step("resume the whole pipeline", || s.resume_pipeline());
    println!("suite done");
}

struct Suite {
    name: String,
    base: String,
    local: PathBuf,
}

/// duplicity's names for the times the suite backs up at.
const T1: (i64, &str) = (1_700_000_000, "20231114T221320Z");
const T2: (i64, &str) = (1_700_000_100, "20231114T221500Z");
const T3: (i64, &str) = (1_700_000_200, "20231114T221640Z");
const T4: (i64, &str) = (1_700_000_300, "20231114T221820Z");

impl Suite {
    fn step(&self, what: &str, f: impl FnOnce()) {
        let t = Instant::now();
        f();
        println!("{}: {what} {:.2} s", self.name, t.elapsed().as_secs_f64());
    }

    fn say(&self, what: &str, t: Instant) {
        println!("{}:   {what} {:.2} s", self.name, t.elapsed().as_secs_f64());
    }

    /// The archive files at `url` (temporary names left out).
    fn files(url: &str) -> BTreeMap<String, u64> {
        let s = Storage::open(url).unwrap_or_else(|e| panic!("{url}: {}", e.message));
        let list = s.list().unwrap_or_else(|e| panic!("{url}: {}", e.message));
        list.into_iter().filter(|(n, _)| !n.starts_with(TEMP_PREFIX)).collect()
    }

    /// Full, incremental, listing, restoring one file, remove-older-than, cleanup.
    fn chain(&self) {
        let tmp = World::new();
        let dir = tmp.path();
        let src = dir.join("src");
        hard_tree(&src);
        let url = format!("{}/chain", self.base);
        let (s, u, c) = (q(&src), q(&url), format!("--archive-dir {}", q(dir.join("cache"))));
        let backup = |t: i64, inc: bool| {
            let basis = if inc { format!("--basis <(dup-sig {c} --archive {u})") } else { String::new() };
            sh_ok(
                dir,
                &format!(
                    "dup-scan {s} | dup-delta {basis} | dup-pack --no-encryption --volsize 1 --time {t} \
                     | dup-put {c} {u}"
                ),
            );
        };

        let t = Instant::now();
        backup(T1.0, false);
        self.say("full", t);
        let big = fs::read(src.join("big.bin")).unwrap();
        fs::write(src.join("a.txt"), b"changed for the incremental\n").unwrap();
        fs::write(src.join("new.bin"), random_bytes(9, 300_000)).unwrap();
        let t = Instant::now();
        backup(T2.0, true);
        self.say("incremental", t);

        // The sets, then the files at each time (from the signatures).
        let sets = json_lines(&sh_ok(dir, &format!("dup-ls --json {c} {u}")).stdout, "set");
        let kinds: Vec<(&str, i64, &str)> = sets
            .iter()
            .map(|v| (v["type"].as_str().unwrap(), v["end"].as_i64().unwrap(), v["status"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds, [("full", T1.0, "primary"), ("inc", T2.0, "primary")], "{sets:?}");
        assert!(sets[0]["volumes"].as_u64().unwrap() >= 3, "a 3 MiB file makes several volumes: {sets:?}");
        let paths = |t: i64| -> BTreeSet<String> {
            let out = sh_ok(dir, &format!("dup-ls --json --files --time {t} {c} {u}")).stdout;
            json_lines(&out, "entry").iter().map(|e| e["path"].as_str().unwrap_or("(escaped)").to_string()).collect()
        };
        let (at1, at2) = (paths(T1.0), paths(T2.0));
        assert!(at2.contains("new.bin") && !at1.contains("new.bin"), "{at1:?} / {at2:?}");
        assert!(at1.contains("dir1/nested/deep.txt") && at2.contains("big.bin"), "{at1:?}");

        // One file, from the incremental and from the full (several volumes).
        let t = Instant::now();
        sh_ok(dir, &format!("dup-get {c} --path a.txt {u} {}", q(dir.join("a-now"))));
        assert_eq!(fs::read(dir.join("a-now")).unwrap(), b"changed for the incremental\n");
        sh_ok(dir, &format!("dup-get {c} --path big.bin --time {} {u} {}", T1.0, q(dir.join("big-then"))));
        assert!(fs::read(dir.join("big-then")).unwrap() == big, "big.bin restored from the full differs");
        sh_ok(dir, &format!("dup-get {c} --path a.txt --time {} {u} {}", T1.0, q(dir.join("a-then"))));
        assert_eq!(fs::read(dir.join("a-then")).unwrap(), b"hello world\n");
        self.say("restore one file", t);

        // A second chain; remove-older-than drops the first one.
        backup(T3.0, false);
        let t = Instant::now();
        sh_ok(dir, &format!("dup-ls {c} --remove-older-than {} {u} | dup-put {c} {u}", T3.0 - 50));
        self.say("remove-older-than", t);
        let left = Self::files(&url);
        assert!(left.keys().all(|n| !n.contains(T1.1) && !n.contains(T2.1)), "first chain left: {left:?}");
        assert!(left.keys().any(|n| n.contains(T3.1) && n.ends_with(".manifest")), "{left:?}");
        let sets = json_lines(&sh_ok(dir, &format!("dup-ls --json {c} {u}")).stdout, "set");
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0]["end"].as_i64(), Some(T3.0));
        sh_ok(dir, &format!("dup-get {c} --path dir1 {u} {}", q(dir.join("dir1"))));
        assert_same_tree(&src.join("dir1"), &dir.join("dir1"));

        // An unfinished incremental (a volume, no manifest): cleanup removes it.
        let stray = format!("duplicity-inc.{}.to.{}.vol1.difftar.gz", T3.1, T4.1);
        Storage::open(&url).unwrap().put(&stray, &b"unfinished"[..]).unwrap();
        let table = String::from_utf8(sh_ok(dir, &format!("dup-ls {c} --cleanup --table {u}")).stdout).unwrap();
        assert!(table.contains(&stray) && table.lines().count() == 1, "{table}");
        let t = Instant::now();
        sh_ok(dir, &format!("dup-ls {c} --cleanup {u} | dup-put {c} {u}"));
        self.say("cleanup", t);
        let after = Self::files(&url);
        assert!(!after.contains_key(&stray), "{after:?}");
        assert_eq!(after, left, "cleanup removed only the unfinished set");
    }

    /// For a resume step: a source of 6 MiB of random data (`seed`) and a
    /// small file in `dir`, the archive `base/sub`, a cache in `dir`; and
    /// the URL and cache option quoted for the shell.
    fn resume_setup(&self, dir: &Path, seed: u64, sub: &str) -> (PathBuf, String, PathBuf, String, String) {
        let src = dir.join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("big.bin"), random_bytes(seed, 6 << 20)).unwrap();
        fs::write(src.join("d/small.txt"), b"small\n").unwrap();
        let url = format!("{}/{sub}", self.base);
        let cache = dir.join("cache");
        let (u, c) = (q(&url), format!("--archive-dir {}", q(&cache)));
        (src, url, cache, u, c)
    }

    /// A dup-put killed (SIGKILL) half-way, then run again on the same stream.
    fn resume(&self) {
        let tmp = World::new();
        let dir = tmp.path();
        let (src, url, cache, u, c) = self.resume_setup(dir, 21, "resume");
        // JSON Lines, so the stream can be cut between two files.
        let stream = dir.join("stream.jsonl");
        sh_ok(
            dir,
            &format!(
                "dup-scan {} | dup-delta | dup-pack --no-encryption --json --volsize 1 --time {} > {}",
                q(&src),
                T4.0,
                q(&stream)
            ),
        );
        let text = fs::read_to_string(&stream).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let file_lines: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.starts_with(r#"{"kind":"file""#)).map(|(i, _)| i).collect();
        let volumes = text.matches(r#""role":"volume""#).count();
        assert!(volumes >= 6, "6 MiB of random data at --volsize 1: {volumes} volumes");

        // The first three volumes, then the input stalls: kill dup-put once
        // it has stored and journaled them.
        let t = Instant::now();
        let mut put = Command::new(bin_dir().join("dup-put"))
            .args(["--archive-dir", cache.to_str().unwrap(), &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut input = put.stdin.take().unwrap();
        input.write_all(lines[..file_lines[3]].concat().as_bytes()).unwrap();
        input.flush().unwrap();
        let journal = cache.join(dup::io::cache::backup_name(&url)).join(dup::io::cache::journal::JOURNAL);
        wait_for(Duration::from_secs(30), || fs::read_to_string(&journal).is_ok_and(|j| j.lines().count() >= 3));
        put.kill().unwrap();
        put.wait().unwrap();
        drop(input);
        self.say("killed after 3 volumes", t);

        // No manifest: the set is not published, only an unfinished one.
        let before = Self::files(&url);
        assert_eq!(before.len(), 3, "{before:?}");
        assert!(before.keys().all(|n| n.contains(".vol") && n.contains(T4.1)), "{before:?}");
        let out = sh(dir, &format!("dup-ls --json {c} {u}"));
        let sets = json_lines(&out.stdout, "set");
        assert!(sets.iter().all(|s| s["status"] == "incomplete"), "{sets:?}");
        let stamps: BTreeMap<String, (u64, u64, i64)> = before.keys().map(|n| (n.clone(), self.stamp(n))).collect();

        // Again, the whole stream, while another thread lists the backend:
        // whenever the manifest is there, so is every other file of the set.
        let t = Instant::now();
        let done = AtomicBool::new(false);
        let events = dir.join("events.jsonl");
        let (out, seen) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let storage = Storage::open(&url).unwrap();
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let names: Vec<String> = storage.list().unwrap().into_iter().map(|(n, _)| n).collect();
                    let published = names.iter().any(|n| n.ends_with(".manifest"));
                    let others = names.iter().filter(|n| n.contains(".vol") || n.contains("signatures.")).count();
                    seen.push((published, others));
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen
            });
            let out = sh(dir, &format!("dup-put {c} --log-fd 3 --log-json {u} < {} 3> {}", q(&stream), q(&events)));
            done.store(true, Ordering::Relaxed);
            (out, watcher.join().unwrap())
        });
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        self.say(&format!("resumed ({} listings meanwhile)", seen.len()), t);
        for (published, others) in &seen {
            assert!(!published || *others == volumes + 1, "a manifest was visible before its set was whole: {seen:?}");
        }

        // Exactly the files stored before the kill were skipped; nothing
        // else was; the skipped ones were not written again.
        let (skipped, stored) = file_events(&events);
        assert_eq!(skipped, before, "skipped what the killed run had stored");
        assert_eq!(stored.len(), file_lines.len() - before.len(), "{stored:?}");
        assert!(stored.keys().all(|n| !before.contains_key(n)), "{stored:?}");
        let after = Self::files(&url);
        assert_eq!(after.len(), file_lines.len(), "{after:?}");
        let sent: u64 = stored.values().sum();
        let total: u64 = after.values().sum();
        assert_eq!(sent + skipped.values().sum::<u64>(), total);
        println!("{}:   sent {sent} of {total} bytes again after the kill", self.name);
        for (n, st) in &stamps {
            assert_eq!(&self.stamp(n), st, "{n} was written again");
        }
        assert!(!journal.exists(), "the set is published: the journal has nothing left to list");

        let dest = dir.join("dest");
        sh_ok(dir, &format!("dup-get {c} {u} {}", q(&dest)));
        assert_same_tree(&src, &dest);
    }

    /// An encrypted backup whose whole pipeline is killed (SIGKILL) after
    /// three volumes are stored, then run again unchanged: dup-pack
    /// `--resume` takes the unfinished set's time from dup-put's journal and
    /// sends `stored` records for the volumes it packs again to the same
    /// plaintext, so only the rest goes over the wire.
    fn resume_pipeline(&self) {
        let tmp = World::new();
        let dir = tmp.path();
        let (src, url, cache, u, c) = self.resume_setup(dir, 22, "resume-pipeline");
        let pack = format!("dup-scan {} | dup-delta | dup-pack {c} --resume {u} --volsize 1 --json", q(&src));
        let pass = [("PASSPHRASE", "resume-pass")];
        let t = Instant::now();
        let journal = cache.join(dup::io::cache::backup_name(&url)).join(dup::io::cache::journal::JOURNAL);
        interrupt_after_three_volumes(dir, &pass, &pack, &format!("dup-put {c} {u}"), &journal);
        self.say("pipeline killed after 3 volumes", t);
        let before = Self::files(&url);
        assert_eq!(before.len(), 3, "{before:?}");
        assert!(before.keys().all(|n| n.contains(".vol") && n.ends_with(".difftar.gpg")), "{before:?}");
        let stamps: BTreeMap<String, (u64, u64, i64)> =
            before.keys().map(|n| (n.clone(), self.stamp_in("resume-pipeline", n))).collect();

        // The same command again, a few seconds later.
        let t = Instant::now();
        let events = dir.join("events.jsonl");
        sh_ok(
            dir,
            &format!("export PASSPHRASE=resume-pass; {pack} | dup-put {c} --log-fd 3 --log-json {u} 3> {}", q(&events)),
        );
        self.say("resumed", t);
        let (skipped, stored) = file_events(&events);
        assert_eq!(skipped, before, "the volumes stored before the kill were not sent again");
        let after = Self::files(&url);
        assert!(stored.keys().all(|n| !before.contains_key(n) && after.contains_key(n)), "{stored:?}");
        assert_eq!(after.len(), stored.len() + skipped.len(), "one set, no strays: {after:?}");
        assert!(after.keys().all(|n| n.ends_with(".gpg")), "{after:?}");
        let sent: u64 = stored.values().sum();
        let total: u64 = after.values().sum();
        println!("{}:   whole pipeline: sent {sent} of {total} bytes again after the kill", self.name);
        for (n, st) in &stamps {
            assert_eq!(&self.stamp_in("resume-pipeline", n), st, "{n} was written again");
        }
        assert!(!journal.exists(), "the set is published: the journal has nothing left to list");
        let dest = dir.join("dest");
        let get = format!("PASSPHRASE=resume-pass dup-get {c} {u} {}", q(&dest));
        sh_ok(dir, &get);
        assert_same_tree(&src, &dest);
    }

    /// Size, inode and mtime of a file as the server keeps it.
    fn stamp(&self, name: &str) -> (u64, u64, i64) {
        self.stamp_in("resume", name)
    }

    fn stamp_in(&self, sub: &str, name: &str) -> (u64, u64, i64) {
        let p = self.local.join(sub).join(name);
        let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.size(), m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
    }
}

/// dup-put's progress events in the file `events` (--log-fd): the files
/// it skipped and those it stored, with their bytes.
fn file_events(events: &Path) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let evs = json_lines(&fs::read(events).unwrap(), "");
    let by = |action: &str| -> BTreeMap<String, u64> {
        evs.iter()
            .filter(|e| e["event"] == "file" && e["action"] == action)
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["bytes"].as_u64().unwrap()))
            .collect()
    };
    (by("skipped"), by("stored"))
}

/// The JSON Lines of `out` whose `kind` is `kind` (all lines when empty).
fn json_lines(out: &[u8], kind: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .filter(|v| kind.is_empty() || v["kind"] == kind)
        .collect()
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An S3 server of one test's own: s3s-fs on a free port of 127.0.0.1,
/// keeping its files in a temporary directory; stopped on drop.
struct OwnS3 {
    bin: PathBuf,
    port: u16,
    dir: World,
    child: Mutex<Option<Child>>,
}

const OWN_AK: &str = "AKOWNTEST";
const OWN_SK: &str = "SKOWNTEST0123456789";

impl OwnS3 {
    fn start(test: &str) -> Option<OwnS3> {
        let home = var("CARGO_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".cargo")));
        let bin = std::env::split_paths(&var("PATH").unwrap_or_default())
            .chain(home.map(|h| h.join("bin")))
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file());
        let Some(bin) = bin else {
            skip(test, "s3s-fs is not installed (scripts/test-servers start installs it)");
            return None;
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let dir = World::new();
        fs::create_dir_all(dir.path().join("bucket")).unwrap();
        let s = OwnS3 { bin, port, dir, child: Mutex::new(None) };
        s.up();
        Some(s)
    }

    /// Starts the server (again: same port, same directory).
    fn up(&self) {
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--access-key", OWN_AK])
            .args(["--secret-key", OWN_SK])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    /// Kills the server.
    fn down(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The environment that points dup at this server.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DUP_S3_ENDPOINT".into(), format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ACCESS_KEY_ID".into(), OWN_AK.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), OWN_SK.into()),
        ]
    }

    /// Names of the files under `prefix` in the bucket, as the server keeps them.
    fn stored(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir.path().join("bucket").join(prefix))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Runs dup-put to `url` on this server reading `stream`: its first `cut`
    /// bytes at once, the rest when `middle` returns.
    fn put(
        &self,
        url: &str,
        cache: &Path,
        stream: &[u8],
        cut: usize,
        env: &[(&str, &str)],
        middle: impl FnOnce(),
    ) -> (Output, Duration) {
        let t = Instant::now();
        let mut cmd = Command::new(bin_dir().join("dup-put"));
        cmd.args(["--archive-dir", cache.to_str().unwrap(), url])
            .envs(self.env())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(&stream[..cut]).unwrap();
        input.flush().unwrap();
        middle();
        // dup-put may have given up already.
        let _ = input.write_all(&stream[cut..]);
        drop(input);
        let out = child.wait_with_output().unwrap();
        (out, t.elapsed())
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        self.down();
    }
}

/// A 6 MiB source packed at --volsize 1 as JSON Lines, and the offset of
/// its second file record (the first volume is before it).
fn packed(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(33, 6 << 20)).unwrap();
    let stream = dir.join("stream.jsonl");
    sh_ok(
        dir,
        &format!("dup-scan {} | dup-delta | dup-pack --no-encryption --json --volsize 1 > {}", q(&src), q(&stream)),
    );
    let bytes = fs::read(&stream).unwrap();
    let cut = String::from_utf8_lossy(&bytes).match_indices("\n{\"kind\":\"file\"").nth(1).unwrap().0 + 1;
    (src, bytes, cut)
}

/// The S3 server stops for a few seconds mid-upload and comes back on the
/// same port and directory: the retries carry the backup through.
#[test]
fn s3_outage_is_retried() {
    let Some(s3) = OwnS3::start("s3_outage_is_retried") else { return };
    let tmp = World::new();
    let dir = tmp.path();
    let (src, stream, cut) = packed(dir);
    let (url, cache) = ("s3://bucket/outage", dir.join("cache"));
    let env = [("DUP_NUM_RETRIES", "6"), ("DUP_TIMEOUT", "5")];
    let (out, took) = std::thread::scope(|sc| {
        s3.put(url, &cache, &stream, cut, &env, || {
            wait_for(Duration::from_secs(20), || s3.stored("outage").iter().any(|n| n.contains(".vol1.")));
            // Down while the rest of the stream arrives; back 3 s later.
            s3.down();
            sc.spawn(|| {
                std::thread::sleep(Duration::from_secs(3));
                s3.up();
            });
        })
    });
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("s3 outage: dup-put took {:.2} s:\n{err}", took.as_secs_f64());
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retry 1 of 6"), "the outage was seen: {err}");
    let files = s3.stored("outage");
    assert!(files.iter().any(|n| n.ends_with(".manifest")), "{files:?}");
    let get = Command::new(bin_dir().join("dup-get"))
        .args(["--archive-dir", cache.to_str().unwrap(), url, dir.join("dest").to_str().unwrap()])
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_same_tree(&src, &dir.join("dest"));
}

/// The S3 server stops mid-upload and stays down: dup-put ends with exit
/// code 1 and a message naming the backend, within what DUP_TIMEOUT and
/// DUP_NUM_RETRIES allow.
#[test]
fn s3_down_fails_in_time() {
    let Some(s3) = OwnS3::start("s3_down_fails_in_time") else { return };
    let tmp = World::new();
    let dir = tmp.path();
    let (_, stream, cut) = packed(dir);
    let url = "s3://bucket/down";
    let env = [("DUP_NUM_RETRIES", "2"), ("DUP_TIMEOUT", "3")];
    let (out, took) = s3.put(url, &dir.join("cache"), &stream, cut, &env, || {
        wait_for(Duration::from_secs(20), || s3.stored("down").iter().any(|n| n.contains(".vol1.")));
        s3.down();
    });
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("s3 down: dup-put gave up after {:.2} s:\n{err}", took.as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("dup-put: {url}: writing ")) && err.contains("cannot connect"), "{err}");
    assert!(err.contains("hint: check that the S3 server at http://127.0.0.1:"), "{err}");
    // Two retries, about 1 s and 2 s apart (jitter at most doubles them).
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(!err.contains(OWN_SK));
}
