//! The library API a front end calls: two backup jobs at once in one
//! process, each with its own progress callback; then listing sets and files,
//! and an incremental chosen automatically. Real duplicity restores the
//! results.

use std::sync::Mutex;

use crate::common::*;
use dup::api::{self, ArchiveOptions, BackupMode, BackupOptions, Cancel};
use dup::progress::Event;

fn opts(src: &std::path::Path, arch: &std::path::Path, cache: &std::path::Path) -> BackupOptions {
    let mut o = BackupOptions::new(src, format!("file://{}", arch.display()));
    o.archive.archive_dir = Some(cache.to_path_buf());
    o.volsize = 1 << 20;
    o
}

#[test]
fn two_jobs_at_once_then_list_and_increment() {
    let t = World::new();
    let srcs = [t.path().join("src1"), t.path().join("src2")];
    hard_tree(&srcs[0]);
    std::fs::create_dir(&srcs[1]).unwrap();
    for i in 0..50 {
        std::fs::write(srcs[1].join(format!("f{i:02}")), random_bytes(i, 20_000 + i as usize)).unwrap();
    }
    let archs = [t.path().join("arch1"), t.path().join("arch2")];
    let cache = t.path().join("cache");
    let events: [Mutex<Vec<Event>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
    let reports: Vec<_> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..2)
            .map(|i| {
                let o = opts(&srcs[i], &archs[i], &cache);
                let ev = &events[i];
                s.spawn(move || api::backup(&o, &|e: Event| ev.lock().unwrap().push(e), &Cancel::new()))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap().unwrap()).collect()
    });
    for (i, r) in reports.iter().enumerate() {
        assert!(r.full, "job {i} was a full backup");
        assert_eq!(r.warnings, 0);
        assert!(r.stored.stored >= 3, "job {i} stored volumes, signature and manifest");
        let ev = events[i].lock().unwrap();
        assert!(
            ev.iter().any(|e| matches!(e, Event::File { action, .. } if action == "stored")),
            "job {i} reported stores"
        );
        assert!(ev.iter().any(|e| matches!(e, Event::Finish { stage, .. } if stage == "backup")));
    }
    // Each job's progress counted its own tree, knew its total early, and
    // reached 100 % once, at the end; then a summary.
    for (i, r) in reports.iter().enumerate() {
        let ev = events[i].lock().unwrap();
        let counters: Vec<_> =
            ev.iter().filter_map(|e| if let Event::Progress(c) = e { Some(c) } else { None }).collect();
        let last = counters.last().expect("progress events");
        assert_eq!(
            last.files_done,
            r.changes.new + r.changes.changed + r.changes.unchanged + r.changes.warnings,
            "job {i}: {last:?}"
        );
        assert_eq!(last.files_total, Some(last.files_done), "job {i}");
        assert_eq!(counters.iter().filter(|c| c.percent == Some(100.0)).count(), 1, "job {i}");
        assert!(counters.windows(2).all(|w| w[0].files_done <= w[1].files_done && w[0].bytes_done <= w[1].bytes_done));
        assert!(!ev.iter().any(|e| matches!(e, Event::Item { .. })), "job {i}: items are metered");
        assert!(
            matches!(ev.last(), Some(Event::Summary(s)) if s.stage == "backup" && s.bytes_stored == Some(r.stored.bytes)),
            "job {i}: {:?}",
            ev.last()
        );
    }

    let a0 = ArchiveOptions {
        url: format!("file://{}", archs[0].display()),
        archive_dir: Some(cache.clone()),
        name: None,
        keys: None,
    };
    let sets = api::snapshots(&a0, &dup::progress::Silent, &Cancel::new()).unwrap();
    assert_eq!(sets.len(), 1);
    assert!(sets[0].info.volumes >= 3 && sets[0].size > 0);
    let mut files = Vec::new();
    api::files_at(&api::FilesOptions::new(a0.clone()), &dup::progress::Silent, &Cancel::new(), |e| {
        files.push(e.path.0);
        Ok(())
    })
    .unwrap();
    assert!(files.contains(&b"caf\xe9.txt".to_vec()) && files.contains(&b"dir1/nested/deep.txt".to_vec()));
    assert_eq!(files[0], b".");

    // The second backup of a source becomes an incremental by itself.
    std::fs::write(srcs[0].join("a.txt"), b"changed\n").unwrap();
    set_mtime(&srcs[0].join("a.txt"), 1_800_000_000);
    let r = api::backup(&opts(&srcs[0], &archs[0], &cache), &dup::progress::Silent, &Cancel::new()).unwrap();
    assert!(!r.full);
    assert_eq!(r.changes.changed, 1, "{:?}", r.changes);
    assert_eq!(r.changes.files_read, 1, "only the changed file is read: {:?}", r.changes);
    assert_eq!(api::snapshots(&a0, &dup::progress::Silent, &Cancel::new()).unwrap().len(), 2);

    // An explicit incremental with no chain is refused with "no backup".
    let mut o = opts(&srcs[1], &t.path().join("empty"), &cache);
    o.mode = BackupMode::Incremental;
    assert_eq!(api::backup(&o, &dup::progress::Silent, &Cancel::new()).unwrap_err().kind, dup::Kind::NoBackup);

    if have("duplicity", "two_jobs_at_once_then_list_and_increment") {
        for (i, src) in srcs.iter().enumerate() {
            let out = t.path().join(format!("out{i}"));
            duplicity(
                t.path(),
                &t.path().join("dc"),
                &format!("restore {} {}", q(format!("file://{}", archs[i].display())), q(&out)),
            );
            assert_same_tree(src, &out);
        }
    }
}

/// A backup interrupted by SIGKILL after three volumes (the binaries'
/// pipeline, gzip volumes), then `api::backup` of the same tree: it takes the
/// unfinished set's time and does not send the stored volumes again; the
/// same for an incremental.
#[test]
fn backup_resumes_an_interrupted_set() {
    let t = World::new();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), random_bytes(41, 5 << 20)).unwrap();
    std::fs::write(src.join("small"), b"small\n").unwrap();
    let (arch, cache) = (t.path().join("arch"), t.path().join("cache"));
    let url = format!("file://{}", arch.display());
    let (u, c) = (q(&url), format!("--archive-dir {}", q(&cache)));
    let journal = cache.join(dup::io::cache::backup_name(&url)).join(dup::io::cache::journal::JOURNAL);
    let pack = "dup-pack --no-encryption --volsize 1 --json";
    interrupt_after_three_volumes(
        t.path(),
        &[],
        &format!("dup-scan {} | dup-delta | {pack}", q(&src)),
        &format!("dup-put {c} {u}"),
        &journal,
    );
    let first = std::fs::read_dir(&arch).unwrap().next().unwrap().unwrap().file_name();
    let time = first.to_str().unwrap().split('.').nth(1).unwrap().to_string();

    let mut o = opts(&src, &arch, &cache);
    o.mode = BackupMode::Full;
    let r = api::backup(&o, &|_: Event| {}, &Cancel::new()).unwrap();
    assert_eq!(dup::dupfmt::time::to_compact(r.time), time, "the unfinished set's time");
    assert_eq!(r.stored.skipped, 3, "{:?}", r.stored);
    assert!(!journal.exists());

    // An incremental (big.bin rewritten: five volumes of deltas), interrupted.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(src.join("big.bin"), random_bytes(42, 5 << 20)).unwrap();
    let basis = format!("--basis <(dup-sig {c} --archive {u})");
    interrupt_after_three_volumes(
        t.path(),
        &[],
        &format!("dup-scan {} | dup-delta {basis} | {pack}", q(&src)),
        &format!("dup-put {c} {u}"),
        &journal,
    );
    let inc: Vec<String> = std::fs::read_dir(&arch)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("duplicity-inc."))
        .collect();
    assert_eq!(inc.len(), 3, "{inc:?}");
    let t2 = inc[0].split(".to.").nth(1).unwrap().split('.').next().unwrap().to_string();
    o.mode = BackupMode::Incremental;
    let r = api::backup(&o, &|_: Event| {}, &Cancel::new()).unwrap();
    assert!(!r.full);
    assert_eq!(dup::dupfmt::time::to_compact(r.time), t2, "the unfinished incremental's time");
    assert_eq!(r.stored.skipped, 3, "{:?}", r.stored);
    let out = t.path().join("out");
    sh_ok(t.path(), &format!("dup-get {c} {u} {}", q(&out)));
    assert_same_tree(&src, &out);
}

/// A chain that ends after now (made where the clock was ahead): an
/// incremental through the API is refused at once, as dup-pack refuses it,
/// instead of waiting for the clock to pass the chain's end (it waited
/// for good before).
#[test]
fn incremental_after_a_chain_from_the_future_is_refused_not_awaited() {
    let t = World::new();
    let (src, arch, cache) = (t.p("src"), t.p("arch"), t.p("cache"));
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data\n").unwrap();
    let future = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    sh_ok(
        t.path(),
        &format!(
            "dup-scan {} | dup-delta | dup-pack --no-encryption --time {future} | dup-put --archive-dir {} {}",
            q(&src),
            q(&cache),
            q(file_url(&arch))
        ),
    );
    let mut o = opts(&src, &arch, &cache);
    o.mode = BackupMode::Incremental;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(api::backup(&o, &dup::progress::Silent, &Cancel::new())).unwrap());
    let r = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the backup waits for the clock");
    let e = r.expect_err("an incremental before its chain's end");
    assert!(e.message.contains("is not after the end of the chain it extends"), "{}", e.message);
    assert_eq!(names(&arch).iter().filter(|n| n.contains(".manifest")).count(), 1, "{:?}", names(&arch));
}
