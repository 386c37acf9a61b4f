//! The bodies of the fuzz targets (`fuzz/`, `scripts/fuzz`) and of their
//! replay test (`tests/it/fuzz_replay.rs`): each feeds untrusted bytes to one
//! of the library's readers, which must return (an error is fine) without
//! panicking, hanging or allocating without bound. Not an API.

use std::io::{self, Cursor, Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use crate::crypto::{KeyEnv, KeyOptions, Keys, Purpose, decryptor, passphrase_encrypted};
use crate::dupfmt::manifest::{Manifest, unquote};
use crate::dupfmt::names::{FileName, NameOptions, Naming};
use crate::dupfmt::rsync::{self, Signature};
use crate::dupfmt::tar::{EntryType, for_each_entry, parse_entry_name};
use crate::dupfmt::time;
use crate::error::{Error, Result};
use crate::record::Reader;
use crate::stage::sig::decode;

/// The targets, as named in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["record", "manifest", "names", "tar", "sigtar", "rsync_patch", "time", "openpgp"];

/// Runs target `name` on `data`; false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "record" => record(data),
        "manifest" => manifest(data),
        "names" => names(data),
        "tar" => tar(data),
        "sigtar" => sigtar(data),
        "rsync_patch" => rsync_patch(data),
        "time" => time(data),
        "openpgp" => openpgp(data),
        _ => return false,
    }
    true
}

/// Largest output a target reads or writes before it stops: bounds a
/// decompression bomb or a delta that copies the basis over and over.
const OUTPUT_LIMIT: u64 = 4 << 20;

/// A sink that fails past [`OUTPUT_LIMIT`] bytes.
struct Limited(u64);

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        if self.0 > OUTPUT_LIMIT {
            return Err(io::Error::other("output limit reached"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn drain(r: &mut dyn Read) -> Result<()> {
    io::copy(&mut r.take(OUTPUT_LIMIT), &mut io::sink()).map_err(|e| Error::io("reading", e))?;
    Ok(())
}

/// The record stream reader (CBOR or JSON Lines, by the first byte), to
/// its end record, skipping content.
pub fn record(data: &[u8]) {
    let Ok(mut r) = Reader::new(data, "fuzz") else { return };
    let _ = r.expect_kind(&[r.stream_kind()]);
    while let Ok(Some(rec)) = r.next() {
        if r.skip_content(&rec).is_err() {
            return;
        }
    }
}

/// The manifest parser (and the writer over what it read).
pub fn manifest(data: &[u8]) {
    let _ = unquote(data);
    let Ok(m) = Manifest::parse(data) else { return };
    let _ = m.volumes_for(b"a/b");
    let _ = Manifest::parse(&m.to_bytes());
}

/// The archive file-name parser, with and without prefixes and in short
/// mode; a name it accepts must come back the same from [`Naming::format`].
pub fn names(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else { return };
    static NAMINGS: OnceLock<[Naming; 3]> = OnceLock::new();
    let namings = NAMINGS.get_or_init(|| {
        let prefixed = NameOptions {
            prefix: "p-".into(),
            prefix_archive: "a-".into(),
            prefix_manifest: "m-".into(),
            prefix_signature: "s-".into(),
            short: false,
        };
        [
            Naming::new(NameOptions::default()),
            Naming::new(prefixed),
            Naming::new(NameOptions { short: true, ..Default::default() }),
        ]
    });
    for naming in namings {
        // Long names write compact times, whose years are 1901 to 2099 (as
        // duplicity's); other times read from a name do not come back.
        let writable = |f: &FileName, t: i64| f.short || time::parse_compact(&time::to_compact(t)) == Some(t);
        if let Some(f) = naming.parse(name)
            && writable(&f, f.start)
            && writable(&f, f.end)
        {
            let again = naming.format(&f);
            assert_eq!(naming.parse(&again).as_ref(), Some(&f), "{name:?} formatted as {again:?}");
        }
    }
}

/// A volume tar as restore reads it: every entry's name and metadata
/// decoded, its data read.
pub fn tar(data: &[u8]) {
    let _ = for_each_entry(data, |item, r| {
        if let Ok(name) = parse_entry_name(&item.name) {
            let _ = item.meta.to_entry(&name.index, item.size);
        }
        drain(r)
    });
}

/// A signature tar as dup-sig reads it: entries decoded, and each
/// signature loaded and used for a delta.
pub fn sigtar(data: &[u8]) {
    let _ = for_each_entry(data, |item, r| {
        let (kind, _) = decode(&item)?;
        if kind == EntryType::Signature {
            let mut sig = Signature::read(r.take(OUTPUT_LIMIT))?;
            rsync::delta(&mut sig, &BASIS[..], Limited(0))?;
        }
        Ok(())
    });
}

/// The basis file deltas are applied to (and signatures compared with):
/// text and pseudo-random bytes, 6 KiB, the file `fuzz/basis` that the
/// seed deltas were made against.
pub const BASIS: &[u8; 6144] = &{
    let mut b = [0u8; 6144];
    let text = b"dup fuzz basis: the quick brown fox jumps over the lazy dog\n";
    let mut i = 0;
    let mut x: u32 = 0x1234_5678;
    while i < b.len() {
        b[i] = if i < 2048 {
            text[i % text.len()]
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        i += 1;
    }
    b
};

/// A librsync delta applied to [`BASIS`], its output bounded.
pub fn rsync_patch(data: &[u8]) {
    let _ = rsync::patch(Cursor::new(&BASIS[..]), data, Limited(0));
}

/// Duplicity's time syntax: user times (`--time`), file-name times,
/// intervals.
pub fn time(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = time::parse_time(s, 1_700_000_000);
    let _ = time::parse_name_time(s);
    let _ = time::parse_interval(s);
}

/// The passphrase of the `openpgp` target.
pub const PASSPHRASE: &str = "dup fuzz passphrase";

/// The secret key file of the `openpgp` target (no passphrase).
pub fn secret_key_file() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/keys/secret.asc"))
}

/// An OpenPGP message decrypted as restore does, with [`PASSPHRASE`] and
/// with the key of [`secret_key_file`]; at most [`OUTPUT_LIMIT`] bytes of
/// plaintext are read.
pub fn openpgp(data: &[u8]) {
    static KEYS: OnceLock<[Keys; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        // libFuzzer's panic hook aborts even on a panic the library catches
        // (crypto::decrypt catches one of Sequoia's); one that escapes still
        // aborts (libfuzzer-sys), and the replay test catches it.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
        let opts = KeyOptions {
            key_files: vec![secret_key_file().to_path_buf()],
            use_keyring: false,
            prompt: false,
            ..Default::default()
        };
        let secret = Keys::build(&opts, &KeyEnv::default(), Purpose::Decrypt).expect("the fuzz secret key loads");
        [Keys::with_passphrase(PASSPHRASE), secret]
    });
    let _ = passphrase_encrypted("fuzz", data);
    for k in keys {
        if let Ok(mut d) = decryptor(k, "fuzz", data) {
            let _ = drain(&mut d);
        }
    }
}
