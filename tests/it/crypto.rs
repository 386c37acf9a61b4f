//! dup::crypto against the real GnuPG: what we encrypt gpg decrypts, what
//! gpg encrypts we decrypt, keys from the keyring and from files, signing,
//! the distinct errors, bounded memory. Each test has its own GNUPGHOME;
//! without `gpg` the tests print a note and pass (fail under
//! DUP_REQUIRE_TOOLS, as scripts/test sets it).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::common::{GpgHome, file_url, have, have_all, names, run_with_stdin, test_name};
use dup::crypto::{self, KeyEnv, KeyOptions, Keys, Purpose};
use dup::{Error, Kind};

macro_rules! need_gpg {
    () => {
        if !have("gpg", &test_name()) {
            return;
        }
    };
}

/// dup's key environment for a GnuPG home.
trait HomeEnv {
    fn env(&self) -> KeyEnv;
}

impl HomeEnv for GpgHome {
    fn env(&self) -> KeyEnv {
        KeyEnv { gnupghome: Some(self.path().to_path_buf()), ..Default::default() }
    }
}

fn opts() -> KeyOptions {
    KeyOptions { prompt: false, ..Default::default() }
}

/// Test data: text-like lines mixed with random runs.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut g = Gen::new(seed, n as u64);
    let mut v = vec![0u8; n];
    g.read_exact(&mut v).unwrap();
    v
}

/// A generated stream of `left` bytes (xorshift), half compressible.
struct Gen {
    s: u64,
    left: u64,
    pos: u64,
}

impl Gen {
    fn new(seed: u64, len: u64) -> Gen {
        Gen { s: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, left: len, pos: 0 }
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            if (at / 8192).is_multiple_of(2) {
                self.s ^= self.s << 13;
                self.s ^= self.s >> 7;
                self.s ^= self.s << 17;
                *b = self.s as u8;
            } else {
                *b = b"the quick brown fox jumps over the lazy dog 0123456789\n"[(at % 55) as usize];
            }
        }
        self.left -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

fn encrypt(keys: &Keys, plain: &[u8]) -> Vec<u8> {
    let mut w = crypto::encryptor(keys, Vec::new()).unwrap();
    // Odd-sized writes, as a tar writer makes.
    for piece in plain.chunks(7777) {
        w.write_all(piece).unwrap();
    }
    assert_eq!(w.bytes_in(), plain.len() as u64);
    w.finish().unwrap()
}

fn decrypt(keys: &Keys, name: &str, cipher: &[u8]) -> Result<Vec<u8>, Error> {
    let mut r = crypto::decryptor(keys, name, io::Cursor::new(cipher.to_vec()))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(to_error)?;
    Ok(out)
}

/// The `Error` an `io::Error` from the decryptor carries.
fn to_error(e: io::Error) -> Error {
    match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(e)) => *e,
        other => panic!("not a dup error: {other:?}"),
    }
}

fn packets(home: &GpgHome, file: &Path, passphrase: Option<&str>) -> String {
    home.list_packets(file, passphrase)
}

fn gpg_decrypt(home: &GpgHome, file: &Path, passphrase: Option<&str>) -> Output {
    home.decrypt(file, passphrase)
}

#[test]
fn symmetric_ours_to_gpg() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let plain = data(3_000_000, 1);
    // From PASSPHRASE, as duplicity takes it.
    let env = KeyEnv { passphrase: Some(b"pass phrase 1".to_vec()), ..home.env() };
    let keys = Keys::build(&KeyOptions { use_keyring: false, ..opts() }, &env, Purpose::Encrypt).unwrap();
    assert!(keys.is_symmetric());
    let cipher = encrypt(&keys, &plain);
    assert!(cipher.len() < plain.len(), "compressed: {} of {}", cipher.len(), plain.len());
    let f = home.file("sym.gpg");
    std::fs::write(&f, &cipher).unwrap();
    let out = gpg_decrypt(&home, &f, Some("pass phrase 1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == plain, "gpg decrypted other bytes");
    let p = packets(&home, &f, Some("pass phrase 1"));
    assert!(p.contains(":symkey enc packet: version 4, cipher 9"), "{p}");
    assert!(p.contains(":encrypted data packet:"), "{p}");
    assert!(p.contains("mdc_method: 2"), "{p}");
    assert!(p.contains(":compressed packet: algo=1"), "{p}");
    assert!(p.contains(":literal data packet:") && p.contains("mode b"), "{p}");
    assert!(p.contains("aead 0,") && !p.contains(":aead encrypted packet"), "{p}");
    // And back through us.
    assert!(decrypt(&keys, "sym.gpg", &cipher).unwrap() == plain);
    // The empty file too.
    let empty = encrypt(&keys, b"");
    std::fs::write(&f, &empty).unwrap();
    let out = gpg_decrypt(&home, &f, Some("pass phrase 1"));
    assert!(out.status.success() && out.stdout.is_empty());
}

/// The compressed packet is built from 1 MiB blocks compressed in
/// parallel (stored when incompressible): gpg must read every shape.
#[test]
fn compression_blocks_read_by_gpg() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let keys = Keys::with_passphrase("b");
    let mib = 1usize << 20;
    let random = |n: usize, seed: u64| {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect::<Vec<u8>>()
    };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [0, 1, mib - 7, mib, mib + 1, 4 * mib, 24 * mib] {
        cases.push((format!("text {n}"), data(n, n as u64)));
    }
    cases.push(("random 3 MiB".into(), random(3 * mib + 5, 11)));
    let mut mixed = random(2 * mib, 12);
    mixed.extend(vec![b'x'; 2 * mib]);
    mixed.extend(random(mib / 2, 13));
    cases.push(("random then text".into(), mixed));
    let f = home.file("b.gpg");
    for (what, plain) in cases {
        let mut w = crypto::encryptor(&keys, Vec::new()).unwrap();
        w.write_all(&plain).unwrap();
        let estimate = w.estimated_size();
        let cipher = w.finish().unwrap();
        let real = cipher.len() as f64;
        // The estimate lags by Sequoia's 4 MiB literal buffer, counted 1:1.
        eprintln!("{what}: {} -> {real}, estimated {estimate}", plain.len());
        assert!((estimate as f64 - real).abs() < real * 0.05 + 4.5 * mib as f64, "{what}: estimated {estimate}");
        std::fs::write(&f, &cipher).unwrap();
        let out = gpg_decrypt(&home, &f, Some("b"));
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == plain, "{what}: gpg decrypted other bytes");
        assert!(decrypt(&keys, "b.gpg", &cipher).unwrap() == plain, "{what}");
        if what.starts_with("random") {
            // Stored, not expanded.
            assert!(cipher.len() < plain.len() + plain.len() / 500 + 1024, "{what}: {}", cipher.len());
        }
    }
}

#[test]
fn symmetric_gpg_to_ours() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let plain = data(2_500_000, 2);
    let src = home.file("plain");
    std::fs::write(&src, &plain).unwrap();
    let keys = Keys::with_passphrase("gpg pass");
    let variants: &[&[&str]] = &[
        &[],              // gpg's defaults (compressed)
        &["--force-mdc"], // duplicity's argv
        &["--compress-algo", "none"],
        &["--compress-algo", "bzip2"],
        &["--compress-algo", "zlib"],
        &["--armor"],
        &["--cipher-algo", "AES128"],
        &["--cipher-algo", "CAST5"], // gpg 1.x's default
    ];
    for extra in variants {
        let out = home.file("g.gpg");
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["--pinentry-mode", "loopback", "--passphrase", "gpg pass", "--symmetric"];
        args.extend_from_slice(extra);
        args.extend(["-o", out.to_str().unwrap(), src.to_str().unwrap()]);
        home.ok(&args);
        let cipher = std::fs::read(&out).unwrap();
        let back = decrypt(&keys, "g.gpg", &cipher).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(back == plain, "{extra:?}: other bytes");
        // gpg derives the session key from the passphrase (no ESK).
        let e = decrypt(&Keys::with_passphrase("other"), "g.gpg", &cipher).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (Kind::Crypto, "wrong passphrase for g.gpg"), "{extra:?}");
    }
}

#[test]
fn public_key_rsa_keyring_and_files() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let fpr = home.gen_key("Test <t@example.org>", "default default never", "");
    let plain = data(1_500_000, 3);

    // By key ID from the keyring.
    let keyid = &fpr[24..];
    let o = KeyOptions { encrypt_keys: vec![keyid.to_string()], ..opts() };
    let keys = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap();
    assert!(!keys.is_symmetric());
    let cipher = encrypt(&keys, &plain);
    let f = home.file("pk.gpg");
    std::fs::write(&f, &cipher).unwrap();
    let out = gpg_decrypt(&home, &f, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == plain);
    let p = packets(&home, &f, None);
    assert!(p.contains(":pubkey enc packet: version 3, algo 1"), "{p}");
    assert!(p.contains("mdc_method: 2") && p.contains(":compressed packet:"), "{p}");

    // By email, and from an exported key file with no keyring at all.
    let pubfile = home.file("pub.asc");
    std::fs::write(&pubfile, home.ok(&["--armor", "--export", &fpr])).unwrap();
    for (spec, keyring) in [("t@example.org", true), (pubfile.to_str().unwrap(), false)] {
        let o = KeyOptions { encrypt_keys: vec![spec.to_string()], use_keyring: keyring, ..opts() };
        let keys = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap();
        std::fs::write(&f, encrypt(&keys, &plain)).unwrap();
        let out = gpg_decrypt(&home, &f, None);
        assert!(out.status.success() && out.stdout == plain, "{spec}");
    }
    // A key file named by --key-file and the key found in it by email.
    let o = KeyOptions {
        encrypt_keys: vec!["t@example.org".into()],
        key_files: vec![pubfile.clone()],
        use_keyring: false,
        ..opts()
    };
    let keys = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap();
    std::fs::write(&f, encrypt(&keys, &plain)).unwrap();
    assert!(gpg_decrypt(&home, &f, None).stdout == plain);

    // gpg -e -r → us, with the secret key exported from the keyring.
    let src = home.file("plain");
    std::fs::write(&src, &plain).unwrap();
    let g = home.file("g.gpg");
    home.ok(&["-e", "-r", "t@example.org", "-o", g.to_str().unwrap(), src.to_str().unwrap()]);
    let cipher = std::fs::read(&g).unwrap();
    let dec = Keys::build(&opts(), &home.env(), Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "g.gpg", &cipher).unwrap() == plain);
    // ... and with the secret key from a file, no keyring.
    let secfile = home.file("sec.gpg");
    std::fs::write(
        &secfile,
        home.ok(&["--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-keys", &fpr]),
    )
    .unwrap();
    let o = KeyOptions { key_files: vec![secfile], use_keyring: false, ..opts() };
    let dec = Keys::build(&o, &home.env(), Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "g.gpg", &cipher).unwrap() == plain);
}

#[test]
fn hidden_recipient() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    home.gen_key("Other <o@example.org>", "future-default default never", "");
    let fpr = home.gen_key("Hidden <h@example.org>", "future-default default never", "hpass");
    let plain = data(500_000, 4);
    let o = KeyOptions { hidden_encrypt_keys: vec!["h@example.org".into()], ..opts() };
    let keys = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap();
    let cipher = encrypt(&keys, &plain);
    let f = home.file("hidden.gpg");
    std::fs::write(&f, &cipher).unwrap();
    let p = packets(&home, &f, Some("hpass"));
    assert!(p.contains("keyid 0000000000000000"), "{p}");
    assert!(!p.contains(&fpr[24..]), "{p}");
    // gpg exits 2 after trying the other key first, as with its own
    // --hidden-recipient files; the decryption itself succeeds.
    let out = gpg_decrypt(&home, &f, Some("hpass"));
    let status = String::from_utf8_lossy(&out.stderr);
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY") && status.contains("[GNUPG:] GOODMDC"), "{status}");
    assert!(out.stdout == plain);
    // We find the key as gpg does: by trying the secret keys we have.
    let env = KeyEnv { passphrase: Some(b"hpass".to_vec()), ..home.env() };
    let dec = Keys::build(&opts(), &env, Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "hidden.gpg", &cipher).unwrap() == plain);
    // gpg --hidden-recipient → us.
    let src = home.file("plain");
    std::fs::write(&src, &plain).unwrap();
    let g = home.file("g.gpg");
    home.ok(&["-e", "--hidden-recipient", "h@example.org", "-o", g.to_str().unwrap(), src.to_str().unwrap()]);
    let dec = Keys::build(&opts(), &env, Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "g.gpg", &std::fs::read(&g).unwrap()).unwrap() == plain);
}

#[test]
fn signing() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let sfpr = home.gen_key("Signer <s@example.org>", "future-default default never", "sign pass");
    let ofpr = home.gen_key("Mallory <m@example.org>", "future-default default never", "");
    home.gen_key("Rcpt <r@example.org>", "default default never", "");
    let plain = data(1_200_000, 5);

    // Public key + signature by a passphrase-protected key (SIGN_PASSPHRASE).
    let env = KeyEnv { sign_passphrase: Some(b"sign pass".to_vec()), ..home.env() };
    let o = KeyOptions { encrypt_keys: vec!["r@example.org".into()], sign_key: Some(sfpr.clone()), ..opts() };
    let keys = Keys::build(&o, &env, Purpose::Both).unwrap();
    assert!(keys.signs());
    let cipher = encrypt(&keys, &plain);
    let f = home.file("signed.gpg");
    std::fs::write(&f, &cipher).unwrap();
    let out = gpg_decrypt(&home, &f, None);
    let status = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stdout == plain, "{status}");
    assert!(status.contains("[GNUPG:] GOODSIG") && status.contains(&format!("[GNUPG:] VALIDSIG {sfpr}")), "{status}");
    let p = packets(&home, &f, None);
    assert!(p.contains(":onepass_sig packet:") && p.contains(":signature packet:"), "{p}");
    // We verify it.
    let mut r = crypto::decryptor(&keys, "signed.gpg", io::Cursor::new(cipher.clone())).unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert!(back == plain);
    assert_eq!(r.signer().as_deref(), Some(sfpr.as_str()));

    // Symmetric + signature (duplicity allows --sign-key without keys).
    let env2 = KeyEnv { passphrase: Some(b"sym".to_vec()), ..env.clone() };
    let o2 = KeyOptions { sign_key: Some("s@example.org".into()), ..opts() };
    let sym = Keys::build(&o2, &env2, Purpose::Both).unwrap();
    let c2 = encrypt(&sym, &plain);
    std::fs::write(&f, &c2).unwrap();
    let out = gpg_decrypt(&home, &f, Some("sym"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[GNUPG:] GOODSIG") && out.stdout == plain);
    // Checking needs only the public key (restore needs no SIGN_PASSPHRASE).
    let verify_only = Keys::build(&o2, &KeyEnv { sign_passphrase: None, ..env2.clone() }, Purpose::Decrypt).unwrap();
    assert!(decrypt(&verify_only, "s.gpg", &c2).unwrap() == plain);

    // Wrong SIGN_PASSPHRASE: refused up front.
    let bad = KeyEnv { sign_passphrase: Some(b"nope".to_vec()), ..home.env() };
    let e = Keys::build(&o, &bad, Purpose::Encrypt).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    assert!(e.message.contains("wrong passphrase"), "{e}");

    // Unsigned, or signed by another key, when a signature is required.
    let unsigned = Keys::build(
        &KeyOptions { encrypt_keys: vec!["r@example.org".into()], ..opts() },
        &home.env(),
        Purpose::Encrypt,
    )
    .unwrap();
    let c3 = encrypt(&unsigned, &plain);
    let e = decrypt(&keys, "unsigned.gpg", &c3).unwrap_err();
    assert_eq!(e.kind, Kind::Corrupt, "{e}");
    assert!(e.message.contains("unsigned.gpg") && e.message.contains("not signed"), "{e}");
    let o4 = KeyOptions { encrypt_keys: vec!["r@example.org".into()], sign_key: Some(ofpr.clone()), ..opts() };
    let mallory = Keys::build(&o4, &home.env(), Purpose::Encrypt).unwrap();
    let c4 = encrypt(&mallory, &plain);
    let e = decrypt(&keys, "other.gpg", &c4).unwrap_err();
    assert_eq!(e.kind, Kind::Corrupt, "{e}");
    assert!(e.message.contains("another key"), "{e}");
    // A small file is checked before any plaintext is released.
    let small = encrypt(&mallory, b"tiny");
    let e = crypto::decryptor(&keys, "small.gpg", io::Cursor::new(small)).err().unwrap();
    assert_eq!(e.kind, Kind::Corrupt, "{e}");
    // Without a required signature, a signed file reads fine.
    assert!(decrypt(&unsigned, "other.gpg", &c4).unwrap() == plain);

    // gpg -e -s → we verify.
    let src = home.file("plain");
    std::fs::write(&src, &plain).unwrap();
    let g = home.file("g.gpg");
    home.ok(&[
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "sign pass",
        "-e",
        "-s",
        "-u",
        &sfpr,
        "-r",
        "r@example.org",
        "-o",
        g.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let dec =
        Keys::build(&KeyOptions { sign_key: Some(sfpr.clone()), ..opts() }, &home.env(), Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "g.gpg", &std::fs::read(&g).unwrap()).unwrap() == plain);
}

#[test]
fn errors_are_distinct() {
    need_gpg!();
    let home = GpgHome::new("dupgpg");
    let plain = data(2_000_000, 6);
    let keys = Keys::with_passphrase("right");
    let cipher = encrypt(&keys, &plain);

    // Wrong passphrase.
    let e = decrypt(&Keys::with_passphrase("wrong"), "vol1.difftar.gpg", &cipher).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    assert_eq!(e.message, "wrong passphrase for vol1.difftar.gpg");
    assert_eq!(e.exit_code(), 12);
    // No passphrase at all (no terminal prompt in tests).
    let none = Keys::build(&KeyOptions { use_keyring: false, ..opts() }, &KeyEnv::default(), Purpose::Decrypt).unwrap();
    let e = decrypt(&none, "m.gpg", &cipher).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    // Encrypting without one is a usage error, found up front.
    let e =
        Keys::build(&KeyOptions { use_keyring: false, ..opts() }, &KeyEnv::default(), Purpose::Encrypt).unwrap_err();
    assert_eq!(e.kind, Kind::Usage, "{e}");

    // A flipped byte in the middle, also in an incompressible stream.
    let random: Vec<u8> = {
        let mut g = Gen::new(7, u64::MAX);
        let mut v = vec![0u8; 1_000_000];
        for c in v.chunks_mut(8192).step_by(2) {
            g.read_exact(c).unwrap();
        }
        v
    };
    for (what, c) in [("compressed", cipher.clone()), ("random", encrypt(&keys, &random))] {
        let mut bad = c.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let e = decrypt(&keys, "t.gpg", &bad).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt, "{what}: {e}");
        assert!(e.message.starts_with("t.gpg: "), "{what}: {e}");
        // Truncated.
        let e = decrypt(&keys, "t.gpg", &c[..c.len() * 2 / 3]).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt, "{what}: {e}");
        assert!(e.message.contains("truncated"), "{what}: {e}");
        // The MDC only (last bytes).
        let mut bad = c.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        let e = decrypt(&keys, "t.gpg", &bad).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt, "{what}: {e}");
        assert!(e.message.contains("modified or damaged"), "{what}: {e}");
        // A reader stopping early still has the rest checked by finish()
        // (a file under DECRYPT_BUFFER is checked before any plaintext).
        let e = match crypto::decryptor(&keys, "t.gpg", io::Cursor::new(bad)) {
            Ok(mut r) => {
                let mut head = [0u8; 100];
                r.read_exact(&mut head).unwrap();
                r.finish().unwrap_err()
            }
            Err(e) => e,
        };
        assert_eq!(e.kind, Kind::Corrupt, "{what}: {e}");
    }
    // Reading after an error keeps failing, no panic.
    let mut r =
        crypto::decryptor_with_buffer(&keys, "t.gpg", io::Cursor::new(cipher[..cipher.len() / 2].to_vec()), 0).unwrap();
    let mut sink = Vec::new();
    assert!(r.read_to_end(&mut sink).is_err());
    assert!(r.read(&mut [0u8; 10]).is_err());

    // Not OpenPGP at all; an empty file; OpenPGP without encryption.
    for (name, junk) in [("junk", b"not an openpgp message at all".to_vec()), ("empty", Vec::new())] {
        let e = decrypt(&keys, name, &junk).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt, "{name}: {e}");
    }
    let src = home.file("plain");
    std::fs::write(&src, b"clear text").unwrap();
    let stored = home.file("stored.gpg");
    home.ok(&["--store", "-o", stored.to_str().unwrap(), src.to_str().unwrap()]);
    let e = decrypt(&keys, "stored.gpg", &std::fs::read(&stored).unwrap()).unwrap_err();
    assert_eq!(e.kind, Kind::Corrupt, "{e}");
    assert!(e.message.contains("not encrypted"), "{e}");

    // Public key: no matching secret key; the key IDs are named.
    let fpr = home.gen_key("Prot <p@example.org>", "future-default default never", "key pass");
    let o = KeyOptions { encrypt_keys: vec![fpr.clone()], ..opts() };
    let enc = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap();
    let c = encrypt(&enc, &plain);
    let empty_home = GpgHome::new("dupgpg");
    let dec = Keys::build(&opts(), &empty_home.env(), Purpose::Decrypt).unwrap();
    let e = decrypt(&dec, "vol2.difftar.gpg", &c).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    let subkey = String::from_utf8(home.ok(&["--with-colons", "--list-keys", &fpr])).unwrap();
    let subid = subkey.lines().find(|l| l.starts_with("sub:")).unwrap().split(':').nth(4).unwrap().to_string();
    assert!(e.message.contains("no secret key") && e.message.contains(&subid), "{e}");
    // Secret key there, passphrase wrong / missing.
    let env = KeyEnv { passphrase: Some(b"bad".to_vec()), ..home.env() };
    let dec = Keys::build(&opts(), &env, Purpose::Decrypt).unwrap();
    let e = decrypt(&dec, "vol2.difftar.gpg", &c).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    assert!(e.message.contains("vol2.difftar.gpg") && e.message.contains("wrong passphrase"), "{e}");
    let dec = Keys::build(&opts(), &home.env(), Purpose::Decrypt).unwrap();
    let e = decrypt(&dec, "vol2.difftar.gpg", &c).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e}");
    // Right passphrase.
    let env = KeyEnv { passphrase: Some(b"key pass".to_vec()), ..home.env() };
    let dec = Keys::build(&opts(), &env, Purpose::Decrypt).unwrap();
    assert!(decrypt(&dec, "vol2.difftar.gpg", &c).unwrap() == plain);
    // Unknown recipient spec.
    let o = KeyOptions { encrypt_keys: vec!["nobody@example.org".into()], ..opts() };
    let e = Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap_err();
    assert_eq!(e.kind, Kind::Usage, "{e}");
}

#[test]
fn types_are_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<crypto::DecryptReader<'static>>();
    send::<crypto::EncryptWriter<'static, Vec<u8>>>();
    send_sync::<Keys>();
    // Encrypting on a rayon pool thread compresses inline (no deadlock).
    let keys = Keys::with_passphrase("r");
    let plain = data(5 << 20, 21);
    let cipher = rayon_like_pool(|| encrypt(&keys, &plain));
    assert!(decrypt(&keys, "r.gpg", &cipher).unwrap() == plain);
}

/// Runs `f` on a thread of a one-thread rayon pool.
fn rayon_like_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(f)
}

#[test]
fn check_decryptable_early() {
    let keys = Keys::with_passphrase("right");
    let cipher = encrypt(&keys, b"Hostname x\nLocaldir /\n");
    crypto::check_decryptable(&keys, "m.manifest.gpg", io::Cursor::new(cipher.clone())).unwrap();
    let e =
        crypto::check_decryptable(&Keys::with_passphrase("x"), "m.manifest.gpg", io::Cursor::new(cipher)).unwrap_err();
    assert_eq!(e.kind, Kind::Crypto);
    assert_eq!(e.message, "wrong passphrase for m.manifest.gpg");
}

#[test]
fn passphrase_sources() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "from file\nsecond line ignored\n").unwrap();
    let o = KeyOptions { passphrase_file: Some(f), use_keyring: false, ..opts() };
    // The file wins over PASSPHRASE.
    let env = KeyEnv { passphrase: Some(b"from env".to_vec()), ..Default::default() };
    let keys = Keys::build(&o, &env, Purpose::Both).unwrap();
    let c = encrypt(&keys, b"abc");
    assert!(decrypt(&Keys::with_passphrase("from file"), "x", &c).unwrap() == b"abc");
    // A descriptor: one line is read, the rest stays.
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: writes from a valid buffer to the pipe's write end.
    unsafe { libc::write(fds[1], b"from fd\nrest".as_ptr().cast(), 12) };
    let o = KeyOptions { passphrase_fd: Some(fds[0]), use_keyring: false, ..opts() };
    let keys = Keys::build(&o, &env, Purpose::Encrypt).unwrap();
    let c = encrypt(&keys, b"abc");
    assert!(decrypt(&Keys::with_passphrase("from fd"), "x", &c).unwrap() == b"abc");
    let mut rest = [0u8; 4];
    // SAFETY: reads into a valid buffer.
    assert_eq!(unsafe { libc::read(fds[0], rest.as_mut_ptr().cast(), 4) }, 4);
    assert_eq!(&rest, b"rest");
    // SAFETY: closes descriptors this test opened.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    // Debug output shows no secret.
    assert!(!format!("{env:?}").contains("from env"));
}

#[test]
fn duplicity_non_final_volume_plaintext() {
    // A decrypted non-final duplicity volume: tar entries, a zero footer,
    // then "top-off" bytes copied from the ciphertext (FORMAT §3.7).
    let keys = Keys::with_passphrase("p");
    let mut plain = data(30_000, 8);
    plain.extend(vec![0u8; 10240 - plain.len() % 10240]);
    let first = encrypt(&keys, &plain);
    plain.extend_from_slice(&first[..first.len().min(30_704)]);
    let c = encrypt(&keys, &plain);
    assert!(decrypt(&keys, "v.gpg", &c).unwrap() == plain);
    let r = crypto::decryptor(&keys, "v.gpg", io::Cursor::new(c)).unwrap();
    assert_eq!(r.finish().unwrap(), plain.len() as u64);
}

/// Peak resident memory of this process (kB).
fn vm_hwm() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn hash_stream(mut r: impl Read) -> io::Result<(u64, u64)> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((n, h));
        }
        for &b in &buf[..k] {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        n += k as u64;
    }
}

/// Runs in a child process (so its VmHWM is its own): `enc` encrypts a
/// generated stream to a file, `dec` decrypts it back; prints peak memory
/// growth and speed.
#[test]
#[ignore = "run by memory_is_bounded in a child process"]
fn memory_child() {
    let Ok(spec) = std::env::var("DUP_CRYPTO_MEM") else { return };
    let f: Vec<&str> = spec.split(',').collect();
    let (phase, mib, path) = (f[0], f[1].parse::<u64>().unwrap(), PathBuf::from(f[2]));
    let buffer: usize = f.get(4).map_or(crypto::DECRYPT_BUFFER, |b| b.parse().unwrap());
    let keys = match f.get(3) {
        // The signing key is in the GnuPG home the parent made.
        Some(home) if !home.is_empty() => {
            let o = KeyOptions { sign_key: Some("s@example.org".into()), ..opts() };
            let env = KeyEnv { passphrase: Some(b"p".to_vec()), gnupghome: Some(home.into()), ..Default::default() };
            Keys::build(&o, &env, if phase == "enc" { Purpose::Encrypt } else { Purpose::Decrypt }).unwrap()
        }
        _ => Keys::with_passphrase("p"),
    };
    let base = vm_hwm();
    let t = Instant::now();
    let (n, h) = if phase == "enc" {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = crypto::encryptor(&keys, io::BufWriter::new(file)).unwrap();
        let mut tee = Tee { r: Gen::new(9, mib << 20), w: &mut w };
        let r = hash_stream(&mut tee).unwrap();
        w.finish().unwrap().flush().unwrap();
        r
    } else {
        let file = std::fs::File::open(&path).unwrap();
        let r = crypto::decryptor_with_buffer(&keys, "big.gpg", io::BufReader::new(file), buffer).unwrap();
        hash_stream(r).unwrap()
    };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((n, h), hash_stream(Gen::new(9, mib << 20)).unwrap());
    println!(
        "MEM {phase} mib={mib} signed={} buffer={buffer} file={} growth_kb={} base_kb={base} mib_s={:.0}",
        f.get(3).is_some_and(|h| !h.is_empty()),
        std::fs::metadata(&path).unwrap().len(),
        vm_hwm().saturating_sub(base),
        mib as f64 / secs
    );
}

/// Feeds what is read into a writer too.
struct Tee<'a, R, W> {
    r: R,
    w: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn run_memory_child(spec: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["crypto::memory_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("DUP_CRYPTO_MEM", spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.find("MEM ").map(|i| l[i..].to_string()));
    let line = line.unwrap_or_else(|| panic!("{stdout}"));
    eprintln!("{line}");
    line
}

fn field(line: &str, key: &str) -> u64 {
    let v = line.split_whitespace().find_map(|f| f.strip_prefix(&format!("{key}="))).unwrap();
    v.parse().unwrap()
}

/// Encrypts then decrypts `mib` MiB in child processes; returns both lines.
fn memory_round(mib: u64, signed: bool, buffer: Option<usize>) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = signed.then(|| {
        let h = GpgHome::new("dupgpg");
        h.gen_key("S <s@example.org>", "future-default default never", "");
        h
    });
    let home_s = home.as_ref().map(|h| h.path().to_str().unwrap().to_string()).unwrap_or_default();
    let file = dir.path().join("big.gpg");
    let file = file.to_str().unwrap();
    let enc = run_memory_child(&format!("enc,{mib},{file},{home_s}"));
    let mut dec_spec = format!("dec,{mib},{file},{home_s}");
    if let Some(b) = buffer {
        dec_spec.push_str(&format!(",{b}"));
    }
    let dec = run_memory_child(&dec_spec);
    (enc, dec)
}

#[test]
fn memory_is_bounded() {
    let (enc, dec) = memory_round(256, false, None);
    assert!(field(&enc, "growth_kb") < 64 * 1024, "{enc}");
    assert!(field(&dec, "growth_kb") < 16 * 1024, "{dec}");
}

#[test]
fn memory_is_bounded_signed() {
    need_gpg!();
    let (enc, dec) = memory_round(300, true, None);
    assert!(field(&enc, "growth_kb") < 64 * 1024, "{enc}");
    assert!(field(&dec, "growth_kb") < 16 * 1024, "{dec}");
}

/// Sequoia's default buffer (25 MiB) with a signed 300 MiB file, for the
/// record: `cargo test --release --test crypto -- --ignored memory_default_buffer --nocapture`.
#[test]
#[ignore = "measurement"]
fn memory_default_buffer() {
    need_gpg!();
    memory_round(300, true, Some(25 << 20));
}

/// Throughput, release build:
/// `cargo test --release --test crypto -- --ignored throughput --nocapture`.
#[test]
#[ignore = "measurement"]
fn throughput() {
    memory_round(256, false, None);
    if have("gpg", "throughput") {
        memory_round(256, true, None);
    }
    // Incompressible and text-only data.
    let keys = Keys::with_passphrase("p");
    for (what, kind) in [("random", 0u8), ("text", 1u8), ("binaries", 2u8)] {
        let mut len = 128usize << 20;
        let mut plain = vec![0u8; len];
        if kind == 2 {
            // Real files: the system's shared libraries.
            plain.clear();
            for e in std::fs::read_dir("/usr/lib/x86_64-linux-gnu").into_iter().flatten().flatten() {
                if plain.len() >= len {
                    break;
                }
                if e.path().is_file() {
                    plain.extend(std::fs::read(e.path()).unwrap_or_default());
                }
            }
            plain.truncate(len);
            len = plain.len();
        } else if kind == 0 {
            Gen::new(3, u64::MAX).read_exact(&mut plain).ok();
            let mut s = 0x1234_5678_9abc_def1u64;
            for b in plain.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        } else {
            for (i, b) in plain.iter_mut().enumerate() {
                *b = b"the quick brown fox jumps over the lazy dog 0123456789\n"[i % 55];
            }
        }
        let t = Instant::now();
        let c = encrypt(&keys, &plain);
        let enc = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = decrypt(&keys, "x", &c).unwrap();
        let dec = t.elapsed().as_secs_f64();
        assert!(back == plain);
        eprintln!(
            "{what}: {} MiB -> {:.1} MiB, encrypt {:.0} MiB/s, decrypt {:.0} MiB/s",
            len >> 20,
            c.len() as f64 / (1 << 20) as f64,
            (len >> 20) as f64 / enc,
            (len >> 20) as f64 / dec
        );
    }
}

fn run_duplicity(home: &GpgHome, args: &[&str]) {
    let out = Command::new("duplicity")
        .env("GNUPGHOME", home.path())
        .env("PASSPHRASE", "dup pass")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duplicity {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Real duplicity 0.8 (through gpg) both ways: we decrypt every file of an
/// encrypted duplicity backup (volumes with their top-off garbage,
/// manifests, signatures); then every file is re-encrypted by us (manifest
/// hashes updated) and duplicity restores from them.
#[test]
fn duplicity_round_trip() {
    duplicity_round(false);
}

/// The same with `--encrypt-key K --sign-key K`: duplicity's restore
/// checks through gpg that every volume is signed by K.
#[test]
fn duplicity_round_trip_public_key_signed() {
    duplicity_round(true);
}

fn duplicity_round(public: bool) {
    if !have_all(&test_name(), &["gpg", "duplicity"]) {
        return;
    }
    use sha1::{Digest, Sha1};
    let home = GpgHome::new("dupgpg");
    let mut key_args: Vec<String> = Vec::new();
    let keys = if public {
        let fpr = home.gen_key("Dup <d@example.org>", "future-default default never", "");
        key_args = vec!["--encrypt-key".into(), fpr.clone(), "--sign-key".into(), fpr.clone()];
        let o = KeyOptions { encrypt_keys: vec![fpr.clone()], sign_key: Some(fpr), ..opts() };
        Keys::build(&o, &home.env(), Purpose::Both).unwrap()
    } else {
        Keys::with_passphrase("dup pass")
    };
    let key_args: Vec<&str> = key_args.iter().map(String::as_str).collect();
    let src = home.file("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big.bin"), data(2_600_000, 31)).unwrap();
    std::fs::write(src.join("sub/text.txt"), b"hello\n".repeat(5000)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let repo = home.file("repo");
    let url = format!("file://{}", repo.display());
    let cache1 = home.file("cache1");
    let c1 = cache1.to_str().unwrap();
    let mut args = vec!["full", "--volsize", "1", "--archive-dir", c1, "--name", "n", src.to_str().unwrap(), &url];
    args.extend(&key_args);
    run_duplicity(&home, &args);
    let mut names: Vec<String> =
        std::fs::read_dir(&repo).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert!(names.iter().filter(|n| n.contains(".difftar.gpg")).count() >= 2, "{names:?}");
    let mut plains = Vec::new();
    for n in &names {
        let cipher = std::fs::read(repo.join(n)).unwrap();
        let plain = decrypt(&keys, n, &cipher).unwrap_or_else(|e| panic!("{n}: {e}"));
        if n.ends_with(".manifest.gpg") {
            let cached = std::fs::read(cache1.join("n").join(n.trim_end_matches(".gpg"))).unwrap();
            assert!(plain == cached, "{n}: not the cached manifest");
        }
        if n.ends_with(".sigtar.gpg") {
            let gz = std::fs::read(cache1.join("n").join(n.replace(".sigtar.gpg", ".sigtar.gz"))).unwrap();
            let mut cached = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut cached).unwrap();
            assert!(plain == cached, "{n}: not the cached signatures");
        }
        plains.push((n.clone(), plain));
    }

    // Re-encrypt everything with us; volumes first, for the manifest's hashes.
    let rewrite = |keys: &Keys| {
        let mut hashes = std::collections::BTreeMap::new();
        for (n, plain) in &plains {
            if n.contains(".difftar.gpg") || n.ends_with(".sigtar.gpg") {
                let cipher = encrypt(keys, plain);
                if let Some(v) = n.split(".vol").nth(1).and_then(|r| r.split('.').next()) {
                    let h: String = Sha1::digest(&cipher).iter().map(|b| format!("{b:02x}")).collect();
                    hashes.insert(v.parse::<u64>().unwrap(), h);
                }
                std::fs::write(repo.join(n), cipher).unwrap();
            }
        }
        for (n, plain) in &plains {
            if !n.ends_with(".manifest.gpg") {
                continue;
            }
            let text = String::from_utf8(plain.clone()).unwrap();
            let mut out = String::new();
            let mut vol = 0u64;
            for line in text.split_inclusive('\n') {
                if let Some(v) = line.strip_prefix("Volume ").and_then(|r| r.split(':').next()) {
                    vol = v.parse().unwrap();
                }
                match line.trim_start().strip_prefix("Hash SHA1 ") {
                    Some(_) => out.push_str(&format!("    Hash SHA1 {}\n", hashes[&vol])),
                    None => out.push_str(line),
                }
            }
            assert_ne!(out, text);
            std::fs::write(repo.join(n), encrypt(keys, out.as_bytes())).unwrap();
        }
    };
    rewrite(&keys);
    let cache2 = home.file("cache2");
    let c2 = cache2.to_str().unwrap();
    let dest = home.file("restored");
    let mut args = vec!["restore", "--archive-dir", c2, "--name", "n", &url, dest.to_str().unwrap()];
    args.extend(&key_args);
    run_duplicity(&home, &args);
    for f in ["big.bin", "sub/text.txt", "empty"] {
        assert!(std::fs::read(src.join(f)).unwrap() == std::fs::read(dest.join(f)).unwrap(), "{f}");
    }
    // And duplicity's verify reads every volume through gpg.
    let mut args = vec!["verify", "--archive-dir", c2, "--name", "n", &url, src.to_str().unwrap()];
    args.extend(&key_args);
    run_duplicity(&home, &args);
    if public {
        // Unsigned volumes: duplicity refuses them, so it did check ours.
        let fpr = key_args[1].to_string();
        let o = KeyOptions { encrypt_keys: vec![fpr], ..opts() };
        rewrite(&Keys::build(&o, &home.env(), Purpose::Encrypt).unwrap());
        let dest2 = home.file("restored2");
        let cache3 = home.file("cache3");
        let c3 = cache3.to_str().unwrap();
        let mut args = vec!["restore", "--archive-dir", c3, "--name", "n", &url, dest2.to_str().unwrap()];
        args.extend(&key_args);
        let out = Command::new("duplicity")
            .env("GNUPGHOME", home.path())
            .env("PASSPHRASE", "dup pass")
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && text.contains("signed by"), "{text}");
    }
}

// ---------------------------------------------------------------------------
// dup-pack encrypts by default, as duplicity does

/// A recognizable line, looked for in what is stored.
const MARK: &[u8] = b"a line that must not be stored in the clear\n";

/// Writes a change stream (dup-scan | dup-delta) of a small tree holding
/// `notes.txt` to `dir/changes`; returns its path.
fn change_stream(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("notes.txt"), MARK.repeat(50)).unwrap();
    let changes = dir.join("changes");
    let mut scan = Command::new(env!("CARGO_BIN_EXE_dup-scan")).arg(&src).stdout(Stdio::piped()).spawn().unwrap();
    let delta = Command::new(env!("CARGO_BIN_EXE_dup-delta"))
        .stdin(scan.stdout.take().unwrap())
        .stdout(std::fs::File::create(&changes).unwrap())
        .status()
        .unwrap();
    assert!(scan.wait().unwrap().success() && delta.success());
    changes
}

/// Runs dup-pack on the change stream `input` with `args`, `PASSPHRASE`
/// set to `passphrase` (or unset), in a session of its own: no
/// controlling terminal to ask on, whoever runs the tests.
fn dup_pack(args: &[&str], input: &Path, passphrase: Option<&str>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dup-pack"));
    cmd.args(args).env_remove("PASSPHRASE").stdin(std::fs::File::open(input).unwrap());
    if let Some(p) = passphrase {
        cmd.env("PASSPHRASE", p);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// Stores a dup-pack output with dup-put in `dir/name` (cache in
/// `dir/name-cache`); returns the stored file names, sorted.
fn store(dir: &Path, name: &str, files: &[u8]) -> Vec<String> {
    let arch = dir.join(name);
    let mut put = Command::new(env!("CARGO_BIN_EXE_dup-put"));
    put.arg("--archive-dir").arg(dir.join(format!("{name}-cache"))).arg(file_url(&arch));
    let out = run_with_stdin(&mut put, files);
    assert!(out.status.success(), "dup-put: {}", String::from_utf8_lossy(&out.stderr));
    names(&arch)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn dup_pack_encrypts_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let input = change_stream(dir.path());
    // No option, PASSPHRASE set: every stored file is OpenPGP, and only the
    // passphrase opens it.
    let out = dup_pack(&[], &input, Some("default pass"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = store(dir.path(), "enc", &out.stdout);
    assert_eq!(names.len(), 3, "{names:?}");
    for n in &names {
        assert!(n.starts_with("duplicity-full") && n.ends_with(".gpg"), "{n} is not encrypted: {names:?}");
    }
    let manifest = names.iter().find(|n| n.ends_with(".manifest.gpg")).unwrap();
    let cipher = std::fs::read(dir.path().join("enc").join(manifest)).unwrap();
    assert!(!contains(&cipher, b"Volume 1:") && !contains(&cipher, b"notes.txt"), "a plaintext manifest");
    let plain = decrypt(&Keys::with_passphrase("default pass"), manifest, &cipher).unwrap();
    assert!(contains(&plain, b"Volume 1:") && contains(&plain, b"notes.txt"), "{}", String::from_utf8_lossy(&plain));
    assert_eq!(decrypt(&Keys::with_passphrase("other"), manifest, &cipher).unwrap_err().kind, Kind::Crypto);
    let volume = names.iter().find(|n| n.contains(".vol1.difftar")).unwrap();
    let cipher = std::fs::read(dir.path().join("enc").join(volume)).unwrap();
    assert!(!contains(&cipher, MARK));
    let plain = decrypt(&Keys::with_passphrase("default pass"), volume, &cipher).unwrap();
    assert!(contains(&plain, MARK), "the volume holds the file");
    // --encrypt says the same explicitly.
    let out = dup_pack(&["--encrypt"], &input, Some("default pass"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(store(dir.path(), "explicit", &out.stdout).iter().all(|n| n.ends_with(".gpg")));
    // --no-encryption: the plain gzip archive, PASSPHRASE or not.
    let out = dup_pack(&["--no-encryption"], &input, Some("default pass"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = store(dir.path(), "plain", &out.stdout);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".gz") || n.ends_with(".manifest")), "{names:?}");
    let manifest = names.iter().find(|n| n.ends_with(".manifest")).unwrap();
    assert!(contains(&std::fs::read(dir.path().join("plain").join(manifest)).unwrap(), b"notes.txt"));
}

#[test]
fn dup_pack_without_a_passphrase_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = change_stream(dir.path());
    // No PASSPHRASE, no terminal: a usage error naming both ways out, and
    // nothing written (not even a stream header).
    let out = dup_pack(&[], &input, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("encrypted by default") && err.contains("no passphrase"), "{err}");
    assert!(err.contains("set PASSPHRASE") && err.contains("--no-encryption"), "{err}");
    assert!(out.stdout.is_empty(), "dup-pack wrote {} bytes", out.stdout.len());
    // The same without a terminal with --encrypt (it asked for encryption:
    // no --no-encryption suggested).
    let out = dup_pack(&["--encrypt"], &input, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("PASSPHRASE") && !err.contains("--no-encryption"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn dup_pack_no_encryption_with_an_encryption_option_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = change_stream(dir.path());
    for (args, named) in [
        (&["--no-encryption", "--encrypt"][..], "--encrypt"),
        (&["--encrypt-key", "someone@example.org", "--no-encryption"][..], "--encrypt-key"),
        (&["--no-encryption", "--hidden-encrypt-key", "someone"][..], "--hidden-encrypt-key"),
        (&["--no-encryption", "--sign-key", "someone"][..], "--sign-key"),
        (&["--no-encryption", "--passphrase-file", "/nonexistent"][..], "--passphrase-file"),
    ] {
        let out = dup_pack(args, &input, Some("pass"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--no-encryption") && err.contains(named), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
