//! The files present at a time (`dup-ls --files`): read from the cache's
//! indexes of the chain's signatures ([`crate::io::cache::index`]) when
//! they are all there and sound, else from the signatures themselves.

use crate::archive::Archive;
use crate::dupfmt::collection::Collection;
use crate::error::Result;
use crate::io::cache::index::{self, IndexState, Unusable};
use crate::joblog::note;
use crate::record::Entry;
use crate::stage::sig::SigState;

/// The merged entries of a signature chain at a time.
pub enum Files {
    Index(IndexState),
    Signatures(SigState),
}

impl Files {
    /// The files of the archive at `t` (None: the end of the newest chain),
    /// chosen as [`SigState::at`] does.
    pub fn at(coll: &Collection, t: Option<i64>, archive: &Archive) -> Result<Files> {
        let t = t.or_else(|| coll.primary_chain().map(|c| c.end_time()));
        let (chain, warning) = coll.sig_chain_at(t.unwrap_or(i64::MAX))?;
        if let Some(w) = warning {
            note!(log::Level::Warn, "{w}");
        }
        if chain.local {
            let sigs = std::iter::once(&chain.full)
                .chain(chain.incs.iter().filter(|s| t.is_none_or(|t| s.end_time <= t)))
                .map(|s| s.name.as_str());
            match index::open_chain(&archive.cache, sigs) {
                Ok(ixs) => return Ok(Files::Index(IndexState::new(ixs)?)),
                Err(Unusable::Damaged(m)) => {
                    note!(log::Level::Warn, "{m}; reading the signatures instead (dup-sync rebuilds it)")
                }
                Err(Unusable::Missing) => {}
            }
        }
        Ok(Files::Signatures(SigState::open(chain, t, archive)?))
    }

    /// The next entry present at the time, in duplicity's order.
    // A fallible iterator: Iterator's `next` cannot return errors.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry>> {
        match self {
            Files::Index(s) => s.next(),
            Files::Signatures(s) => s.next(),
        }
    }
}
