//! Time Drive's backend class on `dup::api` alone: each of its methods a
//! few lines. `main` runs them in turn on one archive:
//!
//! ```text
//! cargo run --example timedrive -- URL SOURCE WORKDIR
//! ```
//!
//! backs SOURCE up (a full, then an incremental after a change), lists
//! the snapshots and a directory, restores a file of the first snapshot
//! into WORKDIR, coalesces the chain into one full and deletes the old
//! backups, printing one line per step. The backend's settings come from
//! the environment, as for the binaries (AWS_ACCESS_KEY_ID, DUP_S3_ENDPOINT...).

use std::path::{Path, PathBuf};

use dup::api::{self, ArchiveOptions, BackupMode, BackupOptions, Cancel, Event, FilesOptions, Policy};
use dup::progress::Silent;

/// One backup configuration, as Time Drive keeps it.
struct TimeDrive {
    archive: ArchiveOptions,
    source: PathBuf,
    /// Cancels the running job (the GUI's Stop button).
    cancel: Cancel,
}

/// A file or directory as Time Drive's file browser shows it.
#[derive(Debug)]
struct FileItem {
    path: String,
    is_dir: bool,
    /// 0: duplicity's signatures do not keep sizes.
    size: u64,
    mtime: i64,
}

impl TimeDrive {
    fn new(url: &str, source: &Path, cache: Option<PathBuf>) -> Self {
        let archive = ArchiveOptions { archive_dir: cache, ..ArchiveOptions::new(url) };
        TimeDrive { archive, source: source.to_path_buf(), cancel: Cancel::new() }
    }

    /// A backup now; `full` forces a new chain. Returns the set's time.
    fn start_backup(&self, full: bool, on_event: &(dyn Fn(Event) + Sync)) -> dup::Result<i64> {
        let mut o = BackupOptions::new(&self.source, self.archive.url.clone());
        o.archive = self.archive.clone();
        o.mode = if full { BackupMode::Full } else { BackupMode::Auto };
        Ok(api::backup(&o, &on_event, &self.cancel)?.time)
    }

    /// The snapshots' times, oldest first.
    fn get_snapshot_list(&self) -> dup::Result<Vec<i64>> {
        let sets = api::snapshots(&self.archive, &Silent, &self.cancel)?;
        Ok(sets.into_iter().filter(|s| s.info.chain.is_some()).map(|s| s.info.end).collect())
    }

    /// The items of directory `dir` (`"."`: the top) in the snapshot of `time`.
    fn get_file_list(&self, time: i64, dir: &str) -> dup::Result<Vec<FileItem>> {
        let o = FilesOptions { time: Some(time), dir: Some(dir.into()), ..FilesOptions::new(self.archive.clone()) };
        let mut items = Vec::new();
        api::files_at(&o, &Silent, &self.cancel, |e| {
            let is_dir = e.ftype == api::FileType::Dir;
            items.push(FileItem { path: e.path.to_string(), is_dir, size: e.size, mtime: e.mtime });
            Ok(())
        })?;
        Ok(items)
    }

    /// Restores `path` as it was at `time` to `dest`.
    fn restore_file(&self, time: i64, path: &str, dest: &Path) -> dup::Result<()> {
        let o = api::RestoreOptions {
            archive: self.archive.clone(),
            time: Some(time),
            path: Some(path.into()),
            dest: dest.to_path_buf(),
            ..Default::default()
        };
        api::restore(&o, &Silent, &self.cancel).map(drop)
    }

    /// Whether `url` can hold backups: "ok", or what is wrong.
    fn test_connection_url(url: &str) -> String {
        match api::test_connection(&ArchiveOptions::new(url), &Silent, &Cancel::new()) {
            Ok(c) if c.is_ok() => "ok".into(),
            Ok(c) => format!("{}: {}", c.status.as_str(), c.message),
            Err(e) => e.message,
        }
    }

    /// Deletes the backups older than `time` (never the newest chain).
    fn delete_backup(&self, time: i64) -> dup::Result<Vec<String>> {
        let o = api::DeleteOptions::new(self.archive.clone(), Policy::OlderThan(time));
        Ok(api::delete(&o, &Silent, &self.cancel)?.files)
    }

    /// One full of the newest snapshot instead of its chain; the old chain dropped.
    fn coalesce(&self) -> dup::Result<i64> {
        let o = api::CoalesceOptions { drop_old: true, ..api::CoalesceOptions::new(self.archive.clone()) };
        Ok(api::coalesce(&o, &Silent, &self.cancel)?.backup.time)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, source, work] = &args[..] else {
        eprintln!("usage: timedrive URL SOURCE WORKDIR");
        std::process::exit(2);
    };
    if let Err(e) = run(url, Path::new(source), Path::new(work)) {
        eprintln!("timedrive: {}", e.message);
        std::process::exit(e.exit_code());
    }
}

fn run(url: &str, source: &Path, work: &Path) -> dup::Result<()> {
    let td = TimeDrive::new(url, source, Some(work.join("cache")));
    println!("connection {}", TimeDrive::test_connection_url(url));
    let stored = std::sync::atomic::AtomicU64::new(0);
    let count = |e: Event| {
        if let Event::File { .. } = e {
            stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let first = td.start_backup(true, &count)?;
    std::fs::write(source.join("timedrive.txt"), b"second version\n").map_err(|e| dup::Error::io("writing", e))?;
    let second = td.start_backup(false, &count)?;
    println!("backups {first} {second} files {}", stored.into_inner());
    println!("snapshots {:?}", td.get_snapshot_list()?);
    for item in td.get_file_list(second, ".")? {
        let kind = if item.is_dir { "dir" } else { "file" };
        println!("item {kind} {} {} {}", item.path, item.size, item.mtime);
    }
    td.restore_file(first, "timedrive.txt", &work.join("restored.txt"))?;
    println!("restored {}", work.join("restored.txt").display());
    let full = td.coalesce()?;
    println!("coalesced {full} snapshots {:?}", td.get_snapshot_list()?);
    let third = td.start_backup(true, &|_| {})?;
    println!("deleted {}", td.delete_backup(third)?.len());
    println!("snapshots {:?}", td.get_snapshot_list()?);
    Ok(())
}
