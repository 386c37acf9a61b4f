//! An archive as the commands see it: its backend, its local cache, the
//! naming options, the keys to decrypt it with, and the collection of sets
//! and chains they hold.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::crypto::{self, Keys};
use crate::dupfmt::collection::Collection;
use crate::dupfmt::names::Naming;
use crate::error::{Error, Kind, Result};
use crate::io::cache::Cache;
use crate::io::storage::{self, Check, Env, Storage};

/// Opens the backend at `url` and checks it the way a backup uses it,
/// saying whether a backup (a manifest) is there (see [`Storage::check`]).
pub fn test_connection(url: &str) -> Result<Check> {
    storage::test_connection(url, &is_manifest)
}

/// Like [`test_connection`], reading environment variables through `env`.
pub fn test_connection_with(url: &str, env: Env) -> Result<Check> {
    storage::test_connection_with(url, env, &is_manifest)
}

fn is_manifest(name: &str) -> bool {
    Naming::default().parse(name).is_some_and(|f| f.is_manifest())
}

pub struct Archive {
    pub storage: Storage,
    pub cache: Cache,
    pub naming: Naming,
    /// For reading encrypted files; `None` for an unencrypted archive.
    pub keys: Option<Keys>,
}

impl Archive {
    /// Connects to the archive at `url` with its cache (`archive_dir`,
    /// `name`: see [`Cache::open`]).
    pub fn open(url: &str, archive_dir: Option<&Path>, name: Option<&str>) -> Result<Archive> {
        Ok(Archive {
            storage: Storage::open(url)?,
            cache: Cache::open(archive_dir, name, url)?,
            naming: Naming::default(),
            keys: None,
        })
    }

    /// The same archive, decrypting with `keys`.
    pub fn with_keys(mut self, keys: Option<Keys>) -> Archive {
        self.keys = keys;
        self
    }

    /// Sets, chains and signature chains from the backend's listing and the cache's.
    pub fn collection(&self) -> Result<Collection> {
        let remote: Vec<String> = self.storage.list()?.into_iter().map(|(n, _)| n).collect();
        let local = self.cache.list()?;
        Collection::build(&remote, &local, &self.naming)
    }

    /// Checks that `keys` open the newest chain when it is encrypted with a
    /// passphrase (its newest encrypted manifest has an SKESK): a wrong
    /// passphrase is `Kind::Crypto`. False when there was nothing to check
    /// (no chain, a plain chain, or one encrypted to public keys).
    pub fn check_passphrase(&self, coll: &Collection, keys: &Keys) -> Result<bool> {
        let newest = coll.primary_chain().and_then(|chain| {
            let mut sets: Vec<_> = chain.sets().collect();
            sets.reverse();
            sets.into_iter()
                .filter_map(|s| s.manifest.clone())
                .find(|m| self.naming.parse(m).is_some_and(|f| f.encrypted()))
        });
        let Some(m) = newest else { return Ok(false) };
        // The packets before the encrypted data, not the whole manifest
        // (its file list grows with the files a set changed).
        let mut r = self.storage.reader(&m)?;
        let mut head = Vec::new();
        (&mut r)
            .take(1 << 20)
            .read_to_end(&mut head)
            .map_err(|e| crate::error::carried(e).unwrap_or_else(|e| Error::io(&m, e)))?;
        if !crypto::passphrase_encrypted(&m, &head)? {
            return Ok(false);
        }
        crypto::check_decryptable(keys, &m, std::io::Cursor::new(head).chain(r))
            .map_err(|e| e.hint("an incremental must use the passphrase of the chain it extends"))?;
        Ok(true)
    }

    /// The keys to decrypt the encrypted archive file `name` with; an error
    /// (exit 12) when no passphrase or key was given.
    pub fn keys_for(&self, name: &str) -> Result<&Keys> {
        self.keys.as_ref().ok_or_else(|| {
            Error::new(Kind::Crypto, format!("{name} is encrypted, and no passphrase or key was given"))
                .hint("set PASSPHRASE, or pass --passphrase-file, --passphrase-fd or --key-file")
        })
    }

    /// The content of the archive file `name` read from `r`, as plaintext:
    /// decrypted when it is encrypted, gunzipped when it is gzipped.
    pub fn plaintext(&self, name: &str, r: impl Read + Send + 'static) -> Result<Box<dyn Read + Send>> {
        let f = self.naming.parse(name);
        if f.is_some_and(|f| f.encrypted()) {
            return Ok(Box::new(crypto::decryptor(self.keys_for(name)?, name, r)?));
        }
        if f.is_some_and(|f| f.compressed()) {
            return Ok(Box::new(MultiGzDecoder::new(r)));
        }
        Ok(Box::new(r))
    }
}
