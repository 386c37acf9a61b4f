//! Decryption and signature checks, streamed with a bounded buffer;
//! distinct errors for a wrong passphrase, a missing secret key, bad data.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::crypto::SessionKey;
use openpgp::packet::{Key, PKESK, Packet, SKESK, key};
use openpgp::parse::stream::{
    DecryptionHelper, Decryptor, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use openpgp::parse::{PacketParser, Parse};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Fingerprint, KeyHandle};

use super::encrypt::{encryptor, io_passthrough};
use super::{DECRYPT_BUFFER, Inner, Keys, MIN_DECRYPT_BUFFER, OPENED_MAX, crypto, label, lock, read_policy};
use crate::error::{Error, Kind, Result};

/// Passphrase-encrypted session key packets tried per file (gpg,
/// duplicity and dup write one; any after these are ignored).
const MAX_SKESKS: usize = 3;

/// The error the helper decided on, reported instead of Sequoia's.
pub(super) type Failure = Arc<Mutex<Option<Error>>>;

pub(super) struct Helper {
    pub(super) keys: Keys,
    pub(super) name: String,
    pub(super) failure: Failure,
    /// The fingerprint of the required signature's key, once verified.
    pub(super) signer: Arc<Mutex<Option<Fingerprint>>>,
    /// An encryption container was seen before any content.
    pub(super) encrypted: bool,
}

impl Helper {
    pub(super) fn fail(&self, e: Error) -> openpgp::anyhow::Error {
        let msg = e.message.clone();
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(e);
        }
        openpgp::anyhow::anyhow!(msg)
    }

    pub(super) fn not_encrypted(&self) -> openpgp::anyhow::Error {
        self.fail(Error::corrupt(format!(
            "{}: not encrypted (an OpenPGP message without an encryption layer)",
            self.name
        )))
    }
}

pub(super) fn is_wildcard(h: &KeyHandle) -> bool {
    matches!(h, KeyHandle::KeyID(id) if id.is_wildcard())
}

/// Whether a secret key may decrypt (no usable binding: try it anyway).
pub(super) fn can_decrypt(cert: &Cert, key: &Key<key::SecretParts, key::UnspecifiedRole>) -> bool {
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

pub(super) fn describe_verification(e: &VerificationError) -> String {
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

/// What the decryption attempts ran into, for the error when none worked.
#[derive(Default)]
struct Attempts {
    /// The first key that could not be used (locked, unreadable).
    key_error: Option<Error>,
    /// A session key was recovered but did not decrypt the data.
    damaged: bool,
}

/// Sequoia's callback: true when the session key decrypts the data.
type TryKey<'a> = &'a mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool;

impl DecryptionHelper for Helper {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: TryKey,
    ) -> openpgp::Result<Option<Cert>> {
        // sequoia-openpgp 2.4.2 panics in its callback ("This shouldn't
        // fail", parse.rs) when the encrypted packet ends before its prefix
        // and MDC: a truncated file, reported as such.
        let truncated = Cell::new(false);
        let mut guarded = |algo: Option<SymmetricAlgorithm>, sk: &SessionKey| {
            panic::catch_unwind(AssertUnwindSafe(|| decrypt(algo, sk))).unwrap_or_else(|_| {
                truncated.set(true);
                false
            })
        };
        let decrypt: TryKey = &mut guarded;
        let cut = || self.fail(Error::corrupt(format!("{}: the encrypted file is truncated", self.name)));
        let k = &self.keys.0;
        let mut seen = Attempts::default();
        if let Some(cert) = named_recipients(k, pkesks, sym_algo, decrypt, &mut seen) {
            return Ok(Some(cert));
        }
        if let Some(cert) = hidden_recipients(k, pkesks, sym_algo, decrypt, &mut seen) {
            return Ok(Some(cert));
        }
        if truncated.get() {
            return Err(cut());
        }
        if !skesks.is_empty() {
            let opened = self.passphrase(skesks, decrypt, &seen);
            if truncated.get() {
                return Err(cut());
            }
            if opened? {
                return Ok(None);
            }
        }
        Err(self.no_key(pkesks, seen))
    }
}

/// The keys the file names: the certificate of the one that decrypts it.
fn named_recipients(
    k: &Inner,
    pkesks: &[PKESK],
    sym_algo: Option<SymmetricAlgorithm>,
    decrypt: TryKey,
    seen: &mut Attempts,
) -> Option<Cert> {
    for pkesk in pkesks {
        let Some(h) = pkesk.recipient().filter(|h| !is_wildcard(h)) else { continue };
        match k.keypair_for(&h) {
            Ok(Some((cert, mut pair))) => match pkesk.decrypt(&mut pair, sym_algo) {
                Some((algo, sk)) if decrypt(algo, &sk) => return Some(cert),
                _ => seen.damaged = true,
            },
            Ok(None) => {}
            Err(e) => {
                seen.key_error.get_or_insert(e);
            }
        }
    }
    None
}

/// Hidden recipients: every secret key we can get is tried, as gpg does.
fn hidden_recipients(
    k: &Inner,
    pkesks: &[PKESK],
    sym_algo: Option<SymmetricAlgorithm>,
    decrypt: TryKey,
    seen: &mut Attempts,
) -> Option<Cert> {
    let hidden: Vec<&PKESK> = pkesks.iter().filter(|p| p.recipient().is_none_or(|h| is_wildcard(&h))).collect();
    if hidden.is_empty() {
        return None;
    }
    let mut tried: Vec<Fingerprint> = Vec::new();
    for round in 0..2 {
        let candidates = match k.all_secret_keys(round) {
            Ok(c) => c,
            Err(e) => {
                seen.key_error.get_or_insert(e);
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
                    seen.key_error.get_or_insert(e);
                    continue;
                }
            };
            for pkesk in matching {
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &sk)
                {
                    return Some(cert);
                }
            }
        }
    }
    None
}

impl Helper {
    /// The passphrase (given, or asked for): true when it decrypts the
    /// file. A wrong or missing one is the error, unless a key could not be
    /// used (that error says more).
    fn passphrase(&self, skesks: &[SKESK], decrypt: TryKey, seen: &Attempts) -> openpgp::Result<bool> {
        match self.keys.0.passphrase_or_ask(&self.name) {
            Some(pw) => {
                // Each costs a key derivation of up to 65 MiB of hashing: a
                // file of many would take minutes.
                for s in skesks.iter().take(MAX_SKESKS) {
                    let id = openpgp::serialize::MarshalInto::to_vec(s).ok();
                    let known = id
                        .as_ref()
                        .and_then(|id| lock(&self.keys.0.opened).iter().find(|(k, _)| k == id).map(|(_, o)| o.clone()));
                    let opened = match known {
                        Some(o) => Ok(o),
                        None => s.decrypt(&pw),
                    };
                    if let Ok((algo, sk)) = opened
                        && decrypt(algo, &sk)
                    {
                        if let Some(id) = id {
                            let mut kept = lock(&self.keys.0.opened);
                            if !kept.iter().any(|(k, _)| *k == id) {
                                if kept.len() >= OPENED_MAX {
                                    kept.remove(0);
                                }
                                kept.push((id, (algo, sk)));
                            }
                        }
                        return Ok(true);
                    }
                }
                if seen.key_error.is_none() {
                    return Err(self.fail(
                        crypto(format!("wrong passphrase for {}", self.name))
                            .hint("PASSPHRASE must be the passphrase the backup was made with"),
                    ));
                }
            }
            None if seen.key_error.is_none() => {
                return Err(self.fail(
                    crypto(format!("{} is encrypted with a passphrase, and none was given", self.name))
                        .hint("set PASSPHRASE, or use --passphrase-file/--passphrase-fd"),
                ));
            }
            None => {}
        }
        Ok(false)
    }

    /// The error when nothing decrypted the file.
    fn no_key(&self, pkesks: &[PKESK], seen: Attempts) -> openpgp::anyhow::Error {
        if let Some(e) = seen.key_error {
            return self.fail(e.context(&self.name));
        }
        if seen.damaged {
            return self.fail(Error::corrupt(format!(
                "{}: the session key does not decrypt the data (damaged file?)",
                self.name
            )));
        }
        let to: Vec<String> = pkesks
            .iter()
            .map(|p| match p.recipient().filter(|h| !is_wildcard(h)) {
                Some(h) => h.to_hex(),
                None => "a hidden recipient".into(),
            })
            .collect();
        self.fail(
            crypto(format!("{}: no secret key to decrypt it; it is encrypted to {}", self.name, to.join(", ")))
                .hint("import the secret key into GnuPG, or give it as a key file"),
        )
    }
}

/// The encrypted input: our reader behind a mutex (Sequoia wants `Sync`);
/// its errors are tagged so they are not taken for damaged data.
pub(super) struct Source<R> {
    pub(super) r: Mutex<R>,
    pub(super) name: String,
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

/// The session key of an encrypted file whose key packets were read
/// elsewhere, found as [`decryptor`] finds it (the same keys tried, the
/// same errors); `works` tells whether a key decrypts the data.
pub(super) fn session_key(
    keys: &Keys,
    name: &str,
    pkesks: &[PKESK],
    skesks: &[SKESK],
    works: &mut dyn FnMut(SymmetricAlgorithm, &SessionKey) -> bool,
) -> Result<(SymmetricAlgorithm, SessionKey)> {
    let failure: Failure = Arc::new(Mutex::new(None));
    let mut helper = Helper {
        keys: keys.clone(),
        name: name.to_string(),
        failure: failure.clone(),
        signer: Arc::new(Mutex::new(None)),
        encrypted: true,
    };
    let mut found = None;
    let r = helper.decrypt(pkesks, skesks, None, &mut |algo, sk| match algo {
        Some(a) if works(a, sk) => {
            found = Some((a, sk.clone()));
            true
        }
        _ => false,
    });
    match (r, found) {
        (Ok(_), Some(k)) => Ok(k),
        (Ok(_), None) => Err(Error::corrupt(format!("{name}: no session key decrypts the data"))),
        (Err(e), _) => Err(classify(name, &failure, e)),
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

/// True when the encrypted file whose start is `head` opens with a
/// passphrase (it has an SKESK packet); false when only secret keys open it.
/// Only the packets before the encrypted data are read.
pub fn passphrase_encrypted(name: &str, head: &[u8]) -> Result<bool> {
    use openpgp::parse::PacketParserResult;
    let bad = |e: openpgp::anyhow::Error| Error::corrupt(format!("{name}: {}", describe_pgp(&format!("{e:#}"))));
    let mut ppr = PacketParser::from_bytes(head).map_err(bad)?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::SKESK(_) => return Ok(true),
            Packet::PKESK(_) => {}
            _ => return Ok(false),
        }
        ppr = pp.next().map_err(bad)?.1;
    }
    Ok(false)
}

/// What a passphrase check message holds.
const CHECK_TEXT: &[u8] = b"dup passphrase check\n";

/// A small message encrypted with the passphrase of `keys` (None without
/// one), for a later stage to check its own passphrase against
/// ([`check_passphrase_message`]): dup-sig, having opened the chain with
/// its passphrase, hands dup-pack this instead of the passphrase.
pub fn passphrase_message(keys: &Keys) -> Result<Option<Vec<u8>>> {
    let Some(pw) = lock(&keys.0.passphrase).clone() else { return Ok(None) };
    let only = Keys::with_passphrase(pw.map(|b| b.to_vec()));
    let mut w = encryptor(&only, Vec::new())?;
    w.write_all(CHECK_TEXT).map_err(|e| io_passthrough("encrypting the passphrase check", e))?;
    w.finish().map(Some)
}

/// Checks that the passphrase of `keys` opens a [`passphrase_message`]:
/// `Kind::Crypto` when it does not. False (nothing checked) when `keys` has
/// no passphrase (public-key encryption).
pub fn check_passphrase_message(keys: &Keys, message: &[u8], what: &str) -> Result<bool> {
    let Some(pw) = lock(&keys.0.passphrase).clone() else { return Ok(false) };
    let only = Keys::with_passphrase(pw.map(|b| b.to_vec()));
    let mut d = decryptor(&only, what, message)?;
    let mut text = Vec::new();
    d.read_to_end(&mut text).map_err(|e| io_passthrough(what, e))?;
    if text != CHECK_TEXT {
        return Err(Error::corrupt(format!("{what}: not a passphrase check")));
    }
    Ok(true)
}

/// Sequoia's error as ours: the helper's verdict, an I/O error of the
/// input, or damaged data.
pub(super) fn classify(name: &str, failure: &Failure, e: openpgp::anyhow::Error) -> Error {
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

pub(super) fn classify_io(name: &str, failure: &Failure, e: io::Error) -> Error {
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

pub(super) fn describe_pgp(text: &str) -> String {
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
