//! OpenPGP encryption of archive files, as duplicity does it through gpg
//! (FORMAT-duplicity.md §5.3), done in-process with Sequoia.
//!
//! What we write is what GnuPG 2.2 writes and reads: SKESK v4 (passphrase)
//! or PKESK v3 (one per recipient key) + SEIPD v1 with MDC, AES-256, a ZIP
//! compressed packet, optionally a one-pass signature, and a binary literal
//! packet with no file name. Never AEAD: gpg 2.2 cannot read it. The
//! deflate stream is built from 1 MiB blocks compressed in parallel (and
//! stored when they do not compress), as pigz does.
//!
//! Keys come from key files or from the user's GnuPG keyring, which is read
//! by running `gpg --export` / `--export-secret-keys` (never by parsing the
//! keybox). Passphrases come from `PASSPHRASE` / `SIGN_PASSPHRASE`, a file, a
//! file descriptor, or a no-echo prompt on the terminal; never from the
//! command line, and they are never logged.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use flate2::{Compress, Compression, FlushCompress, Status};

use sequoia_openpgp as openpgp;

use openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation;
use openpgp::cert::{Cert, CertParser};
use openpgp::crypto::{KeyPair, Password, SessionKey};
use openpgp::packet::{Key, PKESK, Packet, SKESK, Tag, key};
use openpgp::parse::stream::{
    DecryptionHelper, Decryptor, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use openpgp::parse::{PacketParser, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{ArbitraryWriter, Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::{CompressionAlgorithm, DataFormat, SymmetricAlgorithm};
use openpgp::{Fingerprint, KeyHandle};

use crate::error::{Error, Kind, Result};
use crate::parblock::{Blocks, ParBlocks};

/// Plaintext the decryptor holds back until it has checked what follows.
/// Sequoia's default (25 MiB) would verify the signature of a file up to
/// that size before releasing anything, but peaked at ~160 MiB resident on
/// a 300 MiB signed file; with 1 MiB the peak is ~12 MiB. A volume is
/// larger than either, so its signature and MDC are checked at its end.
pub const DECRYPT_BUFFER: usize = 1 << 20;

/// Sequoia 2.4.2's decryptor miscounts (an arithmetic overflow: a panic in
/// debug builds, reading everything into memory in release builds) when its
/// buffer is smaller than what its readers return at once (32 KiB and up).
pub const MIN_DECRYPT_BUFFER: usize = 256 << 10;

/// How to find keys and passphrases: duplicity's options.
#[derive(Debug, Clone)]
pub struct KeyOptions {
    /// `--encrypt-key`: public-key recipients (key ID, fingerprint, email,
    /// or a key file). None (and no hidden ones): symmetric encryption.
    pub encrypt_keys: Vec<String>,
    /// `--hidden-encrypt-key`: recipients whose key ID is not written
    /// (gpg's `--hidden-recipient`).
    pub hidden_encrypt_keys: Vec<String>,
    /// `--sign-key`: sign what is encrypted; require its signature on what
    /// is decrypted.
    pub sign_key: Option<String>,
    /// Key files (armored or binary; certificates or secret keys) searched
    /// before the keyring (`--encrypt-secret-keyring`, `--key-file`).
    pub key_files: Vec<PathBuf>,
    /// `--passphrase-file`: the passphrase is its first line.
    pub passphrase_file: Option<PathBuf>,
    /// `--passphrase-fd N`: the passphrase is read from descriptor N up to
    /// a newline.
    pub passphrase_fd: Option<i32>,
    /// Look keys up in the GnuPG keyring (runs `gpg`).
    pub use_keyring: bool,
    /// `--gpg-binary` (default `gpg` on PATH).
    pub gpg_binary: Option<PathBuf>,
    /// Ask on the terminal for a passphrase that is needed and not given
    /// (only happens when there is a terminal).
    pub prompt: bool,
    /// Ask twice when prompting for a new symmetric passphrase (a full
    /// backup, as duplicity does).
    pub confirm: bool,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            encrypt_keys: Vec::new(),
            hidden_encrypt_keys: Vec::new(),
            sign_key: None,
            key_files: Vec::new(),
            passphrase_file: None,
            passphrase_fd: None,
            use_keyring: true,
            gpg_binary: None,
            prompt: true,
            confirm: false,
        }
    }
}

/// The environment the keys depend on, passed in so that the library reads
/// no process state by itself ([`KeyEnv::from_process`] collects it).
#[derive(Clone, Default)]
pub struct KeyEnv {
    /// `$PASSPHRASE`: the symmetric passphrase, or the one of the
    /// decryption (secret) key.
    pub passphrase: Option<Vec<u8>>,
    /// `$SIGN_PASSPHRASE`: the signing key's passphrase.
    pub sign_passphrase: Option<Vec<u8>>,
    /// `$GNUPGHOME`.
    pub gnupghome: Option<PathBuf>,
    /// `$HOME` (the keyring defaults to `~/.gnupg`).
    pub home: Option<PathBuf>,
}

impl fmt::Debug for KeyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEnv")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("sign_passphrase", &self.sign_passphrase.as_ref().map(|_| "<set>"))
            .field("gnupghome", &self.gnupghome)
            .field("home", &self.home)
            .finish()
    }
}

impl KeyEnv {
    /// Reads `PASSPHRASE`, `SIGN_PASSPHRASE`, `GNUPGHOME` and `HOME`.
    pub fn from_process() -> KeyEnv {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |k: &str| std::env::var_os(k).map(|v| v.into_vec());
        let path = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        KeyEnv {
            passphrase: bytes("PASSPHRASE"),
            sign_passphrase: bytes("SIGN_PASSPHRASE"),
            gnupghome: path("GNUPGHOME"),
            home: path("HOME"),
        }
    }
}

/// What the keys will be used for: decides what must be available (and
/// asked for) up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Writing: recipients' public keys, the symmetric passphrase, the
    /// signing secret key.
    Encrypt,
    /// Reading: passphrase and secret keys are looked up when a file needs
    /// them; the signing key's public part to check signatures.
    Decrypt,
    /// Both (an incremental backup reads the chain and writes a new set).
    Both,
}

/// Everything needed to encrypt and decrypt archive files. Cheap to clone;
/// keys found in the keyring and unlocked secret keys are cached inside.
#[derive(Clone)]
pub struct Keys(Arc<Inner>);

struct Inner {
    /// Public-key recipients: (certificate, hidden).
    recipients: Vec<(Cert, bool)>,
    /// The recipient key specs, tried for hidden-recipient files.
    recipient_specs: Vec<String>,
    signer: Option<SignKey>,
    /// Certificates with secret key material (key files, keyring exports).
    secrets: Mutex<Vec<Cert>>,
    /// Keyring secret-key queries already made.
    queried: Mutex<Vec<String>>,
    /// Unlocked secret keys.
    unlocked: Mutex<Vec<(Fingerprint, KeyPair)>>,
    /// The main passphrase: symmetric, or for the decryption key.
    passphrase: Mutex<Option<Password>>,
    sign_passphrase: Option<Password>,
    gpg: Option<Gpg>,
    prompt: bool,
    symmetric: bool,
}

struct SignKey {
    /// The certificate (public parts) signatures must come from.
    cert: Cert,
    /// The unlocked signing key (when encrypting).
    pair: Option<KeyPair>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The policy for what we write and for signatures: Sequoia's standard one.
fn policy() -> &'static StandardPolicy<'static> {
    static P: StandardPolicy<'static> = StandardPolicy::new();
    &P
}

/// For reading: also the old ciphers of gpg 1.x (CAST5 was its default),
/// so that old backups stay readable. We never write them.
fn read_policy() -> &'static StandardPolicy<'static> {
    static P: OnceLock<StandardPolicy<'static>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = StandardPolicy::new();
        #[allow(deprecated)]
        for a in [SymmetricAlgorithm::CAST5, SymmetricAlgorithm::IDEA, SymmetricAlgorithm::TripleDES] {
            p.accept_symmetric_algo(a);
        }
        p
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn crypto(message: impl Into<String>) -> Error {
    Error::new(Kind::Crypto, message)
}

/// A short, recognizable name of a certificate: key ID and first user ID.
fn label(cert: &Cert) -> String {
    let id = cert.keyid().to_hex();
    match cert.userids().next() {
        Some(u) => format!("{id} ({})", String::from_utf8_lossy(u.userid().value())),
        None => id,
    }
}

impl Keys {
    /// Builds the keys from duplicity-style options and the environment.
    /// With `Purpose::Encrypt`/`Both` the recipients, the symmetric
    /// passphrase and the signing key are resolved (and asked for) now.
    pub fn build(opts: &KeyOptions, env: &KeyEnv, purpose: Purpose) -> Result<Keys> {
        let encrypting = purpose != Purpose::Decrypt;
        let gpg = opts.use_keyring.then(|| Gpg::new(opts.gpg_binary.clone(), env));
        let mut file_certs = Vec::new();
        for f in &opts.key_files {
            file_certs.extend(read_key_file(f)?);
        }
        // Recipients given as key files may hold their secret keys too.
        for spec in opts.encrypt_keys.iter().chain(&opts.hidden_encrypt_keys) {
            if purpose != Purpose::Encrypt && Path::new(spec).is_file() {
                file_certs.extend(read_key_file(Path::new(spec))?.into_iter().filter(|c| c.is_tsk()));
            }
        }
        let passphrase = main_passphrase(opts, env)?;
        let symmetric = opts.encrypt_keys.is_empty() && opts.hidden_encrypt_keys.is_empty();
        let mut keys = Inner {
            recipients: Vec::new(),
            recipient_specs: opts.encrypt_keys.iter().chain(&opts.hidden_encrypt_keys).cloned().collect(),
            signer: None,
            secrets: Mutex::new(file_certs.iter().filter(|c| c.is_tsk()).cloned().collect()),
            queried: Mutex::new(Vec::new()),
            unlocked: Mutex::new(Vec::new()),
            passphrase: Mutex::new(passphrase),
            sign_passphrase: env.sign_passphrase.clone().map(Password::from),
            gpg,
            prompt: opts.prompt,
            symmetric,
        };
        if encrypting && symmetric && lock(&keys.passphrase).is_none() {
            let pw = if keys.prompt { ask_new(opts.confirm)? } else { None };
            let pw = pw.ok_or_else(|| {
                Error::usage("encryption needs a passphrase, and none was given")
                    .hint("set PASSPHRASE, or use --passphrase-file/--passphrase-fd, or --encrypt-key KEY")
            })?;
            *lock(&keys.passphrase) = Some(pw);
        }
        if encrypting {
            for (spec, hidden) in
                opts.encrypt_keys.iter().map(|s| (s, false)).chain(opts.hidden_encrypt_keys.iter().map(|s| (s, true)))
            {
                for cert in keys.find(spec, &file_certs, false)?.0 {
                    if encryption_subkeys(&cert).next().is_none() {
                        return Err(Error::usage(format!(
                            "the key {} for '{spec}' has no usable encryption key (expired, revoked or sign-only?)",
                            label(&cert)
                        )));
                    }
                    keys.recipients.push((cert, hidden));
                }
            }
        }
        if let Some(spec) = &opts.sign_key {
            let sk =
                if encrypting { keys.signing_key(spec, &file_certs)? } else { keys.verify_key(spec, &file_certs)? };
            keys.signer = Some(sk);
        }
        Ok(Keys(Arc::new(keys)))
    }

    /// Symmetric encryption with this passphrase; no keyring, no prompt.
    pub fn with_passphrase(passphrase: impl Into<Vec<u8>>) -> Keys {
        Keys(Arc::new(Inner {
            recipients: Vec::new(),
            recipient_specs: Vec::new(),
            signer: None,
            secrets: Mutex::new(Vec::new()),
            queried: Mutex::new(Vec::new()),
            unlocked: Mutex::new(Vec::new()),
            passphrase: Mutex::new(Some(Password::from(passphrase.into()))),
            sign_passphrase: None,
            gpg: None,
            prompt: false,
            symmetric: true,
        }))
    }

    /// True when files are encrypted with a passphrase (no recipients).
    pub fn is_symmetric(&self) -> bool {
        self.0.symmetric
    }

    /// True when a signature is made on encryption and required on
    /// decryption.
    pub fn signs(&self) -> bool {
        self.0.signer.is_some()
    }

    /// A one-line description for logs (no secrets).
    pub fn describe(&self) -> String {
        let mut s = if self.0.symmetric {
            "symmetric AES-256".to_string()
        } else {
            let r: Vec<String> = self
                .0
                .recipients
                .iter()
                .map(|(c, hidden)| format!("{}{}", label(c), if *hidden { " (hidden)" } else { "" }))
                .collect();
            if r.is_empty() { "public key".to_string() } else { format!("AES-256 to {}", r.join(", ")) }
        };
        if let Some(sk) = &self.0.signer {
            s.push_str(&format!(", signed by {}", label(&sk.cert)));
        }
        s
    }
}

impl Inner {
    /// The certificates matching a key spec: a key file, or a key ID,
    /// fingerprint, email or name in the key files, then in the keyring.
    /// With `secret`, also the passphrase gpg needed to export them.
    fn find(&self, spec: &str, files: &[Cert], secret: bool) -> Result<(Vec<Cert>, Option<Password>)> {
        let what = if secret { "secret key" } else { "key" };
        let path = Path::new(spec);
        if path.is_file() {
            let certs: Vec<Cert> = read_key_file(path)?.into_iter().filter(|c| !secret || c.is_tsk()).collect();
            if certs.is_empty() {
                return Err(Error::usage(format!("{spec}: no {what} in this file")));
            }
            return Ok((certs, None));
        }
        let local: Vec<&Cert> = files.iter().filter(|c| (!secret || c.is_tsk()) && cert_matches(c, spec)).collect();
        if !local.is_empty() {
            return Ok((one(spec, local.into_iter().cloned().collect())?, None));
        }
        let Some(gpg) = &self.gpg else {
            return Err(Error::usage(format!("no {what} matches '{spec}' in the key files")));
        };
        let (certs, pw) = if secret {
            self.export_secret(gpg, Some(spec), &format!("the secret key '{spec}'"))?
        } else {
            (gpg.export_public(spec)?, None)
        };
        if certs.is_empty() {
            return Err(Error::usage(format!("no {what} matches '{spec}' in the GnuPG keyring {}", gpg.home_label()))
                .hint("import the key with gpg --import, or give a key file"));
        }
        Ok((one(spec, certs)?, pw))
    }

    /// The signing key with its secret, unlocked.
    fn signing_key(&self, spec: &str, files: &[Cert]) -> Result<SignKey> {
        let (certs, exported_with) = self.find(spec, files, true)?;
        let cert = certs.into_iter().next().ok_or_else(|| Error::usage(format!("no secret key for '{spec}'")))?;
        let wanted = spec_handle(spec);
        let mut candidates: Vec<Key<key::SecretParts, key::UnspecifiedRole>> = cert
            .keys()
            .with_policy(policy(), None)
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .map(|ka| ka.key().clone())
            .collect();
        // A spec naming a signing subkey picks it.
        if let Some(h) = &wanted
            && let Some(i) = candidates.iter().position(|k| h.aliases(k.key_handle()))
        {
            candidates.swap(0, i);
        }
        let key = candidates.into_iter().next().ok_or_else(|| {
            Error::usage(format!("the key {} has no usable signing key with its secret part", label(&cert)))
        })?;
        let mut tries = Vec::new();
        tries.extend(exported_with);
        tries.extend(self.sign_passphrase.clone());
        tries.extend(lock(&self.passphrase).clone());
        let pair = self.unlock(&key, &cert, &tries, "signing key")?;
        Ok(SignKey { cert: cert.strip_secret_key_material(), pair: Some(pair) })
    }

    /// The signing key's public part, to check signatures.
    fn verify_key(&self, spec: &str, files: &[Cert]) -> Result<SignKey> {
        let (certs, _) = self.find(spec, files, false)?;
        let cert = certs.into_iter().next().ok_or_else(|| Error::usage(format!("no key for '{spec}'")))?;
        Ok(SignKey { cert: cert.strip_secret_key_material(), pair: None })
    }

    /// Unlocks a secret key with the first passphrase that works, else
    /// asks (on a terminal). Caches the result.
    fn unlock(
        &self,
        key: &Key<key::SecretParts, key::UnspecifiedRole>,
        cert: &Cert,
        tries: &[Password],
        what: &str,
    ) -> Result<KeyPair> {
        let fpr = key.fingerprint();
        if let Some((_, p)) = lock(&self.unlocked).iter().find(|(f, _)| *f == fpr) {
            return Ok(p.clone());
        }
        let pair = if !key.secret().is_encrypted() {
            key.clone().into_keypair().map_err(|e| crypto(format!("the {what} {}: {e}", label(cert))))?
        } else {
            let mut found = None;
            for pw in tries {
                if let Ok(k) = key.clone().decrypt_secret(pw) {
                    found = Some(k);
                    break;
                }
            }
            let mut asked = false;
            if found.is_none()
                && self.prompt
                && let Some(pw) = prompt_tty(&format!("Passphrase for the {what} {}: ", label(cert)))
            {
                asked = true;
                if let Ok(k) = key.clone().decrypt_secret(&pw) {
                    found = Some(k);
                    let mut p = lock(&self.passphrase);
                    if p.is_none() {
                        *p = Some(pw);
                    }
                }
            }
            let Some(k) = found else {
                return Err(if tries.is_empty() && !asked {
                    crypto(format!("the {what} {} is protected by a passphrase, and none was given", label(cert)))
                        .hint(if what == "signing key" { "set SIGN_PASSPHRASE" } else { "set PASSPHRASE" })
                } else {
                    crypto(format!("wrong passphrase for the {what} {}", label(cert)))
                });
            };
            k.into_keypair().map_err(|e| crypto(format!("the {what} {}: {e}", label(cert))))?
        };
        lock(&self.unlocked).push((fpr, pair.clone()));
        Ok(pair)
    }

    /// Exports secret keys from the keyring, trying the passphrases we have
    /// (gpg 2.2 asks for it to export), then the terminal. Returns the
    /// certificates and the passphrase that worked, if one was needed.
    fn export_secret(&self, gpg: &Gpg, spec: Option<&str>, what: &str) -> Result<(Vec<Cert>, Option<Password>)> {
        // Unprotected keys export with any passphrase, protected ones with
        // theirs; keys under other passphrases are skipped by gpg.
        let mut attempts: Vec<Option<Password>> = Vec::new();
        attempts.extend(lock(&self.passphrase).clone().map(Some));
        attempts.extend(self.sign_passphrase.clone().map(Some));
        if attempts.is_empty() {
            attempts.push(None);
        }
        let mut got: Vec<Cert> = Vec::new();
        let mut used = None;
        let (mut bad, mut prompted) = (false, false);
        let mut i = 0;
        while i < attempts.len() {
            let pw = attempts[i].clone();
            i += 1;
            let ex = gpg.export_secret(spec, pw.as_ref())?;
            if !ex.certs.is_empty() && used.is_none() {
                used = pw.clone();
            }
            for c in ex.certs {
                if !got.iter().any(|g| g.fingerprint() == c.fingerprint()) {
                    got.push(c);
                }
            }
            if !ex.need && !ex.bad {
                return Ok((got, used));
            }
            bad |= ex.bad;
            // Ask only for a named key, not for the whole keyring.
            if i == attempts.len() && spec.is_some() && self.prompt && !prompted {
                prompted = true;
                if let Some(p) = prompt_tty(&format!("Passphrase for {what}: ")) {
                    attempts.push(Some(p));
                }
            }
        }
        if !got.is_empty() {
            return Ok((got, used));
        }
        Err(if bad {
            crypto(format!("wrong passphrase for {what} (gpg could not export it)"))
        } else {
            crypto(format!("{what} is protected by a passphrase, and none was given"))
                .hint("set SIGN_PASSPHRASE for a signing key, PASSPHRASE for a decryption key")
        })
    }

    /// The decryption key with this key ID or fingerprint, unlocked.
    fn keypair_for(&self, handle: &KeyHandle) -> Result<Option<(Cert, KeyPair)>> {
        if let Some(found) = self.secret_key(handle) {
            return self.unlock_for_decryption(found).map(Some);
        }
        let Some(gpg) = &self.gpg else { return Ok(None) };
        let spec = format!("0x{}", handle.to_hex());
        if lock(&self.queried).contains(&spec) {
            return Ok(None);
        }
        let (certs, pw) = self.export_secret(gpg, Some(&spec), &format!("the secret key {}", handle.to_hex()))?;
        lock(&self.queried).push(spec);
        lock(&self.secrets).extend(certs);
        // The passphrase gpg wanted for the export (maybe typed) unlocks it.
        if let Some(pw) = pw {
            let mut p = lock(&self.passphrase);
            if p.is_none() {
                *p = Some(pw);
            }
        }
        match self.secret_key(handle) {
            Some(found) => self.unlock_for_decryption(found).map(Some),
            None => Ok(None),
        }
    }

    fn secret_key(&self, handle: &KeyHandle) -> Option<(Cert, Key<key::SecretParts, key::UnspecifiedRole>)> {
        let secrets = lock(&self.secrets);
        for cert in secrets.iter() {
            if let Some(ka) = cert.keys().secret().key_handle(handle.clone()).next() {
                return Some((cert.clone(), ka.key().clone()));
            }
        }
        None
    }

    fn unlock_for_decryption(
        &self,
        (cert, key): (Cert, Key<key::SecretParts, key::UnspecifiedRole>),
    ) -> Result<(Cert, KeyPair)> {
        let mut tries = Vec::new();
        tries.extend(lock(&self.passphrase).clone());
        tries.extend(self.sign_passphrase.clone());
        let pair = self.unlock(&key, &cert, &tries, "secret key")?;
        Ok((cert, pair))
    }

    /// Every secret key we can get: for hidden recipients (gpg tries them
    /// all too). Keys of the configured recipients first, then the whole
    /// keyring.
    fn all_secret_keys(&self, round: usize) -> Result<Vec<(Cert, Key<key::SecretParts, key::UnspecifiedRole>)>> {
        if let Some(gpg) = &self.gpg {
            // Key files were read when the keys were built.
            let specs: Vec<Option<String>> = if round == 0 {
                self.recipient_specs.iter().filter(|s| !Path::new(s).is_file()).map(|s| Some(s.clone())).collect()
            } else {
                vec![None]
            };
            for spec in specs {
                let tag = spec.clone().unwrap_or_else(|| "*".into());
                if lock(&self.queried).contains(&tag) {
                    continue;
                }
                lock(&self.queried).push(tag);
                let what = match &spec {
                    Some(s) => format!("the secret key '{s}'"),
                    None => "the secret keys in the keyring".into(),
                };
                match self.export_secret(gpg, spec.as_deref(), &what) {
                    Ok((certs, _)) => lock(&self.secrets).extend(certs),
                    // Some keys may be locked with other passphrases.
                    Err(e) if spec.is_none() => log::debug!("{}", e.message),
                    Err(e) => return Err(e),
                }
            }
        }
        let secrets = lock(&self.secrets);
        let mut out = Vec::new();
        for cert in secrets.iter() {
            for ka in cert.keys().secret() {
                out.push((cert.clone(), ka.key().clone()));
            }
        }
        Ok(out)
    }

    /// The main passphrase, asking for it on the terminal if allowed.
    fn passphrase_or_ask(&self, name: &str) -> Option<Password> {
        if let Some(p) = lock(&self.passphrase).clone() {
            return Some(p);
        }
        if !self.prompt {
            return None;
        }
        let p = prompt_tty(&format!("GnuPG passphrase for decryption ({name}): "))?;
        *lock(&self.passphrase) = Some(p.clone());
        Some(p)
    }
}

/// Exactly one certificate for a spec.
fn one(spec: &str, mut certs: Vec<Cert>) -> Result<Vec<Cert>> {
    certs.dedup_by(|a, b| a.fingerprint() == b.fingerprint());
    if certs.len() > 1 {
        let list: Vec<String> = certs.iter().map(label).collect();
        return Err(Error::usage(format!("'{spec}' matches {} keys: {}", certs.len(), list.join(", ")))
            .hint("give the key's fingerprint"));
    }
    Ok(certs)
}

/// A spec as a key handle, when it is hex (key ID or fingerprint).
fn spec_handle(spec: &str) -> Option<KeyHandle> {
    let s = spec.trim().trim_end_matches('!');
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ' ').collect();
    if matches!(hex.len(), 16 | 40 | 64) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return hex.parse().ok();
    }
    None
}

/// Whether a certificate matches a key spec as gpg would: a key ID (8 or
/// 16 hex digits) or fingerprint of any of its keys, an email address, or
/// a substring of a user ID.
fn cert_matches(cert: &Cert, spec: &str) -> bool {
    let s = spec.trim().trim_end_matches('!');
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s).replace(' ', "").to_ascii_uppercase();
    if matches!(hex.len(), 8 | 16 | 40 | 64) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return cert.keys().any(|ka| ka.key().fingerprint().to_hex().ends_with(&hex));
    }
    if s.contains('@') {
        let want = s.trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
        return cert
            .userids()
            .any(|u| u.userid().email().ok().flatten().is_some_and(|e| e.to_ascii_lowercase() == want));
    }
    let want = s.to_lowercase();
    cert.userids().any(|u| String::from_utf8_lossy(u.userid().value()).to_lowercase().contains(&want))
}

/// All certificates in a key file (armored or binary, one or many).
fn read_key_file(path: &Path) -> Result<Vec<Cert>> {
    let shown = path.display();
    let parser = CertParser::from_file(path).map_err(|e| match e.downcast::<io::Error>() {
        Ok(io) => usage_io(format!("reading the key file {shown}"), io),
        Err(e) => Error::usage(format!("{shown}: not an OpenPGP key file: {e}")),
    })?;
    let mut out = Vec::new();
    for c in parser {
        out.push(c.map_err(|e| Error::usage(format!("{shown}: not an OpenPGP key file: {e}")))?);
    }
    if out.is_empty() {
        return Err(Error::usage(format!("{shown}: no OpenPGP keys in this file")));
    }
    Ok(out)
}

/// An I/O error on a file named on the command line: a usage error.
fn usage_io(what: String, e: io::Error) -> Error {
    Error::usage(Error::io(what, e).message)
}

// ---------------------------------------------------------------------------
// Passphrases

/// The main passphrase from `--passphrase-fd`, `--passphrase-file` or
/// `PASSPHRASE`, in that order.
fn main_passphrase(opts: &KeyOptions, env: &KeyEnv) -> Result<Option<Password>> {
    if let Some(fd) = opts.passphrase_fd {
        return read_fd_line(fd).map(|p| Some(Password::from(p)));
    }
    if let Some(f) = &opts.passphrase_file {
        let data = std::fs::read(f).map_err(|e| usage_io(format!("reading the passphrase file {}", f.display()), e))?;
        let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return Ok(Some(Password::from(line)));
    }
    Ok(env.passphrase.clone().map(Password::from))
}

/// Reads one line from a file descriptor, a byte at a time so nothing after
/// the newline is consumed. The descriptor stays open.
fn read_fd_line(fd: i32) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into a valid, owned byte.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::usage(format!("reading the passphrase from descriptor {fd}: {e}")));
        }
        if n == 0 || b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > 65536 {
            return Err(Error::usage(format!("descriptor {fd}: the passphrase line is too long")));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Asks for a new passphrase (twice when `confirm`); None without a
/// terminal.
fn ask_new(confirm: bool) -> Result<Option<Password>> {
    let Some(p) = prompt_tty("GnuPG passphrase for encryption: ") else { return Ok(None) };
    if p.map(|b| b.is_empty()) {
        return Err(Error::usage("an empty passphrase was entered"));
    }
    if confirm {
        let Some(again) = prompt_tty("Retype the passphrase to confirm: ") else { return Ok(None) };
        if p != again {
            return Err(Error::usage("the two passphrases differ"));
        }
    }
    Ok(Some(p))
}

/// Puts the terminal back as it was, also on early returns.
struct EchoGuard {
    fd: i32,
    saved: libc::termios,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        // SAFETY: restores attributes read from the same open descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved) };
    }
}

/// Reads a line from the controlling terminal with echo off. None when
/// there is no terminal.
fn prompt_tty(prompt: &str) -> Option<Password> {
    use std::os::fd::AsRawFd;
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").ok()?;
    let fd = tty.as_raw_fd();
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(fd) } != 1 {
        return None;
    }
    // SAFETY: termios is plain data; tcgetattr fills it from an open tty.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    let guard = (unsafe { libc::tcgetattr(fd, &mut saved) } == 0).then(|| {
        let mut t = saved;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        // SAFETY: sets attributes on the same open descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) };
        EchoGuard { fd, saved }
    });
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match tty.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    drop(guard);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(Password::from(line))
}

// ---------------------------------------------------------------------------
// The GnuPG keyring, through the gpg binary

struct Gpg {
    binary: PathBuf,
    home: Option<PathBuf>,
}

/// What `gpg --export-secret-keys` gave, and whether it skipped keys for
/// want of a (right) passphrase.
struct Export {
    certs: Vec<Cert>,
    need: bool,
    bad: bool,
}

impl Gpg {
    fn new(binary: Option<PathBuf>, env: &KeyEnv) -> Gpg {
        let home = env.gnupghome.clone().or_else(|| env.home.as_ref().map(|h| h.join(".gnupg")));
        Gpg { binary: binary.unwrap_or_else(|| "gpg".into()), home }
    }

    fn home_label(&self) -> String {
        match &self.home {
            Some(h) => format!("in {}", h.display()),
            None => "(default GNUPGHOME)".into(),
        }
    }

    /// Runs gpg with status lines on stderr; the passphrase, if any, goes
    /// through a pipe (`--passphrase-fd 0`), never the command line.
    fn run(&self, args: &[&str], passphrase: Option<&Password>) -> Result<(Vec<u8>, String)> {
        let mut cmd = Command::new(&self.binary);
        if let Some(h) = &self.home {
            cmd.env("GNUPGHOME", h);
        }
        cmd.env("LC_ALL", "C").env("LANGUAGE", "C");
        cmd.args(["--batch", "--no-tty", "--status-fd", "2", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]);
        cmd.args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            let what = format!("running {} to read the GnuPG keyring", self.binary.display());
            if e.kind() == io::ErrorKind::NotFound {
                Error::usage(format!("{what}: not found")).hint("install GnuPG, or give the keys as key files")
            } else {
                Error::io(what, e)
            }
        })?;
        let mut stdin = child.stdin.take();
        let mut input = passphrase.map(|p| p.map(|b| b.to_vec())).unwrap_or_default();
        input.push(b'\n');
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
            // Wipe our copy of the passphrase.
            input.iter_mut().for_each(|b| *b = 0);
        });
        let out = child.wait_with_output().map_err(|e| Error::io(format!("running {}", self.binary.display()), e))?;
        let _ = writer.join();
        Ok((out.stdout, String::from_utf8_lossy(&out.stderr).into_owned()))
    }

    fn export_public(&self, spec: &str) -> Result<Vec<Cert>> {
        let spec = gpg_spec(spec);
        let (out, _) = self.run(&["--export", "--", &spec], None)?;
        parse_certs(&out)
    }

    fn export_secret(&self, spec: Option<&str>, passphrase: Option<&Password>) -> Result<Export> {
        let spec = spec.map(gpg_spec);
        let mut args = vec!["--export-secret-keys"];
        if let Some(s) = &spec {
            args.extend(["--", s.as_str()]);
        }
        let (out, status) = self.run(&args, passphrase)?;
        let mut ex =
            Export { certs: if out.is_empty() { Vec::new() } else { parse_certs(&out)? }, need: false, bad: false };
        // "[GNUPG:] ERROR export_keys.secret CODE": libgpg-error codes
        // 11 (bad passphrase) and 177 (no passphrase).
        for line in status.lines() {
            let Some(rest) = line.strip_prefix("[GNUPG:] ERROR export_keys.secret ") else { continue };
            match rest.trim().parse::<u32>().map(|c| c & 0xffff) {
                Ok(11) => ex.bad = true,
                Ok(177) => ex.need = true,
                _ => {}
            }
        }
        Ok(ex)
    }
}

/// An email alone matches exactly (gpg would match it as a substring).
fn gpg_spec(spec: &str) -> String {
    let s = spec.trim();
    if s.contains('@') && !s.contains('<') && !s.contains(' ') && !s.starts_with('=') {
        format!("<{s}>")
    } else {
        s.to_string()
    }
}

fn parse_certs(data: &[u8]) -> Result<Vec<Cert>> {
    let mut out = Vec::new();
    for c in CertParser::from_bytes(data).map_err(|e| Error::other(format!("reading keys from gpg: {e}")))? {
        out.push(c.map_err(|e| Error::other(format!("reading keys from gpg: {e}")))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Encryption

/// Our writer behind a mutex (Sequoia wants its sink `Send + Sync`), kept
/// so that it can be handed back when the message is finished.
struct SharedSink<W>(Arc<Mutex<W>>);

impl<W: Write> Write for SharedSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        lock(&self.0).flush()
    }
}

/// Deflate level of volumes by default, inside OpenPGP or gzip. gzip's and
/// gpg's default is 6; 3 costs ~30% less CPU for ~3% more bytes (zlib-rs,
/// bench corpus), the trade restic (zstd) and borg (lz4) make by default.
pub const DEFAULT_LEVEL: u32 = 3;

/// The bottom of the inner writer stack (signature, literal packet): the
/// compressed packet's body, ZIP (raw deflate) built in parallel blocks
/// that end on a byte boundary (a sync flush, or stored blocks) and so
/// concatenate into one deflate stream, as pigz does.
struct ParSink(Arc<Mutex<ParBlocks<()>>>);

impl Write for ParSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One block as raw deflate ending on a byte boundary (sync flush), or
/// ending the stream (`last`). Blocks that do not compress are stored.
fn deflate_block(data: &[u8], last: bool, level: u32) -> Vec<u8> {
    if !data.is_empty() && !looks_compressible(data) {
        return stored_blocks(data, last);
    }
    let mut c = Compress::new(Compression::new(level.min(9)), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let done = c.total_in() as usize;
        let status = match c.compress_vec(&data[done..], &mut out, flush) {
            Ok(s) => s,
            // Cannot happen with valid parameters; storing is always valid.
            Err(_) => return stored_blocks(data, last),
        };
        let all_in = c.total_in() as usize == data.len();
        // Finished: the stream end, or a sync flush that left room.
        if all_in && (status == Status::StreamEnd || (!last && out.len() < out.capacity())) {
            break;
        }
        out.reserve(out.capacity().max(64 << 10));
    }
    if out.len() > data.len() + data.len() / 64 + 16 { stored_blocks(data, last) } else { out }
}

/// Whether samples of the block shrink under quick deflate: already
/// compressed data (media, archives) is stored at memory speed instead of
/// costing deflate time for nothing.
fn looks_compressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 16 << 10;
    if data.len() <= 4 * SAMPLE {
        return true;
    }
    let step = data.len() / 4;
    let (mut inp, mut outp) = (0usize, 0usize);
    for i in 0..4 {
        let s = &data[i * step..i * step + SAMPLE];
        let mut c = Compress::new(Compression::new(1), false);
        let mut out = Vec::with_capacity(SAMPLE + SAMPLE / 8 + 64);
        if c.compress_vec(s, &mut out, FlushCompress::Finish).is_err() {
            return true;
        }
        inp += s.len();
        outp += if c.total_in() as usize == s.len() { out.len() } else { s.len() };
    }
    outp * 100 < inp * 97
}

/// Deflate stored blocks (type 00): byte-aligned, at most 65535 bytes each.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 10);
    let n = data.len().div_ceil(65535).max(1);
    for i in 0..n {
        let c = &data[(i * 65535).min(data.len())..((i + 1) * 65535).min(data.len())];
        out.push(u8::from(last && i + 1 == n));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// A streaming encryptor: write plaintext, call [`EncryptWriter::finish`].
/// Memory stays bounded (about 25 MiB) whatever the size. Compression runs
/// on the rayon pool in 1 MiB blocks, and encryption on a thread of its
/// own, so all three overlap with whatever writes the plaintext.
pub struct EncryptWriter<'a, W: Write + Send + 'static> {
    /// Signer (optional) → literal packet → `ParSink`.
    inner: Option<Message<'a>>,
    par: Arc<Mutex<ParBlocks<()>>>,
    out: Arc<Mutex<W>>,
    /// The size of what precedes the data (ESK packets, headers), once the
    /// encryption thread has written it.
    head: Receiver<u64>,
    head_size: Option<u64>,
    bytes_in: u64,
}

/// Starts an encrypted file written to `inner`: what `gpg --symmetric` (or
/// `--encrypt -r K`, `--sign`) produces with its defaults: SKESK v4 or PKESK
/// v3 per recipient key, SEIPD v1 (MDC), AES-256, a ZIP compressed packet,
/// a one-pass signature when signing, binary literal data.
pub fn encryptor<'a, W: Write + Send + 'static>(keys: &'a Keys, inner: W) -> Result<EncryptWriter<'a, W>> {
    encryptor_with_level(keys, inner, DEFAULT_LEVEL)
}

/// [`encryptor`] with this deflate level (0-9; 0 stores).
pub fn encryptor_with_level<'a, W: Write + Send + 'static>(
    keys: &'a Keys,
    inner: W,
    level: u32,
) -> Result<EncryptWriter<'a, W>> {
    let k = &*keys.0;
    // What the encryption thread needs, checked here so that errors come
    // back at once.
    let passwords =
        if k.symmetric {
            vec![lock(&k.passphrase).clone().ok_or_else(|| {
                Error::usage("encryption needs a passphrase, and none was given").hint("set PASSPHRASE")
            })?]
        } else {
            if recipients(k)?.is_empty() {
                return Err(Error::usage("no key to encrypt to").hint("give --encrypt-key, or a passphrase"));
            }
            Vec::new()
        };
    let out = Arc::new(Mutex::new(inner));
    let (head_tx, head) = sync_channel(1);
    let (sink, owned) = (SharedSink(out.clone()), keys.clone());
    let par = Arc::new(Mutex::new(ParBlocks::new(
        Arc::new(move |d: &[u8], last: bool| deflate_block(d, last, level)),
        move |blocks: Blocks| {
            let k = &*owned.0;
            let written = Arc::new(AtomicU64::new(0));
            let msg = Message::new(Counted(sink, written.clone()));
            let enc = if k.symmetric {
                Encryptor::with_passwords(msg, passwords)
            } else {
                Encryptor::for_recipients(msg, recipients(k)?)
            };
            // SEIPD v1: never set an AEAD algorithm (gpg 2.2 cannot read SEIPD v2).
            let msg = enc.symmetric_algo(SymmetricAlgorithm::AES256).build().map_err(pgp_setup)?;
            let mut msg = ArbitraryWriter::new(msg, Tag::CompressedData).map_err(pgp_setup)?;
            msg.write_all(&[u8::from(CompressionAlgorithm::Zip)]).map_err(|e| Error::io("encrypting", e))?;
            let _ = head_tx.send(written.load(Ordering::Relaxed));
            blocks.copy_to(&mut msg)?;
            msg.finalize().map_err(|e| pgp_error("encrypting", e))
        },
    )));
    let mut plain = Message::new(ParSink(par.clone()));
    if let Some(pair) = k.signer.as_ref().and_then(|s| s.pair.clone()) {
        plain = Signer::new(plain, pair).map_err(pgp_setup)?.build().map_err(pgp_setup)?;
    }
    let plain = LiteralWriter::new(plain).format(DataFormat::Binary).build().map_err(pgp_setup)?;
    Ok(EncryptWriter { inner: Some(plain), par, out, head, head_size: None, bytes_in: 0 })
}

/// A certificate's keys that may encrypt (valid now, supported, not revoked),
/// as gpg picks them.
fn encryption_subkeys(cert: &Cert) -> impl Iterator<Item = ValidErasedKeyAmalgamation<'_, key::PublicParts>> {
    cert.keys()
        .with_policy(policy(), None)
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
}

/// The encryption keys of the recipients, hidden ones without their key ID.
fn recipients(k: &Inner) -> Result<Vec<Recipient<'_>>> {
    let mut out = Vec::new();
    for (cert, hidden) in &k.recipients {
        for ka in encryption_subkeys(cert) {
            let r = Recipient::from(ka);
            out.push(if *hidden { r.set_key_handle(None).map_err(pgp_setup)? } else { r });
        }
    }
    Ok(out)
}

/// Counts what goes through (the size of the message's head).
struct Counted<W>(W, Arc<AtomicU64>);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn pgp_setup(e: openpgp::anyhow::Error) -> Error {
    pgp_error("encrypting", e)
}

/// An error from Sequoia's writer: an I/O error of ours passes through.
fn pgp_error(what: &str, e: openpgp::anyhow::Error) -> Error {
    match e.downcast::<io::Error>() {
        Ok(io) => io_passthrough(what, io),
        Err(e) => Error::other(format!("{what}: {e}")),
    }
}

/// An I/O error that may carry one of our errors.
fn io_passthrough(what: &str, e: io::Error) -> Error {
    crate::error::carried(e).unwrap_or_else(|e| Error::io(what, e))
}

impl<W: Write + Send + 'static> EncryptWriter<'_, W> {
    /// Plaintext bytes written so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// The size the encrypted file would have if finished now, for cutting
    /// volumes: the message head, the compressed data as estimated (see
    /// [`ParBlocks::estimated_size`]; the same for the same input, however
    /// the threads ran), and a margin for packet framing and the MDC.
    pub fn estimated_size(&mut self) -> u64 {
        if self.head_size.is_none() {
            // Waits once for the encryption thread's start (key derivation).
            self.head_size = Some(self.head.recv().unwrap_or(0));
        }
        // Sequoia's packet writers buffer plaintext: count what was written.
        let body = lock(&self.par).estimated_size_for(self.bytes_in);
        self.head_size.unwrap_or(0) + body + body / 512 + 64
    }

    /// Ends the message (signature, MDC) and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.seal()?;
        self.wait()
    }

    /// Ends the plaintext without waiting for compression and encryption
    /// to catch up; [`EncryptWriter::wait`] does.
    pub fn seal(&mut self) -> Result<()> {
        if let Some(inner) = self.inner.take() {
            inner.finalize().map_err(|e| pgp_error("encrypting", e))?;
            lock(&self.par).seal()?;
        }
        Ok(())
    }

    /// Whether the encrypted file is complete (after [`EncryptWriter::seal`]).
    pub fn is_done(&self) -> bool {
        self.inner.is_none() && lock(&self.par).is_done()
    }

    /// Waits for the end of the encrypted file; returns the inner writer.
    pub fn wait(self) -> Result<W> {
        if self.inner.is_some() {
            return Err(Error::other("encryptor not sealed"));
        }
        let par = Arc::try_unwrap(self.par).map_err(|_| Error::other("encryption input still in use"))?;
        par.into_inner().unwrap_or_else(|p| p.into_inner()).wait()?;
        let out = Arc::try_unwrap(self.out).map_err(|_| Error::other("encryption output still in use"))?;
        Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<W: Write + Send + 'static> Write for EncryptWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let s = self.inner.as_mut().ok_or_else(|| io::Error::other("encryptor already finished"))?;
        let n = s.write(buf)?;
        self.bytes_in += n as u64;
        Ok(n)
    }
    /// Nothing to do: forcing data out would cut compression blocks short.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Decryption

/// The error the helper decided on, reported instead of Sequoia's.
type Failure = Arc<Mutex<Option<Error>>>;

struct Helper {
    keys: Keys,
    name: String,
    failure: Failure,
    /// The fingerprint of the required signature's key, once verified.
    signer: Arc<Mutex<Option<Fingerprint>>>,
    /// An encryption container was seen before any content.
    encrypted: bool,
}

impl Helper {
    fn fail(&self, e: Error) -> openpgp::anyhow::Error {
        let msg = e.message.clone();
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(e);
        }
        openpgp::anyhow::anyhow!(msg)
    }

    fn not_encrypted(&self) -> openpgp::anyhow::Error {
        self.fail(Error::corrupt(format!(
            "{}: not encrypted (an OpenPGP message without an encryption layer)",
            self.name
        )))
    }
}

fn is_wildcard(h: &KeyHandle) -> bool {
    matches!(h, KeyHandle::KeyID(id) if id.is_wildcard())
}

/// Whether a secret key may decrypt (no usable binding: try it anyway).
fn can_decrypt(cert: &Cert, key: &Key<key::SecretParts, key::UnspecifiedRole>) -> bool {
    let Ok(vc) = cert.with_policy(read_policy(), None) else { return true };
    match vc.keys().key_handle(key.key_handle()).next() {
        Some(ka) => ka.key_flags().is_none_or(|f| f.for_storage_encryption() || f.for_transport_encryption()),
        None => true,
    }
}

impl VerificationHelper for Helper {
    fn inspect(&mut self, pp: &PacketParser) -> openpgp::Result<()> {
        match &pp.packet {
            Packet::SEIP(_) => self.encrypted = true,
            Packet::Literal(_) | Packet::CompressedData(_) | Packet::OnePassSig(_) | Packet::Signature(_)
                if !self.encrypted =>
            {
                return Err(self.not_encrypted());
            }
            _ => {}
        }
        Ok(())
    }

    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.keys.0.signer.iter().map(|s| s.cert.clone()).collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let want = self.keys.0.signer.as_ref().map(|s| &s.cert);
        let mut encrypted = false;
        let mut good = None;
        let mut problems = Vec::new();
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::Encryption { .. } => encrypted = true,
                MessageLayer::SignatureGroup { results } => {
                    for r in results {
                        match r {
                            Ok(g) => {
                                let fpr = g.ka.cert().fingerprint();
                                if want.is_some_and(|w| w.fingerprint() == fpr) {
                                    good = Some(fpr);
                                } else {
                                    problems.push(format!("a signature by {fpr}"));
                                }
                            }
                            Err(e) => problems.push(describe_verification(&e)),
                        }
                    }
                }
                _ => {}
            }
        }
        if !encrypted {
            return Err(self.not_encrypted());
        }
        if let Some(w) = want {
            match good {
                Some(fpr) => *lock(&self.signer) = Some(fpr),
                None => {
                    let found = if problems.is_empty() { "it is not signed".to_string() } else { problems.join("; ") };
                    return Err(self.fail(Error::corrupt(format!(
                        "{}: no valid signature by the signing key {}: {found}",
                        self.name,
                        label(w)
                    ))));
                }
            }
        }
        Ok(())
    }
}

fn describe_verification(e: &VerificationError) -> String {
    match e {
        VerificationError::MissingKey { sig } => {
            let by: Vec<String> = sig.get_issuers().iter().map(|h| h.to_hex()).collect();
            format!("a signature by another key ({})", by.join(", "))
        }
        VerificationError::UnboundKey { error, .. } | VerificationError::BadKey { error, .. } => {
            format!("a signature by an invalid key: {error}")
        }
        VerificationError::BadSignature { error, .. } => format!("a bad signature (modified data?): {error}"),
        VerificationError::MalformedSignature { error, .. } => format!("a malformed signature: {error}"),
        other => format!("an unusable signature: {other}"),
    }
}

impl DecryptionHelper for Helper {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let k = &self.keys.0;
        let mut key_error: Option<Error> = None;
        let mut damaged = false;
        // Keys the file names.
        for pkesk in pkesks {
            let Some(h) = pkesk.recipient().filter(|h| !is_wildcard(h)) else { continue };
            match k.keypair_for(&h) {
                Ok(Some((cert, mut pair))) => match pkesk.decrypt(&mut pair, sym_algo) {
                    Some((algo, sk)) if decrypt(algo, &sk) => return Ok(Some(cert)),
                    _ => damaged = true,
                },
                Ok(None) => {}
                Err(e) => {
                    key_error.get_or_insert(e);
                }
            }
        }
        // Hidden recipients: every secret key we can get, as gpg does.
        let hidden: Vec<&PKESK> = pkesks.iter().filter(|p| p.recipient().is_none_or(|h| is_wildcard(&h))).collect();
        if !hidden.is_empty() {
            let mut tried: Vec<Fingerprint> = Vec::new();
            for round in 0..2 {
                let candidates = match k.all_secret_keys(round) {
                    Ok(c) => c,
                    Err(e) => {
                        key_error.get_or_insert(e);
                        continue;
                    }
                };
                for (cert, key) in candidates {
                    if tried.contains(&key.fingerprint()) || !can_decrypt(&cert, &key) {
                        continue;
                    }
                    tried.push(key.fingerprint());
                    let matching: Vec<&&PKESK> = hidden.iter().filter(|p| p.pk_algo() == key.pk_algo()).collect();
                    if matching.is_empty() {
                        continue;
                    }
                    let mut pair = match k.unlock_for_decryption((cert.clone(), key)) {
                        Ok((_, p)) => p,
                        Err(e) => {
                            key_error.get_or_insert(e);
                            continue;
                        }
                    };
                    for pkesk in matching {
                        if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo)
                            && decrypt(algo, &sk)
                        {
                            return Ok(Some(cert));
                        }
                    }
                }
            }
        }
        // A passphrase.
        if !skesks.is_empty() {
            match k.passphrase_or_ask(&self.name) {
                Some(pw) => {
                    for s in skesks {
                        if let Ok((algo, sk)) = s.decrypt(&pw)
                            && decrypt(algo, &sk)
                        {
                            return Ok(None);
                        }
                    }
                    if key_error.is_none() {
                        return Err(self.fail(
                            crypto(format!("wrong passphrase for {}", self.name))
                                .hint("PASSPHRASE must be the passphrase the backup was made with"),
                        ));
                    }
                }
                None if key_error.is_none() => {
                    return Err(self.fail(
                        crypto(format!("{} is encrypted with a passphrase, and none was given", self.name))
                            .hint("set PASSPHRASE, or use --passphrase-file/--passphrase-fd"),
                    ));
                }
                None => {}
            }
        }
        if let Some(e) = key_error {
            return Err(self.fail(e.context(&self.name)));
        }
        if damaged {
            return Err(self.fail(Error::corrupt(format!(
                "{}: the session key does not decrypt the data (damaged file?)",
                self.name
            ))));
        }
        let to: Vec<String> = pkesks
            .iter()
            .map(|p| match p.recipient().filter(|h| !is_wildcard(h)) {
                Some(h) => h.to_hex(),
                None => "a hidden recipient".into(),
            })
            .collect();
        Err(self.fail(
            crypto(format!("{}: no secret key to decrypt it; it is encrypted to {}", self.name, to.join(", ")))
                .hint("import the secret key into GnuPG, or give it as a key file"),
        ))
    }
}

/// The encrypted input: our reader behind a mutex (Sequoia wants `Sync`);
/// its errors are tagged so they are not taken for damaged data.
struct Source<R> {
    r: Mutex<R>,
    name: String,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.r.get_mut().unwrap_or_else(|p| p.into_inner());
        r.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            io::Error::other(io_passthrough(&format!("reading {}", self.name), e))
        })
    }
}

/// A streaming decryptor: reads the plaintext of an encrypted file.
///
/// The integrity check (MDC) and a required signature are verified when the
/// end is reached: the last [`DECRYPT_BUFFER`] bytes are only released
/// after that, and an error is returned instead of end-of-file. A reader
/// that stops early (a tar reader at its end marker) should call
/// [`DecryptReader::finish`] to have the rest checked. Errors are
/// `io::Error`s carrying an [`Error`]: `Kind::Crypto` for a wrong
/// passphrase or missing secret key, `Kind::Corrupt` for damaged, modified,
/// truncated, unencrypted or unsigned data.
pub struct DecryptReader<'a> {
    inner: Decryptor<'a, Helper>,
    name: String,
    failure: Failure,
    signer: Arc<Mutex<Option<Fingerprint>>>,
    /// The first error, returned again on every later read.
    failed: Option<(Kind, String, Option<String>)>,
    bytes: u64,
}

/// Opens an encrypted file for reading. The session key is decrypted here,
/// so a wrong passphrase or a missing secret key is reported now.
/// `name` is used in messages.
pub fn decryptor<'a, R: Read + Send + 'a>(keys: &Keys, name: &str, r: R) -> Result<DecryptReader<'a>> {
    decryptor_with_buffer(keys, name, r, DECRYPT_BUFFER)
}

/// [`decryptor`] holding back `buffer` bytes of plaintext (at least
/// [`MIN_DECRYPT_BUFFER`]) until what follows is checked: a file smaller
/// than that has its signature and MDC verified before any plaintext is
/// released. Memory use is about twice `buffer`.
pub fn decryptor_with_buffer<'a, R: Read + Send + 'a>(
    keys: &Keys,
    name: &str,
    r: R,
    buffer: usize,
) -> Result<DecryptReader<'a>> {
    let failure: Failure = Arc::new(Mutex::new(None));
    let signer = Arc::new(Mutex::new(None));
    let helper = Helper {
        keys: keys.clone(),
        name: name.to_string(),
        failure: failure.clone(),
        signer: signer.clone(),
        encrypted: false,
    };
    let src = Source { r: Mutex::new(r), name: name.to_string() };
    let built = DecryptorBuilder::from_reader(src)
        .and_then(|b| b.buffer_size(buffer.max(MIN_DECRYPT_BUFFER)).with_policy(read_policy(), None, helper));
    match built {
        Ok(inner) => Ok(DecryptReader { inner, name: name.to_string(), failure, signer, failed: None, bytes: 0 }),
        Err(e) => Err(classify(name, &failure, e)),
    }
}

/// Checks early that `r` (an encrypted file, e.g. the newest manifest of
/// the chain) can be decrypted with these keys: `Kind::Crypto` for a wrong
/// passphrase or a missing secret key.
pub fn check_decryptable<R: Read + Send>(keys: &Keys, name: &str, r: R) -> Result<()> {
    let mut d = decryptor(keys, name, r)?;
    let mut b = [0u8; 1];
    d.read(&mut b).map_err(|e| io_passthrough(name, e))?;
    Ok(())
}

/// Sequoia's error as ours: the helper's verdict, an I/O error of the
/// input, or damaged data.
fn classify(name: &str, failure: &Failure, e: openpgp::anyhow::Error) -> Error {
    if let Some(f) = lock(failure).take() {
        return f;
    }
    match e.downcast::<io::Error>() {
        Ok(io) => classify_io(name, failure, io),
        Err(e) => {
            let detail = match e.downcast_ref::<openpgp::Error>() {
                Some(pe) => describe_pgp(&pe.to_string()),
                None => describe_pgp(&format!("{e:#}")),
            };
            Error::corrupt(format!("{name}: {detail}"))
        }
    }
}

fn classify_io(name: &str, failure: &Failure, e: io::Error) -> Error {
    if let Some(f) = lock(failure).take() {
        return f;
    }
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return io_passthrough(name, e);
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return Error::corrupt(format!("{name}: the encrypted file is truncated"));
    }
    Error::corrupt(format!("{name}: {}", describe_pgp(&e.to_string())))
}

fn describe_pgp(text: &str) -> String {
    if text.contains("manipulated") {
        return "the encrypted data was modified or damaged (integrity check failed)".into();
    }
    if text.contains("Truncated") || text.contains("truncated") || text.contains("EOF") {
        return "the encrypted file is truncated".into();
    }
    format!("damaged encrypted data: {text}")
}

impl DecryptReader<'_> {
    /// Plaintext bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The fingerprint of the signing key whose signature was verified
    /// (known once the end was reached).
    pub fn signer(&self) -> Option<String> {
        lock(&self.signer).as_ref().map(|f| f.to_hex())
    }

    /// Reads and discards the rest, so that the integrity check and the
    /// signature are verified; returns the total plaintext size.
    pub fn finish(mut self) -> Result<u64> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| io_passthrough(&self.name, e))?;
        Ok(self.bytes)
    }
}

impl Read for DecryptReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message, hint)) = &self.failed {
            return Err(io::Error::other(Error { kind: *kind, message: message.clone(), hint: hint.clone() }));
        }
        // After an error Sequoia's decryptor must not be read again.
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let err = classify_io(&self.name, &self.failure, e);
                self.failed = Some((err.kind, err.message.clone(), err.hint.clone()));
                Err(io::Error::other(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn deflate_blocks_concatenate() {
        let mut s = 7u64;
        let random: Vec<u8> = (0..200_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let text = b"some text that compresses well ".repeat(5000);
        assert!(!looks_compressible(&random));
        assert!(looks_compressible(&text));
        let pieces: [&[u8]; 4] = [&text, &random, b"", &text[..1000]];
        for last_empty in [false, true] {
            let mut stream = Vec::new();
            let mut plain = Vec::new();
            for (i, p) in pieces.iter().enumerate() {
                let last = i == pieces.len() - 1 && !last_empty;
                stream.extend(deflate_block(p, last, DEFAULT_LEVEL));
                plain.extend_from_slice(p);
            }
            if last_empty {
                stream.extend(deflate_block(b"", true, DEFAULT_LEVEL));
            }
            assert!(inflate(&stream) == plain);
        }
        // Stored: 5 bytes per 64 KiB.
        assert_eq!(stored_blocks(&random, true).len(), random.len() + 4 * 5);
        assert!(inflate(&stored_blocks(&random, true)) == random);
        assert_eq!(inflate(&stored_blocks(b"", true)), b"");
    }

    #[test]
    fn key_specs() {
        assert!(spec_handle("0xF7369470A490B134").is_some());
        assert!(spec_handle("8C81 0B15 3070 8330 D10A  C081 F736 9470 A490 B134").is_some());
        assert!(spec_handle("A490B134").is_none());
        assert!(spec_handle("t@example.org").is_none());
        assert_eq!(gpg_spec("t@example.org"), "<t@example.org>");
        assert_eq!(gpg_spec("Test User"), "Test User");
        assert_eq!(gpg_spec("<t@example.org>"), "<t@example.org>");
    }
}
