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

mod decrypt;
mod encrypt;
pub(crate) mod framing;
mod gpg;
mod passphrase;
mod seek;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sequoia_openpgp as openpgp;

use openpgp::cert::{Cert, CertParser};
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::{Key, key};
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, StandardPolicy};
use openpgp::types::{HashAlgorithm, SymmetricAlgorithm};
use openpgp::{Fingerprint, KeyHandle};

use crate::error::{Error, Kind, Result};
use crate::io::lock;

pub use self::decrypt::{
    DecryptReader, check_decryptable, check_passphrase_message, decryptor, decryptor_with_buffer, passphrase_encrypted,
    passphrase_message,
};
use self::encrypt::encryption_subkeys;
pub use self::encrypt::{DEFAULT_LEVEL, EncryptWriter, Layout, encryptor, encryptor_with_level};
use self::gpg::Gpg;
use self::passphrase::{ask_new, main_passphrase, prompt_tty};
pub use self::seek::{open_at, open_whole};

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
    /// Session keys the passphrase opened, by their key packet: a file
    /// opened twice in a job (checked early, then read) costs one key
    /// derivation. The last [`OPENED_MAX`] only.
    opened: Mutex<Vec<(Vec<u8>, Opened)>>,
    sign_passphrase: Option<Password>,
    gpg: Option<Gpg>,
    prompt: bool,
    symmetric: bool,
}

/// What a passphrase key packet gave: its algorithm and session key.
type Opened = (Option<SymmetricAlgorithm>, openpgp::crypto::SessionKey);

/// Session keys kept in [`Inner::opened`].
const OPENED_MAX: usize = 8;

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

/// The policy for what we write and for signatures: Sequoia's standard one,
/// but for SHA-1 in a certificate's own binding signatures, which GnuPG
/// accepts and which keys made before 2014 carry (duplicity's users' keys,
/// duplicity's own test keys): Sequoia rejects them from 2026-02. Only
/// second pre-image resistance is accepted; SHA-1 signatures over data
/// (collision resistance) stay rejected.
fn policy() -> &'static StandardPolicy<'static> {
    static P: OnceLock<StandardPolicy<'static>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = StandardPolicy::new();
        p.accept_hash_property(HashAlgorithm::SHA1, HashAlgoSecurity::SecondPreImageResistance);
        p
    })
}

/// For reading: also the old ciphers of gpg 1.x (CAST5 was its default),
/// so that old backups stay readable. We never write them.
fn read_policy() -> &'static StandardPolicy<'static> {
    static P: OnceLock<StandardPolicy<'static>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = StandardPolicy::new();
        p.accept_hash_property(HashAlgorithm::SHA1, HashAlgoSecurity::SecondPreImageResistance);
        #[allow(deprecated)]
        for a in [SymmetricAlgorithm::CAST5, SymmetricAlgorithm::IDEA, SymmetricAlgorithm::TripleDES] {
            p.accept_symmetric_algo(a);
        }
        p
    })
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
            opened: Mutex::new(Vec::new()),
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
            opened: Mutex::new(Vec::new()),
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

#[cfg(test)]
mod tests {
    use super::gpg::gpg_spec;
    use super::*;

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

    fn sealed(keys: &Keys, text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut w = encryptor(keys, Vec::new()).unwrap();
        w.write_all(text).unwrap();
        w.finish().unwrap()
    }

    fn open(keys: &Keys, cipher: &[u8]) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut v = Vec::new();
        decryptor(keys, "f.gpg", cipher)?.read_to_end(&mut v).map_err(|e| Error::other(e.to_string()))?;
        Ok(v)
    }

    /// A file opened twice in a job is opened by the session key its first
    /// opening found (no second key derivation): shown by changing the
    /// passphrase in between. Other files still need the right passphrase.
    #[test]
    fn session_keys_are_kept_for_the_files_they_opened() {
        let keys = Keys::with_passphrase("right");
        let (a, b) = (sealed(&keys, b"first file"), sealed(&keys, b"second file"));
        assert_eq!(open(&keys, &a).unwrap(), b"first file");
        *lock(&keys.0.passphrase) = Some(Password::from("wrong"));
        assert_eq!(open(&keys, &a).unwrap(), b"first file");
        let e = open(&keys, &b).unwrap_err();
        assert_eq!(e.kind, Kind::Crypto, "{}", e.message);
        // Another job's keys share nothing.
        assert_eq!(open(&Keys::with_passphrase("wrong"), &a).unwrap_err().kind, Kind::Crypto);
        assert_eq!(open(&Keys::with_passphrase("right"), &b).unwrap(), b"second file");
    }
}
