//! Retention through the classic wrapper (dup-ls selects, dup-put deletes):
//! what is left agrees with real duplicity's collection-status, the kept
//! chain restores, sets that kept sets depend on are never deleted, and
//! cleanup removes what an interrupted backup left.

use std::fs;
use std::path::Path;

use crate::common::*;

/// (type, time) of each set as duplicity's collection-status lists them.
fn duplicity_sets(cwd: &Path, url: &str) -> Vec<(String, String)> {
    let o = duplicity(cwd, &cwd.join("dc"), &format!("collection-status {}", q(url)));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (t, rest) = l.split_once(' ')?;
            matches!(t, "Full" | "Incremental").then(|| {
                let time: Vec<&str> = rest.split_whitespace().take(5).collect();
                (if t == "Full" { "full" } else { "inc" }.to_string(), time.join(" "))
            })
        })
        .collect()
}

/// (type, time) of each set as dup lists them.
fn dup_sets(cwd: &Path, url: &str) -> Vec<(String, String)> {
    let o = sh_ok(cwd, &format!("dup-ls --table --archive-dir c {}", q(url)));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // set STATUS chain N TYPE Day Mon D HH:MM:SS YYYY N volumes
            (w[4].to_string(), w[5..10].join(" "))
        })
        .collect()
}

fn wrapper(cwd: &Path, args: &str) -> std::process::Output {
    sh(cwd, &format!("{} {args}", q(scripts().join("duplicity"))))
}

#[test]
fn remove_all_but_n_full_agrees_with_duplicity() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    let url = format!("file://{}", arch.display());
    fs::create_dir(&src).unwrap();
    let opts = "--no-encryption --archive-dir c";
    // Three chains of a full and an incremental each.
    for i in 0..6 {
        fs::write(src.join("f.txt"), format!("version {i}\n")).unwrap();
        fs::write(src.join(format!("n{i}")), random_bytes(i, 5000)).unwrap();
        let cmd = if i % 2 == 0 { "full" } else { "incremental" };
        let o = wrapper(t.path(), &format!("{cmd} {opts} {} {}", q(&src), q(&url)));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(dup_sets(t.path(), &url).len(), 6);
    // Without --force: a listing, nothing deleted.
    let before = fs::read_dir(&arch).unwrap().count();
    let o = wrapper(t.path(), &format!("remove-all-but-n-full 1 {opts} {}", q(&url)));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("delete manifest"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(fs::read_dir(&arch).unwrap().count(), before);
    // remove-older-than a time inside the newest chain deletes only the older chains.
    let o = wrapper(t.path(), &format!("remove-all-but-n-full 1 --force {opts} {}", q(&url)));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = dup_sets(t.path(), &url);
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours, duplicity_sets(t.path(), &url));
    // Every remaining file, on the backend and in the cache, belongs to the kept chain.
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let kept = names(&arch).into_iter().find(|n| n.starts_with("duplicity-full.") && n.ends_with(".manifest")).unwrap();
    let t_full = kept.trim_start_matches("duplicity-full.").trim_end_matches(".manifest").to_string();
    let cache_dir = fs::read_dir(t.path().join("c")).unwrap().next().unwrap().unwrap().path();
    // Archive files only: the cache also holds the lock and dup-put's resume journal.
    for n in names(&arch).into_iter().chain(names(&cache_dir)).filter(|n| n.starts_with("duplicity-")) {
        assert!(n.contains(&t_full), "{n} is not of the kept chain {t_full}");
    }
    assert_eq!(names(&arch).len(), 6, "full + inc: a volume, a manifest and a signature each");
    let out = t.path().join("out");
    duplicity(t.path(), &t.path().join("dc"), &format!("restore {} {}", q(&url), q(&out)));
    assert_same_tree(&src, &out);
}

#[test]
fn dependent_sets_are_kept_and_cleanup_removes_leftovers() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    let url = format!("file://{}", arch.display());
    fs::create_dir(&src).unwrap();
    let opts = "--no-encryption --archive-dir c";
    let mut mid = 0;
    for i in 0..3 {
        fs::write(src.join("f.txt"), format!("version {i}\n")).unwrap();
        let o = wrapper(t.path(), &format!("{opts} {} {}", q(&src), q(&url)));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        if i == 0 {
            mid = dup::dupfmt::time::now();
        }
    }
    let files = |d: &Path| {
        let mut v: Vec<String> =
            fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let all = files(&arch);
    // One chain: full + 2 incrementals. "Older than now" leaves the newest
    // chain, its signatures included (regression: the backend's copy of the
    // newest chain's signatures was selected).
    let o = wrapper(t.path(), &format!("remove-older-than now --force {opts} {}", q(&url)));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&arch), all);
    // A time inside the chain: the full is older, but the chain depends on it.
    let o = wrapper(t.path(), &format!("remove-older-than {mid} --force {opts} {}", q(&url)));
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("newer sets depend on it"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(files(&arch), all);
    assert_eq!(dup_sets(t.path(), &url).len(), 3);
    // An interrupted backup: a volume without its manifest.
    let stray = arch.join("duplicity-full.20200101T000000Z.vol1.difftar.gz");
    fs::write(&stray, b"partial").unwrap();
    let o = wrapper(t.path(), &format!("cleanup {opts} {}", q(&url)));
    assert!(String::from_utf8_lossy(&o.stdout).contains("duplicity-full.20200101T000000Z.vol1"));
    assert!(stray.exists());
    let o = wrapper(t.path(), &format!("cleanup --force {opts} {}", q(&url)));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stray.exists());
    assert_eq!(dup_sets(t.path(), &url).len(), 3);
}
