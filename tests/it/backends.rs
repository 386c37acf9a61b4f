//! The remote backends against real servers on 127.0.0.1 (S3: s3s-fs, SFTP:
//! OpenSSH's sshd, WebDAV: nginx), started by `scripts/test-servers` (which
//! `scripts/test` runs): for each, a full and an incremental backup through
//! the binaries, listing, dup-sync into a fresh cache, an exact restore, a
//! broken upload that leaves nothing behind, a dead server, and the typed
//! answers of the connection test. Without the servers' environment each
//! test skips with a note, or fails under DUP_REQUIRE_TOOLS (scripts/test).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::common::{
    World, assert_same_tree, bin_dir, bin_path, fresh, hard_tree, no_servers, q, random_bytes, var, with_closed_port,
};
use dup::io::storage::{CheckStatus, Storage};

/// A backend under test: its base URL and the environment dup needs for it.
struct Backend {
    name: &'static str,
    url: String,
    env: Vec<(String, String)>,
}

impl Backend {
    /// The backend's settings from scripts/test-servers, or None (with a note).
    fn get(name: &'static str) -> Option<Backend> {
        let need = |k: &str| var(k);
        let found = match name {
            "s3" => (|| {
                Some(Backend {
                    name,
                    url: format!("s3://{}", need("DUP_TEST_S3_BUCKET")?),
                    env: vec![
                        ("DUP_S3_ENDPOINT".into(), need("DUP_TEST_S3_ENDPOINT")?),
                        ("AWS_ACCESS_KEY_ID".into(), need("DUP_TEST_S3_ACCESS_KEY")?),
                        ("AWS_SECRET_ACCESS_KEY".into(), need("DUP_TEST_S3_SECRET_KEY")?),
                    ],
                })
            })(),
            "sftp" => (|| {
                let path = format!("{}:{}", need("DUP_TEST_SSH_BIN")?, var("PATH").unwrap_or_default());
                Some(Backend {
                    name,
                    url: need("DUP_TEST_SFTP_URL")?,
                    env: vec![
                        ("PATH".into(), path),
                        ("HOME".into(), need("DUP_TEST_SSH_HOME")?),
                        ("DUP_SSH_KEY".into(), need("DUP_TEST_SSH_KEY")?),
                    ],
                })
            })(),
            _ => (|| {
                Some(Backend {
                    name,
                    url: need("DUP_TEST_WEBDAV_URL")?,
                    env: vec![("FTP_PASSWORD".into(), need("DUP_TEST_WEBDAV_PASSWORD")?)],
                })
            })(),
        };
        if found.is_none() {
            no_servers(&format!("backends::{name}"));
        }
        found
    }

    /// A fresh archive URL under the backend's base.
    fn fresh(&self, what: &str) -> String {
        format!("{}/{}", self.url, fresh(what))
    }

    /// Runs a bash pipeline with the dup binaries first on PATH and this
    /// backend's environment.
    fn sh(&self, cwd: &Path, script: &str) -> Output {
        let mut path = bin_path();
        let mut cmd = Command::new("bash");
        for (k, v) in &self.env {
            if k == "PATH" {
                path = format!("{}:{v}", bin_dir().display());
            } else {
                cmd.env(k, v);
            }
        }
        cmd.arg("-c")
            .arg(format!("set -o pipefail; {script}"))
            .current_dir(cwd)
            .env("PATH", path)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("bash runs")
    }

    fn sh_ok(&self, cwd: &Path, script: &str) -> String {
        let t = Instant::now();
        let out = self.sh(cwd, script);
        assert!(
            out.status.success(),
            "{}: `{script}` failed ({:?}):\n{}",
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}: {:.2} s  {}", self.name, t.elapsed().as_secs_f64(), script.split(" | ").last().unwrap_or(""));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cases` (see [`child_cases`]) in a fresh process of this test
    /// binary that has the backend's environment (ssh reads PATH and HOME).
    fn run_cases(&self, cases: &[String]) {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", "backends::child_cases", "--nocapture", "--test-threads", "1"])
            .env("DUP_TEST_CHILD_CASES", cases.join("\n"))
            .env("DUP_NUM_RETRIES", "0")
            .env("DUP_TIMEOUT", "10");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let t = Instant::now();
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("cases done"), "{}: storage cases failed:\n{text}", self.name);
        for l in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(" s)")) {
            eprintln!("{}:   {l}", self.name);
        }
        eprintln!("{}: {:.2} s  {} storage cases", self.name, t.elapsed().as_secs_f64(), cases.len());
    }
}

/// The whole round trip on one backend.
fn round_trip(b: &Backend, checks: &[String]) {
    let t0 = Instant::now();
    let tmp = World::new();
    let dir = tmp.path();
    let src = dir.join("src");
    hard_tree(&src);
    let url = b.fresh("rt");
    let (s, u) = (q(&src), q(&url));
    let (c1, c2) = (q(dir.join("cache1")), q(dir.join("cache2")));

    // A full backup in several volumes, then an incremental.
    b.sh_ok(
        dir,
        &format!("dup-scan {s} | dup-delta | dup-pack --no-encryption --volsize 1 --time 1700000000 | dup-put --archive-dir {c1} {u}"),
    );
    fs::write(src.join("a.txt"), b"changed for the incremental\n").unwrap();
    fs::write(src.join("new.bin"), random_bytes(9, 200_000)).unwrap();
    b.sh_ok(
        dir,
        &format!(
            "dup-scan {s} | dup-delta --basis <(dup-sig --archive-dir {c1} --archive {u}) \
             | dup-pack --no-encryption --volsize 1 --time 1700000100 | dup-put --archive-dir {c1} {u}"
        ),
    );
    let table = b.sh_ok(dir, &format!("dup-ls --table --archive-dir {c1} {u}"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() == 2 && lines[0].contains("full") && lines[1].contains("inc"), "{}: {table}", b.name);
    let volumes: u32 = regex::Regex::new(r"(\d+) volumes").unwrap().captures(lines[0]).unwrap()[1].parse().unwrap();
    assert!(volumes >= 3, "a 3 MiB file makes several volumes: {table}");

    // A fresh cache from the backend alone, and a restore through it.
    b.sh_ok(dir, &format!("dup-sync --archive-dir {c2} {u}"));
    let cached: Vec<String> = fs::read_dir(dir.join("cache2"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.iter().filter(|n| n.ends_with(".manifest")).count(), 2, "{cached:?}");
    assert_eq!(cached.iter().filter(|n| n.ends_with(".sigtar.gz")).count(), 2, "{cached:?}");
    let dest = dir.join("dest");
    b.sh_ok(dir, &format!("dup-get --archive-dir {c2} {u} {}", q(&dest)));
    assert_same_tree(&src, &dest);

    // A stream that breaks after the first volume: dup-put fails and removes
    // what it stored, so the archive stays empty (no volumes, no temp files).
    let broken = b.fresh("broken");
    let out = b.sh(
        dir,
        &format!(
            "dup-scan {s} | dup-delta | dup-pack --no-encryption --volsize 1 | head -c 1500000 | dup-put --archive-dir {} {}",
            q(dir.join("cache3")),
            q(&broken)
        ),
    );
    assert!(!out.status.success(), "{}: a broken stream must fail dup-put", b.name);
    let mut cases = vec![format!("empty {broken}"), format!("check ok {url} archive")];
    cases.extend_from_slice(checks);
    b.run_cases(&cases);
    eprintln!("{}: round trip {:.2} s", b.name, t0.elapsed().as_secs_f64());
}

/// A backend that is down: dup-put fails with exit code 1, a message naming
/// the URL (without its password) and what to check.
fn dead(b: &Backend, url: &str, extra_env: &[(&str, &str)]) {
    let tmp = World::new();
    let dir = tmp.path();
    fs::write(dir.join("f"), b"x").unwrap();
    let mut b2 = Backend { name: b.name, url: b.url.clone(), env: b.env.clone() };
    b2.env.push(("DUP_NUM_RETRIES".into(), "0".into()));
    b2.env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let t = Instant::now();
    let out = b2.sh(
        dir,
        &format!(
            "dup-scan {} | dup-delta | dup-pack --no-encryption | dup-put --archive-dir {} {}",
            q(dir.join("f")),
            q(dir.join("c")),
            q(url)
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}: dead backend {:.2} s:\n{err}", b.name, t.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{}: {err}", b.name);
    let shown = dup::io::storage::redact(url);
    assert!(err.contains(&format!("dup-put: {shown}: ")) && err.contains("cannot connect"), "{}: {err}", b.name);
    assert!(err.contains("dup-put: hint: check that"), "{}: {err}", b.name);
    for (k, v) in &b2.env {
        if k == "AWS_SECRET_ACCESS_KEY" || k == "FTP_PASSWORD" {
            assert!(!err.contains(v.as_str()), "{k} shows in messages: {err}");
        }
    }
    assert!(!err.contains(":pw@"), "the URL's password shows in messages: {err}");
}

#[test]
fn s3() {
    let Some(b) = Backend::get("s3") else { return };
    let endpoint = var("DUP_TEST_S3_ENDPOINT").unwrap();
    let hostport = endpoint.trim_start_matches("http://");
    let dead_endpoint = with_closed_port(&endpoint);
    let checks = vec![
        // duplicity 0.8's form: the endpoint in the URL.
        format!("check ok s3://{hostport}/bucket1/x DUP_S3_ENDPOINT= DUP_S3_UNENCRYPTED_CONNECTION=1"),
        format!("check unreachable {}/x DUP_S3_ENDPOINT={dead_endpoint}", b.url),
        format!("check auth_refused {}/x AWS_SECRET_ACCESS_KEY=wrong", b.url),
        "check not_found s3://no-such-bucket/x".to_string(),
        format!("bigput {}", b.fresh("big")),
    ];
    round_trip(&b, &checks);
    dead(&b, &format!("{}/dead", b.url), &[("DUP_S3_ENDPOINT", &dead_endpoint)]);
}

#[test]
fn sftp() {
    let Some(b) = Backend::get("sftp") else { return };
    let port = b.url.split("127.0.0.1:").nth(1).and_then(|r| r.split('/').next()).unwrap().to_string();
    let checks = vec![
        format!("check unreachable {}", with_closed_port(&b.url)),
        format!("check auth_refused {} DUP_SSH_KEY={}", b.url, var("DUP_TEST_SSH_OTHER_KEY").unwrap()),
        // Not in the known hosts under this name.
        format!("check auth_refused sftp://root@localhost:{port}/x"),
        // A relative path starts at the login directory (root's home: list only).
        format!("home sftp://root@127.0.0.1:{port}/"),
        format!("bigput {}", b.fresh("big")),
    ];
    round_trip(&b, &checks);
    dead(&b, &with_closed_port(&format!("{}/dead", b.url)), &[]);
}

#[test]
fn webdav() {
    let Some(b) = Backend::get("webdav") else { return };
    let ro = var("DUP_TEST_WEBDAV_RO_URL").unwrap();
    let checks = vec![
        format!("check unreachable {}", with_closed_port(&b.url)),
        format!("check auth_refused {} FTP_PASSWORD=wrong", b.url),
        format!("check permission_denied {ro}"),
        // Bigger than the spool's memory part: sent from a mapped file.
        format!("bigput {}", b.fresh("big")),
    ];
    round_trip(&b, &checks);
    let with_password = b.url.replacen("://dup@", "://dup:pw@", 1);
    dead(&b, &with_closed_port(&format!("{with_password}/dead")), &[]);
}

/// HTTPS: the HTTP backends' TLS (rustls with ring, set per storage) is
/// there and verifies certificates against the system's store, which
/// SSL_CERT_FILE replaces: a server whose CA is not trusted is refused, and
/// reached once it is. The server is Python's, on 127.0.0.1, with a CA and
/// a leaf certificate made by openssl here.
#[test]
fn https_verifies_against_the_system_store() {
    let Some(w) = World::needing(&["python3", "openssl"]) else { return };
    let t = w.path();
    let sh = |cmd: &str| {
        let o = Command::new("sh").arg("-c").arg(cmd).current_dir(t).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=dup test CA'");
    sh("openssl req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj '/CN=127.0.0.1'");
    fs::write(
        t.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf",
    );
    let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_HEAD = do_PROPFIND = answer
    def log_message(self, *a):
        sys.stderr.write("request %s\n" % self.requestline); sys.stderr.flush()
s = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("cert.pem", "key.pem")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(server)
        .current_dir(t)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(t.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let mut port = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        port.push(b[0] as char);
    }
    let url = format!("webdavs://127.0.0.1:{}/x", port.trim());
    let ls = |ca: Option<&str>| {
        let mut c = Command::new(bin_dir().join("dup-ls"));
        c.arg("--archive-dir").arg(t.join("cache")).arg(&url).env("DUP_NUM_RETRIES", "0").env("RUST_BACKTRACE", "0");
        match ca {
            Some(f) => c.env("SSL_CERT_FILE", t.join(f)),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        let o = c.output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (untrusted, trusted) = (ls(None), ls(Some("ca.pem")));
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(t.join("server.log")).unwrap();
    assert!(untrusted.1.contains("certificate") && untrusted.0 != Some(0), "{untrusted:?}");
    assert!(!untrusted.1.contains("panicked"), "{untrusted:?}");
    assert!(trusted.1.contains("no backup sets found"), "{trusted:?}\n{log}");
    assert!(log.contains("request PROPFIND /x/"), "the request went through TLS: {log}");
}

/// Not a test on its own: runs the storage cases a backend test passes in
/// DUP_TEST_CHILD_CASES, in a process that has that backend's environment.
/// One case a line: `check STATUS URL [archive] [KEY=VALUE...]` (the
/// connection test's answer; KEY=VALUE override the environment, an empty
/// value removes the variable), `empty URL` (nothing stored there),
/// `bigput URL` (a 10 MiB + 12345-byte file stored, listed, read back and
/// deleted: three multipart parts on S3, the last one short),
/// `home URL` (a relative SFTP URL resolves to the login directory).
#[test]
fn child_cases() {
    let Some(cases) = var("DUP_TEST_CHILD_CASES") else { return };
    for line in cases.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let t = Instant::now();
        match words[..] {
            ["check", status, url, ref rest @ ..] => {
                let mut over: HashMap<String, Option<String>> = HashMap::new();
                let mut want_archive = false;
                for w in rest {
                    match w.split_once('=') {
                        Some((k, v)) => {
                            over.insert(k.to_string(), Some(v.to_string()).filter(|v| !v.is_empty()));
                        }
                        None => want_archive = *w == "archive",
                    }
                }
                let env = move |k: &str| match over.get(k) {
                    Some(v) => v.clone(),
                    None => var(k),
                };
                let c =
                    dup::archive::test_connection_with(url, &env).unwrap_or_else(|e| panic!("{line}: {}", e.message));
                let want: CheckStatus = serde_json::from_value(serde_json::Value::String(status.into())).unwrap();
                assert_eq!(c.status, want, "{line}: {c:?}");
                assert_eq!(c.status.as_str(), status);
                if want == CheckStatus::Ok {
                    assert_eq!(c.archive, want_archive, "{line}: {c:?}");
                    let s = Storage::open_with(url, &env).unwrap();
                    assert!(s.list().unwrap().iter().all(|(n, _)| !n.starts_with(dup::io::storage::TEMP_PREFIX)));
                } else {
                    assert!(c.hint.is_some() && !c.message.is_empty(), "{line}: {c:?}");
                    assert!(c.clone().into_result().is_err());
                }
                println!("{line}: {:?} ({:.2} s) {}", c.status, t.elapsed().as_secs_f64(), c.message);
            }
            ["empty", url] => {
                let s = Storage::open(url).unwrap();
                assert_eq!(s.list().unwrap(), vec![], "{line}");
            }
            ["bigput", url] => {
                let s = Storage::open(url).unwrap();
                let data = random_bytes(5, (10 << 20) + 12345);
                assert_eq!(s.put("big.bin", &data[..]).unwrap(), data.len() as u64);
                assert_eq!(s.list().unwrap(), vec![("big.bin".to_string(), data.len() as u64)], "{line}");
                let mut back = Vec::new();
                s.reader("big.bin").unwrap().read_to_end(&mut back).unwrap();
                assert!(back == data, "{line}: read back differs");
                // Replacing a file works (SFTP renames onto an existing name).
                assert_eq!(s.put("big.bin", &b"small"[..]).unwrap(), 5);
                assert_eq!(s.list().unwrap(), vec![("big.bin".to_string(), 5)], "{line}");
                s.delete("big.bin").unwrap();
                assert_eq!(s.list().unwrap(), vec![], "{line}");
                assert_eq!(s.reader("big.bin").err().unwrap().kind, dup::Kind::Corrupt);
                println!("{line}: ok ({:.2} s)", t.elapsed().as_secs_f64());
            }
            ["home", url] => {
                let s = Storage::open(url).unwrap_or_else(|e| panic!("{line}: {}", e.message));
                s.list().unwrap_or_else(|e| panic!("{line}: {}", e.message));
                println!("{line}: ok ({:.2} s)", t.elapsed().as_secs_f64());
            }
            _ => panic!("bad case: {line}"),
        }
    }
    println!("cases done");
}
