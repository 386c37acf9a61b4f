//! Reading a volume dup wrote from the middle: the tar from an entry
//! header on, decrypting and inflating only from the block that holds it.
//!
//! CFB decryption can start at any cipher block (the ciphertext block
//! before it is the IV), dup's deflate blocks are independent, and its
//! packet framing puts every byte where arithmetic says (see
//! [`super::framing`]); the volume's [`SeekTable`] gives the block sizes.
//! Nothing here checks the data's integrity (the MDC is at the end, and the
//! signature too): the caller hashes the whole ciphertext and compares it
//! with a hash it trusts before anything read here is used.

use std::io::{self, Cursor, Read};

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::crypto::symmetric::{BlockCipherMode, Decryptor, UnpaddingMode};
use openpgp::packet::{Packet, SEIP};
use openpgp::parse::{PacketParser, PacketParserResult, Parse, buffered_reader};
use openpgp::types::SymmetricAlgorithm;

use super::Keys;
use super::framing::{Framed, LITERAL_HEAD, Unframe};
use crate::error::{Error, Result};
use crate::io::cache::seek::SeekTable;
use crate::io::parblock::ParInflate;

/// The largest cipher block plus the two check bytes of the prefix.
const PREFIX_MAX: usize = 16 + 2;

/// The tar of the encrypted volume `name` (read from `raw`, which must be
/// the whole file from its start) from tar offset `tar_offset`, an entry
/// header the table marks. Reads the key packets, finds the session key
/// (a wrong passphrase is reported as by [`super::decryptor`]), and skips
/// the ciphertext before the block holding that header undecrypted.
/// `None`: the table was not made with this volume's key (see
/// [`table_key`]); read the volume from its start.
pub fn open_at<'a, R: Read + Send + Sync + 'a>(
    keys: &Keys,
    name: &str,
    raw: R,
    table: &SeekTable,
    tar_offset: u64,
) -> Result<Option<Box<dyn Read + Send + 'a>>> {
    open_from(keys, name, raw, table, tar_offset, false)
}

/// The whole tar of the encrypted volume `name`, as [`open_at`] reads it,
/// with its blocks inflated in parallel ([`ParInflate`]), some ahead of
/// the reader.
pub fn open_whole<'a, R: Read + Send + Sync + 'a>(
    keys: &Keys,
    name: &str,
    raw: R,
    table: &SeekTable,
) -> Result<Option<Box<dyn Read + Send + 'a>>> {
    open_from(keys, name, raw, table, 0, true)
}

fn open_from<'a, R: Read + Send + Sync + 'a>(
    keys: &Keys,
    name: &str,
    raw: R,
    table: &SeekTable,
    tar_offset: u64,
    parallel: bool,
) -> Result<Option<Box<dyn Read + Send + 'a>>> {
    let corrupt = |what: String| Error::corrupt(format!("{name}: {what}"));
    let failed = |e: io::Error| crate::error::carried(e).unwrap_or_else(|e| corrupt(e.to_string()));
    let mut ppr = PacketParser::from_reader(raw).map_err(|e| corrupt(format!("not an OpenPGP file: {e}")))?;
    let (mut pkesks, mut skesks) = (Vec::new(), Vec::new());
    let mut pp = loop {
        let PacketParserResult::Some(pp) = ppr else {
            return Err(corrupt("no encrypted data".into()));
        };
        match &pp.packet {
            Packet::PKESK(_) | Packet::SKESK(_) => {
                let (p, next) = pp.next().map_err(|e| corrupt(format!("damaged key packet: {e}")))?;
                match p {
                    Packet::PKESK(k) => pkesks.push(k),
                    Packet::SKESK(k) => skesks.push(k),
                    _ => {}
                }
                ppr = next;
            }
            Packet::SEIP(SEIP::V1(_)) => break pp,
            other => return Err(corrupt(format!("a {} packet where the encrypted data should be", other.tag()))),
        }
    };
    let mut head = vec![0u8; PREFIX_MAX];
    pp.read_exact(&mut head).map_err(|_| corrupt("the encrypted file is truncated".into()))?;
    let (algo, key) = super::decrypt::session_key(keys, name, &pkesks, &skesks, &mut |a, k| quick_check(a, k, &head))?;
    let bs = algo.block_size().map_err(|e| corrupt(format!("{e}")))? as u64;
    if !table.is_sealed_with(&table_key(&key)) {
        return Ok(None);
    }

    let zip = Framed { len: table.compressed };
    let lit = Framed { len: table.literal };
    let body_t = LITERAL_HEAD.len() as u64 + tar_offset;
    let inner = lit.offset(body_t);
    let k = (inner / table.block) as usize;
    let Some(before) = table.sizes.get(..k) else {
        return Err(corrupt("its seek table has fewer blocks than its marks need".into()));
    };
    let deflate_at: u64 = before.iter().sum();
    // Offsets in the encrypted data (the random prefix first).
    let target = bs + 2 + zip.offset(1 + deflate_at);
    let aligned = target / bs * bs;
    let mut cipher = Cursor::new(head).chain(pp);
    skip(&mut cipher, aligned - bs).map_err(failed)?;
    let mut iv = vec![0u8; bs as usize];
    cipher.read_exact(&mut iv).map_err(|_| corrupt("the encrypted file is truncated".into()))?;
    let src = buffered_reader::Generic::with_cookie(cipher, None, Default::default());
    let mut plain = Decryptor::new(algo, BlockCipherMode::CFB, UnpaddingMode::None, &key, Some(&iv), src)
        .map_err(|e| corrupt(format!("{e}")))?;
    skip(&mut plain, target - aligned).map_err(failed)?;
    let deflated = Unframe::new(plain, zip, 1 + deflate_at);
    let mut inflated: Box<dyn Read + Send> = if parallel {
        Box::new(ParInflate::new(deflated, &table.sizes[k..], table.block))
    } else {
        Box::new(flate2::read::DeflateDecoder::new(deflated))
    };
    skip(&mut inflated, inner - k as u64 * table.block).map_err(failed)?;
    Ok(Some(Box::new(Unframe::new(inflated, lit, body_t))))
}

/// The key of a volume's seek table: only who holds the volume's session
/// key (its writer, and whoever can decrypt it) can make a table the
/// reader takes, so a table edited in the cache is refused rather than
/// trusted to say where entries start.
pub fn table_key(session_key: &SessionKey) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"dup seek table key 1\0");
    h.update(session_key.as_protected());
    h.finalize().into()
}

/// Whether `key` decrypts the prefix's check bytes (its last two bytes
/// repeat the two before), as OpenPGP readers test a session key.
fn quick_check(algo: SymmetricAlgorithm, key: &SessionKey, head: &[u8]) -> bool {
    let Ok(bs) = algo.block_size() else { return false };
    let Some(prefix) = head.get(..bs + 2) else { return false };
    let src = buffered_reader::Memory::with_cookie(prefix, Default::default());
    let Ok(mut d) = Decryptor::new(algo, BlockCipherMode::CFB, UnpaddingMode::None, key, None, src) else {
        return false;
    };
    let mut p = Vec::with_capacity(bs + 2);
    d.read_to_end(&mut p).is_ok() && p.len() == bs + 2 && p[bs - 2..bs] == p[bs..bs + 2]
}

/// Reads and drops `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    if io::copy(&mut r.take(n), &mut io::sink())? < n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the encrypted file is truncated"));
    }
    Ok(())
}
