//! duplicity 0.8 archive formats (see FORMAT-duplicity.md):
//!
//! * [`names`]: remote file names (volumes, manifests, signatures; long,
//!   short, prefixed), parsed and formatted;
//! * [`time`]: times in names and duplicity's `--time` syntax;
//! * [`collection`]: from directory listings to sets, chains and signature
//!   chains, and the chain for a time;
//! * [`manifest`]: manifests, read and written byte-exact;
//! * [`tar`]: a streaming tar writer byte-identical to CPython's pax
//!   headers, entry-name conventions, and reading helpers;
//! * [`tarstream`]: tar entries read ahead by a thread, for merging streams;
//! * [`rsync`]: librsync signatures, deltas and patches, streamed;
//! * [`index`]: paths inside a backup and duplicity's order over them.

pub mod collection;
pub mod index;
pub mod manifest;
pub mod names;
pub mod rsync;
pub mod tar;
pub mod tarstream;
pub mod time;

#[cfg(test)]
mod fixture_tests;

/// A digest as duplicity writes it (manifest hashes, cache names):
/// lowercase hex.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `hex` wrote (either case); `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}
