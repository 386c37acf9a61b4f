//! The cache's per-set file index (`dup-index.<signature>.idx`): written when
//! dup-put publishes a set, rebuilt by dup-sync (also for archives duplicity
//! wrote), read by `dup-ls --files` and `dup-get --path`, ignored with a
//! warning when damaged; listings and restores are the same with and
//! without it. An encrypted volume read for one path hands nothing out
//! before its integrity check has passed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{dup_backup, duplicity, hard_tree, have, q, set_mtime, sh, sh_ok};

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// The index files under a cache (`--archive-dir`) directory.
fn indexes(cache: &Path) -> Vec<PathBuf> {
    crate::common::cache_files(cache, "dup-index.")
}

/// The cache's signature files.
fn sigs(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(cache).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            if n.contains("signatures.") && !n.starts_with("dup-index.") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// `dup-ls --files` as JSON Lines and as a table, and its stderr.
fn ls(cwd: &Path, opts: &str, u: &str) -> (String, String) {
    let json = sh_ok(cwd, &format!("dup-ls --files --json {opts} {}", q(u)));
    let table = sh_ok(cwd, &format!("dup-ls --files --table {opts} {}", q(u)));
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    (format!("{}{}", text(&json), text(&table)), String::from_utf8_lossy(&json.stderr).into_owned())
}

/// Restores `path` to `dest` with progress events; returns the volumes
/// fetched and stderr.
fn get_one(cwd: &Path, opts: &str, u: &str, path: &str, dest: &Path) -> (usize, String) {
    let _ = fs::remove_file(dest);
    let o = sh_ok(cwd, &format!("dup-get --progress {opts} --path {} {} {}", q(path), q(u), q(dest)));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (err.matches("\"action\":\"fetched\"").count(), err)
}

/// After a full of the hard tree: two files changed, so the incremental
/// holds them and not `exact64k.bin`, which sorts between them.
fn change_two(src: &Path) {
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    fs::write(src.join("medium.bin"), b"changed too\n").unwrap();
    set_mtime(&src.join("a.txt"), 1_704_200_000);
    set_mtime(&src.join("medium.bin"), 1_704_200_000);
}

/// Flips one byte in the middle of `p`.
fn flip(p: &Path) {
    let mut d = fs::read(p).unwrap();
    let i = d.len() / 2;
    d[i] ^= 0x55;
    fs::write(p, d).unwrap();
}

#[test]
fn written_at_publish_read_rebuilt_and_ignored_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
    hard_tree(&src);
    let u = url(&arch);
    dup_backup(t, &src, &u, &cache, false, "");
    change_two(&src);
    dup_backup(t, &src, &u, &cache, true, "");
    assert_eq!(indexes(&cache).len(), 2, "one index per set, written at publish");
    let c = format!("--archive-dir {}", q(&cache));
    let (with, _) = ls(t, &c, &u);
    assert!(with.contains("exact64k.bin") && with.contains("medium.bin"), "{with}");

    // The listing comes from the indexes: with the cached signatures
    // garbled (same size and time) it is still the same.
    let keep = t.join("keep");
    fs::create_dir(&keep).unwrap();
    for (i, s) in sigs(&cache).iter().enumerate() {
        let k = keep.join(i.to_string());
        sh_ok(t, &format!("cp -p {} {}", q(s), q(&k)));
        let n = fs::metadata(s).unwrap().len() as usize;
        fs::write(s, vec![b'x'; n]).unwrap();
        sh_ok(t, &format!("touch -r {} {}", q(&k), q(s)));
    }
    assert_eq!(ls(t, &c, &u).0, with);
    for (i, s) in sigs(&cache).iter().enumerate() {
        sh_ok(t, &format!("cp -p {} {}", q(keep.join(i.to_string())), q(s)));
    }

    // One path: the incremental holds nothing there, and the index says so.
    let one = t.join("one");
    let (fetched, _) = get_one(t, &c, &u, "exact64k.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());
    assert_eq!(fetched, 1, "only the full's volume");
    let (fetched, _) = get_one(t, &c, &u, "medium.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), b"changed too\n");
    assert_eq!(fetched, 2);

    // Without the indexes: the same answers, from the signatures and volumes.
    for f in indexes(&cache) {
        fs::remove_file(f).unwrap();
    }
    assert_eq!(ls(t, &c, &u).0, with);
    let (fetched, _) = get_one(t, &c, &u, "exact64k.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());
    assert_eq!(fetched, 2, "without the index the incremental's volume is read too");
    assert!(indexes(&cache).is_empty(), "reading does not write them");

    // dup-sync rebuilds them.
    sh_ok(t, &format!("dup-sync {c} {}", q(&u)));
    assert_eq!(indexes(&cache).len(), 2);
    assert_eq!(ls(t, &c, &u).0, with);

    // The full's time: only the full's index.
    let full = sigs(&cache)[0].file_name().unwrap().to_string_lossy().into_owned();
    let at = &full["duplicity-full-signatures.".len()..][..16];
    let ct = format!("{c} --time {at}");
    let (at_full, _) = ls(t, &ct, &u);
    assert!(at_full.contains("1704164645") && !at_full.contains("1704200000"), "{at_full}");

    // A damaged index: a warning, and the signatures are read instead.
    let ix = indexes(&cache);
    for f in &ix {
        flip(f);
    }
    let (damaged, err) = ls(t, &c, &u);
    assert_eq!(damaged, with);
    assert!(err.contains("damaged"), "{err}");
    let (fetched, err) = get_one(t, &c, &u, "exact64k.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(fetched, 2);
    // dup-sync rebuilds damaged ones too.
    sh_ok(t, &format!("dup-sync {c} {}", q(&u)));
    let (rebuilt, err) = ls(t, &c, &u);
    assert_eq!(rebuilt, with);
    assert!(!err.contains("damaged"), "{err}");
    assert_eq!(ls(t, &ct, &u).0, at_full);
    // Deleting a signature's set removes its index (dup-put), and one left
    // without its signature goes with the next dup-sync.
    let stray = ix[0].with_file_name("dup-index.duplicity-full-signatures.20200101T000000Z.sigtar.gz.idx");
    fs::copy(&ix[0], &stray).unwrap();
    sh_ok(t, &format!("dup-sync {c} {}", q(&u)));
    assert!(!stray.exists());
    assert_eq!(indexes(&cache).len(), 2);
}

#[test]
fn dup_sync_indexes_what_duplicity_wrote() {
    if !have("duplicity", "dup_sync_indexes_what_duplicity_wrote") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
    hard_tree(&src);
    let u = url(&arch);
    let args = format!("--volsize 1 --name n {} {}", q(&src), q(&u));
    duplicity(t, &cache, &format!("full {args}"));
    change_two(&src);
    duplicity(t, &cache, &format!("incremental {args}"));
    assert!(indexes(&cache).is_empty(), "duplicity writes none");
    let c = format!("--archive-dir {} --name n", q(&cache));
    let (without, _) = ls(t, &c, &u);
    let one = t.join("one");
    let (fetched_without, _) = get_one(t, &c, &u, "exact64k.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());

    sh_ok(t, &format!("dup-sync {c} {}", q(&u)));
    assert_eq!(indexes(&cache).len(), 2);
    assert_eq!(ls(t, &c, &u).0, without);
    let (fetched, _) = get_one(t, &c, &u, "exact64k.bin", &one);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());
    assert!(fetched < fetched_without, "{fetched} volumes with the index, {fetched_without} without");
    for p in ["medium.bin", "big.bin", "dir1"] {
        let a = t.join("a");
        let b = t.join("b");
        sh_ok(t, &format!("dup-get {c} --path {p} {} {}", q(&u), q(&a)));
        for f in indexes(&cache) {
            fs::rename(&f, t.join(f.file_name().unwrap())).unwrap();
        }
        sh_ok(t, &format!("dup-get {c} --path {p} {} {}", q(&u), q(&b)));
        sh_ok(t, &format!("mv {}/dup-index.*.idx {}/n/", q(t), q(&cache)));
        same(&a, &b);
        same(&src.join(p), &a);
        let _ = sh(t, &format!("rm -rf {} {}", q(&a), q(&b)));
    }

    // duplicity shares the cache: the index files do not disturb it, and a
    // later set is indexed by the next dup-sync.
    fs::write(src.join("later.txt"), b"later\n").unwrap();
    duplicity(t, &cache, &format!("incremental {args}"));
    duplicity(t, &cache, &format!("collection-status --name n {}", q(&u)));
    sh_ok(t, &format!("dup-sync {c} {}", q(&u)));
    assert_eq!(indexes(&cache).len(), 3);
    assert!(ls(t, &c, &u).0.contains("later.txt"));
}

#[test]
fn encrypted_one_path_is_restored_only_after_the_integrity_check() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
    hard_tree(&src);
    let u = url(&arch);
    let c = format!("--archive-dir {}", q(&cache));
    let env = "export PASSPHRASE=index-test TMPDIR=\"$PWD\";";
    sh_ok(t, &format!("{env} dup-scan {s} | dup-delta | dup-pack | dup-put {c} {u}", s = q(&src), u = q(&u)));
    let one = t.join("one");
    let get = |dest: &Path| sh(t, &format!("{env} dup-get {c} --path exact64k.bin {} {}", q(&u), q(dest)));
    assert_eq!(indexes(&cache).len(), 1, "indexed at publish, encrypted too");
    let o = get(&one);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("exact64k.bin")).unwrap());

    // Small volumes: a file in several of them, directories (one with more
    // entries than are kept aside per volume: its volumes are staged whole).
    fs::create_dir(src.join("many")).unwrap();
    for i in 0..4200 {
        fs::write(src.join("many").join(format!("f{i:04}")), format!("{i}\n")).unwrap();
    }
    let (arch2, cache2) = (t.join("arch2"), t.join("cache2"));
    let (u2, c2) = (url(&arch2), format!("--archive-dir {}", q(&cache2)));
    sh_ok(t, &format!("{env} dup-scan {} | dup-delta | dup-pack --volsize 1 | dup-put {c2} {}", q(&src), q(&u2)));
    assert!(
        fs::read_dir(&arch2).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".vol4.")),
        "big.bin spans volumes"
    );
    for p in ["big.bin", "dir1", "exact64k.bin", "a", "many"] {
        let d = t.join(format!("p-{}", p.replace('/', "_")));
        sh_ok(t, &format!("{env} dup-get {c2} --path {} {} {}", q(p), q(&u2), q(&d)));
        same(&src.join(p), &d);
    }

    // Damage the volume after the entry (near its end) and give the cached
    // manifest the damaged volume's hash: the backend's manifest (read
    // through its MDC) or the volume's MDC must tell.
    let (old, new) = damage_first_volume_near_its_end(&arch);
    let mut n = 0;
    for dir in fs::read_dir(&cache).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().ends_with(".manifest") {
                let text = fs::read(&f).unwrap();
                if let Some(at) = text.windows(40).position(|w| w == old.as_bytes()) {
                    let mut text = text;
                    text[at..at + 40].copy_from_slice(new.as_bytes());
                    fs::write(&f, text).unwrap();
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 1, "the cached manifest names the volume's hash");
    let two = t.join("two");
    let o = get(&two);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a damaged volume is an error: {err}");
    assert!(err.contains("vol1"), "{err}");
    assert!(!two.exists(), "nothing restored from an unverified volume");
}

/// One path of a big encrypted volume: the rest of the volume after the
/// entry is hashed, not decrypted (the backend manifest's hash vouches for
/// it), so damage there must be caught by the hash before anything is
/// written; and the cached manifest alone cannot vouch.
#[test]
fn one_path_of_a_big_volume_is_checked_by_the_backend_manifests_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, arch, cache) = (t.join("src"), t.join("arch"), t.join("cache"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"wanted\n").unwrap();
    fs::write(src.join("z.bin"), crate::common::random_bytes(3, 6 << 20)).unwrap();
    let u = url(&arch);
    let c = format!("--archive-dir {}", q(&cache));
    let env = "export PASSPHRASE=index-test TMPDIR=\"$PWD\";";
    sh_ok(t, &format!("{env} dup-scan {s} | dup-delta | dup-pack | dup-put {c} {u}", s = q(&src), u = q(&u)));
    let get = |dest: &Path| sh(t, &format!("{env} dup-get {c} --path a.txt {} {}", q(&u), q(dest)));
    let ok = t.join("ok");
    let o = get(&ok);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&ok).unwrap(), b"wanted\n");

    damage_first_volume_near_its_end(&arch);
    let bad = t.join("bad");
    let o = get(&bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a damaged volume is an error: {err}");
    assert!(err.contains("the manifest says"), "the hash caught it: {err}");
    assert!(!bad.exists(), "nothing restored from a damaged volume");
}

/// Flips a bit 200 bytes before the end of the archive's encrypted first
/// volume; returns its SHA-1 before and after.
fn damage_first_volume_near_its_end(arch: &Path) -> (String, String) {
    let vol = fs::read_dir(arch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".vol1.difftar.gpg"))
        .expect("an encrypted volume");
    let mut d = fs::read(&vol).unwrap();
    let old = sha1_hex(&d);
    let i = d.len() - 200;
    d[i] ^= 0x01;
    fs::write(&vol, &d).unwrap();
    (old, sha1_hex(&d))
}

/// Compares two restored items: trees, or files' bytes.
fn same(want: &Path, got: &Path) {
    if want.is_dir() {
        crate::common::assert_same_tree(want, got);
    } else {
        assert_eq!(fs::read(want).unwrap(), fs::read(got).unwrap(), "{}", got.display());
    }
}

fn sha1_hex(d: &[u8]) -> String {
    let o = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(d)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(o.stdout).unwrap()[..40].to_string()
}
