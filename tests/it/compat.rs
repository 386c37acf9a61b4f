//! Archives written by dup, read by real duplicity 0.8.22: restore (full and
//! chain, gzip and plain), collection-status, list-current-files; and the
//! classic wrapper's listing against duplicity's.

use std::fs;

use crate::common::file_url as url;
use crate::common::*;

fn full_restored_by_duplicity(pack: &str, test: &str) {
    if !have("duplicity", test) {
        return;
    }
    let t = World::new();
    let (src, arch, cache, dcache, out) =
        (t.path().join("src"), t.path().join("arch"), t.path().join("c"), t.path().join("dc"), t.path().join("out"));
    hard_tree(&src);
    dup_backup(t.path(), &src, &url(&arch), &cache, false, pack);
    let vols = fs::read_dir(&arch)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".vol"))
        .count();
    assert!(vols >= 3, "a 3 MiB file at --volsize 1 spans volumes ({vols})");
    let r = duplicity(t.path(), &dcache, &format!("restore {} {}", q(url(&arch)), q(&out)));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!err.to_lowercase().contains("warning"), "duplicity warned: {err}");
    assert_same_tree(&src, &out);
    // duplicity reads the listing and status without a warning.
    for cmd in ["collection-status", "list-current-files"] {
        let o = duplicity(t.path(), &dcache, &format!("{cmd} {}", q(url(&arch))));
        let text = text(&o);
        assert!(!text.to_lowercase().contains("warning"), "{cmd}: {text}");
        assert!(!text.contains("orphaned") || text.contains("No orphaned"), "{cmd}: {text}");
    }
}

#[test]
fn dup_full_gzip_restored_by_duplicity() {
    full_restored_by_duplicity("--volsize 1", "dup_full_gzip_restored_by_duplicity");
}

#[test]
fn dup_full_plain_restored_by_duplicity() {
    full_restored_by_duplicity("--volsize 1 --no-compression", "dup_full_plain_restored_by_duplicity");
}

#[test]
fn dup_chain_restored_by_duplicity_at_every_time() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch, cache, dcache) =
        (t.path().join("src"), t.path().join("arch"), t.path().join("c"), t.path().join("dc"));
    hard_tree(&src);
    let mut states = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            mutate(&src, round);
            // Set times are whole seconds and must increase.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        dup_backup(t.path(), &src, &url(&arch), &cache, round > 0, "--volsize 1");
        let copy = t.path().join(format!("v{round}"));
        sh_ok(t.path(), &format!("cp -a {} {}", q(&src), q(&copy)));
        states.push(copy);
    }
    let manifests: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(&arch)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".manifest"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    // The set times, in chain order: the full's, then each incremental's end.
    let mut times: Vec<String> =
        manifests.iter().map(|m| m.trim_end_matches(".manifest").rsplit('.').next().unwrap().to_string()).collect();
    times.sort();
    for (i, time) in times.iter().enumerate() {
        let out = t.path().join(format!("out{i}"));
        duplicity(t.path(), &dcache, &format!("restore -t {time} {} {}", q(url(&arch)), q(&out)));
        assert_same_tree(&states[i], &out);
    }
    // duplicity extends dup's chain, and its increment restores.
    mutate(&src, 4);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    duplicity(t.path(), &dcache, &format!("incremental {} {}", q(&src), q(url(&arch))));
    let out = t.path().join("out-dup-inc");
    duplicity(t.path(), &dcache, &format!("restore {} {}", q(url(&arch)), q(&out)));
    assert_same_tree(&src, &out);
    // dup restores duplicity's increment too, and every earlier time.
    let out = t.path().join("out-by-dup");
    sh_ok(
        t.path(),
        &format!(
            "dup-sync --archive-dir {c} {u} && dup-get --archive-dir {c} {u} {o}",
            c = q(&cache),
            u = q(url(&arch)),
            o = q(&out)
        ),
    );
    assert_same_tree(&src, &out);
    for (i, time) in times.iter().enumerate() {
        let out = t.path().join(format!("by-dup{i}"));
        sh_ok(t.path(), &format!("dup-get --archive-dir {} --time {time} {} {}", q(&cache), q(url(&arch)), q(&out)));
        assert_same_tree(&states[i], &out);
    }
}

#[test]
fn wrapper_lists_like_duplicity() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    hard_tree(&src);
    let dup = scripts().join("duplicity");
    // On an archive duplicity wrote, and on one dup wrote.
    duplicity(t.path(), &t.path().join("dc"), &format!("full --volsize 1 {} {}", q(&src), q(url(&arch))));
    let arch2 = t.path().join("arch2");
    sh_ok(
        t.path(),
        &format!("{} full --no-encryption --volsize 1 --archive-dir c2 {} {}", q(&dup), q(&src), q(url(&arch2))),
    );
    for a in [&arch, &arch2] {
        let theirs = duplicity(t.path(), &t.path().join("dc3"), &format!("list-current-files {}", q(url(a))));
        let ours =
            sh_ok(t.path(), &format!("{} list-current-files --no-encryption --archive-dir c4 {}", q(&dup), q(url(a))));
        let paths = |b: &[u8]| -> Vec<Vec<u8>> { listing(b).iter().map(|l| l[25..].to_vec()).collect() };
        let (want, got) = (paths(&theirs.stdout), paths(&ours.stdout));
        assert!(want.len() > 20);
        assert_eq!(got, want, "list-current-files of {}", a.display());
        // Whole lines too: the same time format.
        assert_eq!(listing(&ours.stdout), listing(&theirs.stdout));
    }
}

/// The file lines of a list-current-files output (`Thu Nov 26 06:09:07 2026 path`),
/// without duplicity's other messages.
fn listing(out: &[u8]) -> Vec<Vec<u8>> {
    out.split(|&c| c == b'\n')
        .filter(|l| l.len() > 25 && l[3] == b' ' && l[7] == b' ' && l[13] == b':' && l[16] == b':' && l[24] == b' ')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn dup_extends_a_duplicity_chain() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    // duplicity's own cache, shared: dup keeps it in duplicity's layout.
    let shared = t.path().join("shared-cache");
    hard_tree(&src);
    duplicity(t.path(), &shared, &format!("full --volsize 1 {} {}", q(&src), q(url(&arch))));
    mutate(&src, 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    duplicity(t.path(), &shared, &format!("incremental --volsize 1 {} {}", q(&src), q(url(&arch))));
    mutate(&src, 2);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // dup's incremental, on duplicity's cache.
    dup_backup(t.path(), &src, &url(&arch), &shared, true, "--volsize 1");
    let manifests = fs::read_dir(&arch)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".manifest"))
        .count();
    assert_eq!(manifests, 3);
    // duplicity restores the newest state, with its shared cache and with a fresh one.
    for (i, cache) in [shared.clone(), t.path().join("fresh")].iter().enumerate() {
        let out = t.path().join(format!("out{i}"));
        duplicity(t.path(), cache, &format!("restore {} {}", q(url(&arch)), q(&out)));
        assert_same_tree(&src, &out);
    }
    // And duplicity extends it again.
    mutate(&src, 3);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    duplicity(t.path(), &shared, &format!("incremental {} {}", q(&src), q(url(&arch))));
    let out = t.path().join("out-last");
    duplicity(t.path(), &shared, &format!("restore {} {}", q(url(&arch)), q(&out)));
    assert_same_tree(&src, &out);
}

#[test]
fn back_to_back_backups_wait_for_a_new_second() {
    // Regression: an incremental packed in the same second as the set it
    // extends was refused; dup-pack now waits, as duplicity does.
    let t = World::new();
    let (src, arch, cache) = (t.path().join("src"), t.path().join("arch"), t.path().join("c"));
    fs::create_dir(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), format!("{i}\n")).unwrap();
        dup_backup(t.path(), &src, &url(&arch), &cache, i > 0, "");
    }
    let mut manifests: Vec<String> = fs::read_dir(&arch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".manifest"))
        .collect();
    manifests.sort();
    assert_eq!(manifests.len(), 3, "{manifests:?}");
}

#[test]
fn wrapper_incremental_whose_delta_fails_early_does_not_hang() {
    // Regression: dup-delta failing before it opened the basis fifo left
    // dup-sig blocked opening it, and the wrapper waiting for dup-sig.
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x\n").unwrap();
    let wrapper = scripts().join("duplicity");
    let c = format!("--no-encryption --archive-dir {}", q(t.path().join("c")));
    sh_ok(t.path(), &format!("{} full {c} {} {}", q(&wrapper), q(&src), q(url(&arch))));
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{} incremental {c} --max-blocksize nonsense {} {}", q(&wrapper), q(&src), q(url(&arch))))
        .env("PATH", bin_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the wrapper hung after dup-delta failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "dup-delta's usage error: {err}");
    assert!(err.contains("max-blocksize"), "{err}");
}

#[test]
fn unchanged_incremental_restores() {
    // Regression (found by scripts/torture): an incremental of an unchanged
    // tree stored a 0-byte gzip volume, which dup-get refused as damaged
    // (exit 13) on every later restore. duplicity writes an empty gzip stream.
    let t = World::new();
    let (src, arch, cache, out) =
        (t.path().join("src"), t.path().join("arch"), t.path().join("c"), t.path().join("out"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x\n").unwrap();
    dup_backup(t.path(), &src, &url(&arch), &cache, false, "");
    dup_backup(t.path(), &src, &url(&arch), &cache, true, "");
    for e in fs::read_dir(&arch).unwrap() {
        let e = e.unwrap();
        assert!(e.metadata().unwrap().len() > 0, "{:?} is empty", e.file_name());
    }
    sh_ok(t.path(), &format!("dup-get --archive-dir {} {} {}", q(&cache), q(url(&arch)), q(&out)));
    assert_same_tree(&src, &out);
    if have("duplicity", "unchanged_incremental_restores") {
        let out2 = t.path().join("out2");
        duplicity(t.path(), &t.path().join("dc"), &format!("restore {} {}", q(url(&arch)), q(&out2)));
        assert_same_tree(&src, &out2);
    }
}

#[test]
fn incremental_stopped_before_its_manifest_leaves_a_basis() {
    // Regression (found by scripts/torture): a backup killed after storing
    // its signatures but before its manifest left new-signatures that made
    // the chain match no signature chain: every later incremental failed
    // with "no backup chain" (exit 10). Those signatures now join no chain.
    let t = World::new();
    let (src, arch, cache, out) =
        (t.path().join("src"), t.path().join("arch"), t.path().join("c"), t.path().join("out"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"1\n").unwrap();
    dup_backup(t.path(), &src, &url(&arch), &cache, false, "");
    fs::write(src.join("f"), b"2\n").unwrap();
    set_mtime(&src.join("f"), 1_704_164_645);
    dup_backup(t.path(), &src, &url(&arch), &cache, true, "");
    // The incremental's manifest gone, on the backend and in the cache.
    sh_ok(t.path(), &format!("find {} {} -name 'duplicity-inc.*.manifest*' -delete", q(&arch), q(&cache)));
    fs::write(src.join("f"), b"3\n").unwrap();
    set_mtime(&src.join("f"), 1_704_165_645);
    dup_backup(t.path(), &src, &url(&arch), &cache, true, "");
    sh_ok(t.path(), &format!("dup-get --archive-dir {} {} {}", q(&cache), q(url(&arch)), q(&out)));
    assert_same_tree(&src, &out);
}
