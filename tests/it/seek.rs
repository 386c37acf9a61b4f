//! Seek tables (`dup-seek.<volume>.json` in the cache): one path of an encrypted
//! volume is decrypted from the block before it, not from the volume's
//! start. The restored bytes are the same as from a whole read, damage
//! anywhere is still caught by the volume's hash before anything is
//! written, a table edited in the cache is refused, and the volumes stay
//! what gpg reads.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{assert_same_tree, have, q, random_bytes, set_mtime, sh, sh_ok};

const ENV: &str = "export PASSPHRASE=seek-test TMPDIR=\"$PWD\";";

/// 3000 files of up to 6 KB (random: volumes hold as much tar as their
/// size, 4 blocks each) and a file split across volumes.
/// Files and directories have their own modes and old times, which a
/// restore must give back (a directory's after its files are written).
fn make_tree(src: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for i in 0..3000u64 {
        let d = src.join(format!("d{:02}", i % 23));
        fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("f{i:04}.txt"));
        fs::write(&f, random_bytes(i + 1, (i * 37 % 6000) as usize)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600 + (i % 3) as u32 * 0o40)).unwrap();
        set_mtime(&f, 1_600_000_000 + i as i64);
    }
    fs::write(src.join("m.bin"), random_bytes(9, 5 << 20)).unwrap();
    for i in 0..23 {
        let d = src.join(format!("d{i:02}"));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750 + (i % 2) * 5)).unwrap();
        set_mtime(&d, 1_500_000_000 + i as i64);
    }
}

/// Bytes in `make_tree`'s files, about.
const TREE: usize = 14 << 20;

struct Archive {
    _tmp: tempfile::TempDir,
    t: PathBuf,
    src: PathBuf,
    arch: PathBuf,
    cache: PathBuf,
}

impl Archive {
    /// An encrypted full backup in 4 MiB volumes.
    fn new() -> Archive {
        Archive::with_extra(0)
    }

    /// The same with a file of `extra` more random bytes.
    fn with_extra(extra: usize) -> Archive {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_path_buf();
        let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
        make_tree(&src);
        if extra > 0 {
            fs::write(src.join("z.bin"), random_bytes(11, extra)).unwrap();
        }
        let a = Archive { _tmp: tmp, t, src, arch, cache };
        sh_ok(
            &a.t,
            &format!(
                "{ENV} dup-scan {s} | dup-delta | dup-pack --volsize 4 | dup-put --archive-dir {c} {u}",
                s = q(&a.src),
                c = q(&a.cache),
                u = q(a.url())
            ),
        );
        a
    }

    fn url(&self) -> String {
        format!("file://{}", self.arch.display())
    }

    /// Restores `path` (the whole backup when empty) to `dest` with debug
    /// logs: (success, stderr).
    fn get(&self, path: &str, dest: &Path) -> (bool, String) {
        let o = sh(
            &self.t,
            &format!(
                "{ENV} RUST_LOG=dup=debug dup-get --archive-dir {c} {p} {u} {d}",
                c = q(&self.cache),
                p = if path.is_empty() { String::new() } else { format!("--path {}", q(path)) },
                u = q(self.url()),
                d = q(dest)
            ),
        );
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    fn volumes(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.arch)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".difftar.gpg"))
            .collect();
        v.sort();
        v
    }

    /// The seek tables in the cache.
    fn tables(&self) -> Vec<PathBuf> {
        crate::common::cache_files(&self.cache, "dup-seek.")
    }

    /// The seek table of `volume`.
    fn table_of(&self, volume: &Path) -> PathBuf {
        let name = format!("dup-seek.{}.json", volume.file_name().unwrap().to_string_lossy());
        self.tables().into_iter().find(|t| t.file_name().unwrap().to_string_lossy() == name).expect("its seek table")
    }
}

/// The offset the table started the reading at, from the debug log.
fn seek_offset(log: &str) -> Option<u64> {
    let at = log.find("its seek table starts the reading at tar offset ")?;
    let rest = &log[at + "its seek table starts the reading at tar offset ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn any_path_restores_the_same_through_its_seek_table() {
    let a = Archive::new();
    let vols = a.volumes();
    assert!(vols.len() >= 4, "several volumes: {vols:?}");
    assert_eq!(a.tables().len(), vols.len(), "a table per volume");
    let mut from_middle = 0;
    for (i, path) in
        ["d00/f0000.txt", "d07/f0467.txt", "d11/f0724.txt", "d04/f1499.txt", "d15", "m.bin"].iter().enumerate()
    {
        let dest = a.t.join(format!("out{i}"));
        let (ok, log) = a.get(path, &dest);
        assert!(ok, "{path}: {log}");
        let want = a.src.join(path);
        if want.is_dir() {
            crate::common::assert_same_tree(&want, &dest);
        } else {
            assert!(fs::read(&want).unwrap() == fs::read(&dest).unwrap(), "{path}: same bytes");
        }
        assert!(seek_offset(&log).is_some(), "{path}: read through its table: {log}");
        if seek_offset(&log).is_some_and(|o| o > 0) {
            from_middle += 1;
        }
    }
    assert!(from_middle >= 3, "most paths start past their volume's first block");
    // What was written is still what gpg reads: every volume decrypts (MDC
    // checked) to a tar.
    if have("gpg", "any_path_restores_the_same_through_its_seek_table") {
        for v in &vols {
            sh_ok(
                &a.t,
                &format!(
                    "export GNUPGHOME=\"$PWD/gnupg\"; mkdir -p -m 700 gnupg; \
                     gpg --batch --quiet --passphrase seek-test -d {} | tar tf - > /dev/null",
                    q(v)
                ),
            );
        }
    }
}

/// Damage inside the block that holds the path (decrypted, inflated and
/// untarred from a table's mark) and damage before it (only hashed) are
/// both caught by the volume's hash, and nothing is written.
#[test]
fn damage_near_or_before_the_path_is_caught_by_the_hash() {
    let a = Archive::new();
    // A path past its volume's first block.
    let (path, log) = ["d07/f0467.txt", "d11/f0724.txt", "d15/f0912.txt", "d19/f0893.txt"]
        .iter()
        .find_map(|p| {
            let (ok, log) = a.get(p, &a.t.join("first").join(p));
            assert!(ok, "{log}");
            seek_offset(&log).is_some_and(|o| o > 0).then_some((*p, log))
        })
        .expect("a path in the middle of a volume");
    let vol = a
        .volumes()
        .into_iter()
        .find(|v| {
            let l = v.file_name().unwrap().to_string_lossy().into_owned();
            log.contains(&format!("{l}: its seek table"))
        })
        .expect("the volume read");
    let pristine = fs::read(&vol).unwrap();
    // The block the reading starts in: the table's sizes before it, plus
    // the packets' heads (a few hundred bytes at most).
    let t: serde_json::Value = serde_json::from_str(&fs::read_to_string(a.table_of(&vol)).unwrap()).unwrap();
    let start = seek_offset(&log).unwrap();
    let k = ((start + start / 65536 + 8) / (1 << 20)) as usize;
    let sizes = t["sizes"].as_array().unwrap();
    let block_at = sizes[..k].iter().map(|s| s.as_u64().unwrap()).sum::<u64>() as usize + 4096;
    for (what, at) in [("before the path", 300), ("in the path's block", block_at), ("at the end", pristine.len() - 30)]
    {
        let mut d = pristine.clone();
        d[at] ^= 0x10;
        fs::write(&vol, &d).unwrap();
        let dest = a.t.join(format!("bad-{at}"));
        let (ok, log) = a.get(path, &dest);
        assert!(!ok, "{what}: a damaged volume is an error: {log}");
        assert!(log.contains("the manifest says"), "{what}: the hash caught it: {log}");
        assert!(!dest.exists(), "{what}: nothing restored");
    }
    fs::write(&vol, &pristine).unwrap();
}

/// A table is only taken for the ciphertext it names and with the MAC of
/// the volume's key: an edited one is refused with a warning and the volume
/// read from its start; one copied from another volume is not used.
#[test]
fn an_edited_or_foreign_seek_table_is_not_trusted() {
    let a = Archive::new();
    let path = "d11/f0724.txt";
    let (ok, log) = a.get(path, &a.t.join("first"));
    assert!(ok && seek_offset(&log).is_some(), "{log}");
    let vol = a
        .volumes()
        .into_iter()
        .find(|v| log.contains(&format!("{}: its seek table", v.file_name().unwrap().to_string_lossy())))
        .expect("the volume read");
    let table = a.table_of(&vol);
    let pristine = fs::read_to_string(&table).unwrap();

    // A mark moved by one tar block: into some other entry's data.
    let mut t: serde_json::Value = serde_json::from_str(&pristine).unwrap();
    let marks = t["marks"].as_array_mut().unwrap();
    let last = marks.len() - 1;
    let off = marks[last]["offset"].as_u64().unwrap();
    marks[last]["offset"] = serde_json::json!(off + 512);
    fs::write(&table, serde_json::to_vec(&t).unwrap()).unwrap();
    let dest = a.t.join("edited");
    let (ok, log) = a.get(path, &dest);
    assert!(ok, "{log}");
    assert!(log.contains("was not made with its key"), "refused: {log}");
    assert!(fs::read(a.src.join(path)).unwrap() == fs::read(&dest).unwrap());

    // Another volume's table under this volume's name: its SHA-1 is another.
    let other = a.volumes().into_iter().find(|v| v != &vol).unwrap();
    fs::copy(a.table_of(&other), &table).unwrap();
    let dest = a.t.join("foreign");
    let (ok, log) = a.get(path, &dest);
    assert!(ok, "{log}");
    assert!(seek_offset(&log).is_none(), "not used: {log}");
    assert!(fs::read(a.src.join(path)).unwrap() == fs::read(&dest).unwrap());

    // Not JSON at all.
    fs::write(&table, b"{\"version\": 1, garbage").unwrap();
    let (ok, log) = a.get(path, &a.t.join("garbage"));
    assert!(ok && log.contains("unreadable"), "{log}");
}

/// A whole restore of a set of 32 MiB or more reads each volume by its
/// table, its ciphertext hashed as it is fetched against the hash the
/// backend's manifest vouches for (no MDC to compute); a damaged volume is
/// refused by that hash at its end and what was read from it removed, and
/// an edited table leaves the volume to its MDC. A smaller set
/// is read by the MDC (the manifest's key derivation would cost more).
#[test]
fn a_whole_restore_reads_vouched_volumes_by_their_tables() {
    let small = Archive::new();
    let (ok, log) = small.get("", &small.t.join("whole"));
    assert!(ok, "{log}");
    assert!(!log.contains("read by its seek table"), "{log}");
    let a = Archive::with_extra((36 << 20) - TREE);
    let vols = a.volumes();
    let same = |dest: &Path| sh(&a.t, &format!("diff -r {} {}", q(&a.src), q(dest))).status.success();
    let (ok, log) = a.get("", &a.t.join("whole"));
    assert!(ok, "{log}");
    assert_eq!(log.matches("read by its seek table").count(), vols.len(), "{log}");
    assert!(same(&a.t.join("whole")));
    // Modes and times too (small files are written by other threads, and
    // wait for their volume's end: a directory gets its time after them).
    assert_same_tree(&a.src, &a.t.join("whole"));

    let table = a.table_of(&vols[1]);
    let pristine = fs::read_to_string(&table).unwrap();
    let mut t: serde_json::Value = serde_json::from_str(&pristine).unwrap();
    t["marks"][0]["offset"] = serde_json::json!(512);
    fs::write(&table, serde_json::to_vec(&t).unwrap()).unwrap();
    let (ok, log) = a.get("", &a.t.join("edited"));
    assert!(ok, "{log}");
    assert!(log.contains("was not made with its key"), "{log}");
    assert_eq!(log.matches("read by its seek table").count(), vols.len() - 1, "{log}");
    assert!(same(&a.t.join("edited")));
    fs::write(&table, pristine).unwrap();

    let bytes = fs::read(&vols[1]).unwrap();
    let mut d = bytes.clone();
    let mid = d.len() / 2;
    d[mid] ^= 1;
    fs::write(&vols[1], &d).unwrap();
    let dest = a.t.join("damaged");
    let (ok, log) = a.get("", &dest);
    assert!(!ok, "{log}");
    assert!(log.contains("the manifest says"), "the hash caught it: {log}");
    assert_eq!(log.matches("read by its seek table").count(), vols.len(), "{log}");
    // What the other volumes hold is restored, and nothing under a temporary name is left.
    assert!(dest.join("d00").is_dir());
    let leftovers = sh(&a.t, &format!("find {} -name '.dup-get.*' | wc -l", q(&dest)));
    assert_eq!(String::from_utf8_lossy(&leftovers.stdout).trim(), "0");
}

/// Tables go when their set goes: dup-sync removes those whose set's
/// manifest is no longer cached.
#[test]
fn seek_tables_leave_with_their_set() {
    let a = Archive::new();
    assert!(!a.tables().is_empty());
    for f in fs::read_dir(&a.arch).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    sh_ok(&a.t, &format!("{ENV} dup-sync --archive-dir {} {}", q(&a.cache), q(a.url())));
    assert!(a.tables().is_empty(), "{:?}", a.tables());
}

/// More entries at the path than one volume's staging keeps (4096): the
/// volume is read again whole, and the restore is the same.
#[test]
fn a_directory_of_many_entries_is_restored_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..4200 {
        fs::write(src.join("many").join(format!("e{i:05}")), format!("{i}")).unwrap();
    }
    fs::write(src.join("a.bin"), random_bytes(4, 3 << 20)).unwrap();
    // After them, more of the volume than any reader buffers ahead.
    fs::write(src.join("z.bin"), random_bytes(5, 3 << 20)).unwrap();
    let u = format!("file://{}", arch.display());
    let c = q(&cache);
    sh_ok(t, &format!("{ENV} dup-scan {} | dup-delta | dup-pack | dup-put --archive-dir {c} {}", q(&src), q(&u)));
    let dest = t.join("out");
    let o = sh(t, &format!("{ENV} RUST_LOG=dup=debug dup-get --archive-dir {c} --path many {} {}", q(&u), q(&dest)));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(seek_offset(&log).is_some(), "its table was tried first: {log}");
    crate::common::assert_same_tree(&src.join("many"), &dest);
}
