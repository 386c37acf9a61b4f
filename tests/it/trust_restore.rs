//! Trust (issue 11, cases 4 to 7): a restore of a hostile archive refuses
//! the bad entries alone and never writes outside its target; a full disk
//! (or a read-only one) ends a restore at once with one message; the
//! connection test creates nothing and answers "unreachable" quickly; a
//! restore at a time before the first backup says so. Every test runs the
//! real binaries. Hostile archives are written with Python's tarfile.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::craft::{Set, Vol, craft, dir, file, hardlink, inc_dir_to_symlink, symlink, tree};
use crate::common::file_url as url;
use crate::common::{
    World, closed_port, dup_backup, is_root, no_servers, q, random_bytes, sh_ok, var, with_closed_port,
};

const DUP_GET: &str = env!("CARGO_BIN_EXE_dup-get");
const DUP_LS: &str = env!("CARGO_BIN_EXE_dup-ls");

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs dup-get URL DEST with the cache in `cache` and `extra` arguments.
fn get(arch: &Path, dest: &Path, cache: &Path, extra: &[&str]) -> Output {
    Command::new(DUP_GET)
        .arg(url(arch))
        .arg(dest)
        .arg("--archive-dir")
        .arg(cache)
        .args(extra)
        .env("LANG", "C.UTF-8")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Case 4: one bad entry refuses itself alone.

#[test]
fn a_bad_entry_before_honest_ones_refuses_itself_alone() {
    let Some(tmp) = World::needing(&["python3"]) else { return };
    let w = tmp.path();
    let outside = w.join("outside");
    fs::create_dir(&outside).unwrap();
    // An absolute name inside the volume's tar (after the type prefix), and one without it.
    let abs_in = format!("snapshot/{}/abs", outside.display());
    let abs_raw = format!("{}/abs2", outside.display());
    let arch = w.join("arch");
    craft(
        &arch,
        &[Set {
            from: None,
            time: "20240102T030405Z",
            volumes: vec![Vol {
                start: ".",
                end: "c.txt",
                entries: vec![
                    dir("snapshot/./"),
                    file("snapshot/../x", b"bad\n"),
                    file(&abs_in, b"bad\n"),
                    file(&abs_raw, b"bad\n"),
                    symlink("snapshot/s", &outside),
                    file("snapshot/s/owned", b"bad\n"),
                    file("snapshot/a.txt", b"good a\n"),
                    file("snapshot/b.txt", b"good b\n"),
                    file("snapshot/c.txt", b"good c\n"),
                ],
            }],
        }],
    );
    let dest = w.join("base/dest");
    let out = get(&arch, &dest, &w.join("cache"), &[]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(13), "{err}");
    for named in ["snapshot/../x", abs_in.as_str(), abs_raw.as_str(), "snapshot/s", "snapshot/s/owned"] {
        assert!(err.contains(named), "{named} not named in:\n{err}");
    }
    assert_eq!(tree(&dest), ["a.txt", "b.txt", "c.txt"], "{err}");
    for n in ["a", "b", "c"] {
        assert_eq!(fs::read(dest.join(format!("{n}.txt"))).unwrap(), format!("good {n}\n").as_bytes());
    }
    assert!(tree(&outside).is_empty(), "written outside DEST: {:?}", tree(&outside));
    assert_eq!(tree(&w.join("base")), ["dest", "dest/a.txt", "dest/b.txt", "dest/c.txt"]);

    // Out of order within the volume's range: that entry alone is refused.
    let arch2 = w.join("arch2");
    craft(
        &arch2,
        &[Set {
            from: None,
            time: "20240102T030405Z",
            volumes: vec![Vol {
                start: ".",
                end: "d.txt",
                entries: vec![
                    dir("snapshot/./"),
                    file("snapshot/a.txt", b"a\n"),
                    file("snapshot/c.txt", b"c\n"),
                    file("snapshot/b.txt", b"b\n"),
                    file("snapshot/d.txt", b"d\n"),
                ],
            }],
        }],
    );
    let dest2 = w.join("dest2");
    let out = get(&arch2, &dest2, &w.join("cache"), &[]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(err.contains("snapshot/b.txt") && err.contains("out of order"), "{err}");
    assert_eq!(tree(&dest2), ["a.txt", "c.txt", "d.txt"], "{err}");

    // With --path: an entry past the path (and outside the volume's range)
    // before the path's own entries does not end the set.
    let arch3 = w.join("arch3");
    craft(
        &arch3,
        &[Set {
            from: None,
            time: "20240102T030405Z",
            volumes: vec![Vol {
                start: ".",
                end: "dir/f",
                entries: vec![
                    dir("snapshot/./"),
                    file("snapshot/zz", b"bad\n"),
                    dir("snapshot/dir/"),
                    file("snapshot/dir/f", b"f\n"),
                ],
            }],
        }],
    );
    let dest3 = w.join("dest3");
    let out = get(&arch3, &dest3, &w.join("cache"), &["--path", "dir"]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(err.contains("snapshot/zz"), "{err}");
    assert_eq!(tree(&dest3), ["f"], "{err}");
    assert_eq!(fs::read(dest3.join("f")).unwrap(), b"f\n");
}

/// Honest multi-volume archives (a file across volumes, the manifest
/// ranges dup-pack writes) restore whole under the range check.
#[test]
fn honest_volumes_are_within_their_ranges() {
    let tmp = World::new();
    let w = tmp.path();
    let src = w.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), b"a\n").unwrap();
    fs::write(src.join("big.bin"), random_bytes(7, 3 << 20)).unwrap();
    fs::write(src.join("d/e.txt"), b"e\n").unwrap();
    fs::write(src.join("z.txt"), b"z\n").unwrap();
    let arch = w.join("arch");
    let cache = w.join("cache");
    dup_backup(w, &src, &url(&arch), &cache, false, "--volsize 1");
    fs::write(src.join("big.bin"), random_bytes(8, 3 << 20)).unwrap();
    fs::write(src.join("d/new.txt"), b"new\n").unwrap();
    // Changes are seen by their mtimes.
    for p in ["big.bin", "d/new.txt", "d"] {
        crate::common::set_mtime(&src.join(p), 1_800_000_000);
    }
    dup_backup(w, &src, &url(&arch), &cache, true, "--volsize 1");
    let dest = w.join("dest");
    let out = get(&arch, &dest, &cache, &[]);
    assert!(out.status.success(), "{}", text(&out));
    crate::common::assert_same_tree(&src, &dest);
    let one = w.join("one");
    let out = get(&arch, &one, &cache, &["--path", "d"]);
    assert!(out.status.success(), "{}", text(&out));
    crate::common::assert_same_tree(&src.join("d"), &one);
}

// ---------------------------------------------------------------------------
// Never outside the target.

#[test]
fn a_crafted_archive_never_writes_outside_the_target() {
    let Some(tmp) = World::needing(&["python3"]) else { return };
    let w = tmp.path();
    let outside = w.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"untouched\n").unwrap();
    let long_dotdot = format!("snapshot/{}/../../../../escape-long", "d".repeat(120));
    let arch = w.join("arch");
    // The full: honest files and directories, with every trick in range
    // (the manifest claims the whole alphabet) and in order.
    craft(
        &arch,
        &[
            Set {
                from: None,
                time: "20240102T030405Z",
                volumes: vec![Vol {
                    start: ".",
                    end: "zzz",
                    entries: vec![
                        dir("snapshot/./"),
                        file("snapshot/../escape", b"bad\n"),
                        file(&long_dotdot, b"bad\n"),
                        file("snapshot/a.txt", b"good\n"),
                        // A symlink to a directory outside, then a directory and files through it.
                        symlink("snapshot/b", &outside),
                        dir("snapshot/b/sub/"),
                        file("snapshot/b/sub/f", b"bad\n"),
                        file("snapshot/b/victim", b"overwritten\n"),
                        dir("snapshot/d/"),
                        file("snapshot/d/f", b"good d/f\n"),
                        // A hard link to a file outside.
                        hardlink("snapshot/h", &format!("{}/victim", outside.display())),
                        // A symlink to a file outside, then the same name as a file.
                        symlink("snapshot/l", &outside.join("victim")),
                        file("snapshot/l", b"overwritten\n"),
                        // Multivol chunks through a symlink.
                        symlink("snapshot/m", &outside),
                        file("multivol_snapshot/m/x/1", b"bad\n"),
                        file("multivol_snapshot/m/x/2", b"bad\n"),
                        file("snapshot/z.txt", b"last\n"),
                    ],
                }],
            },
            // An incremental that turns the directory d into a symlink out of
            // the target, with a new file below it: d/f (from the full) and
            // d/g must not be written through it.
            inc_dir_to_symlink(&outside),
        ],
    );
    let before = tree(w);
    let dest = w.join("base/dest");
    for extra in [&[][..], &["--force"][..]] {
        let out = get(&arch, &dest, &w.join("cache"), extra);
        let err = text(&out);
        assert_eq!(out.status.code(), Some(13), "{extra:?}: {err}");
        assert_eq!(tree(&outside), ["victim"], "{extra:?}: written outside DEST:\n{err}");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"untouched\n", "{err}");
        assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"good\n", "{err}");
        assert_eq!(fs::read(dest.join("z.txt")).unwrap(), b"last\n", "{err}");
        assert_eq!(fs::read_link(dest.join("d")).unwrap(), outside, "{err}");
        // Nothing else appeared beside DEST (its parent was made for it).
        let mut now: Vec<String> = tree(w).into_iter().filter(|p| !p.starts_with("base/dest/")).collect();
        now.retain(|p| !p.starts_with("cache"));
        let mut want: Vec<String> = before.iter().filter(|p| !p.starts_with("cache")).cloned().collect();
        want.extend(["base".to_string(), "base/dest".to_string()]);
        want.sort();
        assert_eq!(now, want, "{extra:?}: {err}");
        assert!(!w.join("escape").exists() && !w.join("base/escape").exists());
    }
    // The same archive restored at the full's time: d is a directory then.
    let then = w.join("then");
    let out = get(&arch, &then, &w.join("cache"), &["--time", "1704164645"]);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert_eq!(fs::read(then.join("d/f")).unwrap(), b"good d/f\n");
    assert_eq!(tree(&outside), ["victim"]);

    // A user's own symlink in a target restored over with --force is not
    // followed either.
    let dest2 = w.join("dest2");
    fs::create_dir(&dest2).unwrap();
    std::os::unix::fs::symlink(&outside, dest2.join("d")).unwrap();
    let out = get(&arch, &dest2, &w.join("cache"), &["--force", "--time", "1704164645"]);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert_eq!(tree(&outside), ["victim"], "{}", text(&out));
}

// ---------------------------------------------------------------------------
// Case 5: a full (or read-only) file system ends the restore at once.

/// A small tmpfs at `dir`, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Option<Mount> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(dir).output().unwrap();
        if !out.status.success() {
            eprintln!("cannot mount a tmpfs ({}); skipped", text(&out).trim());
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A source of 60 files of 64 KiB (incompressible), 3.75 MiB in all, and
/// its archive.
fn many_files(w: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let src = w.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..60 {
        let p = if i % 2 == 0 { src.join(format!("f{i:03}")) } else { src.join(format!("sub/g{i:03}")) };
        fs::write(p, random_bytes(i + 1, 64 << 10)).unwrap();
    }
    let arch = w.join("arch");
    let cache = w.join("cache");
    dup_backup(w, &src, &url(&arch), &cache, false, "");
    (src, arch, cache)
}

/// Checks a restore that stopped: one error line naming `dest` and what was
/// restored, no warnings, and every file present complete.
fn check_stopped(out: &Output, dest: &Path, src: &Path, took: Duration) {
    let err = text(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("dup-get: hint:")).collect();
    assert_eq!(lines.len(), 1, "one message, not one per item:\n{err}");
    assert!(lines[0].contains(&dest.display().to_string()), "the target is named: {err}");
    assert!(lines[0].contains("restored"), "how much was restored is said: {err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    for p in tree(dest) {
        assert!(!p.contains(".dup-get."), "a temporary file was left: {p}");
        let local = dest.join(&p);
        if local.is_file() {
            assert!(fs::read(&local).unwrap() == fs::read(src.join(&p)).unwrap(), "{p} is partial");
        }
    }
}

#[test]
fn a_full_disk_ends_the_restore_with_one_message() {
    if !is_root() {
        eprintln!("a_full_disk_ends_the_restore_with_one_message: skipped, mounting a tmpfs needs root");
        return;
    }
    let tmp = World::new();
    let w = tmp.path();
    let (src, arch, cache) = many_files(w);
    let Some(_m) = Mount::tmpfs(&w.join("small"), "size=2m") else { return };
    let dest = w.join("small/dest");
    let t = Instant::now();
    let out = get(&arch, &dest, &cache, &[]);
    check_stopped(&out, &dest, &src, t.elapsed());
    let restored = tree(&dest).iter().filter(|p| dest.join(p).is_file()).count();
    assert!(restored > 0 && restored < 60, "{restored} files");
    assert!(text(&out).contains("no space") || text(&out).contains("No space"), "{}", text(&out));
}

#[test]
fn a_read_only_target_ends_the_restore_with_one_message() {
    if !is_root() {
        eprintln!("a_read_only_target_ends_the_restore_with_one_message: skipped, mounting a tmpfs needs root");
        return;
    }
    let tmp = World::new();
    let w = tmp.path();
    let (src, arch, cache) = many_files(w);
    let Some(_m) = Mount::tmpfs(&w.join("ro"), "size=2m,ro") else { return };
    // Into the read-only mount point itself, and into a directory to be made there.
    for dest in [w.join("ro"), w.join("ro/dest")] {
        let t = Instant::now();
        let out = get(&arch, &dest, &cache, &[]);
        check_stopped(&out, &dest, &src, t.elapsed());
        assert!(text(&out).contains("ead-only"), "{}", text(&out));
    }
}

// ---------------------------------------------------------------------------
// Case 6: the connection test creates nothing and is quick.

/// Runs `dup-ls URL --check --json` with `env`; returns the output and how long it took.
fn check(url: &str, env: &[(&str, &str)]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(DUP_LS)
        .args([url, "--check", "--json"])
        .env("LANG", "C.UTF-8")
        .env_remove("DUP_NUM_RETRIES")
        .env_remove("DUP_TIMEOUT")
        .env_remove("DUP_S3_ENDPOINT")
        .env_remove("AWS_ENDPOINT_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn status_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "check")
        .unwrap_or_else(|| panic!("no check record in {stdout}\n{}", text(out)));
    v["status"].as_str().unwrap().to_string()
}

#[test]
fn checking_a_missing_directory_creates_nothing() {
    let tmp = World::new();
    let missing = tmp.path().join("not-mounted/backup");
    let (out, took) = check(&url(&missing), &[]);
    assert_eq!(status_of(&out), "not_found", "{}", text(&out));
    assert_eq!(out.status.code(), Some(17), "{}", text(&out));
    assert!(!tmp.path().join("not-mounted").exists(), "the check created the path");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An existing directory: ok, and nothing is left in it.
    let there = tmp.path().join("there");
    fs::create_dir(&there).unwrap();
    let (out, _) = check(&url(&there), &[]);
    assert_eq!(status_of(&out), "ok", "{}", text(&out));
    assert!(tree(&there).is_empty(), "{:?}", tree(&there));
}

#[test]
fn an_unreachable_server_is_answered_within_seconds() {
    // Default retries and timeouts (DUP_NUM_RETRIES and DUP_TIMEOUT unset).
    let port = closed_port();
    for (u, env) in [
        (format!("webdav://dup@127.0.0.1:{port}/backup"), vec![("FTP_PASSWORD", "pw")]),
        (
            format!("s3://127.0.0.1:{port}/bucket/x"),
            vec![("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("DUP_S3_UNENCRYPTED_CONNECTION", "1")],
        ),
    ] {
        let (out, took) = check(&u, &env);
        eprintln!("{u}: {:?} in {:.2} s", out.status.code(), took.as_secs_f64());
        assert_eq!(status_of(&out), "unreachable", "{u}: {}", text(&out));
        assert_eq!(out.status.code(), Some(14), "{u}: {}", text(&out));
        assert!(took < Duration::from_secs(5), "{u}: {took:?}");
    }
}

/// Against the loopback servers of scripts/test-servers: a missing path on
/// WebDAV and SFTP is not found and not created; a check of an existing
/// one leaves nothing there; a closed port is unreachable within seconds.
#[test]
fn the_connection_test_against_real_servers() {
    let (Some(dir), Some(dav), Some(pw), Some(sftp)) = (
        var("DUP_TEST_SERVERS_DIR"),
        var("DUP_TEST_WEBDAV_URL"),
        var("DUP_TEST_WEBDAV_PASSWORD"),
        var("DUP_TEST_SFTP_URL"),
    ) else {
        no_servers("the_connection_test_against_real_servers");
        return;
    };
    let tag = format!("trust-{}", std::process::id());
    let dav_env = [("FTP_PASSWORD", pw.as_str())];
    let dav_disk = Path::new(&dir).join("dav/backup");

    // WebDAV: a missing path.
    let (out, took) = check(&format!("{dav}/{tag}/deeper"), &dav_env);
    assert_eq!(status_of(&out), "not_found", "{}", text(&out));
    assert_eq!(out.status.code(), Some(17));
    assert!(!dav_disk.join(&tag).exists(), "the check created {tag} on the WebDAV server");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An existing one: ok, nothing left.
    fs::create_dir_all(dav_disk.join(&tag)).unwrap();
    let (out, _) = check(&format!("{dav}/{tag}"), &dav_env);
    assert_eq!(status_of(&out), "ok", "{}", text(&out));
    assert!(tree(&dav_disk.join(&tag)).is_empty());
    // Its closed port.
    let dead = with_closed_port(&dav);
    let (out, took) = check(&dead, &dav_env);
    assert_eq!((status_of(&out).as_str(), out.status.code()), ("unreachable", Some(14)), "{}", text(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");

    // SFTP (ssh from the servers' directory, which knows the host key).
    let ssh_path = format!("{}:{}", var("DUP_TEST_SSH_BIN").unwrap(), var("PATH").unwrap_or_default());
    let home = var("DUP_TEST_SSH_HOME").unwrap();
    let key = var("DUP_TEST_SSH_KEY").unwrap();
    let sftp_env = [("PATH", ssh_path.as_str()), ("HOME", home.as_str()), ("DUP_SSH_KEY", key.as_str())];
    // sftp://root@127.0.0.1:PORT//abs/path: the path on this machine.
    let sftp_disk = Path::new("/").join(sftp.split_once("127.0.0.1:").unwrap().1.split_once('/').unwrap().1);
    let (out, _) = check(&format!("{sftp}/{tag}/deeper"), &sftp_env);
    assert_eq!(status_of(&out), "not_found", "{}", text(&out));
    assert!(!sftp_disk.join(&tag).exists(), "the check created {tag} on the SFTP server");
    fs::create_dir_all(sftp_disk.join(&tag)).unwrap();
    let (out, _) = check(&format!("{sftp}/{tag}"), &sftp_env);
    assert_eq!(status_of(&out), "ok", "{}", text(&out));
    assert!(tree(&sftp_disk.join(&tag)).is_empty());
    let dead = with_closed_port(&sftp);
    let (out, took) = check(&dead, &sftp_env);
    assert_eq!((status_of(&out).as_str(), out.status.code()), ("unreachable", Some(14)), "{}", text(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

// ---------------------------------------------------------------------------
// Case 7: a time before the first backup.

#[test]
fn a_time_before_the_first_backup_is_warned_about() {
    let tmp = World::new();
    let w = tmp.path();
    let src = w.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"a\n").unwrap();
    let arch = w.join("arch");
    let cache = w.join("cache");
    dup_backup(w, &src, &url(&arch), &cache, false, "--time 1700000000");
    // dup-ls's warning, for reference.
    let ls =
        sh_ok(w, &format!("dup-ls --archive-dir {} {} --files --time 1600000000 --table", q(&cache), q(url(&arch))));
    let ls_err = text(&ls);
    assert!(ls_err.contains("dup-ls: warn: ") && ls_err.contains("20231114T221320Z"), "{ls_err}");
    // dup-get restores the full, and says so.
    let dest = w.join("dest");
    let out = get(&arch, &dest, &cache, &["--time", "1600000000"]);
    let err = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"a\n");
    assert!(err.contains("dup-get: warn: ") && err.contains("20231114T221320Z"), "no warning:\n{err}");
    assert!(err.contains("20200913T122640Z") || err.contains("before"), "{err}");
    // At or after the backup: no warning.
    let out = get(&arch, &w.join("dest2"), &cache, &["--time", "1700000000"]);
    assert!(out.status.success() && text(&out).is_empty(), "{}", text(&out));
}
