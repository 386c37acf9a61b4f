//! An archive as the commands see it: its backend, its local cache, the
//! naming options, and the collection of sets and chains they hold.

use std::path::Path;

use crate::cache::Cache;
use crate::dupfmt::collection::Collection;
use crate::dupfmt::names::Naming;
use crate::error::Result;
use crate::storage::Storage;

pub struct Archive {
    pub storage: Storage,
    pub cache: Cache,
    pub naming: Naming,
}

impl Archive {
    /// Connects to the archive at `url` with its cache (`archive_dir`,
    /// `name`: see [`Cache::open`]).
    pub fn open(url: &str, archive_dir: Option<&Path>, name: Option<&str>) -> Result<Archive> {
        Ok(Archive {
            storage: Storage::open(url)?,
            cache: Cache::open(archive_dir, name, url)?,
            naming: Naming::default(),
        })
    }

    /// Sets, chains and signature chains from the backend's listing and the cache's.
    pub fn collection(&self) -> Result<Collection> {
        let remote: Vec<String> = self.storage.list()?.into_iter().map(|(n, _)| n).collect();
        let local = self.cache.list()?;
        Collection::build(&remote, &local, &self.naming)
    }
}
