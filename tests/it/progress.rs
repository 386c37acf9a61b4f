//! Progress and the central log as a front end sees them: the JSON progress
//! of a ~300 MB backup, the --log-fd/--log-file formats (duplicity's machine
//! lines, JSON Lines), and standard output left to the data.

use std::fs;
use std::time::Instant;

use crate::common::{World, q, random_bytes, sh, sh_ok};
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

#[test]
fn progress_of_a_300_mb_backup() {
    let w = World::new();
    let src = w.p("src");
    // 60 files of 5 MiB in 3 directories, and a few small ones.
    for d in 0..3 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..20 {
            fs::write(dir.join(format!("f{i}")), random_bytes(d * 100 + i + 1, 5 << 20)).unwrap();
        }
        fs::write(dir.join("small"), b"x").unwrap();
    }
    let t = Instant::now();
    sh_ok(
        w.path(),
        &format!(
            "dup-scan --total src | dup-delta --log-fd 3 --log-json 3>events \
             | dup-pack --no-encryption --no-compression | dup-put --archive-dir c {}",
            q(w.url("arch"))
        ),
    );
    let wall = t.elapsed().as_secs_f64();
    let events = json_lines(&fs::read_to_string(w.p("events")).unwrap());
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(progress.len() >= 3, "{events:?}");
    // Monotone counters and percent; one stage.
    for pair in progress.windows(2) {
        for k in ["files_done", "bytes_done", "elapsed_seconds"] {
            assert!(pair[0][k].as_f64() <= pair[1][k].as_f64(), "{k}: {pair:?}");
        }
        assert!(pair[0]["percent"].as_f64().unwrap_or(0.0) <= pair[1]["percent"].as_f64().unwrap_or(0.0));
    }
    assert!(progress.iter().all(|p| p["stage"] == "delta"), "{progress:?}");
    // About ten a second at most (and the last one).
    let last = progress.last().unwrap();
    let elapsed = last["elapsed_seconds"].as_f64().unwrap();
    assert!(progress.len() as f64 <= elapsed * 10.0 + 3.0, "{} events in {elapsed} s", progress.len());
    // A total before 20 % of the time.
    let first_total = progress.iter().find(|p| p["bytes_total"].is_u64()).expect("a progress event with a total");
    assert!(
        first_total["elapsed_seconds"].as_f64().unwrap() <= 0.2 * elapsed,
        "the total came at {} of {elapsed} s",
        first_total["elapsed_seconds"]
    );
    assert_eq!(first_total["files_total"], 67, "the root, 3 directories, 60 files and 3 small ones");
    assert_eq!(first_total["bytes_total"], 300 * (1 << 20) + 3);
    // 100 % exactly once, in the last event, with the totals done.
    assert_eq!(progress.iter().filter(|p| p["percent"].as_f64() == Some(100.0)).count(), 1);
    assert_eq!(last["percent"].as_f64(), Some(100.0));
    assert_eq!((last["files_done"].as_u64(), last["bytes_done"].as_u64()), (Some(67), Some(300 * (1 << 20) + 3)));
    // Before the end, a time left.
    assert!(progress.iter().any(|p| p["eta_seconds"].as_f64().is_some_and(|e| e > 0.0) || elapsed < 1.0));
    // The summary.
    let summary = events.iter().find(|e| e["event"] == "summary").expect("a summary");
    assert_eq!(summary["stage"], "delta");
    assert_eq!(summary["new_files"], 67);
    assert_eq!(summary["source_files"], 67);
    assert_eq!(summary["bytes_read"], 300 * (1 << 20) + 3);
    assert_eq!(summary["errors"], 0);
    eprintln!(
        "300 MiB backup: {wall:.1} s, {} progress events, total at {}",
        progress.len(),
        first_total["elapsed_seconds"]
    );
}

/// A restore counts its total from the cache's index alongside: a `total`
/// event with the items it will restore (bytes unknown: null), progress
/// events with that total and a percent before the end, 100 % once.
#[test]
fn progress_of_a_restore_has_its_total() {
    let w = World::new();
    let src = w.p("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..50 {
        fs::write(src.join("d").join(format!("f{i}")), random_bytes(i + 7, 2 << 20)).unwrap();
    }
    let url = w.url("arch");
    sh_ok(
        w.path(),
        &format!(
            "dup-scan src | dup-delta | dup-pack --no-encryption --no-compression | dup-put --archive-dir c {}",
            q(&url)
        ),
    );
    sh_ok(w.path(), &format!("dup-get --archive-dir c --log-fd 3 --log-json {} dest 3>events", q(&url)));
    let events = json_lines(&fs::read_to_string(w.p("events")).unwrap());
    let (items, bytes) = (52, 50 * (2 << 20));
    let total = events.iter().find(|e| e["event"] == "total").expect("a total event");
    assert_eq!(total["files"].as_u64(), Some(items), "{total}");
    assert!(total["bytes"].is_null(), "{total}");
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    let before_end = progress.iter().filter(|p| p["percent"].as_f64() != Some(100.0));
    assert!(
        before_end.clone().any(|p| p["files_total"].as_u64() == Some(items)
            && p["percent"].is_number()
            && p["eta_seconds"].is_number()),
        "{progress:?}"
    );
    assert!(before_end.clone().all(|p| p["percent"].as_f64().unwrap_or(0.0) < 100.0));
    assert_eq!(progress.iter().filter(|p| p["percent"].as_f64() == Some(100.0)).count(), 1);
    let last = progress.last().unwrap();
    assert_eq!((last["files_done"].as_u64(), last["bytes_done"].as_u64()), (Some(items), Some(bytes)));
}

/// A tree with a file that goes missing between the scan and the delta: one
/// warning (duplicity's "cannot read", with the path).
fn tree_with_a_vanished_file(w: &World) {
    fs::create_dir_all(w.p("src/sub")).unwrap();
    fs::write(w.p("src/a"), b"aaa").unwrap();
    fs::write(w.p("src/sub/gone"), b"soon gone").unwrap();
    sh_ok(w.path(), "dup-scan src > entries && rm src/sub/gone");
}

#[test]
fn log_file_and_log_fd_in_duplicitys_machine_format() {
    let w = World::new();
    tree_with_a_vanished_file(&w);
    let o = sh(w.path(), "dup-delta --log-file lf --log-fd 3 < entries 3>fd3 > changes");
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let lf = fs::read_to_string(w.p("lf")).unwrap();
    assert_eq!(lf, fs::read_to_string(w.p("fd3")).unwrap());
    // Each record: "LEVEL CODE[ EXTRA]", its text in ". " lines, an empty line.
    let records: Vec<&str> = lf.split("\n\n").filter(|r| !r.is_empty()).collect();
    assert!(lf.ends_with("\n\n"), "{lf:?}");
    for r in &records {
        let mut lines = r.lines();
        let head = lines.next().unwrap();
        let mut words = head.split(' ');
        assert!(["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"].contains(&words.next().unwrap()), "{head}");
        assert!(words.next().unwrap().parse::<u32>().is_ok(), "{head}");
        assert!(lines.all(|l| l.starts_with(". ")), "{r}");
    }
    assert!(
        records.contains(&"WARNING 10 'sub/gone'\n. sub/gone: cannot read: No such file or directory (os error 2)"),
        "{lf}"
    );
    let summary = records.iter().find(|r| r.starts_with("NOTICE 1\n. delta: ")).expect("the summary");
    assert!(summary.contains("3 new, 0 changed, 0 deleted, 3 source files, 3 bytes read, 1 errors"), "{summary}");
    assert!(records.iter().any(|r| r.starts_with("INFO 2 ")), "progress: {lf}");
    assert!(records.contains(&"WARNING 1\n. 1 items could not be read and were left out"), "{lf}");
    // The warning is on stderr too, once.
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("sub/gone: cannot read").count(), 1, "{err}");

    // --log-level: warnings and errors only; an error's hint is a
    // continuation line.
    let o = sh(w.path(), "echo 'not a stream' | dup-delta --log-file lf2 --log-level warning > /dev/null");
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let lf2 = fs::read_to_string(w.p("lf2")).unwrap();
    assert!(lf2.starts_with("ERROR 1\n. standard input: not a dup record stream"), "{lf2}");
    assert!(lf2.ends_with("\n. hint: feed the output of a dup-* command\n\n"), "{lf2}");
    assert!(!lf2.contains("INFO") && !lf2.contains("NOTICE"), "{lf2}");
    let o = sh(w.path(), "dup-delta --log-level loud < entries");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn log_json_is_the_event_schema() {
    let w = World::new();
    tree_with_a_vanished_file(&w);
    let o = sh(w.path(), "dup-delta --log-file lj --log-json < entries > changes");
    assert_eq!(o.status.code(), Some(3));
    let events = json_lines(&fs::read_to_string(w.p("lj")).unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for k in ["start", "warning", "progress", "finish", "summary", "log"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let warning = events.iter().find(|e| e["event"] == "warning").unwrap();
    assert_eq!(warning["path"], "sub/gone");
    let log = events.iter().find(|e| e["event"] == "log").unwrap();
    assert!(["error", "warning", "notice", "info", "debug"].contains(&log["level"].as_str().unwrap()), "{log}");
    assert!(log["code"].is_u64() && log["message"].is_string(), "{log}");
    assert!(!kinds.contains(&"item"), "items are summed into progress events");
    // The finish event counts what the progress counted (every item walked,
    // not only the files read).
    let last = events.iter().rfind(|e| e["event"] == "progress").unwrap();
    let finish = events.iter().find(|e| e["event"] == "finish").unwrap();
    assert_eq!(finish["items"], last["files_done"], "{finish} vs {last}");
}

#[test]
fn stdout_stays_data() {
    let w = World::new();
    tree_with_a_vanished_file(&w);
    fs::write(w.p("src/sub/gone"), b"back").unwrap();
    // Every option that reports sends nothing to standard output: the
    // streams read back whole as records.
    sh_ok(
        w.path(),
        "dup-scan --total --log-file l1 --log-json src > s1 && \
         dup-delta --progress --log-file l2 < s1 > s2 2>err && \
         dup-pack --no-encryption --progress --log-file l3 < s2 > s3 2>>err && \
         dup-ls --json < s1 > j1 && dup-ls --json < s2 > j2 && dup-ls --json < s3 > j3",
    );
    for j in ["j1", "j2", "j3"] {
        let recs = json_lines(&fs::read_to_string(w.p(j)).unwrap());
        assert_eq!(recs[0]["kind"], "header", "{j}");
        assert_eq!(recs.last().unwrap()["kind"], "end", "{j}");
    }
    let scan = json_lines(&fs::read_to_string(w.p("j1")).unwrap());
    let total = scan.iter().find(|r| r["kind"] == "total").expect("dup-scan --total writes a total record");
    assert_eq!((total["files"].as_u64(), total["bytes"].as_u64()), (Some(4), Some(7)));
    // --progress off a terminal: JSON events on stderr.
    let err = fs::read_to_string(w.p("err")).unwrap();
    assert!(json_lines(&err).iter().any(|e| e["event"] == "progress"), "{err}");
}
