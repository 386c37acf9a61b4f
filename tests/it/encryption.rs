//! Acceptance of OpenPGP encryption (issue 5) through the binaries and the
//! classic wrapper, against real GnuPG 2.2 and duplicity 0.8: encrypted
//! chains both ways (passphrase; public key with a signing key), what gpg
//! sees in dup's files, the three decryption failures, an incremental with
//! another passphrase, and a backup host holding only the public key.
//! Each test has its own GNUPGHOME (keys are generated once per run and
//! copied); without gpg or duplicity the tests print a note and pass
//! (under DUP_REQUIRE_TOOLS, as scripts/test sets it, they fail).
//! The module-level checks against gpg are in tests/crypto.rs.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::*;

/// The symmetric passphrase of the tests.
const PASS: &str = "correct horse battery staple";
/// The signing key's passphrase (the encryption key has none).
const SIGN_PASS: &str = "signing key pass";

/// Keys made once per test run by `gpg --quick-gen-key` (RSA, gpg's
/// defaults): the files of the GnuPG home they were made in, copied into
/// each test's own home (trust database included, so gpg and duplicity
/// encrypt to them without asking).
struct KeyTemplate {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Fingerprint of the encryption key (no passphrase).
    enc: String,
    /// Fingerprint of the signing key (SIGN_PASS).
    sign: String,
}

fn template() -> &'static KeyTemplate {
    static T: OnceLock<KeyTemplate> = OnceLock::new();
    T.get_or_init(|| {
        let home = empty_home();
        let enc = home.gen_key("Test <t@example.org>", "default default never", "");
        let sign = home.gen_key("Signer <s@example.org>", "default default never", SIGN_PASS);
        home.kill_agent();
        let mut files = Vec::new();
        collect_files(home.path(), home.path(), &mut files);
        KeyTemplate { files, enc, sign }
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            collect_files(root, &e.path(), out);
        } else if t.is_file() {
            out.push((e.path().strip_prefix(root).unwrap().to_path_buf(), fs::read(e.path()).unwrap()));
        }
    }
}

/// A GnuPG home without keys.
fn empty_home() -> GpgHome {
    GpgHome::new("dupenc")
}

/// A home with both test keys, secret parts included.
fn keys_home() -> GpgHome {
    let home = empty_home();
    for (rel, data) in &template().files {
        let p = home.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    home
}

/// A home with only the public part of the encryption key.
fn public_home() -> GpgHome {
    let keys = keys_home();
    let public = keys.ok(&["--export", &template().enc]);
    let home = empty_home();
    let f = home.file("pub.gpg");
    fs::write(&f, public).unwrap();
    home.ok(&["--import", f.to_str().unwrap()]);
    home
}

/// What a test needs besides gpg.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Gpg,
    Duplicity,
}

/// The prologue of every test: gpg (and duplicity) present, else a skip
/// (a failure under DUP_REQUIRE_TOOLS); then the test's world with `home`.
fn world(needs: Needs, home: fn() -> GpgHome) -> Option<EncWorld> {
    let tools: &[&str] = if needs == Needs::Duplicity { &["gpg", "duplicity"] } else { &["gpg"] };
    have_all(&test_name(), tools).then(|| EncWorld::new(home()))
}

/// One test's world: a work directory, a GnuPG home and a TMPDIR that
/// every command gets.
struct EncWorld {
    dir: World,
    home: GpgHome,
}

impl EncWorld {
    fn new(home: GpgHome) -> EncWorld {
        let dir = World::new();
        fs::create_dir(dir.p("tmp")).unwrap();
        EncWorld { dir, home }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.p(name)
    }

    fn url(&self, name: &str) -> String {
        self.dir.url(name)
    }

    /// Runs `script` (see [`sh`]) with GNUPGHOME and TMPDIR set, PASSPHRASE
    /// and SIGN_PASSPHRASE unset, then `vars` (`NAME=value ...`) exported.
    fn run(&self, vars: &[(&str, &str)], script: &str) -> Output {
        let mut prefix = format!(
            "unset PASSPHRASE SIGN_PASSPHRASE; export GNUPGHOME={} TMPDIR={};",
            q(self.home.path()),
            q(self.p("tmp"))
        );
        for (k, v) in vars {
            prefix.push_str(&format!(" export {k}={};", q(v)));
        }
        sh(self.dir.path(), &format!("{prefix} {script}"))
    }

    fn ok(&self, vars: &[(&str, &str)], script: &str) -> Output {
        let out = self.run(vars, script);
        assert!(
            out.status.success(),
            "`{script}` failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The dup pipeline, as the README gives it: a full, or an incremental
    /// (basis from dup-sig, which checks the passphrase first).
    fn dup_backup(&self, vars: &[(&str, &str)], src: &str, arch: &str, cache: &str, inc: bool, pack: &str) {
        let c = format!("--archive-dir {}", q(self.p(cache)));
        let u = q(self.url(arch));
        let basis =
            if inc { format!("--basis <(dup-sig --check-passphrase {c} --archive {u})") } else { String::new() };
        self.ok(vars, &format!("dup-scan {} | dup-delta {basis} | dup-pack {pack} | dup-put {c} {u}", q(self.p(src))));
    }

    /// The classic wrapper (scripts/duplicity) on the dup binaries.
    fn wrapper(&self, vars: &[(&str, &str)], args: &str) -> Output {
        self.run(vars, &format!("{} {args}", q(scripts().join("duplicity"))))
    }

    /// Like [`EncWorld::wrapper`], failing the test unless it succeeds.
    fn wrapper_ok(&self, vars: &[(&str, &str)], args: &str) -> Output {
        let o = self.wrapper(vars, args);
        assert!(o.status.success(), "{}", text(&o));
        o
    }

    /// Real duplicity; fails the test on error.
    fn duplicity(&self, vars: &[(&str, &str)], args: &str) -> Output {
        self.ok(vars, &format!("duplicity {args}"))
    }

    /// `cp -a` of the source tree as it is now.
    fn keep(&self, src: &str, name: &str) -> PathBuf {
        self.ok(&[], &format!("cp -a {} {}", q(self.p(src)), q(self.p(name))));
        self.p(name)
    }

    /// A chain of `rounds` backups of `src`: before each but the first the
    /// source is edited ([`mutate`]); `backup(round, "full" or
    /// "incremental")` makes it. The copies of the source at each round.
    fn chain(&self, rounds: u64, mut backup: impl FnMut(u64, &str)) -> Vec<PathBuf> {
        let mut states = Vec::new();
        for round in 0..rounds {
            if round > 0 {
                mutate(&self.p("src"), round);
            }
            backup(round, if round == 0 { "full" } else { "incremental" });
            states.push(self.keep("src", &format!("v{round}")));
        }
        states
    }

    /// For each set time `times[i]`, `restore(time, out)` into a fresh
    /// `out{i}`, which must then equal `states[i]`.
    fn restore_each(&self, times: &[String], states: &[PathBuf], mut restore: impl FnMut(&str, &Path)) {
        for (i, time) in times.iter().enumerate() {
            let out = self.p(&format!("out{i}"));
            restore(time, &out);
            assert_same_tree(&states[i], &out);
        }
    }
}

/// The backend's files with their sizes: what an upload would change.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    names(dir).into_iter().map(|n| (n.clone(), fs::metadata(dir.join(&n)).unwrap().len())).collect()
}

/// The set times of an archive, oldest first: each manifest's (end) time.
fn set_times(arch: &Path) -> Vec<String> {
    let mut v: Vec<String> = names(arch)
        .iter()
        .filter(|n| n.contains(".manifest"))
        .map(|n| n.split(".manifest").next().unwrap().rsplit('.').next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Every regular file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.exists() {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files);
        out = files.into_iter().map(|(p, _)| dir.join(p)).collect();
    }
    out
}

/// The shared edits of the source between two backups (crate::common::mutate);
/// the second incremental takes its rounds 2 and 3, so that it also has
/// the chmod and the removed hard link. Then a new second: set times are
/// whole seconds and must increase.
fn mutate(src: &Path, round: u64) {
    let rounds = if round == 2 { 2..=3 } else { round..=round };
    for r in rounds {
        crate::common::mutate(src, r);
    }
    std::thread::sleep(Duration::from_millis(1100));
}

/// Fails unless every archive file is an OpenPGP message (not gzip, not
/// tar) named `.gpg`.
fn assert_all_encrypted(arch: &Path) {
    for n in names(arch) {
        assert!(n.ends_with(".gpg"), "{n}: not an encrypted file name");
        let first = fs::read(arch.join(&n)).unwrap()[0];
        // A packet header: new format (0xc0 | tag) or old (0x80 | tag << 2).
        assert!(first & 0x80 != 0, "{n}: starts with {first:#x}, not an OpenPGP packet");
    }
}

/// Fails unless a restore wrote nothing: `dest` is absent or empty.
fn assert_nothing_restored(dest: &Path) {
    if dest.exists() {
        let left = names(dest);
        assert!(left.is_empty(), "the failed restore wrote into {}: {left:?}", dest.display());
    }
}

/// Fails if a run left temporary files: TMPDIR must be empty, and the
/// cache must hold nothing but the cache files and their indexes, its lock
/// and journal.
fn assert_no_temp_files(w: &EncWorld, cache: &str) {
    let tmp = names(&w.p("tmp"));
    assert!(tmp.is_empty(), "left in TMPDIR: {tmp:?}");
    for f in files_below(&w.p(cache)) {
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        let ok = n == "lockfile"
            || n == "dup-put.journal"
            || n.ends_with(".manifest")
            || n.ends_with(".sigtar.gz")
            || n.ends_with(".sigtar")
            || (n.starts_with("dup-index.") && n.ends_with(".idx"))
            || (n.starts_with("dup-seek.") && n.ends_with(".difftar.gpg.json"));
        assert!(ok, "left in the cache: {}", f.display());
    }
}

// ---------------------------------------------------------------- passphrase chains

/// dup writes an encrypted chain (full + 2 incrementals, several volumes
/// each) with PASSPHRASE; duplicity restores every time of it exactly.
#[test]
fn symmetric_dup_chain_restored_by_duplicity() {
    let Some(w) = world(Needs::Duplicity, empty_home) else { return };
    let pw = [("PASSPHRASE", PASS)];
    hard_tree(&w.p("src"));
    let states = w.chain(3, |round, _| w.dup_backup(&pw, "src", "arch", "c", round > 0, "--encrypt --volsize 1"));
    let arch = w.p("arch");
    assert_all_encrypted(&arch);
    let all = names(&arch);
    assert!(all.iter().filter(|n| n.contains("full.") && n.contains(".difftar.gpg")).count() >= 3, "{all:?}");
    let times = set_times(&arch);
    assert_eq!(times.len(), 3, "{all:?}");
    w.restore_each(&times, &states, |time, out| {
        let o = w.duplicity(
            &pw,
            &format!("restore --archive-dir {} -t {time} {} {}", q(w.p("dc")), q(w.url("arch")), q(out)),
        );
        assert!(!text(&o).to_lowercase().contains("warning"), "{}", text(&o));
    });
}

/// duplicity writes an encrypted chain with PASSPHRASE; dup (a fresh cache:
/// dup-sync decrypts the manifests and signatures) restores every time.
#[test]
fn symmetric_duplicity_chain_restored_by_dup() {
    let Some(w) = world(Needs::Duplicity, empty_home) else { return };
    let pw = [("PASSPHRASE", PASS)];
    hard_tree(&w.p("src"));
    let states = w.chain(3, |_, cmd| {
        w.duplicity(
            &pw,
            &format!("{cmd} --volsize 1 --archive-dir {} {} {}", q(w.p("dc")), q(w.p("src")), q(w.url("arch"))),
        );
    });
    assert_all_encrypted(&w.p("arch"));
    let (c, u) = (q(w.p("c")), q(w.url("arch")));
    w.ok(&pw, &format!("dup-sync --archive-dir {c} {u}"));
    // The cache as duplicity keeps it: plaintext manifests, gzipped signatures.
    let cached = files_below(&w.p("c"));
    let manifests: Vec<_> = cached.iter().filter(|f| f.to_string_lossy().ends_with(".manifest")).collect();
    assert_eq!(manifests.len(), 3, "{cached:?}");
    for m in manifests {
        assert!(fs::read(m).unwrap().starts_with(b"Hostname "), "{}", m.display());
    }
    let sigs: Vec<_> = cached.iter().filter(|f| f.to_string_lossy().ends_with(".sigtar.gz")).collect();
    assert_eq!(sigs.len(), 3, "{cached:?}");
    for s in sigs {
        assert!(fs::read(s).unwrap().starts_with(&[0x1f, 0x8b]), "{}", s.display());
    }
    w.restore_each(&set_times(&w.p("arch")), &states, |time, out| {
        w.ok(&pw, &format!("dup-get --archive-dir {c} --time {time} {u} {}", q(out)));
    });
    // The wrapper's restore, on yet another fresh cache.
    let out = w.p("out-wrapper");
    w.wrapper_ok(&pw, &format!("restore --archive-dir {} {u} {}", q(w.p("c2")), q(&out)));
    assert_same_tree(&states[2], &out);
}

// ---------------------------------------------------------------- public key, signed

/// The wrapper backs up with `--encrypt-key` and `--sign-key` (a key with
/// a passphrase: SIGN_PASSPHRASE); duplicity restores each time with the
/// same options, so gpg checks every file's signature.
#[test]
fn public_key_signed_dup_chain_restored_by_duplicity() {
    let Some(w) = world(Needs::Duplicity, keys_home) else { return };
    let (e, s) = (&template().enc, &template().sign);
    let keys = format!("--encrypt-key {e} --sign-key {s}");
    hard_tree(&w.p("src"));
    let (src, u) = (q(w.p("src")), q(w.url("arch")));
    let sp = [("SIGN_PASSPHRASE", SIGN_PASS)];
    let states = w.chain(2, |_, cmd| {
        w.wrapper_ok(&sp, &format!("{cmd} --volsize 1 {keys} --archive-dir {} {src} {u}", q(w.p("c"))));
    });
    assert_all_encrypted(&w.p("arch"));
    // duplicity needs PASSPHRASE for the decryption key (it has none).
    let vars = [("SIGN_PASSPHRASE", SIGN_PASS), ("PASSPHRASE", "")];
    w.restore_each(&set_times(&w.p("arch")), &states, |time, out| {
        let o = w.duplicity(&vars, &format!("restore {keys} --archive-dir {} -t {time} {u} {}", q(w.p("dc")), q(out)));
        assert!(!text(&o).to_lowercase().contains("warning"), "{}", text(&o));
    });
}

/// duplicity backs up with `--encrypt-key` and `--sign-key`; dup restores
/// (the wrapper with `--sign-key`, and dup-sync + dup-get directly) and
/// checks the signatures: the wrong signer is refused.
#[test]
fn public_key_signed_duplicity_chain_restored_by_dup() {
    let Some(w) = world(Needs::Duplicity, keys_home) else { return };
    let (e, s) = (&template().enc, &template().sign);
    let keys = format!("--encrypt-key {e} --sign-key {s}");
    let vars = [("SIGN_PASSPHRASE", SIGN_PASS), ("PASSPHRASE", "")];
    hard_tree(&w.p("src"));
    let (src, u) = (q(w.p("src")), q(w.url("arch")));
    let states = w.chain(2, |_, cmd| {
        w.duplicity(&vars, &format!("{cmd} --volsize 1 {keys} --archive-dir {} {src} {u}", q(w.p("dc"))));
    });
    assert_all_encrypted(&w.p("arch"));
    // The wrapper, fresh cache, newest time.
    let out = w.p("out-wrapper");
    w.wrapper_ok(&[], &format!("restore --sign-key {s} --archive-dir {} {u} {}", q(w.p("c1")), q(&out)));
    assert_same_tree(&states[1], &out);
    // The binaries, fresh cache, every time.
    let c = q(w.p("c2"));
    w.ok(&[], &format!("dup-sync --sign-key {s} --archive-dir {c} {u}"));
    w.restore_each(&set_times(&w.p("arch")), &states, |time, out| {
        w.ok(&[], &format!("dup-get --sign-key {s} --archive-dir {c} --time {time} {u} {}", q(out)));
    });
    // Requiring another signer: refused, with the reason.
    let o = w.run(&[], &format!("dup-sync --sign-key {e} --archive-dir {} {u}", q(w.p("c3"))));
    assert_eq!(o.status.code(), Some(13), "{}", text(&o));
    assert!(text(&o).contains("no valid signature by the signing key"), "{}", text(&o));
}

/// A backup with a signing key whose passphrase is not given: refused
/// before anything is stored, with dup-pack's exit code (12, as
/// dup-pack itself exits) and a hint naming SIGN_PASSPHRASE, the variable
/// the signing key's passphrase comes from.
#[test]
fn missing_sign_passphrase_exits_12() {
    let Some(w) = world(Needs::Gpg, keys_home) else { return };
    let (e, s) = (&template().enc, &template().sign);
    fs::create_dir(w.p("src")).unwrap();
    fs::write(w.p("src/f"), b"data\n").unwrap();
    let (src, u, c) = (q(w.p("src")), q(w.url("arch")), q(w.p("c")));
    let o = w.run(&[], &format!("dup-scan {src} | dup-delta | dup-pack --encrypt-key {e} --sign-key {s} > /dev/null"));
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert!(text(&o).contains("is protected by a passphrase, and none was given"), "{}", text(&o));
    assert!(!w.p("arch").exists() || names(&w.p("arch")).is_empty(), "{:?}", names(&w.p("arch")));
    assert!(text(&o).contains("SIGN_PASSPHRASE"), "the hint names the wrong variable: {}", text(&o));
    let o = w.wrapper(&[], &format!("full --encrypt-key {e} --sign-key {s} --archive-dir {c} {src} {u}"));
    assert!(!w.p("arch").exists() || names(&w.p("arch")).is_empty(), "{:?}", names(&w.p("arch")));
    assert_eq!(
        o.status.code(),
        Some(31),
        "the wrapper's code is duplicity's for dup-pack's 12 (gpg_failed): {}",
        text(&o)
    );
}

// ---------------------------------------------------------------- what gpg sees

/// The PASSPHRASE of `vars` ("" when not there), as gpg gets it here.
fn passphrase<'a>(vars: &[(&str, &'a str)]) -> &'a str {
    vars.iter().find(|(k, _)| *k == "PASSPHRASE").map_or("", |(_, v)| v)
}

/// The packet kinds of an OpenPGP file as `gpg --list-packets` names them
/// (`symkey enc packet`, `encrypted data packet`, ...), and the full output.
fn packets(w: &EncWorld, file: &Path, vars: &[(&str, &str)]) -> (Vec<String>, String) {
    let out = w.home.list_packets(file, Some(passphrase(vars)));
    (packet_kinds(&out), out)
}

/// `gpg --decrypt` of a file, failing the test unless gpg succeeds.
fn gpg_decrypt(w: &EncWorld, file: &Path, vars: &[(&str, &str)]) -> Vec<u8> {
    let o = w.home.decrypt(file, Some(passphrase(vars)));
    assert!(o.status.success(), "gpg --decrypt {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The member names of a tar stream, by `tar tf -`.
fn tar_names(w: &EncWorld, data: &[u8]) -> Vec<String> {
    let f = w.p("tmp-tar");
    fs::write(&f, data).unwrap();
    let o = w.ok(&[], &format!("tar tf - < {}", q(&f)));
    fs::remove_file(f).unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

/// Checks every file of a dup archive with gpg: volumes decrypt to tar
/// streams of snapshot/ (multivol_snapshot/) entries, signatures to tar
/// streams of signature/ entries, manifests to duplicity manifests.
fn gpg_reads_every_file(w: &EncWorld, arch: &Path, vars: &[(&str, &str)]) {
    for n in names(arch) {
        let plain = gpg_decrypt(w, &arch.join(&n), vars);
        if n.contains(".difftar.") {
            let members = tar_names(w, &plain);
            assert!(!members.is_empty(), "{n}: an empty tar");
            for m in &members {
                assert!(m.starts_with("snapshot/") || m.starts_with("multivol_snapshot/"), "{n}: {m}");
            }
        } else if n.contains(".sigtar.") {
            // Signatures of files, snapshot/ entries for the rest.
            let members = tar_names(w, &plain);
            assert!(members.iter().any(|m| m.starts_with("signature/")), "{n}: {members:?}");
            for m in &members {
                assert!(["signature/", "snapshot/", "deleted/"].iter().any(|p| m.starts_with(p)), "{n}: {m}");
            }
        } else {
            assert!(n.contains(".manifest."), "{n}");
            assert!(plain.starts_with(b"Hostname "), "{n}: {:?}", String::from_utf8_lossy(&plain));
        }
    }
}

/// Symmetric: gpg decrypts every dup file; the packets are duplicity's own
/// (compared with a volume, a manifest and a signature file duplicity
/// wrote): SKESK v4, SEIPD with MDC, compressed data, literal data.
#[test]
fn gpg_reads_dup_files_symmetric() {
    let Some(w) = world(Needs::Duplicity, empty_home) else { return };
    let pw = [("PASSPHRASE", PASS)];
    hard_tree(&w.p("src"));
    w.dup_backup(&pw, "src", "arch", "c", false, "--encrypt --volsize 1");
    let arch = w.p("arch");
    assert!(names(&arch).iter().filter(|n| n.contains(".vol")).count() >= 3);
    gpg_reads_every_file(&w, &arch, &pw);
    w.duplicity(&pw, &format!("full --volsize 1 --archive-dir {} {} {}", q(w.p("dc")), q(w.p("src")), q(w.url("d"))));
    let theirs = names(&w.p("d"));
    let find = |list: &[String], part: &str| list.iter().find(|n| n.contains(part)).unwrap().clone();
    for n in names(&arch) {
        let (kinds, text) = packets(&w, &arch.join(&n), &pw);
        assert_eq!(
            kinds,
            ["symkey enc packet", "encrypted data packet", "compressed packet", "literal data packet"],
            "{n}:\n{text}"
        );
        assert!(text.contains(":symkey enc packet: version 4,"), "{n}:\n{text}");
        assert!(text.contains("mdc_method: 2"), "{n}: no MDC:\n{text}");
        assert!(!text.contains("aead 1") && !text.contains("aead 2"), "{n}: AEAD:\n{text}");
        let part = [".vol1.", ".manifest.", ".sigtar."].into_iter().find(|p| n.contains(p));
        if let Some(part) = part {
            let theirs = find(&theirs, part);
            let (their_kinds, their_text) = packets(&w, &w.p("d").join(&theirs), &pw);
            assert_eq!(kinds, their_kinds, "{n} vs duplicity's {theirs}:\n{text}\n{their_text}");
        }
    }
}

/// Public key, signed: gpg decrypts (and verifies) every dup file; the
/// packets are PKESK (to the encryption subkey), SEIPD with MDC, compressed
/// data holding a one-pass signature, the literal data and the signature.
#[test]
fn gpg_reads_dup_files_public_key() {
    let Some(w) = world(Needs::Gpg, keys_home) else { return };
    let (e, s) = (&template().enc, &template().sign);
    hard_tree(&w.p("src"));
    let sp = [("SIGN_PASSPHRASE", SIGN_PASS)];
    w.dup_backup(&sp, "src", "arch", "c", false, &format!("--volsize 1 --encrypt-key {e} --sign-key {s}"));
    let arch = w.p("arch");
    gpg_reads_every_file(&w, &arch, &[]);
    for n in names(&arch) {
        let (kinds, listed) = packets(&w, &arch.join(&n), &[]);
        assert_eq!(
            kinds,
            [
                "pubkey enc packet",
                "encrypted data packet",
                "compressed packet",
                "onepass_sig packet",
                "literal data packet",
                "signature packet"
            ],
            "{n}:\n{listed}"
        );
        assert!(listed.contains("mdc_method: 2"), "{n}: no MDC:\n{listed}");
        // gpg names the signer and calls the signature good.
        let o = w.run(&[], &format!("gpg --batch --status-fd 2 --decrypt {} > /dev/null", q(arch.join(&n))));
        let status = String::from_utf8_lossy(&o.stderr);
        assert!(status.contains("[GNUPG:] GOODSIG") && status.contains(&s[24..]), "{n}:\n{}", text(&o));
    }
}

// ---------------------------------------------------------------- failures

/// A passphrase-encrypted chain of one full backup (several volumes).
fn symmetric_archive(w: &EncWorld, pack: &str) {
    hard_tree(&w.p("src"));
    w.dup_backup(&[("PASSPHRASE", PASS)], "src", "arch", "c", false, &format!("--encrypt {pack}"));
}

/// A wrong passphrase, with a fresh cache: dup-sync (alone or in the
/// wrapper's restore) stops with exit 12 and says so; nothing restored,
/// no temporary files left.
#[test]
fn wrong_passphrase_exits_12() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    symmetric_archive(&w, "--volsize 1");
    let bad = [("PASSPHRASE", "not the passphrase")];
    let u = q(w.url("arch"));
    let o = w.wrapper(&bad, &format!("restore --archive-dir {} {u} {}", q(w.p("c2")), q(w.p("out"))));
    assert_eq!(o.status.code(), Some(31) /* duplicity's gpg_failed for dup's 12 */, "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("wrong passphrase for duplicity-full"), "{t}");
    assert!(!t.contains("damaged") && !t.contains("modified"), "{t}");
    assert_nothing_restored(&w.p("out"));
    assert_no_temp_files(&w, "c2");
    let o = w.run(&bad, &format!("dup-sync --archive-dir {} {u}", q(w.p("c3"))));
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert!(text(&o).contains("wrong passphrase"), "{}", text(&o));
    assert_no_temp_files(&w, "c3");
    // No passphrase at all (and no terminal to ask on).
    let o = w.run(&[], &format!("dup-sync --archive-dir {} {u}", q(w.p("c4"))));
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert!(text(&o).contains("none was given"), "{}", text(&o));
    assert_no_temp_files(&w, "c4");
}

/// A public-key archive read where the secret key is missing (only the
/// public key is in the keyring): exit 12, the key named, nothing restored.
#[test]
fn missing_secret_key_exits_12() {
    let Some(w) = world(Needs::Gpg, public_home) else { return };
    hard_tree(&w.p("src"));
    let e = &template().enc;
    w.dup_backup(&[], "src", "arch", "c", false, &format!("--volsize 1 --encrypt-key {e}"));
    let u = q(w.url("arch"));
    let o = w.wrapper(&[], &format!("restore --archive-dir {} {u} {}", q(w.p("c2")), q(w.p("out"))));
    assert_eq!(o.status.code(), Some(31) /* duplicity's gpg_failed for dup's 12 */, "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("no secret key to decrypt it"), "{t}");
    // It names the subkey the file is encrypted to.
    let colons = String::from_utf8(w.home.ok(&["--with-colons", "--list-keys", e])).unwrap();
    let sub = colons.lines().find(|l| l.starts_with("sub:")).unwrap().split(':').nth(4).unwrap().to_string();
    assert!(t.contains(&sub), "{t}");
    assert!(!t.contains("wrong passphrase") && !t.contains("damaged"), "{t}");
    assert_nothing_restored(&w.p("out"));
    assert_no_temp_files(&w, "c2");
}

/// The same two failures where the cache is already in sync (a restore on
/// the backup host, the usual case): dup-sync has nothing to decrypt, so
/// dup-get is the one to find out. It must say so and exit 12, as with a
/// fresh cache, and write nothing.
#[test]
fn decryption_errors_with_synced_cache_exit_12() {
    // Wrong passphrase.
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    symmetric_archive(&w, "--volsize 1");
    let u = q(w.url("arch"));
    let bad = [("PASSPHRASE", "not the passphrase")];
    let o = w.wrapper(&bad, &format!("restore --archive-dir {} {u} {}", q(w.p("c")), q(w.p("out"))));
    let t = text(&o);
    assert!(t.contains("wrong passphrase"), "{t}");
    assert!(!t.contains("damaged"), "a wrong passphrase is not damage: {t}");
    assert_eq!(o.status.code(), Some(31) /* duplicity's gpg_failed for dup's 12 */, "{t}");
    assert_nothing_restored(&w.p("out"));
    assert_no_temp_files(&w, "c");
    // Missing secret key: the backup host holds only the public key.
    let w = EncWorld::new(public_home());
    hard_tree(&w.p("src"));
    w.dup_backup(&[], "src", "arch", "c", false, &format!("--volsize 1 --encrypt-key {}", template().enc));
    let o = w.run(&[], &format!("dup-get --archive-dir {} {} {}", q(w.p("c")), q(w.url("arch")), q(w.p("out"))));
    let t = text(&o);
    assert!(t.contains("no secret key"), "{t}");
    assert_eq!(o.status.code(), Some(12), "{t}");
    assert_nothing_restored(&w.p("out"));
    assert_no_temp_files(&w, "c");
}

/// Flips a byte in the middle of a file.
fn flip_middle(f: &Path) {
    let mut data = fs::read(f).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(f, data).unwrap();
}

fn sha1_hex(f: &Path) -> String {
    let o = Command::new("sha1sum").arg(f).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

/// A modified volume whose manifest hash no longer matches: exit 13, the
/// volume named, nothing of it restored (here: the only volume).
#[test]
fn tampered_volume_hash_mismatch_exits_13() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    symmetric_archive(&w, "--volsize 10");
    let vols: Vec<String> = names(&w.p("arch")).into_iter().filter(|n| n.contains(".vol")).collect();
    assert_eq!(vols.len(), 1, "{vols:?}");
    flip_middle(&w.p("arch").join(&vols[0]));
    let o = w.wrapper(
        &[("PASSPHRASE", PASS)],
        &format!("restore --archive-dir {} {} {}", q(w.p("c")), q(w.url("arch")), q(w.p("out"))),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(21) /* duplicity's mismatched_hash for dup's 13 */, "{t}");
    assert!(t.contains(&vols[0]) && t.contains("SHA1 is") && t.contains("the volume is damaged"), "{t}");
    assert_nothing_restored(&w.p("out"));
    assert_no_temp_files(&w, "c");
}

/// Modified ciphertext that only OpenPGP's integrity check (MDC) can catch:
/// the volume is changed, and so is the hash in the cached plaintext
/// manifest, so the SHA1 check passes. Exit 13 with "modified or damaged";
/// and none of the volume's plaintext may reach the restore target, as it
/// is unauthenticated: the whole tree is in this one volume, the modified
/// byte in a 1 MB file near its start (more than what dup holds back until
/// the MDC is checked comes after it). The set is too small for a whole
/// restore to fetch the backend's manifest to vouch for its volumes (see
/// seek.rs's whole-restore test), so the MDC is what checks it.
#[test]
fn tampered_ciphertext_restores_nothing() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    hard_tree(&w.p("src"));
    fs::write(w.p("src/0first.bin"), random_bytes(9, 1_000_000)).unwrap();
    set_all_mtimes(&w.p("src"), 1_704_164_645);
    w.dup_backup(&[("PASSPHRASE", PASS)], "src", "arch", "c", false, "--encrypt --volsize 10");
    let vols: Vec<String> = names(&w.p("arch")).into_iter().filter(|n| n.contains(".vol")).collect();
    assert_eq!(vols.len(), 1, "{vols:?}");
    let vol = w.p("arch").join(&vols[0]);
    assert!(fs::metadata(&vol).unwrap().len() > 4 << 20);
    let old = sha1_hex(&vol);
    // Random data is stored, not deflated: the byte lands in 0first.bin.
    let mut data = fs::read(&vol).unwrap();
    data[500_000] ^= 0x40;
    fs::write(&vol, data).unwrap();
    let new = sha1_hex(&vol);
    let manifest = files_below(&w.p("c")).into_iter().find(|f| f.to_string_lossy().ends_with(".manifest")).unwrap();
    // The manifest holds non-UTF-8 names: edited as bytes.
    let m = fs::read(&manifest).unwrap();
    let at = m.windows(40).position(|x| x == old.as_bytes()).expect("the volume's hash in the cached manifest");
    let mut edited = m.clone();
    edited[at..at + 40].copy_from_slice(new.as_bytes());
    fs::write(&manifest, edited).unwrap();
    let o = w.wrapper(
        &[("PASSPHRASE", PASS)],
        &format!("restore --archive-dir {} {} {}", q(w.p("c")), q(w.url("arch")), q(w.p("out"))),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(21) /* duplicity's mismatched_hash for dup's 13 */, "{t}");
    assert!(t.contains("modified or damaged"), "{t}");
    assert!(!t.contains("wrong passphrase") && !t.contains("SHA1 is"), "{t}");
    assert_no_temp_files(&w, "c");
    let changed: Vec<_> = files_below(&w.p("out"))
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(w.p("out")).unwrap();
            fs::read(w.p("src").join(rel)).ok() != fs::read(f).ok()
        })
        .collect();
    assert!(changed.is_empty(), "tampered content restored: {changed:?}");
    assert_nothing_restored(&w.p("out"));
}

/// OpenPGP volumes are restored as they decrypt, each item kept under a
/// temporary name until every volume it was read from is verified. Here
/// the last of several volumes is modified where only its MDC finds it
/// (its hash in the cached manifest updated): what the verified volumes
/// hold is restored, a file whose last chunk is in the bad volume is not,
/// nothing restored differs from the source, and no temporary name is left.
#[test]
fn a_damaged_last_volume_keeps_what_the_verified_ones_hold() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    hard_tree(&w.p("src"));
    fs::write(w.p("src/zz-big.bin"), random_bytes(11, 3 << 20)).unwrap();
    fs::write(w.p("src/zzz.txt"), b"last\n").unwrap();
    w.dup_backup(&[("PASSPHRASE", PASS)], "src", "arch", "c", false, "--encrypt --volsize 1");
    let mut vols: Vec<String> = names(&w.p("arch")).into_iter().filter(|n| n.contains(".vol")).collect();
    vols.sort_by_key(|n| n.split(".vol").nth(1).and_then(|r| r.split('.').next()).and_then(|d| d.parse::<u64>().ok()));
    assert!(vols.len() >= 4, "{vols:?}");
    let last = w.p("arch").join(vols.last().unwrap());
    let old = sha1_hex(&last);
    let mut data = fs::read(&last).unwrap();
    let at = data.len() - 200;
    data[at] ^= 0x40;
    fs::write(&last, data).unwrap();
    let new = sha1_hex(&last);
    let manifest = files_below(&w.p("c")).into_iter().find(|f| f.to_string_lossy().ends_with(".manifest")).unwrap();
    let m = fs::read(&manifest).unwrap();
    let pos = m.windows(40).position(|x| x == old.as_bytes()).expect("the volume's hash in the cached manifest");
    let mut edited = m.clone();
    edited[pos..pos + 40].copy_from_slice(new.as_bytes());
    fs::write(&manifest, edited).unwrap();
    let o = w.run(
        &[("PASSPHRASE", PASS)],
        &format!("dup-get --archive-dir {} {} {}", q(w.p("c")), q(w.url("arch")), q(w.p("out"))),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(13), "{t}");
    assert!(t.contains(vols.last().unwrap()), "{t}");
    let restored = files_below(&w.p("out"));
    for f in &restored {
        let rel = f.strip_prefix(w.p("out")).unwrap();
        assert!(!rel.to_string_lossy().contains(".dup-get."), "a temporary name is left: {}", f.display());
        if f.is_file() && !f.is_symlink() {
            assert_eq!(fs::read(w.p("src").join(rel)).ok(), fs::read(f).ok(), "{} differs", rel.display());
        }
    }
    assert!(restored.len() > 3, "the verified volumes' files are restored: {restored:?}");
    assert!(!w.p("out/zz-big.bin").exists(), "a file ending in the damaged volume is restored");
    assert_no_temp_files(&w, "c");
}

/// A signed archive restored requiring another signer: every file fails
/// its signature check (exit 13) and nothing of it is restored.
#[test]
fn wrong_signer_restores_nothing() {
    let Some(w) = world(Needs::Gpg, keys_home) else { return };
    let (e, s) = (&template().enc, &template().sign);
    hard_tree(&w.p("src"));
    let sp = [("SIGN_PASSPHRASE", SIGN_PASS)];
    w.dup_backup(&sp, "src", "arch", "c", false, &format!("--volsize 10 --encrypt-key {e} --sign-key {s}"));
    // Right signer: fine.
    let u = q(w.url("arch"));
    let o = w.run(&[], &format!("dup-get --sign-key {s} --archive-dir {} {u} {}", q(w.p("c")), q(w.p("ok"))));
    assert!(o.status.success(), "{}", text(&o));
    assert_same_tree(&w.p("src"), &w.p("ok"));
    let o = w.run(&[], &format!("dup-get --sign-key {e} --archive-dir {} {u} {}", q(w.p("c")), q(w.p("out"))));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(13), "{t}");
    assert!(t.contains("no valid signature by the signing key"), "{t}");
    assert_no_temp_files(&w, "c");
    assert_nothing_restored(&w.p("out"));
}

// ---------------------------------------------------------------- passphrase sources

/// The passphrase from a file (`--passphrase-file`) or a descriptor
/// (`--passphrase-fd`) instead of PASSPHRASE, through the pipeline: a full
/// and an incremental written, read back by gpg and restored; the
/// passphrase never shows in any output.
#[test]
fn passphrase_file_and_fd() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    let pf = w.p("pass");
    fs::write(&pf, format!("{PASS}\n")).unwrap();
    hard_tree(&w.p("src"));
    let (src, u, c, f) = (q(w.p("src")), q(w.url("arch")), q(w.p("c")), q(&pf));
    let mut outputs = Vec::new();
    outputs.push(w.ok(
        &[],
        &format!(
            "dup-scan {src} | dup-delta | dup-pack --encrypt --passphrase-file {f} | dup-put --archive-dir {c} {u}"
        ),
    ));
    let v0 = w.keep("src", "v0");
    mutate(&w.p("src"), 1);
    outputs.push(w.ok(
        &[],
        &format!(
            "dup-scan {src} | dup-delta --basis <(dup-sig --check-passphrase --passphrase-fd 3 --archive-dir {c} \
             --archive {u} 3< {f}) | dup-pack --encrypt --passphrase-fd 4 4< {f} | dup-put --archive-dir {c} {u}"
        ),
    ));
    assert_all_encrypted(&w.p("arch"));
    for n in names(&w.p("arch")) {
        let o = w.run(
            &[],
            &format!(
                "gpg --batch --pinentry-mode loopback --passphrase-file {f} -d {} > /dev/null",
                q(w.p("arch").join(&n))
            ),
        );
        assert!(o.status.success(), "{n}: {}", text(&o));
    }
    // A fresh cache: dup-sync decrypts with the descriptor's passphrase.
    let c2 = q(w.p("c2"));
    outputs.push(w.ok(&[], &format!("dup-sync --passphrase-fd 5 --archive-dir {c2} {u} 5< {f}")));
    let times = set_times(&w.p("arch"));
    let out0 = w.p("out0");
    outputs.push(
        w.ok(&[], &format!("dup-get --passphrase-file {f} --archive-dir {c2} --time {} {u} {}", times[0], q(&out0))),
    );
    assert_same_tree(&v0, &out0);
    let out1 = w.p("out1");
    outputs.push(w.ok(&[], &format!("dup-get --passphrase-fd 0 --archive-dir {c2} {u} {} < {f}", q(&out1))));
    assert_same_tree(&w.p("src"), &out1);
    for o in &outputs {
        assert!(!text(o).contains(PASS), "the passphrase was printed: {}", text(o));
    }
    // The file's passphrase wins over PASSPHRASE.
    let o = w
        .run(&[("PASSPHRASE", "wrong")], &format!("dup-sync --passphrase-file {f} --archive-dir {} {u}", q(w.p("c3"))));
    assert!(o.status.success(), "{}", text(&o));
}

// ---------------------------------------------------------------- incremental, other passphrase

/// An incremental with a passphrase other than the chain's is refused
/// before anything is uploaded: the wrapper (incremental, and a backup
/// without a command) exits 12; the pipeline with dup-sig
/// --check-passphrase fails too; the backend and the cache are unchanged.
#[test]
fn incremental_with_other_passphrase_refused_before_upload() {
    let Some(w) = world(Needs::Gpg, empty_home) else { return };
    hard_tree(&w.p("src"));
    let (src, u, c) = (q(w.p("src")), q(w.url("arch")), q(w.p("c")));
    w.wrapper_ok(&[("PASSPHRASE", PASS)], &format!("full --volsize 1 --archive-dir {c} {src} {u}"));
    mutate(&w.p("src"), 1);
    let before = (listing(&w.p("arch")), files_below(&w.p("c")));
    let other = [("PASSPHRASE", "another passphrase")];
    for cmd in ["incremental", ""] {
        let o = w.wrapper(&other, &format!("{cmd} --volsize 1 --archive-dir {c} {src} {u}"));
        assert_eq!(o.status.code(), Some(31) /* duplicity's gpg_failed for dup's 12 */, "'{cmd}': {}", text(&o));
        assert!(text(&o).contains("wrong passphrase"), "'{cmd}': {}", text(&o));
        assert_eq!((listing(&w.p("arch")), files_below(&w.p("c"))), before, "'{cmd}' changed the archive or cache");
    }
    // The binaries: dup-sig refuses, so the pipeline stores nothing.
    let o = w.run(
        &other,
        &format!(
            "dup-scan {src} | dup-delta --basis <(dup-sig --check-passphrase --archive-dir {c} --archive {u}) \
             | dup-pack --encrypt --volsize 1 | dup-put --archive-dir {c} {u}"
        ),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dup-sig: wrong passphrase"), "{}", text(&o));
    assert_eq!((listing(&w.p("arch")), files_below(&w.p("c"))), before);
    let o = w.run(&other, &format!("dup-sig --check-passphrase --archive-dir {c} --archive {u} > /dev/null"));
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert_no_temp_files(&w, "c");
}

// ---------------------------------------------------------------- public key only on the backup host

/// A backup host with only the public key (no secret key to decrypt
/// anything): full and incremental work, since dup-pack hands dup-put
/// plaintext copies for the cache (manifests, .sigtar.gz); the host with
/// the secret key restores both times.
#[test]
fn public_key_only_backup_host() {
    let Some(w) = world(Needs::Gpg, public_home) else { return };
    let e = &template().enc;
    hard_tree(&w.p("src"));
    let (src, u, c) = (q(w.p("src")), q(w.url("arch")), q(w.p("c")));
    let states = w.chain(2, |_, cmd| {
        let o = w.wrapper(&[], &format!("{cmd} --volsize 1 --encrypt-key {e} --archive-dir {c} {src} {u}"));
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    });
    assert_all_encrypted(&w.p("arch"));
    let times = set_times(&w.p("arch"));
    assert_eq!(times.len(), 2);
    let cached = files_below(&w.p("c"));
    let count = |suffix: &str| cached.iter().filter(|f| f.to_string_lossy().ends_with(suffix)).count();
    assert_eq!((count(".manifest"), count(".sigtar.gz"), count(".gpg")), (2, 2, 0), "{cached:?}");
    for f in &cached {
        let data = fs::read(f).unwrap();
        if f.to_string_lossy().ends_with(".manifest") {
            assert!(data.starts_with(b"Hostname "), "{}", f.display());
        }
        if f.to_string_lossy().ends_with(".sigtar.gz") {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&data[..]).read_to_end(&mut plain).unwrap();
            assert!(plain.len() > 10240 && plain.starts_with(b"snapshot/"), "{}", f.display());
        }
    }
    // This host cannot read it back ...
    let o = w.run(&[], &format!("dup-sync --archive-dir {} {u}", q(w.p("c-here"))));
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    // ... the host with the secret key can.
    let secret = keys_home();
    let gh = secret.path().to_str().unwrap().to_string();
    w.restore_each(&times, &states, |time, out| {
        w.wrapper_ok(
            &[("GNUPGHOME", &gh)],
            &format!("restore -t {time} --archive-dir {} {u} {}", q(w.p("c-secret")), q(out)),
        );
    });
}

// ---------------------------------------------------------------- resume

/// An encrypted full killed (SIGKILL, the whole pipeline) after three
/// volumes are stored; `duplicity full` through the wrapper, run again,
/// resumes it: the same set time, the stored volumes not sent again (their
/// files untouched), and real duplicity restores the resumed set exactly.
#[test]
fn interrupted_encrypted_full_resumed_by_the_wrapper_restored_by_duplicity() {
    use std::os::unix::fs::MetadataExt;
    let Some(w) = world(Needs::Duplicity, empty_home) else { return };
    let pw = [("PASSPHRASE", PASS)];
    let src = w.p("src");
    hard_tree(&src);
    fs::write(src.join("big-random.bin"), random_bytes(31, 5 << 20)).unwrap();
    let (u, c) = (q(w.url("arch")), format!("--archive-dir {}", q(w.p("c"))));
    // The wrapper's pipeline, interrupted after three volumes.
    let journal = w.p("c").join(dup::io::cache::backup_name(&w.url("arch"))).join(dup::io::cache::journal::JOURNAL);
    let tmpdir = w.p("tmp");
    interrupt_after_three_volumes(
        &w.p(""),
        &[("PASSPHRASE", PASS), ("TMPDIR", tmpdir.to_str().unwrap())],
        &format!("dup-scan {} | dup-delta | dup-pack --volsize 1 --json --resume {u} {c}", q(&src)),
        &format!("dup-put {c} {u}"),
        &journal,
    );
    let before: Vec<(String, u64, i64)> = names(&w.p("arch"))
        .into_iter()
        .map(|n| {
            let m = fs::metadata(w.p("arch").join(&n)).unwrap();
            (n, m.ino(), m.mtime_nsec())
        })
        .collect();
    assert!(before.len() >= 3 && before.iter().all(|(n, ..)| n.contains(".vol")), "{before:?}");
    let time = before[0].0.split('.').nth(1).unwrap().to_string();

    w.wrapper_ok(&pw, &format!("full --volsize 1 {c} {} {u}", q(&src)));
    assert_eq!(set_times(&w.p("arch")), vec![time.clone()], "{:?}", names(&w.p("arch")));
    for (n, ino, mtime) in &before {
        let m = fs::metadata(w.p("arch").join(n)).unwrap();
        assert_eq!((m.ino(), m.mtime_nsec()), (*ino, *mtime), "{n} was written again");
    }
    assert_all_encrypted(&w.p("arch"));
    let out = w.p("out");
    w.duplicity(&pw, &format!("restore --archive-dir {} {u} {}", q(w.p("dc")), q(&out)));
    assert_same_tree(&src, &out);
}
