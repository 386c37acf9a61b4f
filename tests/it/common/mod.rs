//! Shared by the integration tests: the binaries, real duplicity, a source
//! tree with the hard cases, and an exact comparison of two trees.
#![allow(dead_code)]

mod gpg;
#[allow(unused_imports)]
pub use gpg::*;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod craft;

/// The directory holding the built dup binaries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_dup-scan")).parent().unwrap().to_path_buf()
}

/// The project's scripts directory.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// True when the tests must not skip: `DUP_REQUIRE_TOOLS` is set (and not
/// `0`), as scripts/test sets it. A missing tool or test server then fails
/// the test instead of skipping it.
pub fn require_tools() -> bool {
    std::env::var("DUP_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The running test's name (libtest names its thread after it).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("this test").to_string()
}

/// A test cannot run here because `what` is missing: fails it under
/// [`require_tools`], else prints why it skips.
pub fn skip(test: &str, what: &str) {
    if require_tools() {
        panic!("{test}: {what}, and DUP_REQUIRE_TOOLS is set (unset it, or set it to 0, to skip instead)");
    }
    eprintln!("{test}: skipped, {what}");
}

/// True when `cmd` is on PATH; otherwise skips (see [`skip`]).
pub fn have(cmd: &str, test: &str) -> bool {
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, &format!("{cmd} is not installed (scripts/test installs it)"));
    }
    ok
}

/// True when every one of `cmds` is on PATH (see [`have`]).
pub fn have_all(test: &str, cmds: &[&str]) -> bool {
    cmds.iter().all(|c| have(c, test))
}

/// Notes (or, under [`require_tools`], fails on) a test whose loopback
/// servers are not running.
pub fn no_servers(test: &str) {
    skip(test, "the test servers are not running (eval \"$(scripts/test-servers start)\")");
}

/// An environment variable, None when unset or empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `PATH` with the dup binaries first.
pub fn bin_path() -> String {
    format!("{}:{}", bin_dir().display(), var("PATH").unwrap_or_default())
}

/// A fresh name: `what`, the process id and the clock's nanoseconds.
pub fn fresh(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// A 127.0.0.1 port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `url` with its 127.0.0.1 port replaced by one nothing listens on.
pub fn with_closed_port(url: &str) -> String {
    let re = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    re.replace(url, format!("127.0.0.1:{}", closed_port())).into_owned()
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `file://` URL of a directory.
pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// A command's stdout and stderr, as text.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Runs `cmd` with `input` on its stdin (fed from a thread, so a child that
/// writes before it reads cannot deadlock), capturing stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        // The child may exit without reading it all.
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// One test's temporary directory, with paths and file:// URLs in it.
pub struct World {
    dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World { dir: tempfile::tempdir().unwrap() }
    }

    /// A test's prologue: its world when every one of `tools` is on PATH;
    /// else None, the test skipped (failed under [`require_tools`]).
    pub fn needing(tools: &[&str]) -> Option<World> {
        have_all(&test_name(), tools).then(World::new)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the directory.
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `file://` URL of `name` in the directory.
    pub fn url(&self, name: &str) -> String {
        file_url(&self.p(name))
    }
}

/// Runs a shell command line (bash, pipefail) with the dup binaries first on PATH.
pub fn sh(cwd: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; {script}"))
        .current_dir(cwd)
        .env("PATH", bin_path())
        .env("LANG", "C.UTF-8")
        .env("DUP_BIN", bin_dir())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs")
}

/// Like [`sh`], failing the test unless the command succeeds.
pub fn sh_ok(cwd: &Path, script: &str) -> Output {
    let out = sh(cwd, script);
    assert!(
        out.status.success(),
        "`{script}` failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `s` as a single-quoted shell word.
pub fn q(s: impl AsRef<OsStr>) -> String {
    let b = s.as_ref().as_bytes();
    let text = String::from_utf8_lossy(b);
    assert!(std::str::from_utf8(b).is_ok(), "shell words in tests are UTF-8");
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A deterministic pseudo-random byte stream (xorshift).
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn set_mtime(p: &Path, secs: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: valid C string and array of two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

pub fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with the hard cases: non-UTF-8 and awkward names, sibling order
/// traps, a 3 MiB file (several volumes at --volsize 1), files of exactly
/// 64 and 128 KiB, empty files and dirs, symlinks (one dangling), a fifo,
/// hard links, modes, old mtimes.
pub fn hard_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let j = |p: &[u8]| root.join(OsStr::from_bytes(p));
    write(&j(b"a.txt"), b"hello world\n", 0o640);
    write(&j(b"big.bin"), &random_bytes(1, 3 << 20), 0o644);
    write(&j(b"exact64k.bin"), &random_bytes(2, 65536), 0o644);
    write(&j(b"exact128k.bin"), &random_bytes(3, 131072), 0o600);
    write(&j(b"medium.bin"), &random_bytes(4, 100_000), 0o644);
    write(&j(b"empty"), b"", 0o644);
    write(&j(b"caf\xe9.txt"), b"latin-1 name\n", 0o644);
    write(&j("ünïcödé.txt".as_bytes()), b"utf-8 name\n", 0o644);
    write(&j(b"quote\"s and 'apos'"), b"q\n", 0o644);
    write(&j(b"back\\slash"), b"b\n", 0o644);
    fs::create_dir(j(b"dir1")).unwrap();
    write(&j(b"dir1/file with space.txt"), b"space\n", 0o644);
    fs::create_dir(j(b"dir1/nested")).unwrap();
    write(&j(b"dir1/nested/deep.txt"), b"deep\n", 0o644);
    fs::set_permissions(j(b"dir1"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir(j(b"emptydir")).unwrap();
    // Siblings whose order differs between path strings and components.
    fs::create_dir(j(b"a")).unwrap();
    write(&j(b"a/b"), b"ab\n", 0o644);
    write(&j(b"a.b"), b"a.b\n", 0o644);
    write(&j(b"a-b"), b"a-b\n", 0o644);
    write(&j(b"a b"), b"a b\n", 0o644);
    let long_dir = "d".repeat(60);
    fs::create_dir(root.join(&long_dir)).unwrap();
    write(&root.join(&long_dir).join(format!("{}.txt", "f".repeat(70))), b"long path\n", 0o644);
    symlink("a.txt", j(b"link")).unwrap();
    symlink("/nonexistent/target", j(b"dangling")).unwrap();
    mkfifo(&j(b"fifo"));
    write(&j(b"hard1"), b"hard link\n", 0o644);
    fs::hard_link(j(b"hard1"), j(b"hard2")).unwrap();
    // Old mtimes everywhere but on the root (restores set it anyway).
    set_all_mtimes(root, 1_704_164_645);
}

/// Sets every item's mtime below `root` (symlinks included) to `t`.
pub fn set_all_mtimes(root: &Path, t: i64) {
    let mut items = Vec::new();
    walk(root, root, &mut items);
    for (rel, _) in items.iter().rev() {
        if !rel.is_empty() {
            set_mtime(&root.join(OsStr::from_bytes(rel)), t);
        }
    }
}

/// What is compared of one tree item.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    File { mode: u32, mtime: i64, content: Vec<u8> },
    Dir { mode: u32, mtime: i64 },
    Symlink { target: Vec<u8> },
    Fifo { mode: u32, mtime: i64 },
    Other(u32),
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, Item)>) {
    let rel = dir.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
    let m = fs::symlink_metadata(dir).unwrap();
    out.push((rel, Item::Dir { mode: m.mode() & 0o7777, mtime: m.mtime() }));
    let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let p = dir.join(&n);
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let ft = m.file_type();
        if ft.is_dir() {
            walk(root, &p, out);
            continue;
        }
        let item = if ft.is_symlink() {
            Item::Symlink { target: fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec() }
        } else if ft.is_file() {
            Item::File { mode: m.mode() & 0o7777, mtime: m.mtime(), content: fs::read(&p).unwrap() }
        } else if m.mode() & libc::S_IFMT == libc::S_IFIFO {
            Item::Fifo { mode: m.mode() & 0o7777, mtime: m.mtime() }
        } else {
            Item::Other(m.mode())
        };
        out.push((rel, item));
    }
}

/// Every item of a tree, in a fixed order.
pub fn snapshot(root: &Path) -> Vec<(Vec<u8>, Item)> {
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v
}

/// The files named `prefix...` in the archives' caches under an
/// `--archive-dir` directory, sorted.
pub fn cache_files(archive_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(archive_dir).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                if f.file_name().unwrap().to_string_lossy().starts_with(prefix) {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

/// Fails unless the trees hold the same items: names, types, content,
/// permission bits, mtimes (not of the roots, not of symlinks), link targets.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let mut a = snapshot(want);
    let mut b = snapshot(got);
    // The roots' mtimes are not compared: a restore target is made by the test.
    for v in [&mut a, &mut b] {
        if let Some((_, Item::Dir { mtime, .. })) = v.first_mut() {
            *mtime = 0;
        }
    }
    let names =
        |v: &Vec<(Vec<u8>, Item)>| v.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "different names in {} and {}", want.display(), got.display());
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{}: {:?} != {:?}", String::from_utf8_lossy(n), short(x), short(y));
    }
}

fn short(i: &Item) -> String {
    match i {
        Item::File { mode, mtime, content } => format!("file mode {mode:o} mtime {mtime} {} bytes", content.len()),
        other => format!("{other:?}"),
    }
}

/// Backs up `src` to `url` with the dup pipeline (a full, or an incremental
/// with `inc`) as a plain archive (`--no-encryption`); `pack` adds dup-pack
/// options.
pub fn dup_backup(cwd: &Path, src: &Path, url: &str, cache: &Path, inc: bool, pack: &str) {
    let c = format!("--archive-dir {}", q(cache));
    let basis = if inc { format!("--basis <(dup-sig {c} --archive {})", q(url)) } else { String::new() };
    sh_ok(
        cwd,
        &format!("dup-scan {} | dup-delta {basis} | dup-pack --no-encryption {pack} | dup-put {c} {}", q(src), q(url)),
    );
}

/// Runs real duplicity with its cache in `cache`; fails the test on error.
pub fn duplicity(cwd: &Path, cache: &Path, args: &str) -> Output {
    sh_ok(cwd, &format!("duplicity --no-encryption --archive-dir {} {args}", q(cache)))
}

/// SIGKILLs the process group `child` leads (started with
/// `process_group(0)`) and waits until every process of it is gone, so
/// that what they held (the cache lock) is free again.
pub fn kill_group(child: &mut std::process::Child) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) on the process group this test started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait().unwrap();
    let t = std::time::Instant::now();
    // SAFETY: signal 0 only checks whether the group still has a process.
    while unsafe { libc::kill(-pgid, 0) } == 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "process group {pgid} outlived SIGKILL");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Runs `producer | (stalled) | consumer` in bash in `cwd` (the dup binaries
/// first on PATH, `envs` set), the stream stopped for good at its fourth
/// `file` record (JSON Lines: dup-pack --json), and SIGKILLs the whole
/// pipeline once dup-put has journaled three files in `journal`: an
/// interrupted backup with three volumes stored.
pub fn interrupt_after_three_volumes(
    cwd: &Path,
    envs: &[(&str, &str)],
    producer: &str,
    consumer: &str,
    journal: &Path,
) {
    use std::os::unix::process::CommandExt;
    let stalled = format!(
        "set -o pipefail; {producer} | \
         awk '/^{{\"kind\":\"file\".*\"role\":\"volume\"/{{n++}} n==4{{system(\"sleep 600\")}} {{print; fflush()}}' | {consumer}"
    );
    let mut child = Command::new("bash")
        .args(["-c", &stalled])
        .current_dir(cwd)
        .env("PATH", bin_path())
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(journal).is_ok_and(|j| j.lines().count() >= 3) {
        assert!(start.elapsed().as_secs() < 60, "three volumes were not stored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill_group(&mut child);
}

/// Edits between runs: inside a large file, an append, a truncation, a
/// deletion, a new file, a file replaced by a directory, a symlink replaced
/// by a file, a chmod.
pub fn mutate(src: &Path, round: u64) {
    let big = src.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    let at = (round as usize * 700_001) % (data.len() - 5000);
    data[at..at + 4096].copy_from_slice(&random_bytes(100 + round, 4096));
    data.extend_from_slice(&random_bytes(200 + round, 10_000));
    fs::write(&big, data).unwrap();
    fs::write(src.join("a.txt"), format!("hello world, round {round}\n")).unwrap();
    match round {
        1 => {
            fs::remove_file(src.join("dir1/nested/deep.txt")).unwrap();
            fs::remove_dir(src.join("dir1/nested")).unwrap();
            fs::write(src.join("new.txt"), b"new\n").unwrap();
            fs::remove_dir(src.join("emptydir")).unwrap();
            fs::write(src.join("emptydir"), b"now a file\n").unwrap();
        }
        2 => {
            fs::remove_file(src.join("link")).unwrap();
            fs::write(src.join("link"), b"was a symlink\n").unwrap();
            let m = fs::read(src.join("medium.bin")).unwrap();
            fs::write(src.join("medium.bin"), &m[..1234]).unwrap();
            fs::remove_file(src.join("new.txt")).unwrap();
            fs::create_dir(src.join("new.txt")).unwrap();
        }
        3 => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(src.join("exact64k.bin"), fs::Permissions::from_mode(0o600)).unwrap();
            fs::remove_file(src.join("hard2")).unwrap();
        }
        _ => fs::write(src.join(format!("round{round}.txt")), b"later\n").unwrap(),
    }
    // Every change at a new whole second, so change detection sees it.
    set_all_mtimes(src, 1_704_164_645 + 1000 * round as i64);
}
