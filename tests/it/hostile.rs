//! Hostile and damaged archives (issue 11): each case crafts a real archive
//! holding honest entries and a hostile part, runs the real dup-get (and
//! dup-ls, dup-sig, dup-sync where the case concerns them) into a target
//! inside a sentinel directory, and checks: nothing outside the target was
//! created or changed, the child's peak memory stayed under [`MAX_RSS_MIB`],
//! disk stayed bounded, the message names the problem, the exit code is the
//! documented one, and the honest entries were restored byte-exact.
//!
//! Each case prints `hostile-case NAME outside=N` (N: items changed outside
//! the target), which scripts/torture --hostile counts.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::craft::{
    E, Opts, Set, Vol, craft, craft_with, device, dir, extension, file, file_b, hardlink, inc_dir_to_symlink, set_name,
    symlink, tree,
};
use crate::common::{Item, random_bytes, snapshot};

const DUP_GET: &str = env!("CARGO_BIN_EXE_dup-get");
const DUP_LS: &str = env!("CARGO_BIN_EXE_dup-ls");
const DUP_SIG: &str = env!("CARGO_BIN_EXE_dup-sig");
const DUP_SYNC: &str = env!("CARGO_BIN_EXE_dup-sync");

/// The most a child may hold in memory.
const MAX_RSS_MIB: u64 = 256;
const T: &str = "20240102T030405Z";
const PASS: &str = "hostile pass";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Me,
    /// nobody (65534), through setpriv, when this test runs as root.
    Nobody,
}

/// A finished child.
struct Run {
    code: Option<i32>,
    out: Vec<u8>,
    err: String,
    rss_mib: u64,
    took: Duration,
}

/// A case's directories: the archive and cache beside a sentinel tree that
/// holds the target (`s/base/dest`) and a victim outside it.
struct Ctx {
    name: &'static str,
    _tmp: tempfile::TempDir,
    w: PathBuf,
    arch: PathBuf,
    cache: PathBuf,
    tmp: PathBuf,
    sentinel: PathBuf,
    outside: PathBuf,
    dest: PathBuf,
    before: Vec<(Vec<u8>, Item)>,
}

fn open_dir(p: &Path) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
}

impl Ctx {
    fn new(name: &'static str) -> Ctx {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().to_path_buf();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        let sentinel = w.join("s");
        let outside = sentinel.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"untouched\n").unwrap();
        open_dir(&sentinel.join("base"));
        for d in ["cache", "tmp"] {
            open_dir(&w.join(d));
        }
        Ctx {
            name,
            arch: w.join("arch"),
            cache: w.join("cache"),
            tmp: w.join("tmp"),
            dest: sentinel.join("base/dest"),
            sentinel,
            outside,
            w,
            _tmp: tmp,
            before: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.arch.display())
    }

    /// The sentinel tree but the target, its two top directories' mtimes left out.
    fn outside_state(&self) -> Vec<(Vec<u8>, Item)> {
        let mut v = snapshot(&self.sentinel);
        v.retain(|(n, _)| !(n == b"base/dest" || n.starts_with(b"base/dest/")));
        for (n, i) in v.iter_mut() {
            if let (true, Item::Dir { mtime, .. }) = (n.is_empty() || n == b"base", i) {
                *mtime = 0;
            }
        }
        v
    }

    /// Records the state outside the target (after crafting, before a run).
    fn seal(&mut self) {
        // Everything the unprivileged runs read must be readable.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&self.arch).status();
        self.before = self.outside_state();
    }

    /// Runs `prog args` as `who`, with at most `fsize` bytes a file when given.
    fn exec(&self, prog: &str, args: &[OsString], who: Who, fsize: Option<u64>, env: &[(&str, &str)]) -> Run {
        // GNU time measures the peak memory of the program alone (a child of
        // this big test process would count the pages it shares at fork).
        let rss = self.w.join("rss");
        assert!(Path::new("/usr/bin/time").exists(), "GNU time is needed: scripts/setup --test installs it");
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "%M", "-o"]).arg(&rss);
        if who == Who::Nobody && is_root() {
            cmd.args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        }
        cmd.arg(prog)
            .args(args)
            .env("LANG", "C.UTF-8")
            .env_remove("RUST_LOG")
            .env_remove("PASSPHRASE")
            .env("TMPDIR", &self.tmp)
            .env("HOME", &self.tmp)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(n) = fsize {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t1 = std::thread::spawn(move || {
            let mut v = Vec::new();
            so.read_to_end(&mut v).unwrap();
            v
        });
        // At most 1 MiB of messages is kept; more fails the case.
        let t2 = std::thread::spawn(move || {
            let mut v = Vec::new();
            (&mut se).take(1 << 20).read_to_end(&mut v).unwrap();
            let more = std::io::copy(&mut se, &mut std::io::sink()).unwrap();
            assert_eq!(more, 0, "more than 1 MiB of messages");
            v
        });
        // A run that hangs is killed after 120 s (and fails its case).
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while !d.load(Ordering::Relaxed) {
                if t.elapsed() > Duration::from_secs(120) {
                    // SAFETY: the child's group; it is not reaped before `done` is set.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let status = child.wait().unwrap();
        done.store(true, Ordering::Relaxed);
        let took = start.elapsed();
        let out = t1.join().unwrap();
        let err = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
        // GNU time exits with the program's code (128+N after a signal) and says "Command exited..." first then.
        let time_out = fs::read_to_string(&rss).unwrap_or_default();
        let kib: u64 = time_out.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(u64::MAX / 2);
        let code = if time_out.contains("terminated by signal") { None } else { status.code() };
        Run { code, out, err, rss_mib: kib / 1024, took }
    }

    /// dup-get URL DEST with `extra` arguments.
    fn get(&self, extra: &[&str], who: Who) -> Run {
        self.get_limited(extra, who, None, &[])
    }

    fn get_limited(&self, extra: &[&str], who: Who, fsize: Option<u64>, env: &[(&str, &str)]) -> Run {
        let mut args: Vec<OsString> =
            vec![self.url().into(), self.dest.clone().into(), "--archive-dir".into(), self.cache.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        self.exec(DUP_GET, &args, who, fsize, env)
    }

    /// dup-ls URL --files (every set), checked for bounded memory and no panic.
    fn ls_files(&self, env: &[(&str, &str)]) -> Run {
        let args: Vec<OsString> =
            vec![self.url().into(), "--files".into(), "--archive-dir".into(), self.cache.clone().into()];
        let r = self.exec(DUP_LS, &args, Who::Me, None, env);
        assert!(r.rss_mib <= MAX_RSS_MIB, "{}: dup-ls used {} MiB", self.name, r.rss_mib);
        assert!(matches!(r.code, Some(0) | Some(13)), "{}: dup-ls --files: {:?}\n{}", self.name, r.code, r.err);
        r
    }

    /// The checks every run gets: its exit code, the names its message
    /// gives, bounded memory, nothing outside the target, no temporary
    /// file left in the target or in $TMPDIR.
    fn check(&self, r: &Run, code: i32, named: &[&str]) {
        let ctx =
            format!("{}: exit {:?} in {:.1} s, {} MiB:\n{}", self.name, r.code, r.took.as_secs_f64(), r.rss_mib, r.err);
        let after = self.outside_state();
        let changed =
            self.before.len().abs_diff(after.len()) + self.before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let first = r.err.lines().next().unwrap_or("");
        println!("hostile-case {} outside={changed} exit={:?} rss={}MiB: {first}", self.name, r.code, r.rss_mib);
        eprintln!("{}", r.err);
        assert_eq!(changed, 0, "written outside the target: {:?}\n{ctx}", tree(&self.sentinel));
        assert_eq!(fs::read(self.outside.join("victim")).unwrap(), b"untouched\n");
        assert_eq!(r.code, Some(code), "{ctx}");
        for n in named {
            assert!(r.err.contains(n), "{n:?} not named: {ctx}");
        }
        assert!(r.rss_mib <= MAX_RSS_MIB, "memory: {ctx}");
        for p in tree(&self.dest) {
            assert!(!p.contains(".dup-get."), "a temporary file was left: {p}\n{ctx}");
        }
        assert!(tree(&self.tmp).iter().all(|p| p.starts_with(".")), "left in $TMPDIR: {:?}", tree(&self.tmp));
    }

    /// Fails unless the target holds exactly `files` (relative path, content)
    /// and the directories above them.
    fn honest(&self, files: &[(&str, &[u8])]) {
        for (p, want) in files {
            let got = fs::read(self.dest.join(p)).unwrap_or_else(|e| panic!("{}: {p}: {e}", self.name));
            assert!(got == *want, "{}: {p} differs", self.name);
        }
        let mut names: Vec<String> = tree(&self.dest).into_iter().filter(|p| !self.dest.join(p).is_dir()).collect();
        names.sort();
        let mut want: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "{}: the target holds", self.name);
    }
}

fn one_set(volumes: Vec<Vol>) -> Vec<Set> {
    vec![Set { from: None, time: T, volumes }]
}

/// A full of one volume: the root, `a.txt`, the hostile entries, `z.txt`.
fn sandwich(hostile: Vec<E>) -> Vec<Set> {
    let mut entries = vec![dir("snapshot/./"), file("snapshot/a.txt", b"good a\n")];
    entries.extend(hostile);
    entries.push(file("snapshot/z.txt", b"good z\n"));
    one_set(vec![Vol { start: ".", end: "zzz", entries }])
}

const AZ: &[(&str, &[u8])] = &[("a.txt", b"good a\n"), ("z.txt", b"good z\n")];

/// Crafts `sets`, restores them as `who` (once more with --force), checks
/// exit 13, the names, and that only a.txt and z.txt were restored.
fn refused(name: &'static str, sets: &[Set], named: &[&str]) -> Ctx {
    let mut c = Ctx::new(name);
    craft(&c.arch, sets);
    c.seal();
    for extra in [&[][..], &["--force"][..]] {
        let r = c.get(extra, Who::Me);
        c.check(&r, 13, named);
    }
    c
}

// ---------------------------------------------------------------------------
// Names that leave the target.

#[test]
fn dotdot_names() {
    let long = format!("snapshot/{}/../../../../escape-long", "d".repeat(120));
    let c = refused(
        "dotdot_names",
        &sandwich(vec![file("snapshot/../escape", b"bad\n"), file(&long, b"bad\n")]),
        &["snapshot/../escape", "escape-long"],
    );
    c.honest(AZ);
    assert!(!c.sentinel.join("base/escape").exists() && !c.w.join("escape").exists());
}

#[test]
fn absolute_names() {
    let mut c = Ctx::new("absolute_names");
    let inside = format!("snapshot/{}/abs", c.outside.display());
    let raw = format!("{}/abs2", c.outside.display());
    craft(&c.arch, &sandwich(vec![file(&inside, b"bad\n"), file(&raw, b"bad\n")]));
    c.seal();
    let r = c.get(&[], Who::Me);
    // A name without the type prefix is refused; `snapshot//x` is `x` in
    // the target (as tar strips a leading /).
    c.check(&r, 13, &[&raw]);
    let within = format!("{}/abs", c.outside.strip_prefix("/").unwrap().display());
    c.honest(&[("a.txt", b"good a\n"), (&within, b"bad\n"), ("z.txt", b"good z\n")]);
}

#[test]
fn symlink_then_a_file_of_its_name() {
    let mut c = Ctx::new("symlink_then_a_file_of_its_name");
    let victim = c.outside.join("victim");
    craft(&c.arch, &sandwich(vec![symlink("snapshot/l", &victim), file("snapshot/l", b"overwritten\n")]));
    c.seal();
    for extra in [&[][..], &["--force"][..]] {
        let r = c.get(extra, Who::Me);
        c.check(&r, 13, &["snapshot/l"]);
        assert_eq!(fs::read_link(c.dest.join("l")).unwrap(), victim);
    }
}

#[test]
fn symlink_to_a_directory_then_writes_through_it() {
    let mut c = Ctx::new("symlink_to_a_directory_then_writes_through_it");
    let out = c.outside.clone();
    craft(
        &c.arch,
        &sandwich(vec![
            symlink("snapshot/b", &out),
            dir("snapshot/b/sub/"),
            file("snapshot/b/sub/f", b"bad\n"),
            file("snapshot/b/victim", b"overwritten\n"),
        ]),
    );
    c.seal();
    for extra in [&[][..], &["--force"][..]] {
        let r = c.get(extra, Who::Me);
        c.check(&r, 13, &["b/sub", "b/victim", "not a directory"]);
    }
    assert_eq!(fs::read_link(c.dest.join("b")).unwrap(), out);
    // A user's own symlink in the target, restored over with --force, is not followed either.
    fs::remove_dir_all(&c.dest).unwrap();
    fs::create_dir(&c.dest).unwrap();
    craft(&c.w.join("arch2"), &sandwich(vec![dir("snapshot/b/"), file("snapshot/b/victim", b"overwritten\n")]));
    fs::remove_dir_all(&c.arch).unwrap();
    fs::rename(c.w.join("arch2"), &c.arch).unwrap();
    std::os::unix::fs::symlink(&out, c.dest.join("b")).unwrap();
    let r = c.get(&["--force"], Who::Me);
    c.check(&r, 0, &[]);
    assert_eq!(fs::read(c.dest.join("b/victim")).unwrap(), b"overwritten\n");
    assert!(c.dest.join("b").is_dir() && !fs::symlink_metadata(c.dest.join("b")).unwrap().is_symlink());
}

#[test]
fn hard_link_to_outside() {
    let mut c = Ctx::new("hard_link_to_outside");
    let victim = c.outside.join("victim").display().to_string();
    craft(&c.arch, &sandwich(vec![hardlink("snapshot/h", &victim), hardlink("snapshot/h2", "snapshot/a.txt")]));
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["snapshot/h", "snapshot/h2", "hard links"]);
    c.honest(AZ);
    assert_eq!(fs::metadata(c.outside.join("victim")).unwrap().nlink(), 1);
}

#[test]
fn multivol_chunks_through_a_symlink() {
    let mut c = Ctx::new("multivol_chunks_through_a_symlink");
    let out = c.outside.clone();
    craft(
        &c.arch,
        &sandwich(vec![
            symlink("snapshot/m", &out),
            file("multivol_snapshot/m/x/1", b"bad\n"),
            file("multivol_snapshot/m/x/2", b"bad\n"),
        ]),
    );
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["m/x"]);
    assert_eq!(tree(&c.dest), ["a.txt", "m", "z.txt"]);
}

#[test]
fn an_incremental_turns_a_directory_into_a_symlink_out() {
    let mut c = Ctx::new("an_incremental_turns_a_directory_into_a_symlink_out");
    let out = c.outside.clone();
    craft(
        &c.arch,
        &[
            Set {
                from: None,
                time: T,
                volumes: vec![Vol {
                    start: ".",
                    end: "zzz",
                    entries: vec![
                        dir("snapshot/./"),
                        file("snapshot/a.txt", b"good a\n"),
                        dir("snapshot/d/"),
                        file("snapshot/d/f", b"good d/f\n"),
                        file("snapshot/z.txt", b"good z\n"),
                    ],
                }],
            },
            inc_dir_to_symlink(&out),
        ],
    );
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["d/g", "d/f"]);
    assert_eq!(fs::read_link(c.dest.join("d")).unwrap(), out);
    assert_eq!(fs::read(c.dest.join("a.txt")).unwrap(), b"good a\n");
}

// ---------------------------------------------------------------------------
// What a non-root restore must not create.

#[test]
fn device_nodes() {
    let mut c = Ctx::new("device_nodes");
    craft(&c.arch, &sandwich(vec![device("snapshot/disk", true, 8, 0), device("snapshot/null", false, 1, 3)]));
    c.seal();
    // Without root: refused, each named, the rest restored (exit 1).
    let r = c.get(&[], Who::Nobody);
    c.check(&r, 1, &["disk", "null", "not running as root"]);
    c.honest(AZ);
    if !is_root() {
        return;
    }
    // As root (a system restore): restored, as tar and duplicity do.
    fs::remove_dir_all(&c.dest).unwrap();
    let r = c.get(&[], Who::Me);
    c.check(&r, 0, &[]);
    let m = fs::symlink_metadata(c.dest.join("disk")).unwrap();
    assert_eq!((m.mode() & libc::S_IFMT, m.rdev()), (libc::S_IFBLK, libc::makedev(8, 0)));
}

#[test]
fn setuid_and_setgid_bits_without_root() {
    let mut c = Ctx::new("setuid_and_setgid_bits_without_root");
    craft(
        &c.arch,
        &sandwich(vec![
            file("snapshot/sgid", b"#!/bin/sh\n").mode(0o2755),
            file("snapshot/suid", b"#!/bin/sh\n").mode(0o4755),
            dir("snapshot/t/").mode(0o1777),
        ]),
    );
    c.seal();
    let r = c.get(&[], Who::Nobody);
    c.check(&r, 0, &["setuid", "sgid", "2 files"]);
    let mode = |p: &str| fs::metadata(c.dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("suid"), mode("sgid"), mode("t")), (0o755, 0o755, 0o1777), "{}", r.err);
    assert_eq!(fs::read(c.dest.join("suid")).unwrap(), b"#!/bin/sh\n");
    if !is_root() {
        return;
    }
    // As root, with the owner restored, the bits are kept.
    fs::remove_dir_all(&c.dest).unwrap();
    let r = c.get(&[], Who::Me);
    c.check(&r, 0, &[]);
    assert_eq!((mode("suid"), mode("sgid")), (0o4755, 0o2755));
}

// ---------------------------------------------------------------------------
// Sizes: declared, extension headers, bombs.

#[test]
fn a_huge_size_in_a_tar_header() {
    let mut c = Ctx::new("a_huge_size_in_a_tar_header");
    let sets = one_set(vec![
        Vol {
            start: ".",
            end: "big",
            entries: vec![
                dir("snapshot/./"),
                file("snapshot/a.txt", b"good a\n"),
                file("snapshot/big", &random_bytes(1, 5000)).declared(1 << 40),
            ],
        },
        Vol { start: "z.txt", end: "z.txt", entries: vec![file("snapshot/z.txt", b"good z\n")] },
    ]);
    craft(&c.arch, &sets);
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["big", "truncated"]);
    c.honest(AZ);
}

/// A bare extension header declaring 1 GiB (zeros, a gzip bomb of 1 MiB)
/// before an honest entry.
fn extension_bomb(name: &'static str, kind: &'static str) {
    let mut c = Ctx::new(name);
    let sets = one_set(vec![
        Vol {
            start: ".",
            end: "m.txt",
            entries: vec![
                dir("snapshot/./"),
                file("snapshot/a.txt", b"good a\n"),
                extension(kind, 1 << 30),
                file("snapshot/m.txt", b"after the bomb\n"),
            ],
        },
        Vol { start: "z.txt", end: "z.txt", entries: vec![file("snapshot/z.txt", b"good z\n")] },
    ]);
    craft(&c.arch, &sets);
    assert!(fs::metadata(c.arch.join(format!("duplicity-full.{T}.vol1.difftar.gz"))).unwrap().len() < 8 << 20);
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["extension header", "vol1"]);
    c.honest(AZ);
    assert!(r.took < Duration::from_secs(30), "{:?}", r.took);
}

#[test]
fn a_pax_header_of_a_gigabyte() {
    extension_bomb("a_pax_header_of_a_gigabyte", "xhdr");
}

#[test]
fn a_gnu_long_name_of_a_gigabyte() {
    extension_bomb("a_gnu_long_name_of_a_gigabyte", "longname");
}

#[test]
fn a_gzip_bomb_after_the_tar() {
    let mut c = Ctx::new("a_gzip_bomb_after_the_tar");
    // 64 GiB of zeros in 64 MiB of gzip members after the end of the tar
    // (decompressing them would take a minute).
    craft_with(&c.arch, &sandwich(vec![]), &Opts { tail_zeros: 64 << 30, ..Opts::default() });
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &[&vol_name(1, false), "follow the end of its tar"]);
    c.honest(AZ);
    assert!(r.took < Duration::from_secs(30), "{:?}", r.took);
}

#[test]
fn a_gzip_bomb_as_content() {
    let mut c = Ctx::new("a_gzip_bomb_as_content");
    // A 1 GiB file of zeros (1 MiB of gzip), restored under a 64 MiB file size limit.
    let sets = one_set(vec![
        Vol {
            start: ".",
            end: "bomb",
            entries: vec![
                dir("snapshot/./"),
                file("snapshot/a.txt", b"good a\n"),
                file("snapshot/bomb", b"").zeros(1 << 30),
            ],
        },
        Vol { start: "z.txt", end: "z.txt", entries: vec![file("snapshot/z.txt", b"good z\n")] },
    ]);
    craft(&c.arch, &sets);
    c.seal();
    let r = c.get_limited(&[], Who::Me, Some(64 << 20), &[]);
    c.check(&r, 1, &["bomb", "too large"]);
    c.honest(AZ);
    let used: u64 = tree(&c.dest).iter().map(|p| fs::symlink_metadata(c.dest.join(p)).unwrap().len()).sum();
    assert!(used < 1 << 20, "{used} bytes in the target");
}

// ---------------------------------------------------------------------------
// Damaged volumes and manifests.

/// vol1: a.txt, b.bin (200 KB), c.txt; vol2: z.txt.
fn two_volumes() -> Vec<Set> {
    one_set(vec![
        Vol {
            start: ".",
            end: "c.txt",
            entries: vec![
                dir("snapshot/./"),
                file("snapshot/a.txt", b"good a\n"),
                file("snapshot/b.bin", &random_bytes(9, 200_000)),
                file("snapshot/c.txt", b"good c\n"),
            ],
        },
        Vol { start: "z.txt", end: "z.txt", entries: vec![file("snapshot/z.txt", b"good z\n")] },
    ])
}

fn vol_name(n: u64, gpg: bool) -> String {
    format!("duplicity-full.{T}.vol{n}.difftar.{}", if gpg { "gpg" } else { "gz" })
}

#[test]
fn a_truncated_gzip_volume() {
    // Cut in the middle of b.bin; the manifest has the cut file's hash, so
    // gzip itself finds the damage.
    let mut c = Ctx::new("a_truncated_gzip_volume");
    craft_with(&c.arch, &two_volumes(), &Opts { cut: vec![(0, 1, 100_000)], rehash: true, ..Opts::default() });
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &[&vol_name(1, false)]);
    c.honest(AZ);
}

#[test]
fn a_truncated_gzip_volume_with_its_old_hash() {
    let mut c = Ctx::new("a_truncated_gzip_volume_with_its_old_hash");
    craft_with(&c.arch, &two_volumes(), &Opts { cut: vec![(0, 1, 100_000)], ..Opts::default() });
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &[&vol_name(1, false), "SHA1"]);
    c.honest(&[("z.txt", b"good z\n")]);
}

#[test]
fn a_truncated_openpgp_volume() {
    if !crate::common::have("gpg", "a_truncated_openpgp_volume") {
        return;
    }
    let mut c = Ctx::new("a_truncated_openpgp_volume");
    let opts = Opts { passphrase: Some(PASS.into()), cut: vec![(0, 1, 100_000)], rehash: true, ..Opts::default() };
    craft_with(&c.arch, &two_volumes(), &opts);
    c.seal();
    let r = c.get_limited(&[], Who::Me, None, &[("PASSPHRASE", PASS)]);
    c.check(&r, 13, &[&vol_name(1, true)]);
    // Plaintext of a damaged OpenPGP message is never used: the whole volume is lost.
    c.honest(&[("z.txt", b"good z\n")]);
}

/// Replaces the manifest of the one full set with `edit` of it.
fn edit_manifest(c: &Ctx, edit: impl Fn(String) -> String) {
    let p = c.arch.join(format!("{}.manifest", set_name(&Set { from: None, time: T, volumes: vec![] })));
    let m = fs::read_to_string(&p).unwrap();
    fs::write(&p, edit(m)).unwrap();
}

#[test]
fn a_manifest_with_a_huge_volume_number() {
    let mut c = Ctx::new("a_manifest_with_a_huge_volume_number");
    craft(&c.arch, &two_volumes());
    edit_manifest(&c, |m| {
        m.replace("Volume 2:", "Volume 4000000000:").replace(
            "Filelist",
            "Volume 18446744073709551615:\n    StartingPath   zzz  \n    EndingPath     zzz  \nFilelist",
        )
    });
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["vol18446744073709551615", "vol4000000000", &vol_name(2, false), "not in its set's manifest"]);
    c.honest(&[("a.txt", b"good a\n"), ("b.bin", &random_bytes(9, 200_000)), ("c.txt", b"good c\n")]);
    // A number past 64 bits: the manifest is refused, and said to be.
    edit_manifest(&c, |m| m.replace("Volume 18446744073709551615:", "Volume 99999999999999999999999:"));
    fs::remove_dir_all(&c.dest).unwrap();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &["manifest"]);
}

#[test]
fn a_manifest_with_a_duplicate_volume() {
    let mut c = Ctx::new("a_manifest_with_a_duplicate_volume");
    craft(&c.arch, &two_volumes());
    // A second block for volume 2 (as a resumed backup writes them; the later wins), with a wrong hash.
    edit_manifest(&c, |m| {
        m.replace(
            "Filelist",
            "Volume 2:\n    StartingPath   z.txt  \n    EndingPath     z.txt  \n    Hash SHA1 \
             0000000000000000000000000000000000000000\nFilelist",
        )
    });
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &[&vol_name(2, false), "SHA1"]);
    c.honest(&[("a.txt", b"good a\n"), ("b.bin", &random_bytes(9, 200_000)), ("c.txt", b"good c\n")]);
}

#[test]
fn a_missing_volume() {
    let mut c = Ctx::new("a_missing_volume");
    let mut sets = two_volumes();
    sets[0].volumes.push(Vol { start: "zz.txt", end: "zz.txt", entries: vec![file("snapshot/zz.txt", b"zz\n")] });
    craft(&c.arch, &sets);
    fs::remove_file(c.arch.join(vol_name(2, false))).unwrap();
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 13, &[&vol_name(2, false), "missing"]);
    c.honest(&[
        ("a.txt", b"good a\n"),
        ("b.bin", &random_bytes(9, 200_000)),
        ("c.txt", b"good c\n"),
        ("zz.txt", b"zz\n"),
    ]);
}

/// A real backup whose sigtar `damage` changes: dup-sig (the basis of the
/// next incremental) refuses it, named, in bounded memory; dup-sync (into a
/// new cache: it checks the gzip stream, not the tar) exits `sync`; dup-ls
/// --files stays bounded; dup-get does not need it and restores all.
fn sigtar_case(name: &'static str, damage: impl FnOnce(&Path, &Path), named: &[&str], sync: i32) {
    let mut c = Ctx::new(name);
    let src = c.w.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"good a\n").unwrap();
    fs::write(src.join("b.bin"), random_bytes(3, 300_000)).unwrap();
    fs::write(src.join("z.txt"), b"good z\n").unwrap();
    crate::common::dup_backup(&c.w, &src, &c.url(), &c.w.join("backup-cache"), false, "");
    let sig = fs::read_dir(&c.arch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".sigtar."))
        .unwrap();
    damage(&sig, &c.w);
    let sig_name = sig.file_name().unwrap().to_string_lossy().into_owned();
    let mut named = named.to_vec();
    named.push(&sig_name);
    c.seal();
    let args: Vec<OsString> = vec!["--archive".into(), c.url().into(), "--archive-dir".into(), c.cache.clone().into()];
    let r = c.exec(DUP_SIG, &args, Who::Me, None, &[]);
    c.check(&r, 13, &named);
    let copy = c.w.join("copy");
    let args: Vec<OsString> = vec![c.url().into(), "--archive-dir".into(), copy.into()];
    let r = c.exec(DUP_SYNC, &args, Who::Me, None, &[]);
    let sync_named: &[&str] = if sync == 0 { &[] } else { &[&sig_name] };
    c.check(&r, sync, sync_named);
    c.ls_files(&[]);
    let r = c.get(&[], Who::Me);
    c.check(&r, 0, &[]);
    c.honest(&[("a.txt", b"good a\n"), ("b.bin", &random_bytes(3, 300_000)), ("z.txt", b"good z\n")]);
}

#[test]
fn a_damaged_sigtar() {
    let flip = |sig: &Path, _: &Path| {
        let mut data = fs::read(sig).unwrap();
        let n = data.len();
        for b in &mut data[n / 3..n / 3 + 64] {
            *b ^= 0x5a;
        }
        fs::write(sig, data).unwrap();
    };
    sigtar_case("a_damaged_sigtar", flip, &[], 13);
}

#[test]
fn a_sigtar_with_a_pax_header_of_a_gigabyte() {
    // A gzip tar of one pax header declaring 1 GiB of zeros, as the sigtar.
    let bomb = |sig: &Path, w: &Path| {
        let tmp = w.join("bomb");
        craft(&tmp, &one_set(vec![Vol { start: ".", end: ".", entries: vec![extension("xhdr", 1 << 30)] }]));
        fs::copy(tmp.join(vol_name(1, false)), sig).unwrap();
    };
    sigtar_case("a_sigtar_with_a_pax_header_of_a_gigabyte", bomb, &["extension header"], 0);
}

// ---------------------------------------------------------------------------
// Names.

#[test]
fn a_nul_in_a_name() {
    let c = refused(
        "a_nul_in_a_name",
        &sandwich(vec![file("snapshot/n", b"bad\n").pax("path", b"snapshot/nul\0name")]),
        &["NUL", "nul\\x00name"],
    );
    c.honest(AZ);
}

#[test]
fn names_of_four_kibibytes() {
    let mut c = Ctx::new("names_of_four_kibibytes");
    // One component of 4 KiB (too long for any file system), and a path of
    // 4 KiB in components of 200 bytes (honest: restored).
    let one = format!("snapshot/n{}", "x".repeat(4096));
    let comps: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "d".repeat(198))).collect();
    let mut entries = vec![dir("snapshot/./")];
    let mut deep = String::from("snapshot");
    for d in &comps {
        deep = format!("{deep}/{d}");
        entries.push(dir(&format!("{deep}/")));
    }
    entries.push(file(&format!("{deep}/f"), b"deep\n"));
    entries.push(file("snapshot/a.txt", b"good a\n"));
    entries.push(file_b(one.as_bytes(), b"bad\n"));
    entries.push(file("snapshot/z.txt", b"good z\n"));
    craft(&c.arch, &one_set(vec![Vol { start: ".", end: "zzz", entries }]));
    c.seal();
    let r = c.get(&[], Who::Me);
    c.check(&r, 1, &["File name too long"]);
    let deep_rel = format!("{}/f", comps.join("/"));
    c.honest(&[("a.txt", b"good a\n"), (&deep_rel, b"deep\n"), ("z.txt", b"good z\n")]);
}

#[test]
fn out_of_order_and_repeated_entries() {
    let c = refused(
        "out_of_order_and_repeated_entries",
        &sandwich(vec![
            file("snapshot/c.txt", b"c\n"),
            file("snapshot/b.txt", b"bad\n"),
            file("snapshot/c.txt", b"bad\n"),
            file("snapshot/d.txt", b"d\n"),
        ]),
        &["snapshot/b.txt", "out of order"],
    );
    c.honest(&[("a.txt", b"good a\n"), ("c.txt", b"c\n"), ("d.txt", b"d\n"), ("z.txt", b"good z\n")]);
}

#[test]
fn control_characters_in_names_are_not_printed_raw() {
    let mut c = Ctx::new("control_characters_in_names_are_not_printed_raw");
    let src = c.w.join("src");
    let evil = "e\x1b]0;pwned\x07\n";
    fs::create_dir(&src).unwrap();
    for (p, d) in [("a.txt", "good a\n"), (evil, "esc\n"), ("z.txt", "good z\n")] {
        fs::write(src.join(p), d).unwrap();
    }
    crate::common::dup_backup(&c.w, &src, &c.url(), &c.w.join("backup-cache"), false, "");
    c.seal();
    c.ls_files(&[]);
    let table: Vec<OsString> = vec![c.url().into(), "--files".into(), "--table".into()];
    let r = c.exec(DUP_LS, &table, Who::Me, None, &[]);
    let out = String::from_utf8_lossy(&r.out);
    assert!(!out.contains('\x1b') && !out.contains('\x07') && out.contains("e\\x1b"), "{out}");
    let r = c.get(&[], Who::Me);
    c.check(&r, 0, &[]);
    c.honest(&[("a.txt", b"good a\n"), (evil, b"esc\n"), ("z.txt", b"good z\n")]);
}

// ---------------------------------------------------------------------------
// Leftovers of a killed restore.

#[test]
fn stale_temporaries_of_a_dead_restore_are_removed() {
    let mut c = Ctx::new("stale_temporaries_of_a_dead_restore_are_removed");
    craft(&c.arch, &sandwich(vec![dir("snapshot/d/"), file("snapshot/d/f", b"f\n")]));
    c.seal();
    // A dead process's leftovers (a pid above pid_max is never alive), a
    // live one's (this test's), and a user's file of a similar name.
    fs::create_dir_all(c.dest.join("d")).unwrap();
    let dead = ".dup-get.4194305.1";
    let live = format!(".dup-get.{}.1", std::process::id());
    for p in [dead.to_string(), format!("d/{dead}"), live.clone(), ".dup-get.notes".into()] {
        fs::write(c.dest.join(&p), b"partial").unwrap();
    }
    let r = c.get(&["--force"], Who::Me);
    // check() refuses any .dup-get. name: the live one and the user's are looked at here.
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(!c.dest.join(dead).exists() && !c.dest.join("d").join(dead).exists(), "{}", r.err);
    assert!(c.dest.join(&live).exists() && c.dest.join(".dup-get.notes").exists());
    fs::remove_file(c.dest.join(&live)).unwrap();
    fs::remove_file(c.dest.join(".dup-get.notes")).unwrap();
    c.check(&r, 0, &[]);
    c.honest(&[("a.txt", b"good a\n"), ("d/f", b"f\n"), ("z.txt", b"good z\n")]);
}
