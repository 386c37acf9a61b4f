//! Cancel: an API backup cancelled half way returns at once as
//! `Kind::Interrupted` and the next call resumes it; SIGINT to the
//! binaries' pipeline and to the wrapper ends them with exit 130 (the
//! wrapper: duplicity's 4) saying that the next run resumes, which it does;
//! a second SIGINT ends a stage at once.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;
use dup::Kind;
use dup::api::{self, ArchiveOptions, BackupOptions, Cancel, Event, VerifyOptions};

/// A tree of `n` random files of `size` bytes.
fn tree(src: &Path, n: u64, size: usize) {
    std::fs::create_dir_all(src).unwrap();
    for i in 0..n {
        std::fs::write(src.join(format!("f{i:03}")), random_bytes(i + 1, size)).unwrap();
    }
}

/// The inode of each volume in `arch`: a volume sent again gets a new one.
fn volume_inodes(arch: &Path) -> Vec<(String, u64)> {
    names(arch)
        .into_iter()
        .filter(|n| n.contains(".vol"))
        .map(|n| {
            let ino = std::fs::metadata(arch.join(&n)).unwrap().ino();
            (n, ino)
        })
        .collect()
}

/// 300 MB in 150 files: the backup is cancelled from its progress callback
/// once half the bytes are stored. It returns within a second with
/// `Kind::Interrupted`, publishing nothing and keeping the stored volumes;
/// the next call takes the same set, skips those volumes and the result
/// verifies against the source.
#[test]
fn a_backup_cancelled_half_way_returns_at_once_and_the_next_call_resumes() {
    let t = World::new();
    let src = t.p("src");
    tree(&src, 150, 2 << 20);
    let a = ArchiveOptions { archive_dir: Some(t.p("cache")), ..ArchiveOptions::new(t.url("arch")) };
    let mut o = BackupOptions::new(&src, a.url.clone());
    o.archive = a.clone();
    o.volsize = 10 << 20;
    o.compress_level = 1;
    let cancel = Cancel::new();
    let cancelled_at: Mutex<Option<Instant>> = Mutex::new(None);
    let stored = Mutex::new(0u64);
    let progress = |e: Event| {
        if let Event::File { bytes, action, .. } = e
            && action == "stored"
        {
            let mut s = stored.lock().unwrap();
            *s += bytes;
            if *s >= 150 << 20 && !cancel.is_cancelled() {
                cancel.cancel();
                *cancelled_at.lock().unwrap() = Some(Instant::now());
            }
        }
    };
    let e = api::backup(&o, &progress, &cancel).expect_err("cancelled");
    let took = cancelled_at.lock().unwrap().expect("cancelled half way").elapsed();
    assert_eq!(e.kind, Kind::Interrupted, "{}", e.message);
    assert!(e.hint.as_deref().unwrap_or("").contains("resumes"), "{:?}", e.hint);
    assert!(took < Duration::from_secs(1), "returned {took:?} after the cancel");
    let files = names(&t.p("arch"));
    assert!(!files.iter().any(|n| n.contains("manifest")), "nothing published: {files:?}");
    let kept = volume_inodes(&t.p("arch"));
    assert!(kept.len() >= 14, "the volumes stored before the cancel are kept: {kept:?}");
    println!("cancelled after {} MiB stored; returned in {took:?}", *stored.lock().unwrap() >> 20);

    // The resumed run says so in its log events (noted in the pack and put threads).
    let log = Mutex::new(Vec::new());
    let logged = |e: Event| {
        if let Event::Log { message, .. } = e {
            log.lock().unwrap().push(message)
        }
    };
    let r = api::backup(&o, &logged, &Cancel::new()).unwrap();
    let log = log.into_inner().unwrap();
    assert!(log.iter().any(|m| m.starts_with("resuming the unfinished set")), "{log:?}");
    assert!(log.iter().any(|m| m.contains("is already on the backend")), "{log:?}");
    assert!(r.full);
    assert_eq!(r.stored.skipped as usize, kept.len(), "every kept volume resumed: {:?}", r.stored);
    let after = volume_inodes(&t.p("arch"));
    assert!(kept.iter().all(|k| after.contains(k)), "the kept volumes were not sent again");
    let v = VerifyOptions { archive: a, source: src, compare_data: true, ..Default::default() };
    assert_eq!(api::verify(&v, &dup::progress::Silent, &Cancel::new()).unwrap().difference_count, 0);
}

/// Starts `script` in bash in its own process group, with the dup binaries first on PATH.
fn spawn_group(cwd: &Path, script: &str) -> Child {
    Command::new("bash")
        .args(["-c", script])
        .current_dir(cwd)
        .env("PATH", bin_path())
        .env("DUP_BIN", bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Whom a test's SIGINT goes to.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The whole process group, as a terminal's ^C.
    Group,
    /// The group's dup-pack alone.
    Pack,
}

/// The process of the group `pgid` running `name`.
fn member(pgid: i32, name: &str) -> i32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let pgrp: Option<i32> = rest.split(' ').nth(2).and_then(|g| g.parse().ok());
        if comm.ends_with(&format!("({name}")) && pgrp == Some(pgid) {
            return pid;
        }
    }
    panic!("no {name} in process group {pgid}");
}

/// Once dup-put has journaled three files: stops the group, sends SIGINT
/// to `target`, lets the group go on; its output.
fn interrupt_after_three(
    mut child: Child,
    journal: &Path,
    target: Target,
) -> (std::process::ExitStatus, String, String) {
    let pgid = child.id() as i32;
    let start = Instant::now();
    while !std::fs::read_to_string(journal).is_ok_and(|j| j.lines().count() >= 3) {
        assert!(start.elapsed() < Duration::from_secs(60), "three volumes were not stored");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before three volumes were stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signals to the process group this test started.
    unsafe {
        libc::kill(-pgid, libc::SIGSTOP);
        match target {
            Target::Group => libc::kill(-pgid, libc::SIGINT),
            Target::Pack => libc::kill(member(pgid, "dup-pack"), libc::SIGINT),
        };
        libc::kill(-pgid, libc::SIGCONT);
    }
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?} to stop", t0.elapsed());
    (out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// SIGINT to the pipeline dup-scan | dup-delta | dup-pack | dup-put:
/// dup-pack exits 130; the stages before it 0 or 130. To the group (^C),
/// dup-put exits 130 too, keeping what it stored and saying that the next
/// run resumes; to dup-pack alone, dup-pack ends its stream after the
/// volumes it packed and dup-put keeps them. Either way the rerun
/// (dup-pack --resume) sends only the rest, and the archive restores.
fn sigint_to_the_pipeline(target: Target) {
    let t = World::new();
    let src = t.p("src");
    tree(&src, 40, 1 << 20);
    let (arch, cache) = (t.p("arch"), t.p("cache"));
    let url = file_url(&arch);
    let (u, c) = (q(&url), format!("--archive-dir {}", q(&cache)));
    let journal = cache.join(dup::io::cache::backup_name(&url)).join(dup::io::cache::journal::JOURNAL);
    // The stream is slowed between dup-pack and dup-put (a JSON pass
    // that ignores SIGINT), so the signal lands in the middle.
    let slow = r#"(trap '' INT; exec awk '/^{"kind":"file"/{system("sleep 0.1")} {print; fflush()}')"#;
    let script = format!(
        "dup-scan {} | dup-delta | dup-pack --no-encryption --volsize 1 --json --resume {u} {c} | {slow} | \
         dup-put {c} {u}; echo \"codes ${{PIPESTATUS[*]}}\"",
        q(&src)
    );
    let (status, out, err) = interrupt_after_three(spawn_group(t.path(), &script), &journal, target);
    assert!(status.success(), "bash went on after the stages ended: {status:?}\n{err}");
    let codes: Vec<&str> = out.trim().strip_prefix("codes ").unwrap().split(' ').collect();
    let put = if target == Target::Group { "130" } else { "0" };
    assert_eq!((codes[2], codes[4]), ("130", put), "{out}\n{err}");
    // codes[3] is the slowing pass's.
    assert!([0, 1].iter().all(|&i| ["0", "130"].contains(&codes[i])), "{out}\n{err}");
    assert!(err.contains("dup-pack: interrupted") && err.contains("resumes"), "{err}");
    let kept = volume_inodes(&arch);
    assert!(kept.len() >= 3 && !names(&arch).iter().any(|n| n.contains("manifest")), "{kept:?}");

    let rerun = format!(
        "dup-scan {} | dup-delta | dup-pack --no-encryption --volsize 1 --resume {u} {c} | RUST_LOG=info dup-put {c} {u}",
        q(&src)
    );
    let out = sh_ok(t.path(), &rerun);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("skipped {} already stored", kept.len())), "{log}");
    let after = volume_inodes(&arch);
    assert!(kept.iter().all(|k| after.contains(k)), "the kept volumes were not sent again");
    sh_ok(t.path(), &format!("dup-get {c} {u} {}", q(t.p("out"))));
    assert_same_tree(&src, &t.p("out"));
}

#[test]
fn sigint_to_the_pipeline_exits_130_and_the_rerun_resumes() {
    sigint_to_the_pipeline(Target::Group);
}

#[test]
fn sigint_to_dup_pack_alone_exits_130_and_the_rerun_resumes() {
    sigint_to_the_pipeline(Target::Pack);
}

/// SIGINT to the wrapper's backup: duplicity's exit code for an
/// interrupted run (4, dup's 130), the message saying the next run
/// resumes; `duplicity full` again resumes and restores.
#[test]
fn sigint_to_the_wrapper_and_the_rerun_resumes() {
    let t = World::new();
    let src = t.p("src");
    tree(&src, 80, 1 << 20);
    let (arch, cache) = (t.p("arch"), t.p("cache"));
    let url = file_url(&arch);
    let journal = cache.join(dup::io::cache::backup_name(&url)).join(dup::io::cache::journal::JOURNAL);
    let wrapper = |args: &str| {
        format!("{} --no-encryption --volsize 1 --archive-dir {} {args}", q(scripts().join("duplicity")), q(&cache))
    };
    let script = wrapper(&format!("full {} {}", q(&src), q(&url)));
    let (status, _out, err) = interrupt_after_three(spawn_group(t.path(), &script), &journal, Target::Group);
    assert_eq!(status.code(), Some(4), "{status:?}\n{err}");
    assert!(err.contains("interrupted") && err.contains("resumes"), "{err}");
    let kept = volume_inodes(&arch);
    assert!(kept.len() >= 3 && !names(&arch).iter().any(|n| n.contains("manifest")), "{kept:?}");
    sh_ok(t.path(), &wrapper(&format!("full {} {}", q(&src), q(&url))));
    let after = volume_inodes(&arch);
    assert!(kept.iter().all(|k| after.contains(k)), "the kept volumes were not sent again");
    sh_ok(t.path(), &wrapper(&format!("restore {} {}", q(&url), q(t.p("out")))));
    assert_same_tree(&src, &t.p("out"));
}

/// The first SIGINT asks a stage to stop at its next check (dup-delta,
/// reading a 4 GiB file, checks after it); the second ends it at once.
#[test]
fn a_second_sigint_ends_a_stage_at_once() {
    let t = World::new();
    let src = t.p("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::File::create(src.join("sparse")).unwrap().set_len(4 << 30).unwrap();
    let entries = std::fs::File::create(t.p("entries")).unwrap();
    let scan = Command::new(bin_dir().join("dup-scan")).arg(&src).stdout(entries).status().unwrap();
    assert!(scan.success());
    let mut child = Command::new(bin_dir().join("dup-delta"))
        .stdin(std::fs::File::open(t.p("entries")).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id() as i32;
    // SAFETY: signals to the child this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the first SIGINT waits for the next check");
    unsafe { libc::kill(pid, libc::SIGINT) };
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}
