//! The files present at a time (`dup-ls --files`): read from the cache's
//! indexes of the chain's signatures ([`crate::io::cache::index`]) when
//! they are all there and sound, else from the signatures themselves.

use crate::archive::Archive;
use crate::dupfmt::collection::{Collection, SigChain};
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
            match index::open_chain(&archive.cache, chain_sigs(chain, t)) {
                Ok(ixs) => return Ok(Files::Index(IndexState::new(ixs)?)),
                Err(Unusable::Damaged(m)) => {
                    note!(log::Level::Warn, "{m}; reading the signatures instead (dup-sync rebuilds it)")
                }
                Err(Unusable::Missing) => {}
            }
        }
        Ok(Files::Signatures(SigState::open(chain, t, archive)?))
    }

    /// The files at `t` from the cache's indexes alone, quietly; None when
    /// they are not all there and sound (a restore's total, not worth
    /// reading the signatures for).
    pub fn indexed_at(coll: &Collection, t: i64, archive: &Archive) -> Option<Files> {
        let (chain, _) = coll.sig_chain_at(t).ok()?;
        if !chain.local {
            return None;
        }
        let ixs = index::open_chain(&archive.cache, chain_sigs(chain, Some(t))).ok()?;
        IndexState::new(ixs).ok().map(Files::Index)
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

/// The signature files of `chain` up to `t`, oldest first.
fn chain_sigs(chain: &SigChain, t: Option<i64>) -> impl Iterator<Item = &str> {
    std::iter::once(&chain.full)
        .chain(chain.incs.iter().filter(move |s| t.is_none_or(|t| s.end_time <= t)))
        .map(|s| s.name.as_str())
}
