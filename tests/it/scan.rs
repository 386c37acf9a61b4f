//! dup-scan lists exactly the paths, in exactly the order, that duplicity
//! 0.8 backs up: the same tree is backed up with the real `duplicity full`
//! and listed with `duplicity list-current-files`, with and without
//! selection options. Tests that need duplicity are skipped (with a note)
//! when it is not installed.

use std::ffi::OsStr;
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{World, duplicity, have, mkfifo, q, set_mtime};
use dup::record::{Entry, FileType, Reader, Record, StreamKind};

const DUP_SCAN: &str = env!("CARGO_BIN_EXE_dup-scan");

/// A tree with every kind of name and item the comparison needs.
fn make_tree(src: &Path) {
    let dir = |p: &str| fs::create_dir_all(src.join(p)).unwrap();
    let file = |p: &str, data: &str| fs::write(src.join(p), data).unwrap();
    for d in ["a/b", "a/empty", "empty", "dir/sub", "dir/other", "cache/inner", "Dir2"] {
        dir(d);
    }
    for (p, data) in [
        ("a/b/c", "c"),
        ("a/b0", "b0"),
        ("a/z", "z"),
        ("a.b", "dot"),
        ("a-b", "dash"),
        ("a b", "space"),
        ("a0", "zero"),
        ("A", "upper"),
        ("with space.txt", "x"),
        ("quote'single", "x"),
        ("quote\"double", "x"),
        ("back\\slash", "x"),
        ("dir/sub/keep.txt", "keep"),
        ("dir/sub/drop.log", "drop"),
        ("dir/sub/UPPER.TXT", "upper"),
        ("dir/other/x.txt", "x"),
        ("cache/.nobackup", ""),
        ("cache/inner/data", "data"),
        ("Dir2/f", "f"),
        ("hard1", "linked"),
    ] {
        file(p, data);
    }
    fs::write(src.join(OsStr::from_bytes(b"caf\xe9.txt")), "latin-1 name").unwrap();
    fs::hard_link(src.join("hard1"), src.join("hard2")).unwrap();
    symlink("a.b", src.join("link")).unwrap();
    symlink("nowhere/at all", src.join("dangling")).unwrap();
    mkfifo(&src.join("fifo"));
    // A socket: neither duplicity nor dup-scan keeps it.
    std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    // A device where the tests may make one (as root).
    let dev = std::ffi::CString::new(src.join("nulldev").as_os_str().as_bytes()).unwrap();
    // SAFETY: a plain system call on a NUL-terminated path.
    unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
    // Old files, for --exclude-older-than (2001-09-09).
    for p in ["a/b0", "dir/sub/keep.txt"] {
        set_mtime(&src.join(p), 1_000_000_000);
    }
}

/// A temporary directory holding `src`, made with [`make_tree`].
fn tree() -> (World, PathBuf) {
    let tmp = World::new();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    (tmp, src)
}

/// Runs dup-scan (CBOR output) and decodes its records.
fn run_scan(cmd: &mut Command) -> (Output, Vec<Record>) {
    let out = cmd.output().unwrap();
    let recs = decode(&out.stdout);
    (out, recs)
}

/// The records of dup-scan's output (none when there is none).
fn decode(stdout: &[u8]) -> Vec<Record> {
    let mut recs = Vec::new();
    if !stdout.is_empty() {
        let mut r = Reader::new(Cursor::new(stdout), "dup-scan output").unwrap();
        assert_eq!((r.stream_kind(), r.producer()), (StreamKind::Entries, "dup-scan"));
        while let Some(rec) = r.next().unwrap() {
            recs.push(rec);
        }
    }
    recs
}

fn entries(recs: &[Record]) -> Vec<&Entry> {
    recs.iter().filter_map(|r| if let Record::Entry(e) = r { Some(e) } else { None }).collect()
}

fn paths(recs: &[Record]) -> Vec<Vec<u8>> {
    entries(recs).iter().map(|e| e.path.0.clone()).collect()
}

/// The paths `duplicity full` stores, as `list-current-files` shows them,
/// run in `cwd`.
fn duplicity_paths(src: &Path, opts: &[String], cwd: &Path) -> Vec<Vec<u8>> {
    let work = World::new();
    let cache = work.path().join("cache");
    let url = q(format!("file://{}", work.path().join("target").display()));
    let opts: Vec<String> = opts.iter().map(q).collect();
    duplicity(cwd, &cache, &format!("full {} {} {url}", opts.join(" "), q(src)));
    let out = duplicity(cwd, &cache, &format!("list-current-files {url}"));
    // "<24-character ctime date> <path>" after the "Last full backup date" line.
    out.stdout
        .split(|&b| b == b'\n')
        .skip_while(|l| !l.starts_with(b"Last full backup date"))
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l[25..].to_vec())
        .collect()
}

fn show(paths: &[Vec<u8>]) -> String {
    paths.iter().map(|p| format!("  {}\n", String::from_utf8_lossy(p))).collect()
}

/// dup-scan with `opts` lists what duplicity backs up with the same options
/// (both run in `cwd`).
fn same_as_duplicity(opts: &[String], src: &Path, cwd: &Path) {
    let (out, recs) = run_scan(Command::new(DUP_SCAN).args(opts).arg(src).current_dir(cwd));
    assert!(out.status.success(), "dup-scan {opts:?}: {}", String::from_utf8_lossy(&out.stderr));
    let ours = paths(&recs);
    let theirs = duplicity_paths(src, opts, cwd);
    assert!(ours == theirs, "options {opts:?}\ndup-scan:\n{}duplicity:\n{}", show(&ours), show(&theirs));
}

/// Runs one comparison on a fresh tree; `opts` gets the source path as `SRC`.
fn compare(opts: &[&str]) {
    if !have("duplicity", "comparison with duplicity") {
        return;
    }
    let (tmp, src) = tree();
    let s = src.to_str().unwrap();
    let opts: Vec<String> = opts.iter().map(|o| o.replace("SRC", s)).collect();
    same_as_duplicity(&opts, &src, tmp.path());
}

#[test]
fn relative_source() {
    if !have("duplicity", "comparison with duplicity") {
        return;
    }
    let (tmp, _) = tree();
    let opts = ["--exclude", "src/dir/sub/", "--include", "src/a", "--exclude", "src/*"];
    let opts: Vec<String> = opts.iter().map(|o| o.to_string()).collect();
    same_as_duplicity(&opts, Path::new("./src/"), tmp.path());
}

#[test]
fn whole_tree_in_duplicity_order() {
    compare(&[]);
}

#[test]
fn exclude_glob() {
    compare(&["--exclude", "SRC/dir/sub", "--exclude", "SRC/a/*"]);
}

#[test]
fn include_then_exclude_everything() {
    compare(&["--include", "SRC/dir/sub/keep.txt", "--include", "SRC/a/b", "--exclude", "**"]);
}

#[test]
fn include_glob_with_double_star() {
    compare(&["--exclude", "SRC/dir/sub/*.log", "--include", "SRC/**.txt", "--exclude", "**"]);
}

#[test]
fn ignorecase() {
    compare(&["--exclude", "ignorecase:**/*.txt", "--exclude", "ignorecase:**/dir2"]);
}

#[test]
fn exclude_regexp() {
    compare(&["--exclude-regexp", r"\.log$", "--exclude-regexp", "^.*/a[-.]b$"]);
}

#[test]
fn filelist() {
    if !have("duplicity", "comparison with duplicity") {
        return;
    }
    let (tmp, src) = tree();
    let s = src.to_str().unwrap();
    let list = tmp.path().join("list");
    let text = format!("# keep one subtree of dir\n+ {s}/dir/sub\n- {s}/dir/**\n\n  '{s}/a/b'  \n- {s}/cache\n");
    fs::write(&list, text).unwrap();
    same_as_duplicity(&["--exclude-filelist".into(), list.to_str().unwrap().into()], &src, tmp.path());
}

#[test]
fn exclude_if_present_and_device_files() {
    compare(&["--exclude-if-present", ".nobackup", "--exclude-device-files", "--exclude", "SRC/a"]);
}

#[test]
fn exclude_older_than() {
    compare(&["--exclude-older-than", "1500000000", "--exclude", "SRC/A"]);
    compare(&["--exclude-older-than", "2010-01-01T12:00:00", "--exclude", "SRC/A"]);
    compare(&["--exclude-older-than", "2010/1/1", "--exclude-older-than", "3650D"]);
}

#[test]
fn metadata_of_special_files() {
    let (_tmp, src) = tree();
    let (out, recs) = run_scan(Command::new(DUP_SCAN).arg(&src));
    assert!(out.status.success());
    let es = entries(&recs);
    let get = |p: &[u8]| *es.iter().find(|e| e.path.0 == p).unwrap_or_else(|| panic!("{p:?} missing"));
    assert_eq!(es[0].path.0, b".");
    assert_eq!(get(b".").ftype, FileType::Dir);
    assert_eq!(get(b"fifo").ftype, FileType::Fifo);
    assert_eq!(get(b"link").target.as_ref().unwrap().0, b"a.b");
    assert_eq!(get(b"dangling").target.as_ref().unwrap().0, b"nowhere/at all");
    let (h1, h2) = (get(b"hard1"), get(b"hard2"));
    assert_eq!((h1.dev, h1.ino, h1.nlink), (h2.dev, h2.ino, 2));
    assert_eq!((h1.size, h1.ftype), (6, FileType::File));
    assert_eq!(get(b"caf\xe9.txt").size, 12);
    let md = fs::symlink_metadata(src.join("a.b")).unwrap();
    let ab = get(b"a.b");
    assert_eq!(ab.mode, md.permissions().mode() & 0o7777);
    if ab.uid == 0 {
        assert_eq!((ab.uname.as_str(), ab.gname.as_str()), ("root", "root"));
    }
    assert!(!es.iter().any(|e| e.path.0 == b"sock"), "sockets are skipped");
    if let Some(d) = es.iter().find(|e| e.path.0 == b"nulldev") {
        assert_eq!((d.ftype, d.devmajor, d.devminor), (FileType::Char, Some(1), Some(3)));
    }
    assert_eq!(get(b"a/b0").mtime, 1_000_000_000);
}

#[test]
fn unreadable_items_warn_and_exit_3() {
    // Root reads everything, so the walk runs as nobody (setpriv) when the
    // tests run as root.
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if root && !have("setpriv", "unreadable items as root") {
        return;
    }
    let tmp = World::new();
    let src = tmp.path().join("src");
    for d in ["ok", "locked/in"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("ok/f"), "f").unwrap();
    fs::write(src.join("secret"), "s").unwrap();
    fs::write(src.join("mine"), "m").unwrap();
    let mode = |p: &str, m: u32| fs::set_permissions(src.join(p), fs::Permissions::from_mode(m)).unwrap();
    mode("locked", 0o000);
    mode("secret", 0o000);
    // Owned by the walker, who may write it but not read it.
    mode("mine", 0o244);
    if root {
        std::os::unix::fs::chown(src.join("mine"), Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", DUP_SCAN]);
        c
    } else {
        Command::new(DUP_SCAN)
    };
    let (out, recs) = run_scan(cmd.arg(&src));
    if root && out.status.code() == Some(127) {
        eprintln!("note: skipping the unreadable-directory test: nobody cannot run {DUP_SCAN}");
        return;
    }
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let warned: Vec<&[u8]> = recs
        .iter()
        .filter_map(|r| if let Record::Warning { path, .. } = r { path.as_ref().map(|p| &p.0[..]) } else { None })
        .collect();
    assert_eq!(warned, [&b"locked"[..], b"mine", b"secret"]);
    assert_eq!(paths(&recs), [&b"."[..], b"ok", b"ok/f"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked") && stderr.contains("secret"), "stderr: {stderr}");
    mode("locked", 0o755);
}

#[test]
fn bad_selections_are_usage_errors() {
    let (_tmp, src) = tree();
    for opts in [&["--exclude", "/elsewhere/x"][..], &["--include", "**/a"], &["--exclude-older-than", "yesterday"]] {
        let out = Command::new(DUP_SCAN).args(opts).arg(&src).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{opts:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(DUP_SCAN).arg(src.join("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn filelist_from_stdin() {
    use std::io::Write;
    let (tmp, src) = tree();
    let s = src.to_str().unwrap();
    let text = format!("+ {s}/dir/sub\n- {s}/dir\n- {s}/a\n");
    let list = tmp.path().join("list");
    fs::write(&list, &text).unwrap();
    let (_, from_file) = run_scan(Command::new(DUP_SCAN).arg("--exclude-filelist").arg(&list).arg(&src));
    let mut child = Command::new(DUP_SCAN)
        .args(["--exclude-filelist-stdin"])
        .arg(&src)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin = decode(&out.stdout);
    assert_eq!(paths(&from_stdin), paths(&from_file));
    assert!(paths(&from_file).contains(&b"dir/sub/keep.txt".to_vec()));
    assert!(!paths(&from_file).iter().any(|p| p.starts_with(b"a/") || p == b"dir/other"));
}
