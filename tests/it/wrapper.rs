//! scripts/duplicity as a drop-in for duplicity 0.8.22: duplicity's own
//! command lines (options before the command, abbreviations, the implicit
//! backup and restore, replicate, --dry-run), its statistics block, verify's
//! summary, cleanup's message, its exit codes and its --log-fd format,
//! compared with the real duplicity where their outputs meet.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::file_url as url;
use crate::common::*;

/// The wrapper with `args` (a shell fragment), in `cwd`.
fn wrapper(cwd: &Path, args: &str) -> Output {
    sh(cwd, &format!("{} {args}", q(scripts().join("duplicity"))))
}

fn wrapper_ok(cwd: &Path, args: &str) -> Output {
    sh_ok(cwd, &format!("{} {args}", q(scripts().join("duplicity"))))
}

/// Real duplicity with `args` as given (no options added); its output, whatever its code.
fn real(cwd: &Path, args: &str) -> Output {
    sh(cwd, &format!("duplicity {args}"))
}

fn manifests(arch: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(arch)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| n.ends_with(".manifest") || n.ends_with(".manifest.gpg"));
    v.sort();
    v
}

fn small_tree(src: &Path) {
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), "one\n").unwrap();
    fs::write(src.join("d/b.bin"), random_bytes(7, 300_000)).unwrap();
    fs::write(src.join("gone.txt"), "bye\n").unwrap();
    set_all_mtimes(src, 1_704_164_645);
}

fn change(src: &Path) {
    fs::write(src.join("a.txt"), "two, longer\n").unwrap();
    let _ = fs::remove_file(src.join("gone.txt"));
    fs::write(src.join("new.txt"), "new\n").unwrap();
    set_all_mtimes(src, 1_704_164_645 + 1000);
    // Set times are whole seconds and must increase.
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// The `Key value` lines of a statistics block, in order.
fn stats_block(out: &str) -> Vec<(String, String)> {
    let start = out.find("--------------[ Backup Statistics ]--------------").expect("a statistics block");
    out[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----"))
        .map(|l| {
            let mut w = l.splitn(2, ' ');
            (w.next().unwrap().to_string(), w.next().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn options_before_the_command_abbreviations_and_implicit_commands() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    hard_tree(&src);
    let u = url(&arch);
    // Options before the command, a value after `=`, an abbreviated option.
    wrapper_ok(t.path(), &format!("--no-encryption --archive-dir=c --vols 1 full {} {}", q(&src), q(&u)));
    assert_eq!(manifests(&arch).len(), 1);
    assert!(manifests(&arch)[0].starts_with("duplicity-full."));
    mutate(&src, 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // `inc`, options between and after the arguments.
    wrapper_ok(t.path(), &format!("inc {} --no-enc {} --archive-dir c -v4", q(&src), q(&u)));
    mutate(&src, 2);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // No command: an incremental on an existing chain.
    wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    let m = manifests(&arch);
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(m.iter().filter(|n| n.starts_with("duplicity-inc.")).count(), 2, "{m:?}");
    // No command, URL first: a restore.
    let out = t.path().join("out");
    wrapper_ok(t.path(), &format!("{} {} --no-encryption --archive-dir c", q(&u), q(&out)));
    assert_same_tree(&src, &out);
    // `--` ends the options.
    let out2 = t.path().join("-out2");
    wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c rest -- {} -out2", q(&u)));
    assert_same_tree(&src, &out2);
    // A -t time and -r path, given before the command as duplicity allows.
    let first = m[0].trim_start_matches("duplicity-full.").trim_end_matches(".manifest").to_string();
    let one = t.path().join("one.txt");
    wrapper_ok(
        t.path(),
        &format!(
            "-t {first} -rdir1/file\\ with\\ space.txt --no-encryption --archive-dir c restore {} {}",
            q(&u),
            q(&one)
        ),
    );
    assert_eq!(fs::read(&one).unwrap(), b"space\n");
    // duplicity restores what the wrapper wrote, the newest state.
    if have("duplicity", "options_before_the_command_abbreviations_and_implicit_commands") {
        let out3 = t.path().join("out3");
        duplicity(t.path(), &t.path().join("dc"), &format!("{} {}", q(&u), q(&out3)));
        assert_same_tree(&src, &out3);
    }
}

#[test]
fn command_line_errors_and_exit_codes_are_duplicitys() {
    let have_real = have("duplicity", "command_line_errors_and_exit_codes_are_duplicitys");
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let u = url(&arch);
    let p = "--no-encryption --archive-dir c";
    let dp = "--no-encryption --archive-dir dc";
    wrapper_ok(t.path(), &format!("full {p} {} {}", q(&src), q(&u)));
    if have_real {
        // duplicity's own archive beside it, for the same questions.
        real(t.path(), &format!("full {dp} {} {}", q(&src), q(url(&t.path().join("darch")))));
    }
    let du = url(&t.path().join("darch"));
    fs::create_dir(t.path().join("full")).unwrap();
    fs::write(t.path().join("full/x"), "x").unwrap();
    // (wrapper args, duplicity args, duplicity's code)
    let cases: Vec<(String, String, i32)> = vec![
        // Unknown and ambiguous options, commands, argument counts.
        (format!("--bogus {p} {} {}", q(&src), q(&u)), format!("--bogus {dp} {} {}", q(&src), q(&du)), 2),
        (format!("--ex x {p} {} {}", q(&src), q(&u)), format!("--ex x {dp} {} {}", q(&src), q(&du)), 2),
        (format!("re {p} {}", q(&u)), format!("re {dp} {}", q(&du)), 2),
        (format!("collection-status {p} {} extra", q(&u)), format!("collection-status {dp} {} extra", q(&du)), 2),
        (format!("{p} {} nourl", q(&src)), format!("{dp} {} nourl", q(&src)), 2),
        (
            format!("full {p} {} {}", q(&u), q(t.path().join("o"))),
            format!("full {dp} {} {}", q(&du), q(t.path().join("o"))),
            2,
        ),
        (format!("remove-all-but-n-full 0 {p} {}", q(&u)), format!("remove-all-but-n-full 0 {dp} {}", q(&du)), 2),
        // Restore into a directory that is not empty; verify a missing one.
        (
            format!("{p} {} {}", q(&u), q(t.path().join("full"))),
            format!("{dp} {} {}", q(&du), q(t.path().join("full"))),
            11,
        ),
        (
            format!("verify {p} {} {}", q(&u), q(t.path().join("nodir"))),
            format!("verify {dp} {} {}", q(&du), q(t.path().join("nodir"))),
            12,
        ),
        // A missing source; an incremental without a chain.
        (
            format!("{p} {} {}", q(t.path().join("nosrc")), q(&u)),
            format!("{dp} {} {}", q(t.path().join("nosrc")), q(&du)),
            13,
        ),
        (
            format!("incremental {p} {} {}", q(&src), q(url(&t.path().join("empty")))),
            format!("incremental {dp} {} {}", q(&src), q(url(&t.path().join("empty2")))),
            17,
        ),
        // A path that is not in the backup; an archive with no backup.
        (
            format!("-r nope {p} {} {}", q(&u), q(t.path().join("o1"))),
            format!("-r nope {dp} {} {}", q(&du), q(t.path().join("o1d"))),
            19,
        ),
        (
            format!("{p} {} {}", q(url(&t.path().join("none"))), q(t.path().join("o2"))),
            format!("{dp} {} {}", q(url(&t.path().join("none2"))), q(t.path().join("o2d"))),
            30,
        ),
    ];
    for (ours, theirs, code) in &cases {
        let o = wrapper(t.path(), ours);
        assert_eq!(o.status.code(), Some(*code), "duplicity {ours}:\n{}", text(&o));
        if have_real {
            let d = real(t.path(), theirs);
            assert_eq!(d.status.code(), Some(*code), "real duplicity {theirs}:\n{}", text(&d));
        }
    }
    // Refused options stop before anything is done.
    let o = wrapper(t.path(), &format!("{p} --file-prefix=x {} {}", q(&src), q(url(&t.path().join("fp")))));
    assert_eq!(o.status.code(), Some(33), "{}", text(&o));
    assert!(!t.path().join("fp").exists());
    // --version and --help need no binaries and no arguments.
    let v = wrapper_ok(t.path(), "--version");
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).split_whitespace().take(2).collect::<Vec<_>>(),
        ["duplicity", "0.8.22"]
    );
    let h = wrapper_ok(t.path(), "-h");
    assert!(String::from_utf8_lossy(&h.stdout).contains("remove-all-inc-of-but-n-full"));
}

#[test]
fn options_without_meaning_for_dup_are_noted_not_silent() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let o = wrapper_ok(
        t.path(),
        &format!(
            "--s3-use-ia --gio --par2-redundancy 20 --use-agent --ssh-options='-oIdentityFile=/k -C' \
             --no-encryption --archive-dir c {} {}",
            q(&src),
            q(url(&arch))
        ),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    for opt in ["--s3-use-ia", "--gio", "--par2-redundancy", "--use-agent", "--ssh-options -C"] {
        assert_eq!(
            err.lines().filter(|l| l.starts_with("duplicity: note:") && l.contains(opt)).count(),
            1,
            "{opt}: {err}"
        );
    }
    assert_eq!(manifests(&arch).len(), 1);
    // -v0 asks for errors only.
    let o = wrapper_ok(t.path(), &format!("-v0 --gio --no-encryption --archive-dir c {} {}", q(&src), q(url(&arch))));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("note"), "{}", text(&o));
}

#[test]
fn statistics_block_counts_as_duplicitys() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch, darch) = (t.path().join("src"), t.path().join("arch"), t.path().join("darch"));
    small_tree(&src);
    let ours = wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(url(&arch))));
    let theirs = real(t.path(), &format!("--no-encryption --archive-dir dc {} {}", q(&src), q(url(&darch))));
    let counted = ["SourceFiles", "NewFiles", "DeletedFiles", "ChangedFiles", "DeltaEntries", "Errors"];
    let check = |ours: &Output, theirs: &Output| {
        let (a, b) = (stats_block(&text(ours)), stats_block(&text(theirs)));
        // Our lines are duplicity's, in duplicity's order.
        let their_keys: Vec<&String> = b.iter().map(|(k, _)| k).collect();
        let mut at = 0;
        for (k, _) in &a {
            let i = their_keys[at..].iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k} out of order: {b:?}"));
            at += i + 1;
        }
        for key in counted {
            let get = |v: &Vec<(String, String)>| v.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            assert_eq!(get(&a), get(&b), "{key}:\n{}\n{}", text(ours), text(theirs));
        }
        assert!(a.iter().any(|(k, v)| k == "TotalDestinationSizeChange" && v.ends_with(')')), "{a:?}");
    };
    check(&ours, &theirs);
    change(&src);
    let ours = wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(url(&arch))));
    let theirs = real(t.path(), &format!("--no-encryption --archive-dir dc {} {}", q(&src), q(url(&darch))));
    check(&ours, &theirs);
    // --no-print-statistics: none.
    change(&src);
    let o = wrapper_ok(
        t.path(),
        &format!("--no-print-statistics --no-encryption --archive-dir c {} {}", q(&src), q(url(&arch))),
    );
    assert!(!text(&o).contains("Backup Statistics"));
}

#[test]
fn dry_run_changes_nothing() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let u = url(&arch);
    let o = wrapper_ok(t.path(), &format!("--dry-run --no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    assert!(manifests(&arch).is_empty());
    assert_eq!(stats_block(&text(&o)).iter().find(|(k, _)| k == "NewFiles").map(|(_, v)| v.as_str()), Some("5"));
    wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    change(&src);
    let before = fs::read_dir(&arch).unwrap().count();
    let dry = wrapper_ok(t.path(), &format!("--dry-run --no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    assert_eq!(fs::read_dir(&arch).unwrap().count(), before);
    // The same counts as the real run that follows.
    let real_run = wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    assert!(fs::read_dir(&arch).unwrap().count() > before);
    let counts = |o: &Output| -> Vec<(String, String)> {
        stats_block(&text(o)).into_iter().filter(|(k, _)| k.ends_with("Files") || k == "DeltaEntries").collect()
    };
    assert_eq!(counts(&dry).len(), 5, "{}", text(&dry));
    assert_eq!(counts(&dry), counts(&real_run));
    // A dry restore writes nothing.
    let out = t.path().join("out");
    wrapper_ok(t.path(), &format!("--dry-run --no-encryption --archive-dir c {} {}", q(&u), q(&out)));
    assert!(!out.exists());
    // remove-* --force --dry-run deletes nothing.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    wrapper_ok(t.path(), &format!("full --no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    let before = fs::read_dir(&arch).unwrap().count();
    let o = wrapper_ok(
        t.path(),
        &format!("remove-all-but-n-full 1 --force --dry-run --no-encryption --archive-dir c {}", q(&u)),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("Deleting"), "{}", text(&o));
    assert_eq!(fs::read_dir(&arch).unwrap().count(), before);
}

#[test]
fn verify_and_cleanup_say_what_duplicity_says() {
    let have_real = have("duplicity", "verify_and_cleanup_say_what_duplicity_says");
    let t = World::new();
    let (src, arch, darch) = (t.path().join("src"), t.path().join("arch"), t.path().join("darch"));
    small_tree(&src);
    let (u, du) = (url(&arch), url(&darch));
    wrapper_ok(t.path(), &format!("--no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    if have_real {
        real(t.path(), &format!("--no-encryption --archive-dir dc {} {}", q(&src), q(&du)));
    }
    let summary = |o: &Output| {
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("Verify complete:")).map(str::to_string)
    };
    let o = wrapper_ok(t.path(), &format!("verify --no-encryption --archive-dir c {} {}", q(&u), q(&src)));
    let ours = summary(&o).unwrap_or_else(|| panic!("no summary: {}", text(&o)));
    if have_real {
        let d = real(t.path(), &format!("verify --no-encryption --archive-dir dc {} {}", q(&du), q(&src)));
        assert_eq!(Some(ours.clone()), summary(&d));
    }
    assert_eq!(ours, "Verify complete: 5 files compared, 0 differences found.");
    // A changed file: without --compare-data duplicity 0.8 counts no
    // difference (it checks that the backup reads back whole); with it, a
    // difference and exit 1 (the URL second works too).
    fs::write(src.join("a.txt"), "changed\n").unwrap();
    let o = wrapper_ok(t.path(), &format!("verify --no-encryption --archive-dir c {} {}", q(&u), q(&src)));
    assert_eq!(summary(&o).as_deref(), Some("Verify complete: 5 files compared, 0 differences found."), "{}", text(&o));
    if have_real {
        let d = real(t.path(), &format!("verify --no-encryption --archive-dir dc {} {}", q(&du), q(&src)));
        assert_eq!(d.status.code(), Some(0), "{}", text(&d));
        assert_eq!(summary(&d), summary(&o));
    }
    let o = wrapper(t.path(), &format!("verify --compare-data --no-encryption --archive-dir c {} {}", q(&src), q(&u)));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(summary(&o).as_deref(), Some("Verify complete: 5 files compared, 1 difference found."), "{}", text(&o));
    // cleanup with nothing to clean.
    let o = wrapper_ok(t.path(), &format!("cleanup --force --no-encryption --archive-dir c {}", q(&u)));
    let line = "No extraneous files found, nothing deleted in cleanup.";
    assert!(String::from_utf8_lossy(&o.stdout).lines().any(|l| l == line), "{}", text(&o));
    if have_real {
        let d = real(t.path(), &format!("cleanup --force --no-encryption --archive-dir dc {}", q(&du)));
        assert!(String::from_utf8_lossy(&d.stdout).lines().any(|l| l == line), "{}", text(&d));
    }
}

#[test]
fn log_fd_and_log_file_in_duplicitys_machine_format() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let o = wrapper_ok(
        t.path(),
        &format!("--log-fd 3 --log-file lf --no-encryption --archive-dir c {} {} 3>fd3", q(&src), q(url(&arch))),
    );
    let fd3 = fs::read_to_string(t.path().join("fd3")).unwrap();
    assert_eq!(fd3, fs::read_to_string(t.path().join("lf")).unwrap());
    // Each record: "LEVEL CODE", ". "-prefixed lines, an empty line.
    let records: Vec<&str> = fd3.split("\n\n").filter(|r| !r.is_empty()).collect();
    assert!(!records.is_empty(), "{fd3:?}");
    for r in &records {
        let mut lines = r.lines();
        let head = lines.next().unwrap();
        assert!(["ERROR ", "WARNING ", "NOTICE ", "INFO "].iter().any(|p| head.starts_with(p)), "{head}");
        assert!(lines.all(|l| l.starts_with(". ")), "{r}");
    }
    let stats = records.iter().find(|r| r.contains("Backup Statistics")).expect("the statistics");
    assert!(stats.starts_with("NOTICE 1\n. --------------[ Backup Statistics ]"), "{stats}");
    // Real duplicity writes its statistics the same way.
    if have("duplicity", "log_fd_and_log_file_in_duplicitys_machine_format") {
        real(
            t.path(),
            &format!(
                "--log-fd 3 --no-encryption --archive-dir dc {} {} 3>dfd3",
                q(&src),
                q(url(&t.path().join("darch")))
            ),
        );
        let d = fs::read_to_string(t.path().join("dfd3")).unwrap();
        assert!(d.contains("\n\nNOTICE 1\n. --------------[ Backup Statistics ]"), "{d}");
    }
    // A failure: its code on the log.
    let o2 = wrapper(
        t.path(),
        &format!(
            "--log-fd 3 --no-encryption --archive-dir c incremental {} {} 3>fd4",
            q(&src),
            q(url(&t.path().join("x")))
        ),
    );
    assert_eq!(o2.status.code(), Some(17), "{}", text(&o2));
    assert!(fs::read_to_string(t.path().join("fd4")).unwrap().contains("ERROR 17"));
    let _ = o;
}

/// --log-fd is written as the backup goes, not when its stages have ended:
/// the first volume's upload record (INFO 13, at -v5) arrives while most
/// volumes are still to be stored; every record is whole.
#[test]
fn log_fd_is_written_while_the_backup_runs() {
    let t = World::new();
    let src = t.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), random_bytes(11, 24 << 20)).unwrap();
    let script = format!(
        "mkfifo lf; {{ {} -v5 --log-fd 3 --volsize 1 --no-encryption --archive-dir c {} {} 3>lf >/dev/null 2>err; \
         echo $? > rc; }} &
         exec 4<lf
         while IFS= read -r l <&4; do printf '%s\\n' \"$l\" >> seen; case $l in 'INFO 13 '*) break ;; esac; done
         ls arch | grep -c '\\.vol' > stored_then || true
         cat <&4 >> seen; wait",
        q(scripts().join("duplicity")),
        q(&src),
        q(t.url("arch"))
    );
    sh_ok(t.path(), &script);
    assert_eq!(fs::read_to_string(t.p("rc")).unwrap().trim(), "0", "{}", fs::read_to_string(t.p("err")).unwrap());
    let seen = fs::read_to_string(t.p("seen")).unwrap();
    let total = names(&t.p("arch")).iter().filter(|n| n.contains(".vol")).count();
    let then: usize = fs::read_to_string(t.p("stored_then")).unwrap().trim().parse().unwrap();
    assert!(total >= 20, "{total} volumes");
    assert!(then < total / 2, "{then} of {total} volumes were stored when the first upload was logged");
    assert!(seen.matches("INFO 13 ").count() >= total, "an upload record per volume:\n{seen}");
    for r in seen.split("\n\n").filter(|r| !r.trim().is_empty()) {
        let mut lines = r.lines();
        let head = lines.next().unwrap();
        assert!(["ERROR ", "WARNING ", "NOTICE ", "INFO "].iter().any(|p| head.starts_with(p)), "{head:?} in\n{seen}");
        assert!(lines.all(|l| l.starts_with(". ")), "{r}");
    }
    assert!(seen.contains("Backup Statistics"), "{seen}");
}

#[test]
fn replicate_copies_every_set_with_its_time() {
    let t = World::new();
    let (src, a1, a2) = (t.path().join("src"), t.path().join("a1"), t.path().join("a2"));
    small_tree(&src);
    let p = "--no-encryption --archive-dir c";
    let mut states = Vec::new();
    for round in 0..3 {
        if round > 0 {
            change_round(&src, round);
        }
        wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(url(&a1))));
        let copy = t.path().join(format!("v{round}"));
        sh_ok(t.path(), &format!("cp -a {} {}", q(&src), q(&copy)));
        states.push(copy);
    }
    // `rep`, into an encrypted archive.
    let o = sh_ok(
        t.path(),
        &format!(
            "PASSPHRASE=pw {} rep --archive-dir c {} {}",
            q(scripts().join("duplicity")),
            q(url(&a1)),
            q(url(&a2))
        ),
    );
    let (m1, m2) = (manifests(&a1), manifests(&a2));
    let m2_plain: Vec<String> = m2.iter().map(|n| n.replace(".gpg", "")).collect();
    assert_eq!(m1, m2_plain, "{}", text(&o));
    assert!(m2.iter().all(|n| n.ends_with(".gpg")), "{m2:?}");
    // Every time of the copy restores (duplicity reads it too).
    for (i, m) in m1.iter().enumerate() {
        let time = m.trim_end_matches(".manifest").rsplit('.').next().unwrap();
        let out = t.path().join(format!("out{i}"));
        sh_ok(
            t.path(),
            &format!(
                "PASSPHRASE=pw {} -t {time} --archive-dir c {} {}",
                q(scripts().join("duplicity")),
                q(url(&a2)),
                q(&out)
            ),
        );
        assert_same_tree(&states[i], &out);
        if have("duplicity", "replicate_copies_every_set_with_its_time") {
            let out = t.path().join(format!("dout{i}"));
            sh_ok(t.path(), &format!("PASSPHRASE=pw duplicity --archive-dir dc -t {time} {} {}", q(url(&a2)), q(&out)));
            assert_same_tree(&states[i], &out);
        }
    }
    // Again: nothing new to copy.
    let before = fs::read_dir(&a2).unwrap().count();
    sh_ok(
        t.path(),
        &format!(
            "PASSPHRASE=pw {} replicate --archive-dir c {} {}",
            q(scripts().join("duplicity")),
            q(url(&a1)),
            q(url(&a2))
        ),
    );
    assert_eq!(fs::read_dir(&a2).unwrap().count(), before);
}

fn change_round(src: &Path, round: u64) {
    fs::write(src.join("a.txt"), format!("round {round}\n")).unwrap();
    fs::write(src.join(format!("r{round}.txt")), "r\n").unwrap();
    set_all_mtimes(src, 1_704_164_645 + 1000 * round as i64);
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[test]
fn current_time_names_the_set() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    wrapper_ok(
        t.path(),
        &format!("--current-time 1700000000 --no-encryption --archive-dir c full {} {}", q(&src), q(url(&arch))),
    );
    assert_eq!(manifests(&arch), ["duplicity-full.20231114T221320Z.manifest"]);
}

#[test]
fn collection_status_show_changes_and_file_changed() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let p = "--no-encryption --archive-dir c";
    let u = url(&arch);
    wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(&u)));
    change(&src);
    wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(&u)));
    let o = wrapper_ok(t.path(), &format!("coll --show-changes-in-set 0 {p} {}", q(&u)));
    let ours = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows = |out: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| !l.starts_with("File:"))
            .skip(1)
            .take_while(|l| !l.starts_with("----"))
            .map(str::to_string)
            .collect()
    };
    // d/b.bin has a new mtime (change() sets them all): a delta, "changed".
    let want = [("a.txt", "changed"), ("d/b.bin", "changed"), ("gone.txt", "deleted"), ("new.txt", "new")];
    assert_eq!(rows(&ours), want.map(|(p, w)| format!("{p:<8}  {w:>20}")), "{ours}");
    let o = wrapper_ok(t.path(), &format!("collection-status --file-changed a.txt {p} {}", q(&u)));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Total number of backup: 2"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("Full") && l.ends_with("New")), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("Incremental") && l.ends_with("Changed")), "{out}");
    // duplicity's own listing of the same changes, on the archive dup wrote.
    if have("duplicity", "collection_status_show_changes_and_file_changed") {
        // (duplicity reads the manifests of its cache, which list-current-files fills.)
        real(t.path(), &format!("list-current-files --no-encryption --archive-dir dc {}", q(&u)));
        let d = real(
            t.path(),
            &format!("collection-status --show-changes-in-set 0 --no-encryption --archive-dir dc {}", q(&u)),
        );
        assert_eq!(rows(&String::from_utf8_lossy(&d.stdout)), rows(&ours), "{}", text(&d));
    }
}

#[test]
fn collection_status_and_listing_records_as_duplicitys() {
    let Some(t) = World::needing(&["duplicity"]) else { return };
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    fs::write(src.join("it's"), "q\n").unwrap();
    fs::write(src.join("back\\slash"), "b\n").unwrap();
    let u = url(&arch);
    let p = "--no-encryption --archive-dir c";
    wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(&u)));
    change(&src);
    wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(&u)));
    // The same cache for both: duplicity's "Archive dir" line names it.
    let status = |o: &Output| -> Vec<String> {
        let s = String::from_utf8_lossy(&o.stdout);
        s.lines().skip_while(|l| !l.starts_with("Last full backup date")).map(str::to_string).collect()
    };
    let ours = wrapper_ok(t.path(), &format!("collection-status --log-fd 3 {p} {} 3>ofd", q(&u)));
    let theirs = real(t.path(), &format!("collection-status --log-fd 3 {p} {} 3>dfd", q(&u)));
    assert_eq!(status(&ours), status(&theirs), "{}", text(&theirs));
    let record = |f: &str| -> String {
        let s = fs::read_to_string(t.path().join(f)).unwrap();
        s.split("\n\n").find(|r| r.starts_with("INFO 3")).expect("the INFO 3 record").to_string()
    };
    assert_eq!(record("ofd"), record("dfd"));
    // list-current-files: its INFO 10 records.
    wrapper_ok(t.path(), &format!("list-current-files --log-fd 3 {p} {} 3>olist", q(&u)));
    real(t.path(), &format!("list-current-files --log-fd 3 {p} {} 3>dlist", q(&u)));
    let records = |f: &str| -> Vec<String> {
        let s = fs::read_to_string(t.path().join(f)).unwrap();
        s.split("\n\n").filter(|r| r.starts_with("INFO 10")).map(str::to_string).collect()
    };
    let (a, b) = (records("olist"), records("dlist"));
    assert_eq!(a.len(), 7, "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn restore_ownership_numeric_and_not_restored() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("restore_ownership_numeric_and_not_restored: skipped, owners are restored only as root");
        return;
    }
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    std::os::unix::fs::lchown(src.join("a.txt"), Some(4321), Some(4321)).unwrap();
    let p = "--no-encryption --archive-dir c";
    wrapper_ok(t.path(), &format!("{p} {} {}", q(&src), q(url(&arch))));
    let uid = |d: &str| fs::symlink_metadata(t.path().join(d).join("a.txt")).unwrap().uid();
    wrapper_ok(t.path(), &format!("{p} --numeric-owner {} o1", q(url(&arch))));
    assert_eq!(uid("o1"), 4321);
    wrapper_ok(t.path(), &format!("{p} --do-not-restore-ownership {} o2", q(url(&arch))));
    assert_eq!(uid("o2"), 0);
}

/// duplicity's own test_remove_all_inc_of_but_n (testing/functional/
/// test_cleanup.py): a full, an incremental, a full; keeping the
/// increments of the newest full only leaves both fulls, and nothing of the
/// incremental: its volumes, manifest and new signatures all go.
#[test]
fn remove_all_inc_of_but_n_full_removes_the_increments_signatures() {
    let t = World::new();
    let (src, arch) = (t.path().join("src"), t.path().join("arch"));
    small_tree(&src);
    let u = url(&arch);
    let p = "--no-encryption --archive-dir c";
    let names = || -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(&arch).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    wrapper_ok(t.path(), &format!("full {p} {} {}", q(&src), q(&u)));
    let full1 = names();
    change(&src);
    wrapper_ok(t.path(), &format!("inc {p} {} {}", q(&src), q(&u)));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = names();
    wrapper_ok(t.path(), &format!("full {p} {} {}", q(&src), q(&u)));
    let full2: Vec<String> = names().into_iter().filter(|n| !before.contains(n)).collect();
    wrapper_ok(t.path(), &format!("remove-all-inc-of-but-n-full 1 --force {p} {}", q(&u)));
    let mut want: Vec<String> = full1.into_iter().chain(full2).collect();
    want.sort();
    assert_eq!(names(), want);
}

/// In a build tree, the wrapper takes the newer of target/release and
/// target/debug: a stale release build shadowed a fresh debug one (the
/// api_cancel test ran old binaries that lacked --log-file).
#[test]
fn the_newer_build_tree_is_used() {
    let t = World::new();
    let root = t.path().join("tree");
    fs::create_dir_all(root.join("scripts")).unwrap();
    fs::copy(scripts().join("duplicity"), root.join("scripts/duplicity")).unwrap();
    let names = ["dup-scan", "dup-delta", "dup-pack", "dup-put", "dup-sync", "dup-sig", "dup-ls", "dup-get"];
    for dir in ["release", "debug"] {
        let d = root.join("target").join(dir);
        fs::create_dir_all(&d).unwrap();
        for n in names {
            std::os::unix::fs::symlink(bin_dir().join(n), d.join(n)).unwrap();
        }
    }
    // The release tree is old and broken: its dup-ls fails.
    let stale = root.join("target/release/dup-ls");
    fs::remove_file(&stale).unwrap();
    fs::write(&stale, "#!/bin/sh\necho stale release build >&2\nexit 99\n").unwrap();
    fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Its dup-scan (which the wrapper compares) a copy, built long ago.
    let scan = root.join("target/release/dup-scan");
    fs::remove_file(&scan).unwrap();
    fs::copy(bin_dir().join("dup-scan"), &scan).unwrap();
    assert!(filetime_old(&scan), "set the release tree's time back");
    let src = t.path().join("src");
    small_tree(&src);
    let arch = t.path().join("arch");
    let run = |args: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!("{} {args}", q(root.join("scripts/duplicity"))))
            .current_dir(t.path())
            .env("PATH", "/usr/bin:/bin")
            .env_remove("DUP_BIN")
            .env("HOME", t.path())
            .output()
            .unwrap()
    };
    let out = run(&format!("--no-encryption full {} {}", q(&src), q(url(&arch))));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&format!("--no-encryption list-current-files {}", q(url(&arch))));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("stale"), "the stale release build ran: {err}");
}

/// Sets `p`'s modification time to 2001.
fn filetime_old(p: &Path) -> bool {
    Command::new("touch").args(["-d", "2001-01-01"]).arg(p).status().is_ok_and(|s| s.success())
}
