//! Encryption: the message GnuPG 2.2 writes (SKESK or PKESK, SEIPD v1 with
//! MDC, a ZIP packet built from deflate blocks compressed in parallel, an
//! optional one-pass signature, a binary literal packet). The compressed
//! packet, and the literal packet when nothing is signed, are framed by
//! [`super::framing`], so that a reader can find a block by arithmetic.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::FlushCompress;

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation;
use openpgp::crypto::symmetric::{BlockCipherMode, PaddingMode};
use openpgp::crypto::{Password, SessionKey, symmetric};
use openpgp::packet::key;
use openpgp::packet::pkesk::PKESK3;
use openpgp::packet::skesk::SKESK4;
use openpgp::serialize::Marshal;
use openpgp::serialize::stream::{LiteralWriter, Message, Signer};
use openpgp::types::{CompressionAlgorithm, DataFormat, SymmetricAlgorithm};
use openpgp::{Packet, crypto};
use sha1::Digest as _;

use super::framing::{LITERAL_HEAD, PacketWriter, TAG_COMPRESSED, TAG_LITERAL, TAG_MDC, TAG_SEIP};
use super::{Inner, Keys, lock, policy};
use crate::error::{Error, Result, content_error};
use crate::io::parblock::{Blocks, Deflaters, ParBlocks};

/// Where the blocks are in an encrypted file written here (see `seek.rs`).
/// (No `Debug`: it holds a key.)
#[derive(Clone, Default)]
pub struct Layout {
    /// The literal packet's body length; `None` when Sequoia framed it
    /// (a signed file), and nothing can be found by arithmetic.
    pub literal: Option<u64>,
    /// The compressed packet's body length: the algorithm byte and the
    /// deflate stream.
    pub compressed: u64,
    /// The deflate size of each block of the literal packet's framing
    /// ([`crate::io::parblock::BLOCK`] bytes each, the last one shorter).
    pub sizes: Vec<u64>,
    /// The key that authenticates the file's seek table, derived from its
    /// session key (see `seek::table_key`).
    pub table_key: [u8; 32],
}

/// Our writer behind a mutex (Sequoia wants its sink `Send + Sync`), kept
/// so that it can be handed back when the message is finished.
pub(super) struct SharedSink<W>(Arc<Mutex<W>>);

impl<W: Write> Write for SharedSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        lock(&self.0).flush()
    }
}

/// Deflate level of volumes by default, inside OpenPGP or gzip. gzip's and
/// gpg's default is 6. On the bench corpora (zlib-rs) 5 is the cheapest
/// level whose archives are smaller than duplicity's on both (small: 4 left
/// 1.1 MB of blocks stored that gpg compresses by 2%, and compressing those
/// cost 40% more CPU than level 5 did); 4 took ~10% less CPU for 1.1% more
/// bytes, 6 13-40% more CPU for 0.3-0.4% fewer.
pub const DEFAULT_LEVEL: u32 = 5;

/// The bottom of the inner writer stack (signature, literal packet): the
/// compressed packet's body, ZIP (raw deflate) built in parallel blocks
/// that end on a byte boundary (a sync flush, or stored blocks) and so
/// concatenate into one deflate stream, as pigz does.
pub(super) struct ParSink(Arc<Mutex<ParBlocks<Layout>>>);

impl Write for ParSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One block as raw deflate ending on a byte boundary (sync flush), or
/// ending the stream (`last`), into `out` (emptied first). Blocks that do
/// not compress are stored.
pub(super) fn deflate_block(data: &[u8], last: bool, level: u32, z: &Deflaters, mut out: Vec<u8>) -> Vec<u8> {
    out.clear();
    let level = if data.is_empty() { level } else { sampled_level(data, level, z) };
    if level == 0 {
        return stored_blocks(data, last, out);
    }
    out.reserve(data.len() / 2 + 1024);
    // Storing is always valid.
    let ok = z.deflate(level, data, last, &mut out);
    if !ok || out.len() > data.len() + data.len() / 64 + 16 { stored_blocks(data, last, out) } else { out }
}

/// The level a block is worth, from samples of it: `level` when they
/// shrink under quick deflate; 0 (stored, at memory speed) when they do not
/// (media, archives). Level 1 codes with fixed Huffman tables only, which
/// miss text of high entropy (base64, hex: no repeats, but fewer than 256
/// symbols); when level 2, which builds tables, saves a tenth, the block is
/// compressed at level 2: its gain is the tables', which deeper match
/// searches would not add to.
pub(super) fn sampled_level(data: &[u8], level: u32, z: &Deflaters) -> u32 {
    const SAMPLE: usize = 16 << 10;
    if data.len() <= 4 * SAMPLE {
        return level;
    }
    let step = data.len() / 4;
    let mut out = Vec::with_capacity(SAMPLE + SAMPLE / 8 + 64);
    let mut compressed = |level: u32| {
        let mut outp = 0usize;
        for s in (0..4).map(|i| &data[i * step..i * step + SAMPLE]) {
            out.clear();
            let n = z.with(level, |c| c.compress_vec(s, &mut out, FlushCompress::Finish).map(|_| c.total_in()));
            match n {
                Ok(n) if n as usize == s.len() => outp += out.len(),
                Ok(_) => outp += s.len(),
                Err(_) => return 0,
            }
        }
        outp
    };
    let inp = 4 * SAMPLE;
    if compressed(1) * 100 < inp * 97 {
        level
    } else if compressed(2) * 100 < inp * 90 {
        level.min(2)
    } else {
        0
    }
}

/// Deflate stored blocks (type 00): byte-aligned, at most 65535 bytes
/// each, into `out` (emptied first).
pub(super) fn stored_blocks(data: &[u8], last: bool, mut out: Vec<u8>) -> Vec<u8> {
    out.clear();
    out.reserve(data.len() + data.len() / 65535 * 5 + 10);
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
    inner: Option<Plain<'a>>,
    par: Arc<Mutex<ParBlocks<Layout>>>,
    out: Arc<Mutex<W>>,
    /// The size of what precedes the data (ESK packets, headers), once the
    /// encryption thread has written it.
    head: Receiver<u64>,
    head_size: Option<u64>,
    bytes_in: u64,
    /// The literal packet is ours ([`Plain::Own`]).
    own_literal: bool,
}

/// The literal packet's writer: ours, or Sequoia's under a signer.
enum Plain<'a> {
    Own(PacketWriter<ParSink>),
    /// Signer → literal packet → `ParSink`.
    Signed(Message<'a>),
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
            if !k.recipients.iter().any(|(cert, _)| encryption_subkeys(cert).next().is_some()) {
                return Err(Error::usage("no key to encrypt to").hint("give --encrypt-key, or a passphrase"));
            }
            Vec::new()
        };
    let out = Arc::new(Mutex::new(inner));
    let (head_tx, head) = sync_channel(1);
    let (sink, owned) = (SharedSink(out.clone()), keys.clone());
    let par = Arc::new(Mutex::new(ParBlocks::new(
        {
            let z = Deflaters::default();
            Arc::new(move |d: &[u8], last: bool, out: Vec<u8>| deflate_block(d, last, level, &z, out))
        },
        move |blocks: Blocks| {
            let k = &*owned.0;
            let written = Arc::new(AtomicU64::new(0));
            let mut head = Counted(sink, written.clone());
            // Our session key, to derive the seek table's key from.
            let algo = SymmetricAlgorithm::AES256;
            let session_key = SessionKey::new(algo.key_size().map_err(pgp_setup)?).map_err(pgp_setup)?;
            let table_key = super::seek::table_key(&session_key);
            write_esks(k, &passwords, algo, &session_key, &mut head)?;
            let msg = Seipd::new(head, algo, &session_key).map_err(|e| content_error("encrypting", e))?;
            let mut msg = PacketWriter::new(msg, TAG_COMPRESSED).map_err(|e| content_error("encrypting", e))?;
            msg.write_all(&[u8::from(CompressionAlgorithm::Zip)]).map_err(|e| content_error("encrypting", e))?;
            let _ = head_tx.send(written.load(Ordering::Relaxed));
            let mut layout = Layout { literal: None, compressed: 1, sizes: Vec::new(), table_key };
            for b in blocks {
                let b = b?;
                msg.write_all(&b).map_err(|e| content_error("writing", e))?;
                layout.compressed += b.len() as u64;
                layout.sizes.push(b.len() as u64);
            }
            let msg = msg.finish().map_err(|e| content_error("encrypting", e))?;
            msg.finish().map_err(|e| content_error("encrypting", e))?;
            Ok(layout)
        },
    )));
    let plain = match k.signer.as_ref().and_then(|s| s.pair.clone()) {
        Some(pair) => {
            let msg = Message::new(ParSink(par.clone()));
            let msg = Signer::new(msg, pair).map_err(pgp_setup)?.build().map_err(pgp_setup)?;
            Plain::Signed(LiteralWriter::new(msg).format(DataFormat::Binary).build().map_err(pgp_setup)?)
        }
        None => {
            let mut w = PacketWriter::new(ParSink(par.clone()), TAG_LITERAL).map_err(|e| Error::io("encrypting", e))?;
            w.write_all(&LITERAL_HEAD).map_err(|e| Error::io("encrypting", e))?;
            Plain::Own(w)
        }
    };
    let own_literal = matches!(plain, Plain::Own(_));
    Ok(EncryptWriter { inner: Some(plain), par, out, head, head_size: None, bytes_in: 0, own_literal })
}

/// A certificate's keys that may encrypt (valid now, supported, not revoked),
/// as gpg picks them.
pub(super) fn encryption_subkeys(
    cert: &Cert,
) -> impl Iterator<Item = ValidErasedKeyAmalgamation<'_, key::PublicParts>> {
    cert.keys()
        .with_policy(policy(), None)
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
}

/// The key packets of a file: an SKESK v4 per passphrase (iterated and
/// salted S2K, as Sequoia's default), or a PKESK v3 per encryption key of
/// each recipient (hidden ones without their key ID), as gpg 2.2 writes.
fn write_esks(
    k: &Inner,
    passwords: &[Password],
    algo: SymmetricAlgorithm,
    sk: &SessionKey,
    w: &mut dyn Write,
) -> Result<()> {
    let mut put = |p: Packet| p.serialize(w).map_err(|e| pgp_error("encrypting", e));
    for password in passwords {
        put(SKESK4::with_password(algo, algo, Default::default(), sk, password).map_err(pgp_setup)?.into())?;
    }
    if !k.symmetric {
        for (cert, hidden) in &k.recipients {
            for ka in encryption_subkeys(cert) {
                let mut p = PKESK3::for_recipient(algo, sk, ka.key()).map_err(pgp_setup)?;
                p.set_recipient(if *hidden { None } else { Some(ka.key().keyid()) });
                put(p.into())?;
            }
        }
    }
    Ok(())
}

/// The SEIPD v1 packet (RFC 4880 5.13): CFB with a zero IV over a random
/// block, its last two bytes again, the packets written, and the MDC packet
/// (SHA-1 of all that and the MDC's own header). Written here rather than by
/// Sequoia, whose MDC hash is SHA-1 with collision detection: a check on
/// plaintext we make ourselves buys nothing, and it was 10% of dup-pack's
/// time.
struct Seipd<W: Write> {
    cfb: symmetric::Encryptor<PacketWriter<W>>,
    mdc: sha1::Sha1,
}

impl<W: Write> Seipd<W> {
    fn new(w: W, algo: SymmetricAlgorithm, key: &SessionKey) -> io::Result<Self> {
        let mut body = PacketWriter::new(w, TAG_SEIP)?;
        body.write_all(&[1])?;
        let cfb =
            symmetric::Encryptor::new(algo, BlockCipherMode::CFB, PaddingMode::None, key, None, body).map_err(to_io)?;
        let mut s = Seipd { cfb, mdc: sha1::Sha1::new() };
        let mut prefix = vec![0u8; algo.block_size().map_err(to_io)?];
        crypto::random(&mut prefix).map_err(to_io)?;
        let n = prefix.len();
        s.write_all(&prefix)?;
        s.write_all(&prefix[n - 2..])?;
        Ok(s)
    }

    /// Writes the MDC packet and ends the SEIPD packet.
    fn finish(mut self) -> io::Result<W> {
        let header = [0xc0 | TAG_MDC, 20];
        self.mdc.update(header);
        let digest = self.mdc.finalize();
        self.cfb.write_all(&header)?;
        self.cfb.write_all(&digest)?;
        self.cfb.finalize().map_err(to_io)?.finish()
    }
}

/// Sequoia's error as an I/O error: the I/O error it carries (ours, from the
/// sink, with its kind), or its message.
fn to_io(e: openpgp::anyhow::Error) -> io::Error {
    e.downcast::<io::Error>().unwrap_or_else(|e| io::Error::other(e.to_string()))
}

impl<W: Write> Write for Seipd<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.cfb.write(buf)?;
        self.mdc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts what goes through (the size of the message's head).
pub(super) struct Counted<W>(W, Arc<AtomicU64>);

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

pub(super) fn pgp_setup(e: openpgp::anyhow::Error) -> Error {
    pgp_error("encrypting", e)
}

/// An error from Sequoia's writer: an I/O error of ours passes through.
pub(super) fn pgp_error(what: &str, e: openpgp::anyhow::Error) -> Error {
    match e.downcast::<io::Error>() {
        Ok(io) => io_passthrough(what, io),
        Err(e) => Error::other(format!("{what}: {e}")),
    }
}

/// An I/O error that may carry one of our errors.
pub(super) fn io_passthrough(what: &str, e: io::Error) -> Error {
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
        Ok(self.wait()?.0)
    }

    /// Ends the plaintext without waiting for compression and encryption
    /// to catch up; [`EncryptWriter::wait`] does.
    pub fn seal(&mut self) -> Result<()> {
        match self.inner.take() {
            Some(Plain::Own(w)) => {
                w.finish().map_err(|e| content_error("encrypting", e))?;
            }
            Some(Plain::Signed(m)) => m.finalize().map_err(|e| pgp_error("encrypting", e))?,
            None => return Ok(()),
        }
        lock(&self.par).seal()
    }

    /// Whether the encrypted file is complete (after [`EncryptWriter::seal`]).
    pub fn is_done(&self) -> bool {
        self.inner.is_none() && lock(&self.par).is_done()
    }

    /// Waits for the end of the encrypted file; returns the inner writer
    /// and where the blocks are in it.
    pub fn wait(self) -> Result<(W, Layout)> {
        if self.inner.is_some() {
            return Err(Error::other("encryptor not sealed"));
        }
        let par = Arc::try_unwrap(self.par).map_err(|_| Error::other("encryption input still in use"))?;
        let mut layout = par.into_inner().unwrap_or_else(|p| p.into_inner()).wait()?;
        if self.own_literal {
            layout.literal = Some(LITERAL_HEAD.len() as u64 + self.bytes_in);
        }
        let out = Arc::try_unwrap(self.out).map_err(|_| Error::other("encryption output still in use"))?;
        Ok((out.into_inner().unwrap_or_else(|p| p.into_inner()), layout))
    }
}

impl<W: Write + Send + 'static> Write for EncryptWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.inner.as_mut() {
            Some(Plain::Own(w)) => w.write(buf)?,
            Some(Plain::Signed(m)) => m.write(buf)?,
            None => return Err(io::Error::other("encryptor already finished")),
        };
        self.bytes_in += n as u64;
        Ok(n)
    }
    /// Nothing to do: forcing data out would cut compression blocks short.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    /// Takes `left` bytes, then fails as a full disk does.
    struct Full {
        left: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The sink's error comes out of the SEIPD writer as it was, whichever
    /// write meets it (a full chunk, the MDC, the last chunk), not as a
    /// message: its kind decides the exit code.
    #[test]
    fn seipd_passes_the_sinks_error_through() {
        let key = SessionKey::new(32).unwrap();
        let chunk = crate::crypto::framing::CHUNK as usize;
        for n in chunk - 60..chunk + 20 {
            let run = || -> io::Result<Full> {
                let mut w = Seipd::new(Full { left: 10 }, SymmetricAlgorithm::AES256, &key)?;
                w.write_all(&vec![7u8; n])?;
                w.finish()
            };
            let e = run().err().unwrap_or_else(|| panic!("{n}: no error"));
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{n}: {e}");
        }
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
        let z = Deflaters::default();
        assert_eq!(sampled_level(&random, DEFAULT_LEVEL, &z), 0);
        assert_eq!(sampled_level(&text, DEFAULT_LEVEL, &z), DEFAULT_LEVEL);
        // Random bytes as base64: no repeats, but 6 bits a byte.
        let b64: Vec<u8> = random
            .iter()
            .map(|b| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(b & 63) as usize])
            .collect();
        assert_eq!(sampled_level(&b64, DEFAULT_LEVEL, &z), 2, "high-entropy text is compressed");
        let pieces: [&[u8]; 4] = [&text, &random, b"", &text[..1000]];
        for last_empty in [false, true] {
            let mut stream = Vec::new();
            let mut plain = Vec::new();
            for (i, p) in pieces.iter().enumerate() {
                let last = i == pieces.len() - 1 && !last_empty;
                stream.extend(deflate_block(p, last, DEFAULT_LEVEL, &z, Vec::new()));
                plain.extend_from_slice(p);
            }
            if last_empty {
                stream.extend(deflate_block(b"", true, DEFAULT_LEVEL, &z, vec![7; 9]));
            }
            assert!(inflate(&stream) == plain);
        }
        // Stored: 5 bytes per 64 KiB.
        assert_eq!(stored_blocks(&random, true, Vec::new()).len(), random.len() + 4 * 5);
        assert!(inflate(&stored_blocks(&random, true, Vec::new())) == random);
        assert_eq!(inflate(&stored_blocks(b"", true, vec![1, 2])), b"");
        // Reused compressors give what new ones give: the same input packs
        // to the same bytes (resuming depends on it).
        let mixed = [&text[..], &b64, &random].concat();
        let fresh = deflate_block(&mixed, false, DEFAULT_LEVEL, &Deflaters::default(), Vec::new());
        for _ in 0..2 {
            assert!(deflate_block(&mixed, false, DEFAULT_LEVEL, &z, vec![9; 100]) == fresh);
            assert!(deflate_block(&b64, true, DEFAULT_LEVEL, &z, Vec::new()) != fresh);
        }
    }
}
