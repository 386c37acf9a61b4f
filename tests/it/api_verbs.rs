//! Each verb of `dup::api` against real archives: one written by the API
//! (a full and an incremental of a tree changed in known ways), one written
//! by real duplicity (read, coalesced, and then restored by duplicity
//! itself); calls from inside a tokio task; the same archive refused while
//! a job of this process changes it.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use dup::Kind;
use dup::api::{self, *};

fn silent() -> (&'static Silent, Cancel) {
    (&Silent, Cancel::new())
}

fn archive(url: String, cache: &Path) -> ArchiveOptions {
    ArchiveOptions { archive_dir: Some(cache.to_path_buf()), ..ArchiveOptions::new(url) }
}

fn backup_of(src: &Path, a: &ArchiveOptions) -> BackupOptions {
    let mut o = BackupOptions::new(src, a.url.clone());
    o.archive = a.clone();
    o.volsize = 1 << 20;
    o
}

/// Copies a tree (cp -a), to keep a state of the source.
fn copy_tree(from: &Path, to: &Path) {
    sh_ok(Path::new("/"), &format!("cp -a {} {}", q(from), q(to)));
}

fn listing(o: &FilesOptions) -> Vec<String> {
    let (p, c) = silent();
    let mut out = Vec::new();
    api::files_at(o, p, &c, |e| {
        out.push(e.path.to_string());
        Ok(())
    })
    .unwrap();
    out
}

fn changes_of(c: &[Change]) -> Vec<(String, ChangeKind)> {
    c.iter().map(|c| (c.path.to_string(), c.kind)).collect()
}

#[test]
fn every_verb_on_an_archive_written_by_the_api() {
    let t = World::new();
    let (src, cache) = (t.p("src"), t.p("cache"));
    hard_tree(&src);
    let a = archive(t.url("arch"), &cache);
    let (p, c) = silent();

    let ok = api::test_connection(&a, p, &c).unwrap();
    assert_eq!(ok.status, CheckStatus::NotFound, "no archive directory yet: {ok:?}");
    let full = api::backup(&backup_of(&src, &a), p, &c).unwrap();
    assert!(full.full);
    let ok = api::test_connection(&a, p, &c).unwrap();
    assert!(ok.is_ok() && ok.archive, "{ok:?}");

    copy_tree(&src, &t.p("state1"));
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    fs::write(src.join("new.txt"), b"new\n").unwrap();
    fs::remove_file(src.join("medium.bin")).unwrap();
    let inc = api::backup(&backup_of(&src, &a), p, &c).unwrap();
    assert!(!inc.full && inc.time > full.time);

    // snapshots: one chain, a full then an incremental, with their sizes.
    let sets = api::snapshots(&a, p, &c).unwrap();
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!((sets[0].info.set_type, sets[1].info.set_type), (SetType::Full, SetType::Inc));
    assert_eq!((sets[0].info.end, sets[1].info.end), (full.time, inc.time));
    assert!(sets.iter().all(|s| s.info.chain == Some(1) && s.info.status == SetStatus::Primary && !s.info.encrypted));
    // A set's size: its manifest and volumes (its signatures are the signature chain's).
    let on_disk: u64 = names(&t.p("arch"))
        .iter()
        .filter(|n| !n.contains("signatures"))
        .map(|n| fs::metadata(t.p("arch").join(n)).unwrap().len())
        .sum();
    assert_eq!(sets.iter().map(|s| s.size).sum::<u64>(), on_disk);

    // files_at: the whole tree at each time, and one directory.
    let mut o = FilesOptions::new(a.clone());
    let now = listing(&o);
    assert!(now.contains(&"new.txt".into()) && !now.contains(&"medium.bin".into()) && now[0] == ".");
    o.time = Some(full.time);
    let then = listing(&o);
    assert!(!then.contains(&"new.txt".into()) && then.contains(&"medium.bin".into()));
    o.dir = Some(b"dir1".to_vec());
    assert_eq!(listing(&o), ["dir1/file with space.txt", "dir1/nested"]);
    o.dir = Some(b"nowhere".to_vec());
    assert_eq!(api::files_at(&o, p, &c, |_| Ok(())).unwrap_err().kind, Kind::NoBackup);

    // changes of the incremental, of the full; a file's history.
    let ch = api::changes(&ChangesOptions { archive: a.clone(), time: None }, p, &c).unwrap();
    let mut got = changes_of(&ch);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("a.txt".into(), ChangeKind::Changed),
            ("medium.bin".into(), ChangeKind::Deleted),
            ("new.txt".into(), ChangeKind::New)
        ]
    );
    assert!(ch.iter().all(|x| x.time == inc.time));
    let ch = api::changes(&ChangesOptions { archive: a.clone(), time: Some(full.time) }, p, &c).unwrap();
    assert!(ch.iter().all(|x| x.kind == ChangeKind::New) && ch.len() > 10, "{ch:?}");
    let h = api::file_history(&HistoryOptions { archive: a.clone(), path: b"a.txt".to_vec() }, p, &c).unwrap();
    assert_eq!(
        h.iter().map(|x| (x.time, x.kind)).collect::<Vec<_>>(),
        [(full.time, ChangeKind::New), (inc.time, ChangeKind::Changed)]
    );

    // restore: everything at the full's time; one file now.
    let r = api::restore(
        &RestoreOptions { archive: a.clone(), time: Some(full.time), dest: t.p("out1"), ..Default::default() },
        p,
        &c,
    )
    .unwrap();
    assert_eq!(r.time, full.time);
    assert_same_tree(&t.p("state1"), &t.p("out1"));
    let one =
        RestoreOptions { archive: a.clone(), path: Some(b"a.txt".to_vec()), dest: t.p("a.txt"), ..Default::default() };
    api::restore(&one, p, &c).unwrap();
    assert_eq!(fs::read(t.p("a.txt")).unwrap(), b"changed\n");
    let missing = RestoreOptions { path: Some(b"nope".to_vec()), dest: t.p("nope"), ..one.clone() };
    assert_eq!(api::restore(&missing, p, &c).unwrap_err().kind, Kind::NoBackup);

    // verify: the same tree, then one changed file.
    let mut v = VerifyOptions { archive: a.clone(), source: src.clone(), compare_data: true, ..Default::default() };
    let r = api::verify(&v, p, &c).unwrap();
    assert_eq!(r.difference_count, 0, "{:?}", r.differences);
    copy_tree(&src, &t.p("state2"));
    fs::write(src.join("a.txt"), b"changed again\n").unwrap();
    let r = api::verify(&v, p, &c).unwrap();
    assert_eq!(r.difference_count, 1, "{:?}", r.differences);
    assert_eq!(r.differences[0].path.to_string(), "a.txt");
    v.path = Some(b"dir1".to_vec());
    v.source = src.join("dir1");
    assert_eq!(api::verify(&v, p, &c).unwrap().difference_count, 0);

    // coalesce: a new full of the newest state; the old chain dropped.
    let before = api::snapshots(&a, p, &c).unwrap();
    let mut co = CoalesceOptions::new(a.clone());
    co.drop_old = true;
    let r = api::coalesce(&co, p, &c).unwrap();
    assert_eq!(r.from, inc.time);
    assert!(r.backup.full && r.backup.time > inc.time);
    let dropped = r.dropped.unwrap();
    let old_files: usize = before.iter().map(|s| s.info.files.len()).sum();
    assert_eq!(dropped.deleted as usize, old_files + 2, "the old sets and their two signatures: {dropped:?}");
    let sets = api::snapshots(&a, p, &c).unwrap();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!((sets[0].info.set_type, sets[0].info.end), (SetType::Full, r.backup.time));
    api::restore(&RestoreOptions { archive: a.clone(), dest: t.p("out2"), ..Default::default() }, p, &c).unwrap();
    assert_same_tree(&t.p("state2"), &t.p("out2"));

    // delete: a dry run says what would go and deletes nothing; then it goes.
    fs::write(src.join("b.txt"), b"b\n").unwrap();
    let mut b = backup_of(&src, &a);
    b.mode = BackupMode::Full;
    let newest = api::backup(&b, p, &c).unwrap();
    let mut d = DeleteOptions::new(a.clone(), Policy::AllButNFull(1));
    d.dry_run = true;
    let files_before = names(&t.p("arch"));
    let plan = api::delete(&d, p, &c).unwrap();
    assert_eq!(plan.deleted, 0);
    assert_eq!(names(&t.p("arch")), files_before);
    assert!(
        !plan.files.is_empty() && plan.files.iter().all(|f| f.contains(&dup::dupfmt::time::to_compact(r.backup.time)))
    );
    d.dry_run = false;
    let done = api::delete(&d, p, &c).unwrap();
    assert_eq!((done.files.clone(), done.deleted as usize), (plan.files.clone(), plan.files.len()));
    let left = names(&t.p("arch"));
    assert!(plan.files.iter().all(|f| !left.contains(f)));
    let sets = api::snapshots(&a, p, &c).unwrap();
    assert_eq!(sets.iter().map(|s| s.info.end).collect::<Vec<_>>(), [newest.time]);
    let nothing = api::delete(&DeleteOptions::new(a.clone(), Policy::OlderThan(newest.time)), p, &c).unwrap();
    assert!(nothing.files.is_empty() && !nothing.notes.is_empty(), "{nothing:?}");
    assert_eq!(
        api::delete(&DeleteOptions::new(a.clone(), Policy::AllButNFull(0)), p, &c).unwrap_err().kind,
        Kind::Usage
    );
}

/// coalesce with drop_old deletes the chain it made a full of and no other:
/// a newer chain stays (it was deleted with the older ones before); a time
/// before its chain's end is refused before anything is written.
#[test]
fn coalesce_drops_only_the_chain_it_replaced() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"one\n").unwrap();
    let a = archive(t.url("arch"), &t.p("cache"));
    let (p, c) = silent();
    let full1 = api::backup(&backup_of(&src, &a), p, &c).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("f"), b"two\n").unwrap();
    let inc1 = api::backup(&backup_of(&src, &a), p, &c).unwrap();
    assert!(!inc1.full);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("f"), b"three\n").unwrap();
    let full2 = api::backup(&BackupOptions { mode: BackupMode::Full, ..backup_of(&src, &a) }, p, &c).unwrap();

    let files_before = names(&t.p("arch"));
    let mid = CoalesceOptions { time: Some(full1.time), drop_old: true, ..CoalesceOptions::new(a.clone()) };
    assert_eq!(api::coalesce(&mid, p, &c).unwrap_err().kind, Kind::Usage);
    assert_eq!(names(&t.p("arch")), files_before, "nothing written");

    let old = CoalesceOptions { time: Some(inc1.time), drop_old: true, ..CoalesceOptions::new(a.clone()) };
    let r = api::coalesce(&old, p, &c).unwrap();
    assert_eq!(r.from, inc1.time);
    let ends: Vec<i64> = api::snapshots(&a, p, &c).unwrap().iter().map(|s| s.info.end).collect();
    assert_eq!(ends, [full2.time, r.backup.time], "the first chain gone, the newer full kept");
    let at = |time, dest: &str| {
        let o = RestoreOptions { archive: a.clone(), time: Some(time), dest: t.p(dest), ..Default::default() };
        api::restore(&o, p, &c).unwrap();
        fs::read(t.p(dest).join("f")).unwrap()
    };
    assert_eq!(at(full2.time, "o2"), b"three\n");
    assert_eq!(at(r.backup.time, "o3"), b"two\n");
}

/// A restore that meets a damaged volume restores the rest and returns
/// the damage as an error.
#[test]
fn restore_returns_an_error_when_anything_was_skipped() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), random_bytes(i, 700_000)).unwrap();
    }
    let a = archive(t.url("arch"), &t.p("cache"));
    let (p, c) = silent();
    api::backup(&backup_of(&src, &a), p, &c).unwrap();
    let vol2 = names(&t.p("arch")).into_iter().find(|n| n.contains(".vol2.")).unwrap();
    let path = t.p("arch").join(vol2);
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&path, data).unwrap();
    let e = api::restore(&RestoreOptions { archive: a, dest: t.p("out"), ..Default::default() }, p, &c).unwrap_err();
    assert_eq!(e.kind, Kind::Corrupt, "{}", e.message);
    assert_eq!(fs::read(t.p("out/f0")).unwrap(), random_bytes(0, 700_000), "the rest is restored");
}

/// An archive written by duplicity 0.8: listed, its changes read, restored
/// and verified by the API; then coalesced by the API into one full that
/// duplicity itself restores, the old chain gone.
#[test]
fn an_archive_written_by_duplicity() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, dc) = (t.p("src"), t.p("dc"));
    hard_tree(&src);
    let url = t.url("arch");
    duplicity(t.path(), &dc, &format!("full {} {}", q(&src), q(&url)));
    copy_tree(&src, &t.p("state1"));
    fs::write(src.join("a.txt"), b"changed by round two\n").unwrap();
    fs::remove_file(src.join("empty")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    duplicity(t.path(), &dc, &format!("incremental {} {}", q(&src), q(&url)));
    let a = archive(url.clone(), &t.p("cache"));
    let (p, c) = silent();

    let sets = api::snapshots(&a, p, &c).unwrap();
    assert_eq!(sets.iter().map(|s| s.info.set_type).collect::<Vec<_>>(), [SetType::Full, SetType::Inc]);
    let ch = api::changes(&ChangesOptions { archive: a.clone(), time: None }, p, &c).unwrap();
    let mut got = changes_of(&ch);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, [("a.txt".into(), ChangeKind::Changed), ("empty".into(), ChangeKind::Deleted)]);
    let mut o = FilesOptions::new(a.clone());
    o.dir = Some(b".".to_vec());
    let top = listing(&o);
    assert!(top.contains(&"dir1".into()) && !top.contains(&"dir1/nested".into()) && !top.contains(&"empty".into()));
    api::restore(
        &RestoreOptions { archive: a.clone(), time: Some(sets[0].info.end), dest: t.p("out1"), ..Default::default() },
        p,
        &c,
    )
    .unwrap();
    assert_same_tree(&t.p("state1"), &t.p("out1"));
    let v = VerifyOptions { archive: a.clone(), source: src.clone(), compare_data: true, ..Default::default() };
    assert_eq!(api::verify(&v, p, &c).unwrap().difference_count, 0);

    let mut co = CoalesceOptions::new(a.clone());
    co.drop_old = true;
    let r = api::coalesce(&co, p, &c).unwrap();
    let left = names(&t.p("arch"));
    assert!(left.iter().all(|n| n.starts_with("duplicity-full")), "{left:?}");
    assert_eq!(left.iter().filter(|n| n.contains(".manifest")).count(), 1, "{left:?}");
    assert!(r.dropped.unwrap().deleted > 0);
    fs::remove_dir_all(&dc).unwrap();
    duplicity(t.path(), &dc, &format!("restore {} {}", q(&url), q(t.p("out2"))));
    assert_same_tree(&src, &t.p("out2"));
}

/// Every verb called from inside a tokio task does its work (the backends'
/// runtime cannot be entered from there: the call moves to a thread).
#[test]
fn calls_from_inside_a_tokio_task() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data\n").unwrap();
    let a = archive(t.url("arch"), &t.p("cache"));
    let dest = t.p("out");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src2 = src.clone();
    rt.block_on(async move {
        tokio::spawn(async move {
            let (p, c) = silent();
            api::backup(&backup_of(&src2, &a), p, &c).unwrap();
            assert_eq!(api::snapshots(&a, p, &c).unwrap().len(), 1);
            assert_eq!(api::files_at(&FilesOptions::new(a.clone()), p, &c, |_| Ok(())).unwrap(), 2);
            assert!(api::test_connection(&a, p, &c).unwrap().is_ok());
            api::restore(&RestoreOptions { archive: a.clone(), dest, ..Default::default() }, p, &c).unwrap();
            assert_eq!(api::changes(&ChangesOptions { archive: a.clone(), time: None }, p, &c).unwrap().len(), 1);
            let plan =
                api::delete(&DeleteOptions { dry_run: true, ..DeleteOptions::new(a.clone(), Policy::Cleanup) }, p, &c);
            assert!(plan.unwrap().files.is_empty());
        })
        .await
        .unwrap();
    });
    assert_same_tree(&src, &t.p("out"));
}

/// While a backup of this process writes an archive, every verb that
/// changes it (backup, delete, coalesce) is refused with `Kind::Locked`;
/// reading verbs go on. A backup of another archive runs meanwhile.
#[test]
fn the_same_archive_is_refused_while_busy() {
    let t = World::new();
    let src = t.p("src");
    hard_tree(&src);
    let a = archive(t.url("arch"), &t.p("cache"));
    let other = archive(t.url("other"), &t.p("cache"));
    let (p, c) = silent();
    api::backup(&backup_of(&src, &a), p, &c).unwrap();
    let (busy, release) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let job = s.spawn(|| {
            let hold = |_: Event| {
                busy.store(true, Ordering::SeqCst);
                let t0 = Instant::now();
                while !release.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            let mut o = backup_of(&src, &a);
            o.mode = BackupMode::Full;
            api::backup(&o, &hold, &Cancel::new())
        });
        while !busy.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let locked = |r: dup::Result<()>| r.expect_err("refused while busy").kind;
        assert_eq!(locked(api::backup(&backup_of(&src, &a), p, &c).map(drop)), Kind::Locked);
        assert_eq!(locked(api::delete(&DeleteOptions::new(a.clone(), Policy::Cleanup), p, &c).map(drop)), Kind::Locked);
        assert_eq!(locked(api::coalesce(&CoalesceOptions::new(a.clone()), p, &c).map(drop)), Kind::Locked);
        assert_eq!(api::snapshots(&a, p, &c).unwrap().len(), 1);
        assert!(api::backup(&backup_of(&src, &other), p, &c).unwrap().full);
        release.store(true, Ordering::SeqCst);
        assert!(job.join().unwrap().unwrap().full);
    });
    assert_eq!(api::snapshots(&a, p, &c).unwrap().len(), 2);
}

/// An encrypted archive through the API (one `Keys` for writing and
/// reading); `full_if_older_than` starts a new chain only when the newest
/// one began before the limit.
#[test]
fn encrypted_and_full_if_older_than() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"secret data\n").unwrap();
    let mut a = archive(t.url("arch"), &t.p("cache"));
    a.keys = Some(Keys::with_passphrase(b"pass".to_vec()));
    let (p, c) = silent();
    let first = api::backup(&backup_of(&src, &a), p, &c).unwrap();
    let mut o = backup_of(&src, &a);
    o.full_if_older_than = Some(first.time);
    assert!(!api::backup(&o, p, &c).unwrap().full, "the chain began at the limit, not before it");
    o.full_if_older_than = Some(first.time + 1);
    let r = api::backup(&o, p, &c).unwrap();
    assert!(r.full, "the chain began before the limit");
    let sets = api::snapshots(&a, p, &c).unwrap();
    assert_eq!(sets.iter().map(|s| s.info.chain).collect::<Vec<_>>(), [Some(1), Some(1), Some(2)]);
    assert!(sets.iter().all(|s| s.info.encrypted), "{sets:?}");
    assert!(names(&t.p("arch")).iter().all(|n| n.ends_with(".gpg")));
    let mut ro = RestoreOptions { archive: a.clone(), time: Some(first.time), dest: t.p("out"), ..Default::default() };
    api::restore(&ro, p, &c).unwrap();
    assert_same_tree(&src, &t.p("out"));
    ro.archive.keys = Some(Keys::with_passphrase(b"wrong".to_vec()));
    ro.dest = t.p("out2");
    assert_eq!(api::restore(&ro, p, &c).unwrap_err().kind, Kind::Crypto);
}

/// Filling a new cache (a listing on another machine, or after the cache
/// was lost) stops at the token between and within the files it copies:
/// what was copied stays whole, nothing half-written is left, and the next
/// call finishes the copy.
#[test]
fn a_cache_sync_stops_at_the_token() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir(&src).unwrap();
    let a = archive(t.url("arch"), &t.p("cache"));
    let (p, c) = silent();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), random_bytes(i, 100_000)).unwrap();
        api::backup(&backup_of(&src, &a), p, &c).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let other = archive(t.url("arch"), &t.p("cache2"));
    let cancel = Cancel::new();
    let cached = std::sync::Mutex::new(0);
    let progress = |e: Event| {
        if let Event::File { action, .. } = e
            && action == "cached"
        {
            *cached.lock().unwrap() += 1;
            cancel.cancel();
        }
    };
    let e = api::files_at(&FilesOptions::new(other.clone()), &progress, &cancel, |_| Ok(())).unwrap_err();
    assert_eq!(e.kind, Kind::Interrupted, "{}", e.message);
    assert_eq!(*cached.lock().unwrap(), 1, "the copy stopped after the first file");
    let dirs: Vec<_> = fs::read_dir(t.p("cache2")).unwrap().map(|d| d.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one archive's cache: {dirs:?}");
    let files = names(&dirs[0]);
    assert!(!files.iter().any(|n| n.contains("dup-tmp")), "nothing half-written: {files:?}");
    assert!(files.iter().any(|n| n.contains(".manifest") || n.contains(".sigtar")), "the first copy stays: {files:?}");
    let n = api::files_at(&FilesOptions::new(other), p, &c, |_| Ok(())).unwrap();
    assert_eq!(n, 5, "the root and four files");
}

/// A cancelled token stops every verb with `Kind::Interrupted`, changing
/// nothing; a restore cancelled from its progress callback stops there.
#[test]
fn every_verb_stops_at_a_cancelled_token() {
    let t = World::new();
    let src = t.p("src");
    hard_tree(&src);
    let a = archive(t.url("arch"), &t.p("cache"));
    let p = &Silent;
    api::backup(&backup_of(&src, &a), p, &Cancel::new()).unwrap();
    let before = names(&t.p("arch"));
    let c = Cancel::new();
    c.cancel();
    let stopped = |r: dup::Result<()>| assert_eq!(r.expect_err("cancelled").kind, Kind::Interrupted);
    stopped(api::backup(&backup_of(&src, &a), p, &c).map(drop));
    stopped(api::snapshots(&a, p, &c).map(drop));
    stopped(api::files_at(&FilesOptions::new(a.clone()), p, &c, |_| Ok(())).map(drop));
    stopped(api::changes(&ChangesOptions { archive: a.clone(), time: None }, p, &c).map(drop));
    stopped(api::file_history(&HistoryOptions { archive: a.clone(), path: b"a.txt".to_vec() }, p, &c).map(drop));
    let ro = RestoreOptions { archive: a.clone(), dest: t.p("out"), ..Default::default() };
    stopped(api::restore(&ro, p, &c).map(drop));
    stopped(
        api::verify(&VerifyOptions { archive: a.clone(), source: src.clone(), ..Default::default() }, p, &c).map(drop),
    );
    stopped(api::delete(&DeleteOptions::new(a.clone(), Policy::AllButNFull(1)), p, &c).map(drop));
    stopped(api::coalesce(&CoalesceOptions::new(a.clone()), p, &c).map(drop));
    stopped(api::test_connection(&a, p, &c).map(drop));
    assert_eq!(names(&t.p("arch")), before);

    let c = Cancel::new();
    let items = std::sync::atomic::AtomicU64::new(0);
    let cancel_at_third = |e: Event| {
        if let Event::Item { .. } = e
            && items.fetch_add(1, Ordering::SeqCst) == 2
        {
            c.cancel();
        }
    };
    let ro = RestoreOptions { dest: t.p("out2"), ..ro };
    stopped(api::restore(&ro, &cancel_at_third, &c).map(drop));
    assert_eq!(items.load(Ordering::SeqCst), 3, "stopped at the next item");
}
