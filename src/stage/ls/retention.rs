//! What the retention commands delete (FORMAT-duplicity.md §6.9), as a plan
//! of `file` records with `delete` that dup-put carries out: whole chains
//! older than a time (never the primary chain, never a set that a kept set
//! depends on), the incrementals of old chains, or the leftovers `cleanup`
//! removes.

use crate::dupfmt::collection::{BackupChain, BackupSet, Collection, SigChain};
use crate::dupfmt::time;
use crate::record::{FileRole, Record};

/// Which retention command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `remove-older-than T`: chains ending before T.
    OlderThan(i64),
    /// `remove-all-but-n-full N`: chains older than the N-th newest full.
    AllButNFull(usize),
    /// `remove-all-inc-of-but-n-full N`: the incrementals of those chains.
    AllIncOfButNFull(usize),
    /// `cleanup`: orphaned and incomplete sets, orphaned signatures.
    Cleanup,
}

/// Deletions in the order they must happen, and notes for the user.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub deletes: Vec<Record>,
    pub notes: Vec<String>,
}

impl Plan {
    fn delete(&mut self, name: &str, role: FileRole) {
        let already = self.deletes.iter().any(|r| matches!(r, Record::File { name: n, .. } if n == name));
        if !already {
            self.deletes.push(Record::File { name: name.to_string(), role, delete: true, plain: None, stored: None });
        }
    }

    /// A set's files: the manifest first (it unpublishes the set), then the
    /// volumes from the highest number down.
    fn set(&mut self, s: &BackupSet) {
        if let Some(m) = &s.manifest
            && !s.partial
        {
            self.delete(m, FileRole::Manifest);
        }
        for v in s.volumes.values().rev() {
            self.delete(v, FileRole::Volume);
        }
    }

    /// A chain: its incrementals newest first, then (unless kept) its full.
    fn chain(&mut self, c: &BackupChain, keep_full: bool) {
        for s in c.incs.iter().rev() {
            self.set(s);
        }
        if !keep_full {
            self.set(&c.full);
        }
    }

    /// A signature chain: new signatures newest first, then (unless kept)
    /// the full one.
    fn sig_chain(&mut self, c: &SigChain, keep_full: bool) {
        for s in c.incs.iter().rev() {
            self.delete(&s.name, FileRole::Signature);
        }
        if !keep_full {
            self.delete(&c.full.name, FileRole::Signature);
        }
    }
}

/// The deletion of the one chain that starts at `start`, with its
/// signatures (a chain a synthetic full has replaced).
pub fn plan_chain(coll: &Collection, start: i64) -> Plan {
    let mut p = Plan::default();
    for c in coll.sig_chains.iter().filter(|c| c.start_time() == start) {
        p.sig_chain(c, false);
    }
    for c in coll.chains.iter().filter(|c| c.start_time() == start) {
        p.chain(c, false);
    }
    p
}

/// The deletions `policy` calls for in `coll`.
pub fn plan(coll: &Collection, policy: Policy) -> Plan {
    let mut p = Plan::default();
    let (t, keep_full) = match policy {
        Policy::Cleanup => {
            for s in coll.orphaned_sets.iter().chain(&coll.incomplete_sets) {
                p.set(s);
                // An incomplete set has no manifest; remove its volumes all the same.
            }
            for n in &coll.remote_orphaned_sigs {
                p.delete(n, FileRole::Signature);
            }
            return p;
        }
        Policy::OlderThan(t) => (t, false),
        Policy::AllButNFull(n) | Policy::AllIncOfButNFull(n) => {
            let Some(t) = coll.nth_last_full_time(n.max(1)) else {
                p.notes.push(format!("the archive has fewer than {n} full backups; nothing to delete"));
                return p;
            };
            (t, matches!(policy, Policy::AllIncOfButNFull(_)))
        }
    };
    for s in coll.sets_older_than_required(t) {
        p.notes.push(format!(
            "kept: the {} set of {} is older than {}, but newer sets depend on it",
            if s.kind == crate::dupfmt::collection::SetKind::Full { "full" } else { "incremental" },
            time::pretty(s.time()),
            time::pretty(t)
        ));
    }
    let mut chains = coll.chains_older_than(t);
    chains.sort_by_key(|c| std::cmp::Reverse(c.end_time()));
    // The signatures of the chains that go, or (remove-all-inc-of-but-n-full)
    // of their increments, as duplicity deletes them. The cache and the
    // backend each hold a copy of a signature chain; neither copy of a kept
    // backup chain's signatures may go.
    let kept: Vec<i64> = coll
        .chains
        .iter()
        .filter(|c| !chains.iter().any(|d| d.start_time() == c.start_time()))
        .map(BackupChain::start_time)
        .collect();
    let mut sigs: Vec<&SigChain> =
        coll.sig_chains_older_than(t).into_iter().filter(|s| !kept.contains(&s.start_time())).collect();
    sigs.sort_by_key(|c| std::cmp::Reverse(c.end_time()));
    for c in sigs {
        p.sig_chain(c, keep_full);
    }
    for c in chains {
        p.chain(c, keep_full);
    }
    if p.deletes.is_empty() {
        p.notes.push("no old backup sets found; nothing to delete".into());
    }
    p
}
