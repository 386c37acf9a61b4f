//! dup-get: restores what duplicity and dup wrote (whole trees, one path,
//! chains with deltas), refuses hostile archives, goes on past damaged
//! volumes, protects non-empty targets, streams a tree, and keeps its memory
//! flat on a 2 GiB file. Tests that need duplicity or /usr/bin/time skip
//! with a note when they are missing.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::file_url as url;
use crate::common::{
    World, assert_same_tree, dup_backup, duplicity, hard_tree, have, q, random_bytes, set_mtime, sh, sh_ok, skip,
};

const DUP_GET: &str = env!("CARGO_BIN_EXE_dup-get");

/// Runs dup-get with `args`.
fn get(args: &[&OsStr]) -> Output {
    Command::new(DUP_GET).args(args).env("LANG", "C.UTF-8").output().unwrap()
}

fn get_ok(args: &[&OsStr]) -> Output {
    let out = get(args);
    assert!(
        out.status.success(),
        "dup-get {args:?} failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The name of the only archive file whose name contains `pat`.
fn archive_file(dir: &Path, pat: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(pat))
        .collect();
    assert_eq!(v.len(), 1, "files matching {pat} in {}: {v:?}", dir.display());
    v.pop().unwrap()
}

/// The time of the full set in `dir` (compact form, from its manifest's name).
fn full_time(dir: &Path) -> String {
    let name = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("duplicity-full.") && n.ends_with(".manifest"))
        .expect("a full manifest");
    name["duplicity-full.".len()..][..16].to_string()
}

/// Compares one restored file with its source: content, mode, mtime.
fn assert_same_file(want: &Path, got: &Path) {
    let (a, b) = (fs::symlink_metadata(want).unwrap(), fs::symlink_metadata(got).unwrap());
    assert!(b.file_type().is_file(), "{} is not a file", got.display());
    assert_eq!(fs::read(want).unwrap(), fs::read(got).unwrap(), "{}", got.display());
    assert_eq!((a.mode() & 0o7777, a.mtime()), (b.mode() & 0o7777, b.mtime()), "{}", got.display());
}

#[test]
fn restores_what_duplicity_wrote() {
    if !have("duplicity", "restores_what_duplicity_wrote") {
        return;
    }
    let w = World::new();
    let (src, arch, cache) = (w.p("src"), w.p("arch"), w.p("cache"));
    hard_tree(&src);
    let u = url(&arch);
    duplicity(w.path(), &cache, &format!("full --volsize 1 --name n {} {}", q(&src), q(&u)));
    assert!(archive_file(&arch, "vol3.difftar.gz").exists(), "big.bin spans volumes");

    // The whole tree, with duplicity's cache (cached manifests).
    let out = w.p("out");
    get_ok(&[os(&u), out.as_os_str(), os("--archive-dir"), cache.as_os_str(), os("--name"), os("n")]);
    assert_same_tree(&src, &out);

    // One file (a non-UTF-8 name) and one directory, with an empty cache
    // (the manifests are read from the backend).
    let empty = w.p("empty-cache");
    let one = w.p("one");
    let name = OsStr::from_bytes(b"caf\xe9.txt");
    get_ok(&[os(&u), one.as_os_str(), os("--path"), name, os("--archive-dir"), empty.as_os_str()]);
    assert_same_file(&src.join(name), &one);
    let big = w.p("big");
    get_ok(&[os(&u), big.as_os_str(), os("--path"), os("big.bin"), os("--archive-dir"), empty.as_os_str()]);
    assert_same_file(&src.join("big.bin"), &big);
    let dir = w.p("dir");
    get_ok(&[os(&u), dir.as_os_str(), os("--path"), os("dir1"), os("--archive-dir"), empty.as_os_str()]);
    assert_same_tree(&src.join("dir1"), &dir);
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700, "the root gets its mode");

    // Only the volumes a path needs are fetched.
    let out = get_ok(&[
        os(&u),
        w.p("a.txt").as_os_str(),
        os("--path"),
        os("a.txt"),
        os("--progress"),
        os("--archive-dir"),
        cache.as_os_str(),
        os("--name"),
        os("n"),
    ]);
    let fetched = String::from_utf8_lossy(&out.stderr).matches(r#""action":"fetched""#).count();
    assert_eq!(fetched, 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_file(&src.join("a.txt"), &w.p("a.txt"));

    // A path that is not in the backup.
    let out =
        get(&[os(&u), w.p("none").as_os_str(), os("--path"), os("no/such"), os("--archive-dir"), empty.as_os_str()]);
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!w.p("none").exists());
}

/// Changes a tree the way an incremental must carry: a big file patched and
/// grown, a file deleted (and a directory), a new file, a changed symlink.
fn mutate(src: &Path) {
    let big = src.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    data[1_000_000..1_200_000].copy_from_slice(&random_bytes(9, 200_000));
    data.extend_from_slice(&random_bytes(10, 70_000));
    fs::write(&big, data).unwrap();
    fs::remove_file(src.join("a.txt")).unwrap();
    fs::remove_dir_all(src.join("dir1/nested")).unwrap();
    fs::write(src.join("new.txt"), "new file\n").unwrap();
    fs::remove_file(src.join("link")).unwrap();
    symlink("empty", src.join("link")).unwrap();
    fs::write(src.join("exact64k.bin"), random_bytes(11, 65536)).unwrap();
    // A directory replaced by a file.
    fs::remove_dir(src.join("emptydir")).unwrap();
    fs::write(src.join("emptydir"), "now a file\n").unwrap();
}

#[test]
fn restores_a_duplicity_chain_at_both_times() {
    if !have("duplicity", "restores_a_duplicity_chain_at_both_times") {
        return;
    }
    let w = World::new();
    let (src, v1, arch, cache) = (w.p("src"), w.p("v1"), w.p("arch"), w.p("cache"));
    hard_tree(&src);
    hard_tree(&v1);
    let u = url(&arch);
    let args = format!("--volsize 1 --name n {} {}", q(&src), q(&u));
    duplicity(w.path(), &cache, &format!("full {args}"));
    mutate(&src);
    duplicity(w.path(), &cache, &format!("incremental {args}"));
    assert!(
        fs::read_dir(&arch).unwrap().any(|e| {
            let n = e.unwrap().file_name();
            n.to_string_lossy().contains("duplicity-inc.")
        }),
        "an incremental was written"
    );
    let t1 = full_time(&arch);
    let c = [os("--archive-dir"), cache.as_os_str(), os("--name"), os("n")];

    let now = w.p("now");
    get_ok(&[&[os(&u), now.as_os_str()][..], &c].concat());
    assert_same_tree(&src, &now);
    let then = w.p("then");
    get_ok(&[&[os(&u), then.as_os_str(), os("--time"), os(&t1)][..], &c].concat());
    assert_same_tree(&v1, &then);
    // One path across the chain: the patched file.
    let big = w.p("big");
    get_ok(&[&[os(&u), big.as_os_str(), os("--path"), os("big.bin")][..], &c].concat());
    assert_same_file(&src.join("big.bin"), &big);

    // Verify: the source agrees with the newest state, not with the first.
    let out = get_ok(&[&[os(&u), os("--verify"), src.as_os_str(), os("--compare-data")][..], &c].concat());
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = get(&[&[os(&u), os("--verify"), v1.as_os_str(), os("--compare-data")][..], &c].concat());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["big.bin:", "new.txt: missing locally", "link: points to empty"] {
        assert!(text.contains(p), "{p} not in:\n{text}");
    }
}

#[test]
fn restores_what_dup_wrote() {
    for pack in ["--volsize 1", "--volsize 1 --no-compression"] {
        let w = World::new();
        let (src, v1, arch, cache) = (w.p("src"), w.p("v1"), w.p("arch"), w.p("cache"));
        hard_tree(&src);
        hard_tree(&v1);
        let u = url(&arch);
        dup_backup(w.path(), &src, &u, &cache, false, pack);
        assert!(archive_file(&arch, "vol3.difftar").exists(), "big.bin spans volumes ({pack})");
        mutate(&src);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        dup_backup(w.path(), &src, &u, &cache, true, pack);
        let t1 = full_time(&arch);
        let c = [os("--archive-dir"), cache.as_os_str()];

        let now = w.p("now");
        get_ok(&[&[os(&u), now.as_os_str()][..], &c].concat());
        assert_same_tree(&src, &now);
        let then = w.p("then");
        get_ok(&[&[os(&u), then.as_os_str(), os("--time"), os(&t1)][..], &c].concat());
        assert_same_tree(&v1, &then);
        let dir = w.p("dir");
        get_ok(&[&[os(&u), dir.as_os_str(), os("--path"), os("dir1")][..], &c].concat());
        assert_same_tree(&src.join("dir1"), &dir);
    }
}

/// Writes a full set into `arch` with Python's tarfile: `body` calls
/// `add(name, data, kind, link, **attributes)` for each entry; `args` are
/// `sys.argv[2:]`. The manifest has the volume's true SHA1.
fn crafted_archive(arch: &Path, body: &str, args: &[&OsStr]) {
    fs::create_dir_all(arch).unwrap();
    const HEAD: &str = r#"
import gzip, hashlib, io, sys, tarfile
arch = sys.argv[1]
buf = io.BytesIO()
tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
def add(name, data=b"", kind=tarfile.REGTYPE, link="", **attrs):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mtime = kind, link, 1704164645
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for k, v in attrs.items():
        setattr(ti, k, v)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data) if data else None)
"#;
    const TAIL: &str = r#"
data = gzip.compress(buf.getvalue())
t = "20240102T030405Z"
open(f"{arch}/duplicity-full.{t}.vol1.difftar.gz", "wb").write(data)
sha = hashlib.sha1(data).hexdigest()
open(f"{arch}/duplicity-full.{t}.manifest", "w").write(
    f"Hostname h\nLocaldir /src\nVolume 1:\n    StartingPath   .  \n    EndingPath     zzz  \n"
    f"    Hash SHA1 {sha}\nFilelist 0\n")
"#;
    let out =
        Command::new("python3").arg("-c").arg(format!("{HEAD}{body}{TAIL}")).arg(arch).args(args).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
}

/// A hostile full set: `..`, an absolute name, a symlink to `outside`
/// followed by an entry through it, an entry below a file, a hard link,
/// between normal files. With `root_symlink`: the root itself is a symlink
/// to `outside`, and an entry follows below it.
fn hostile_archive(arch: &Path, outside: &Path, abs: &str, root_symlink: bool) {
    const BODY: &str = r#"
outside, absname, mode = sys.argv[2:5]
if mode == "root-symlink":
    add("snapshot/./", kind=tarfile.SYMTYPE, link=outside)
    add("snapshot/owned", b"bad\n")
else:
    add("snapshot/./", kind=tarfile.DIRTYPE)
    add("snapshot/a.txt", b"good\n")
    add("snapshot/../escape", b"bad\n")
    add(absname, b"bad\n")
    add("snapshot/b.txt", b"good too\n")
    add("snapshot/f", b"a file\n")
    add("snapshot/f/x", b"bad\n")
    add("snapshot/h", kind=tarfile.LNKTYPE, link="snapshot/a.txt")
    add("snapshot/s", kind=tarfile.SYMTYPE, link=outside)
    add("snapshot/s/owned", b"bad\n")
    add("snapshot/z.txt", b"last\n")
"#;
    let mode = if root_symlink { "root-symlink" } else { "" };
    crafted_archive(arch, BODY, &[outside.as_os_str(), os(abs), os(mode)]);
}

#[test]
fn refuses_to_write_outside_dest() {
    if !have("python3", "refuses_to_write_outside_dest") {
        return;
    }
    let w = World::new();
    let (arch, outside, dest) = (w.p("arch"), w.p("outside"), w.p("base/dest"));
    fs::create_dir(&outside).unwrap();
    // An absolute name that would land at the file system's root.
    let abs = format!("/dup-get-test-{}/path", std::process::id());
    hostile_archive(&arch, &outside, &abs, false);
    let out = get(&[os(&url(&arch)), dest.as_os_str(), os("--archive-dir"), w.p("cache").as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{err}");
    for named in ["snapshot/../escape", abs.as_str(), "s/owned", "f/x", "snapshot/h"] {
        assert!(err.contains(named), "{named} not named in:\n{err}");
    }
    // Nothing outside DEST.
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "something was written through the symlink");
    assert!(!Path::new(&abs).parent().unwrap().exists());
    let base: Vec<_> = fs::read_dir(w.p("base")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(base, vec![OsStr::new("dest").to_owned()]);
    // The rest restored.
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"good\n");
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"good too\n");
    assert_eq!(fs::read(dest.join("z.txt")).unwrap(), b"last\n");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"a file\n");
    assert_eq!(fs::read_link(dest.join("s")).unwrap(), outside);
    assert!(!dest.join("escape").exists());
    assert!(!dest.join("h").exists());

    // The root itself a symlink out of DEST, then an entry below it.
    let arch2 = w.p("arch2");
    hostile_archive(&arch2, &outside, &abs, true);
    let dest2 = w.p("dest2");
    let out = get(&[os(&url(&arch2)), dest2.as_os_str(), os("--archive-dir"), w.p("cache").as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(err.contains("owned"), "{err}");
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "something was written through the root symlink");
}

#[test]
fn restores_owners_devices_and_modes_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("restores_owners_devices_and_modes_as_root: skipped, not running as root");
        return;
    }
    if !have("python3", "restores_owners_devices_and_modes_as_root") {
        return;
    }
    const BODY: &str = r#"
add("snapshot/./", kind=tarfile.DIRTYPE, mode=0o750, uid=12345, gid=54321)
add("snapshot/byname", b"x", uname="nobody", gname="nogroup", uid=4242, gid=4243)
add("snapshot/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
add("snapshot/numeric", b"x", uid=12345, gid=54321, uname="", gname="")
add("snapshot/setuid", b"x", mode=0o4755)
add("snapshot/sticky", kind=tarfile.DIRTYPE, mode=0o1777)
add("snapshot/zzz", kind=tarfile.SYMTYPE, link="byname", uid=12345, gid=54321)
"#;
    let w = World::new();
    let arch = w.p("arch");
    crafted_archive(&arch, BODY, &[]);
    let id = |args: &[&str]| {
        let out = Command::new("id").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    let nobody = id(&["-u", "nobody"]);
    let gid_of = |name: &str| {
        let out = Command::new("getent").args(["group", name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split(':').nth(2).and_then(|g| g.trim().parse::<u32>().ok())
    };
    for numeric in [false, true] {
        let dest = w.p(if numeric { "numeric" } else { "names" });
        let mut args = vec![os(&url(&arch)).to_owned(), dest.clone().into_os_string()];
        args.extend(["--archive-dir".into(), w.p("cache").into_os_string()]);
        if numeric {
            args.push("--numeric-owner".into());
        }
        let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        get_ok(&refs);
        let m = |n: &str| fs::symlink_metadata(dest.join(n)).unwrap();
        let byname = m("byname");
        if numeric {
            assert_eq!((byname.uid(), byname.gid()), (4242, 4243));
        } else {
            assert_eq!(byname.uid(), nobody);
            assert_eq!(byname.gid(), gid_of("nogroup").unwrap_or(4243));
        }
        assert_eq!((m("numeric").uid(), m("numeric").gid()), (12345, 54321));
        let null = m("null");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&null.file_type()));
        assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        assert_eq!(m("setuid").mode() & 0o7777, 0o4755);
        assert_eq!(m("sticky").mode() & 0o7777, 0o1777);
        assert_eq!((m("zzz").uid(), m("zzz").gid()), (12345, 54321), "symlink owner");
        let root = fs::metadata(&dest).unwrap();
        assert_eq!((root.mode() & 0o7777, root.uid(), root.mtime()), (0o750, 12345, 1704164645));
    }
}

/// A dup archive of three volumes: small files wholly in the first and
/// last, a file spanning all three.
fn three_volumes(w: &World) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let (src, arch, cache) = (w.p("src"), w.p("arch"), w.p("cache"));
    fs::create_dir(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("a{i}.txt")), format!("first {i}\n")).unwrap();
        fs::write(src.join(format!("z{i}.txt")), format!("last {i}\n")).unwrap();
    }
    fs::write(src.join("m.bin"), random_bytes(5, 2_300_000)).unwrap();
    dup_backup(w.path(), &src, &url(&arch), &cache, false, "--volsize 1");
    let vols: Vec<PathBuf> = (1..=3).map(|n| archive_file(&arch, &format!("vol{n}.difftar"))).collect();
    assert!(
        !fs::read_dir(&arch).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("vol4")),
        "expected three volumes"
    );
    let m = fs::read_to_string(archive_file(&arch, ".manifest")).unwrap();
    assert!(m.contains("EndingPath     m.bin"), "vol1 ends inside m.bin:\n{m}");
    assert!(m.contains("StartingPath   m.bin"), "{m}");
    (src, arch, vols)
}

/// The restore went on past the damaged volume 2: exit 13, volume named,
/// files of volumes 1 and 3 restored, the spanning file not.
fn check_partial(w: &World, src: &Path, arch: &Path, vol2: &Path, cache: &Path, what: &str) {
    let dest = w.p(&format!("out-{what}"));
    let out = get(&[os(&url(arch)), dest.as_os_str(), os("--archive-dir"), cache.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{what}: {err}");
    let name = vol2.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "{what}: the volume is not named:\n{err}");
    // Named once in each message about it (not "volume X: X: ...").
    let about: Vec<&str> = err.lines().filter(|l| l.contains("skipping")).collect();
    assert!(!about.is_empty(), "{what}: no message about the damaged volume:\n{err}");
    for l in about {
        assert_eq!(l.matches(&*name).count(), 1, "{what}: the volume is named more than once: {l}");
    }
    for i in 0..5 {
        for f in [format!("a{i}.txt"), format!("z{i}.txt")] {
            assert_eq!(fs::read(dest.join(&f)).unwrap(), fs::read(src.join(&f)).unwrap(), "{what}: {f}");
        }
    }
    assert!(!dest.join("m.bin").exists(), "{what}: the damaged file was restored");
    let stray: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dup-get"))
        .collect();
    assert!(stray.is_empty(), "{what}: temporary files left: {stray:?}");
}

fn sha1(b: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn goes_on_past_a_damaged_volume() {
    let w = World::new();
    let (src, arch, vols) = three_volumes(&w);
    let cache = w.p("cache");
    let good = fs::read(&vols[1]).unwrap();

    // Bytes flipped, the manifest's hash kept: SHA1 mismatch.
    let mut bad = good.clone();
    for i in (100..bad.len()).step_by(50_000) {
        bad[i] ^= 0xff;
    }
    fs::write(&vols[1], &bad).unwrap();
    check_partial(&w, &src, &arch, &vols[1], &cache, "flipped");
    // A stream with a hole ends without its end record, so readers fail.
    let out = sh(w.path(), &format!("dup-get --archive-dir {} {} --stream | dup-ls", q(&cache), q(url(&arch))));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("without an end record"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("z4.txt"), "the rest is streamed");

    // Truncated.
    fs::write(&vols[1], &good[..good.len() / 2]).unwrap();
    check_partial(&w, &src, &arch, &vols[1], &cache, "truncated");

    // Truncated, with a manifest that matches it (no cache): the gzip/tar
    // reader finds the damage.
    let manifest = archive_file(&arch, ".manifest");
    let text = fs::read_to_string(&manifest).unwrap();
    let cut = &good[..good.len() / 2];
    assert!(text.contains(&sha1(&good)));
    fs::write(&manifest, text.replace(&sha1(&good), &sha1(cut))).unwrap();
    check_partial(&w, &src, &arch, &vols[1], &w.p("no-cache"), "truncated-unhashed");

    // Missing.
    fs::write(&manifest, &text).unwrap();
    fs::remove_file(&vols[1]).unwrap();
    check_partial(&w, &src, &arch, &vols[1], &cache, "missing");
}

#[test]
fn non_empty_target_needs_force() {
    let w = World::new();
    let (src, arch, cache) = (w.p("src"), w.p("arch"), w.p("cache"));
    hard_tree(&src);
    let u = url(&arch);
    dup_backup(w.path(), &src, &u, &cache, false, "");
    let dest = w.p("dest");
    fs::create_dir_all(dest.join("dir1/nested")).unwrap();
    fs::write(dest.join("a.txt"), "old").unwrap();
    fs::write(dest.join("keep.txt"), "not in the backup").unwrap();
    // A file where the backup has a directory, a directory where it has a file.
    fs::write(dest.join("emptydir"), "x").unwrap();
    fs::create_dir_all(dest.join("big.bin/inner")).unwrap();
    let c = [os("--archive-dir"), cache.as_os_str()];
    let out = get(&[&[os(&u), dest.as_os_str()][..], &c].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--force"), "no hint: {err}");
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"old", "untouched");

    get_ok(&[&[os(&u), dest.as_os_str(), os("--force")][..], &c].concat());
    fs::remove_file(dest.join("keep.txt")).unwrap();
    assert_same_tree(&src, &dest);

    // An existing empty directory is fine without --force; so is a file path.
    let empty = w.p("empty");
    fs::create_dir(&empty).unwrap();
    get_ok(&[&[os(&u), empty.as_os_str()][..], &c].concat());
    assert_same_tree(&src, &empty);
    let one = w.p("one.txt");
    fs::write(&one, "old").unwrap();
    let out = get(&[&[os(&u), one.as_os_str(), os("--path"), os("a.txt")][..], &c].concat());
    assert_eq!(out.status.code(), Some(1));
    get_ok(&[&[os(&u), one.as_os_str(), os("--path"), os("a.txt"), os("--force")][..], &c].concat());
    assert_same_file(&src.join("a.txt"), &one);
}

#[test]
fn streams_a_tree_and_makes_a_synthetic_full() {
    let w = World::new();
    let (src, arch, cache) = (w.p("src"), w.p("arch"), w.p("cache"));
    hard_tree(&src);
    let u = url(&arch);
    dup_backup(w.path(), &src, &u, &cache, false, "--volsize 1");
    mutate(&src);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    dup_backup(w.path(), &src, &u, &cache, true, "--volsize 1");
    let c = format!("--archive-dir {}", q(&cache));

    let out = sh_ok(w.path(), &format!("dup-get {c} {} --stream | dup-ls", q(&u)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("# changes stream"), "{text}");
    for p in ["big.bin", "new.txt", "dir1/file with space.txt", "caf\\xe9.txt", "link -> empty"] {
        assert!(text.contains(p), "{p} not in:\n{text}");
    }
    assert!(!text.contains("a.txt "), "a deleted file is listed:\n{text}");

    // dup-get --stream | dup-delta | dup-pack | dup-put: a synthetic full.
    let u2 = url(&w.p("arch2"));
    let c2 = format!("--archive-dir {}", q(w.p("cache2")));
    sh_ok(
        w.path(),
        &format!(
            "dup-get {c} {} --stream | dup-delta | dup-pack --no-encryption --volsize 1 | dup-put {c2} {}",
            q(&u),
            q(&u2)
        ),
    );
    let out = w.p("out");
    let cache2 = w.p("cache2");
    get_ok(&[os(&u2), out.as_os_str(), os("--archive-dir"), cache2.as_os_str()]);
    assert_same_tree(&src, &out);
    // JSON Lines on request.
    let out = sh_ok(w.path(), &format!("dup-get {c} {} --stream --json | head -c 300", q(&u)));
    assert!(out.stdout.starts_with(b"{\"kind\":\"header\""), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Peak RSS in KiB from `/usr/bin/time -v` output.
fn max_rss(path: &Path) -> u64 {
    let text = fs::read_to_string(path).unwrap();
    let line =
        text.lines().find(|l| l.contains("Maximum resident set size")).unwrap_or_else(|| panic!("no RSS in {text}"));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn memory_stays_flat_on_a_2_gib_file() {
    // A sparse 2 GiB file backed up as a full and two incrementals (edits
    // inside it each time), restored through the chain: every stage of every
    // run stays under 64 MiB.
    if !Path::new("/usr/bin/time").exists() {
        skip("memory_stays_flat_on_a_2_gib_file", "/usr/bin/time is not installed (scripts/test installs it)");
        return;
    }
    let w = World::new();
    let src = w.p("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("sparse.bin");
    sh_ok(w.path(), &format!("truncate -s 2G {}", q(&f)));
    let edit = |round: u64| {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        for (i, off) in [0u64, 123_456_789, 1 << 30, (2 << 30) - 5000].into_iter().enumerate() {
            file.write_all_at(&random_bytes(20 + 10 * round + i as u64, 4096), off + 7 * round).unwrap();
        }
        drop(file);
        set_mtime(&f, 1_700_000_000 + round as i64);
    };
    edit(0);
    fs::write(src.join("small.txt"), "small\n").unwrap();
    let (arch, cache) = (w.p("arch"), w.p("cache"));
    let t = |n: &str| format!("/usr/bin/time -v -o {}", q(w.p(n)));
    let c = format!("--archive-dir {}", q(&cache));
    let mut report = Vec::new();
    let check = |stage: &str, report: &mut Vec<String>| {
        let kib = max_rss(&w.p(stage));
        report.push(format!("{stage} {} MiB", kib / 1024));
        assert!(kib <= 64 * 1024, "{stage} peaked at {kib} KiB");
    };
    let started = std::time::Instant::now();
    for round in 0..3u64 {
        if round > 0 {
            edit(round);
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let basis = if round > 0 {
            format!("--basis <({} dup-sig {c} --archive {})", t("sig"), q(url(&arch)))
        } else {
            String::new()
        };
        sh_ok(
            w.path(),
            &format!(
                "{} dup-scan {} | {} dup-delta {basis} | {} dup-pack --no-encryption | {} dup-put {c} {}",
                t("scan"),
                q(&src),
                t("delta"),
                t("pack"),
                t("put"),
                q(url(&arch))
            ),
        );
        for stage in ["scan", "delta", "pack", "put"] {
            check(stage, &mut report);
        }
        if round > 0 {
            check("sig", &mut report);
        }
    }
    let backup = started.elapsed();
    assert_eq!(
        fs::read_dir(&arch)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".manifest"))
            .count(),
        3
    );
    let dest = w.p("dest");
    let out = sh(w.path(), &format!("{} dup-get {c} {} {}", t("get"), q(url(&arch)), q(&dest)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restore = started.elapsed() - backup;
    check("get", &mut report);
    let same = sh(w.path(), &format!("cmp {} {}", q(&f), q(dest.join("sparse.bin"))));
    assert!(same.status.success(), "restored file differs: {}", String::from_utf8_lossy(&same.stdout));
    eprintln!(
        "peak RSS: {}; 3 backups {:.1} s, restore through the chain {:.1} s",
        report.join(", "),
        backup.as_secs_f64(),
        restore.as_secs_f64()
    );
}

#[test]
fn usage_errors() {
    let w = World::new();
    let u = url(&w.p("arch"));
    for args in [
        vec![u.as_str()],
        vec![u.as_str(), "dest", "--stream"],
        vec![u.as_str(), "--stream", "--compare-data"],
        vec![u.as_str(), "--stream", "--force"],
        vec![u.as_str(), "dest", "--time", "yesterday-ish"],
    ] {
        let out = Command::new(DUP_GET).args(&args).current_dir(w.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // No archive there.
    let out = Command::new(DUP_GET)
        .args([u.as_str(), "dest", "--archive-dir"])
        .arg(w.p("cache"))
        .current_dir(w.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
}
