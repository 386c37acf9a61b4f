//! From directory listings to backup sets, chains and signature chains
//! (FORMAT-duplicity.md §1.7), and the choices duplicity makes over them:
//! the primary chain, the chain for a restore time (§6.5), the signature
//! chain for a listing time (§6.6), what `remove-*` and `cleanup` may delete
//! (§6.9).
//!
//! Everything here is a pure function of the names; nothing is read.

use std::collections::BTreeMap;

use super::names::{FileKind, FileName, Naming, Suffix};
use crate::error::{Error, Kind, Result};

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Full,
    Inc,
}

/// The files of one backup run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    pub kind: SetKind,
    /// T1 of an incremental; T of a full.
    pub start_time: i64,
    /// T2 of an incremental; T of a full.
    pub end_time: i64,
    /// Volume number → name.
    pub volumes: BTreeMap<u64, String>,
    /// The manifest's name: remote, or a local `.part` for a partial set.
    pub manifest: Option<String>,
    /// A manifest of this set in the local cache (first one listed), if any.
    pub local_manifest: Option<String>,
    /// The manifest is a local `.part`: the run that wrote it was interrupted.
    pub partial: bool,
    /// Flags of the set's first volume (else of its manifest).
    pub encrypted: bool,
    pub compressed: bool,
}

impl BackupSet {
    fn new(f: &FileName) -> Self {
        BackupSet {
            kind: if f.kind.is_full() { SetKind::Full } else { SetKind::Inc },
            start_time: f.start,
            end_time: f.end,
            volumes: BTreeMap::new(),
            manifest: None,
            local_manifest: None,
            partial: false,
            encrypted: false,
            compressed: false,
        }
    }

    fn same_set(&self, f: &FileName) -> bool {
        self.kind == (if f.kind.is_full() { SetKind::Full } else { SetKind::Inc })
            && self.start_time == f.start
            && self.end_time == f.end
    }

    /// The time the set is sorted by: T of a full, T2 of an incremental.
    pub fn time(&self) -> i64 {
        self.end_time
    }

    /// The suffix the set's volumes carry.
    pub fn suffix(&self) -> Suffix {
        if self.encrypted {
            Suffix::Gpg
        } else if self.compressed {
            Suffix::Gzip
        } else {
            Suffix::None
        }
    }

    /// A set is complete when it has a manifest (a local `.part` counts).
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// The set's remote files: volumes in ascending order, then the manifest
    /// unless it is a local partial. duplicity deletes them in reverse order.
    pub fn remote_files(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.volumes.values().map(String::as_str).collect();
        if let Some(m) = &self.manifest
            && !self.partial
        {
            v.push(m);
        }
        v
    }
}

/// A full set and the incrementals that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupChain {
    pub full: BackupSet,
    pub incs: Vec<BackupSet>,
}

impl BackupChain {
    pub fn start_time(&self) -> i64 {
        self.full.start_time
    }

    pub fn end_time(&self) -> i64 {
        self.last().end_time
    }

    /// The newest set.
    pub fn last(&self) -> &BackupSet {
        self.incs.last().unwrap_or(&self.full)
    }

    /// All sets, oldest first.
    pub fn sets(&self) -> impl Iterator<Item = &BackupSet> {
        std::iter::once(&self.full).chain(&self.incs)
    }

    /// The sets a restore at `t` reads (§6.5 step 3): the full set and the
    /// incrementals with T2 ≤ t.
    pub fn sets_at(&self, t: i64) -> Vec<&BackupSet> {
        std::iter::once(&self.full).chain(self.incs.iter().filter(|s| s.end_time <= t)).collect()
    }

    pub fn num_volumes(&self) -> usize {
        self.sets().map(|s| s.volumes.len()).sum()
    }

    /// Takes an incremental (§1.7 step 3): appended when it starts where the
    /// chain ends, or replacing the last one when it has the same start and
    /// a later end.
    fn add_inc(&mut self, set: BackupSet) -> std::result::Result<(), BackupSet> {
        if self.end_time() == set.start_time {
            self.incs.push(set);
            return Ok(());
        }
        match self.incs.last_mut() {
            Some(last) if last.start_time == set.start_time && set.end_time > last.end_time => {
                *last = set;
                Ok(())
            }
            _ => Err(set),
        }
    }
}

/// A signature file of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigFile {
    pub name: String,
    pub start_time: i64,
    pub end_time: i64,
}

/// A full signature and the new-signatures that follow it, all local (cache)
/// or all remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigChain {
    pub local: bool,
    pub full: SigFile,
    pub incs: Vec<SigFile>,
}

impl SigChain {
    pub fn start_time(&self) -> i64 {
        self.full.start_time
    }

    pub fn end_time(&self) -> i64 {
        self.incs.last().unwrap_or(&self.full).end_time
    }

    /// The files that make the combined view at `t` (§4.4): the full
    /// signature, then the new-signatures with T2 ≤ t, in chain order.
    pub fn files_at(&self, t: Option<i64>) -> Vec<&str> {
        std::iter::once(&self.full)
            .chain(self.incs.iter().filter(|s| t.is_none_or(|t| s.end_time <= t)))
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// Everything duplicity derives from the remote and cache listings.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// All backup chains (the primary one included), by end time.
    pub chains: Vec<BackupChain>,
    /// Index in `chains` of the primary chain (the newest, with a matching
    /// signature chain).
    pub primary: Option<usize>,
    /// All signature chains, by end time; on equal end times remote first.
    pub sig_chains: Vec<SigChain>,
    /// Index in `sig_chains` of the signature chain matched with the primary chain.
    pub primary_sig: Option<usize>,
    /// Complete sets that no chain takes.
    pub orphaned_sets: Vec<BackupSet>,
    /// Sets without a manifest, and a last set dropped for lack of signatures.
    pub incomplete_sets: Vec<BackupSet>,
    /// New-signatures that continue no signature chain.
    pub local_orphaned_sigs: Vec<String>,
    pub remote_orphaned_sigs: Vec<String>,
    /// What duplicity would warn about while building this.
    pub warnings: Vec<String>,
}

impl Collection {
    /// Builds sets and chains from the remote listing and the local cache
    /// listing (§1.7). Unrecognised names are ignored. Fails on two volumes
    /// with the same number in one set.
    pub fn build(remote: &[String], local: &[String], naming: &Naming) -> Result<Collection> {
        let mut c = Collection::default();
        let parsed_local: Vec<(&String, FileName)> =
            local.iter().filter_map(|n| naming.parse(n).map(|f| (n, f))).collect();
        let parsed_remote: Vec<(&String, FileName)> =
            remote.iter().filter_map(|n| naming.parse(n).map(|f| (n, f))).collect();

        // 1. Sets, from the local partials and the remote files, in that order.
        let mut sets: Vec<BackupSet> = Vec::new();
        let partials = parsed_local.iter().filter(|(_, f)| f.partial);
        for (name, f) in partials.chain(parsed_remote.iter()) {
            if f.is_signature() {
                continue;
            }
            let i = match sets.iter().position(|s| s.same_set(f)) {
                Some(i) => i,
                None => {
                    sets.push(BackupSet::new(f));
                    sets.len() - 1
                }
            };
            let set = &mut sets[i];
            if let Some(n) = f.volume() {
                if let Some(other) = set.volumes.get(&n) {
                    return Err(Error::new(
                        Kind::Corrupt,
                        format!("volume {n} appears twice in one backup set: {other} and {name}"),
                    )
                    .hint("remove the stray file from the backend"));
                }
                if set.volumes.is_empty() {
                    set.encrypted = f.encrypted();
                    set.compressed = f.compressed();
                }
                set.volumes.insert(n, name.to_string());
            } else {
                match &set.manifest {
                    None => {
                        set.manifest = Some(name.to_string());
                        set.partial = f.partial;
                        if set.volumes.is_empty() {
                            set.encrypted = f.encrypted();
                        }
                    }
                    // A published manifest wins over a stale local `.part`.
                    Some(old) => {
                        c.warnings.push(format!("two manifests for one backup set: {old} and {name}"));
                        if set.partial && !f.partial {
                            set.manifest = Some(name.to_string());
                            set.partial = false;
                        }
                    }
                }
            }
        }
        for set in &mut sets {
            if set.manifest.is_some() {
                set.local_manifest =
                    parsed_local.iter().find(|(_, f)| f.is_manifest() && set.same_set(f)).map(|(n, _)| n.to_string());
            }
        }

        // 2. Complete sets by time (stable); the others are incomplete.
        let (mut complete, incomplete): (Vec<BackupSet>, Vec<BackupSet>) =
            sets.into_iter().partition(BackupSet::is_complete);
        c.incomplete_sets = incomplete;
        complete.sort_by_key(BackupSet::time);
        let published: Vec<(i64, i64)> =
            complete.iter().filter(|s| s.kind == SetKind::Inc).map(|s| (s.start_time, s.end_time)).collect();

        // 3. Chains: fulls open chains; incrementals go to the first chain that takes them.
        for set in complete {
            if set.kind == SetKind::Full {
                c.chains.push(BackupChain { full: set, incs: Vec::new() });
                continue;
            }
            let mut set = Some(set);
            for chain in &mut c.chains {
                if let Some(s) = set.take() {
                    set = chain.add_inc(s).err();
                }
            }
            if let Some(s) = set {
                c.orphaned_sets.push(s);
            }
        }
        c.chains.sort_by_key(BackupChain::end_time);

        // 4. Signature chains, local then remote. Unlike duplicity, the
        // new-signatures of an incremental that has no manifest (a backup
        // stopped between storing its signatures and its manifest) join no
        // chain: they are orphans (cleanup deletes them). Otherwise the chain
        // would match no signature chain (no basis: every later incremental
        // refused), or a basis holding them would leave their changes out of
        // the next incremental.
        let unpublished = |f: &FileName| f.kind == FileKind::NewSig && !published.contains(&(f.start, f.end));
        let mut local_orphans: Vec<String> =
            parsed_local.iter().filter(|(_, f)| unpublished(f)).map(|(n, _)| n.to_string()).collect();
        let mut remote_orphans: Vec<String> =
            parsed_remote.iter().filter(|(_, f)| unpublished(f)).map(|(n, _)| n.to_string()).collect();
        let kept_local: Vec<(&String, FileName)> =
            parsed_local.iter().filter(|(_, f)| !unpublished(f)).copied().collect();
        let kept_remote: Vec<(&String, FileName)> =
            parsed_remote.iter().filter(|(_, f)| !unpublished(f)).copied().collect();
        if let Some(n) = local_orphans.iter().chain(&remote_orphans).next() {
            c.warnings.push(format!("ignoring the signatures of an unfinished backup set: {n}"));
        }
        let (local_chains, more_local) = sig_chains(&kept_local, true);
        let (remote_chains, more_remote) = sig_chains(&kept_remote, false);
        local_orphans.extend(more_local);
        remote_orphans.extend(more_remote);
        c.local_orphaned_sigs = local_orphans;
        c.remote_orphaned_sigs = remote_orphans;
        c.sig_chains = local_chains.into_iter().chain(remote_chains).collect();
        c.sig_chains.sort_by_key(|s| (s.end_time(), s.local));

        // 5. The newest chain and a signature chain ending with it, or with its
        // second-to-last set (then the last set is dropped).
        c.match_primary();
        Ok(c)
    }

    fn match_primary(&mut self) {
        let Some(latest) = self.chains.len().checked_sub(1) else {
            return;
        };
        for i in (0..self.sig_chains.len()).rev() {
            let sig_end = self.sig_chains[i].end_time();
            let chain = &mut self.chains[latest];
            if sig_end == chain.end_time() {
            } else if chain.incs.len() >= 2 && sig_end == chain.incs[chain.incs.len() - 2].end_time {
                // duplicity compares with the second-to-last set's T2, which a
                // full set does not have: with one incremental this never matches.
                if let Some(dropped) = chain.incs.pop() {
                    self.warnings.push("discarding the last backup set, because of a missing signature file".into());
                    self.incomplete_sets.push(dropped);
                }
            } else {
                continue;
            }
            self.primary = Some(latest);
            self.primary_sig = Some(i);
            break;
        }
        if self.primary.is_none() && !self.sig_chains.is_empty() {
            self.warnings.push("found signatures but no corresponding backup files".into());
        }
    }

    /// The primary chain.
    pub fn primary_chain(&self) -> Option<&BackupChain> {
        self.primary.map(|i| &self.chains[i])
    }

    /// The signature chain matched with the primary chain.
    pub fn primary_sig_chain(&self) -> Option<&SigChain> {
        self.primary_sig.map(|i| &self.sig_chains[i])
    }

    /// All chains but the primary one, by end time.
    pub fn secondary_chains(&self) -> impl Iterator<Item = &BackupChain> {
        self.chains.iter().enumerate().filter(move |(i, _)| Some(*i) != self.primary).map(|(_, c)| c)
    }

    /// The chain a restore at `t` uses (§6.5 step 2): the one covering `t`
    /// (two is an error), else the newest ending before `t`, else the oldest.
    pub fn chain_at(&self, t: i64) -> Result<&BackupChain> {
        if self.chains.is_empty() {
            return Err(Error::new(Kind::NoBackup, "no backup chains found"));
        }
        let mut covering = self.chains.iter().filter(|c| c.start_time() <= t && t <= c.end_time());
        if let Some(c) = covering.next() {
            if covering.next().is_some() {
                return Err(Error::new(Kind::Corrupt, "two backup chains cover the given time")
                    .hint("list the chains and remove the one that should not be there"));
            }
            return Ok(c);
        }
        Ok(self.chains.iter().rfind(|c| c.end_time() < t).unwrap_or(&self.chains[0]))
    }

    /// The signature chain for `t` (§6.6): the newest covering `t` (a local
    /// one on a tie), else the newest ending before `t`, else the oldest —
    /// then with a warning when `t` is before its start.
    pub fn sig_chain_at(&self, t: i64) -> Result<(&SigChain, Option<String>)> {
        let Some(oldest) = self.sig_chains.first() else {
            return Err(Error::new(Kind::NoBackup, "no signature chains found"));
        };
        if let Some(c) = self.sig_chains.iter().rfind(|c| c.start_time() <= t && t <= c.end_time()) {
            return Ok((c, None));
        }
        if let Some(c) = self.sig_chains.iter().rfind(|c| c.end_time() < t) {
            return Ok((c, None));
        }
        let warning = (t < oldest.start_time()).then(|| {
            format!(
                "no signature chain for the requested time; using the oldest, starting at {}",
                super::time::to_compact(oldest.start_time())
            )
        });
        Ok((oldest, warning))
    }

    /// Chains `remove-older-than t` may delete: ending before `t`, not primary.
    pub fn chains_older_than(&self, t: i64) -> Vec<&BackupChain> {
        self.chains
            .iter()
            .enumerate()
            .filter(|(i, c)| c.end_time() < t && Some(*i) != self.primary)
            .map(|(_, c)| c)
            .collect()
    }

    /// Signature chains `remove-older-than t` may delete.
    pub fn sig_chains_older_than(&self, t: i64) -> Vec<&SigChain> {
        self.sig_chains
            .iter()
            .enumerate()
            .filter(|(i, c)| c.end_time() < t && Some(*i) != self.primary_sig)
            .map(|(_, c)| c)
            .collect()
    }

    /// Sets older than `t` that can't be deleted because a chain ending at or
    /// after `t` depends on them, by time.
    pub fn sets_older_than_required(&self, t: i64) -> Vec<&BackupSet> {
        let mut v: Vec<&BackupSet> =
            self.chains.iter().filter(|c| c.end_time() >= t).flat_map(|c| c.sets()).filter(|s| s.time() < t).collect();
        v.sort_by_key(|s| s.time());
        v
    }

    /// Start time of the n-th newest chain by full-set time (n ≥ 1), as
    /// `remove-all-but-n-full` uses it.
    pub fn nth_last_full_time(&self, n: usize) -> Option<i64> {
        let mut starts: Vec<i64> = self.chains.iter().map(BackupChain::start_time).collect();
        starts.sort_unstable_by(|a, b| b.cmp(a));
        starts.get(n.checked_sub(1)?).copied()
    }

    /// Files `cleanup` deletes: (local, remote). Remote: the files of orphaned
    /// and incomplete sets and the remote orphaned signatures; local: the
    /// local orphaned signatures.
    pub fn extraneous(&self) -> (Vec<String>, Vec<String>) {
        let mut remote: Vec<String> = self
            .orphaned_sets
            .iter()
            .chain(&self.incomplete_sets)
            .flat_map(|s| s.remote_files())
            .map(str::to_string)
            .collect();
        remote.extend(self.remote_orphaned_sigs.iter().cloned());
        (self.local_orphaned_sigs.clone(), remote)
    }
}

/// Signature chains of one listing (§1.7 step 4): each full-sig opens a
/// chain; new-sigs sorted by T1 join the first chain ending at their T1.
fn sig_chains(files: &[(&String, FileName)], local: bool) -> (Vec<SigChain>, Vec<String>) {
    let sig = |n: &str, f: &FileName| SigFile { name: n.to_string(), start_time: f.start, end_time: f.end };
    let mut chains: Vec<SigChain> = files
        .iter()
        .filter(|(_, f)| f.kind == FileKind::FullSig)
        .map(|(n, f)| SigChain { local, full: sig(n, f), incs: Vec::new() })
        .collect();
    let mut news: Vec<&(&String, FileName)> = files.iter().filter(|(_, f)| f.kind == FileKind::NewSig).collect();
    news.sort_by_key(|(_, f)| f.start);
    let mut orphans = Vec::new();
    for (n, f) in news {
        match chains.iter_mut().find(|c| c.end_time() == f.start) {
            Some(c) => c.incs.push(sig(n, f)),
            None => orphans.push(n.to_string()),
        }
    }
    (chains, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dupfmt::time::to_compact;

    fn full(t: i64, vols: u64) -> Vec<String> {
        let ts = to_compact(t);
        let mut v: Vec<String> = (1..=vols).map(|n| format!("duplicity-full.{ts}.vol{n}.difftar.gz")).collect();
        v.push(format!("duplicity-full.{ts}.manifest"));
        v.push(format!("duplicity-full-signatures.{ts}.sigtar.gz"));
        v
    }

    fn inc(t1: i64, t2: i64, vols: u64) -> Vec<String> {
        let (a, b) = (to_compact(t1), to_compact(t2));
        let mut v: Vec<String> = (1..=vols).map(|n| format!("duplicity-inc.{a}.to.{b}.vol{n}.difftar.gz")).collect();
        v.push(format!("duplicity-inc.{a}.to.{b}.manifest"));
        v.push(format!("duplicity-new-signatures.{a}.to.{b}.sigtar.gz"));
        v
    }

    fn build(remote: &[String], local: &[String]) -> Collection {
        Collection::build(remote, local, &Naming::default()).unwrap()
    }

    fn ends(c: &Collection) -> Vec<(i64, i64, usize)> {
        c.chains.iter().map(|ch| (ch.start_time(), ch.end_time(), ch.incs.len())).collect()
    }

    const B: i64 = 1_700_000_000;

    #[test]
    fn signatures_of_an_unfinished_set_join_no_chain() {
        // A backup stopped after storing its volume and its signatures but
        // before its manifest, in the cache and on the backend.
        let mut remote = [full(B, 1), inc(B, B + 100, 1), inc(B + 100, B + 200, 1)].concat();
        let manifest = format!("duplicity-inc.{}.to.{}.manifest", to_compact(B + 100), to_compact(B + 200));
        remote.retain(|n| *n != manifest);
        let sig = format!("duplicity-new-signatures.{}.to.{}.sigtar.gz", to_compact(B + 100), to_compact(B + 200));
        let local: Vec<String> = remote.iter().filter(|n| n.contains("signatures")).cloned().collect();
        let c = build(&remote, &local);
        assert_eq!(ends(&c), vec![(B, B + 100, 1)]);
        assert_eq!(c.primary, Some(0));
        for local in [true, false] {
            let chain = c.sig_chains.iter().find(|s| s.local == local).unwrap();
            assert_eq!(chain.end_time(), B + 100, "the basis ends with the last published set");
        }
        assert_eq!(c.sig_chain_at(i64::MAX).unwrap().0.end_time(), B + 100);
        assert_eq!(c.incomplete_sets.len(), 1);
        assert_eq!(
            (c.local_orphaned_sigs.clone(), c.remote_orphaned_sigs.clone()),
            (vec![sig.clone()], vec![sig.clone()])
        );
        assert!(c.extraneous().1.contains(&sig), "cleanup deletes them");
    }

    #[test]
    fn two_chains() {
        // Listing order must not matter for the result.
        let mut names =
            [full(B, 2), inc(B, B + 100, 1), inc(B + 100, B + 150, 1), full(B + 200, 1), inc(B + 200, B + 300, 1)]
                .concat();
        names.push("unrelated.txt".into());
        names.reverse();
        let c = build(&names, &[]);
        assert_eq!(ends(&c), vec![(B, B + 150, 2), (B + 200, B + 300, 1)]);
        assert_eq!(c.primary, Some(1));
        assert_eq!(
            c.primary_sig_chain().map(|s| (s.start_time(), s.end_time(), s.local)),
            Some((B + 200, B + 300, false))
        );
        assert_eq!(c.secondary_chains().count(), 1);
        assert!(c.orphaned_sets.is_empty() && c.incomplete_sets.is_empty() && c.warnings.is_empty());
        let first = &c.chains[0];
        assert_eq!(first.full.volumes.len(), 2);
        assert_eq!(first.num_volumes(), 4);
        assert!(first.full.compressed && !first.full.encrypted);
        assert_eq!(first.full.suffix(), Suffix::Gzip);
        assert_eq!(first.sets_at(B + 120).len(), 2);
        assert_eq!(
            first.full.remote_files(),
            vec![
                "duplicity-full.20231114T221320Z.vol1.difftar.gz",
                "duplicity-full.20231114T221320Z.vol2.difftar.gz",
                "duplicity-full.20231114T221320Z.manifest"
            ]
        );

        // Chain for a time (§6.5).
        assert_eq!(c.chain_at(B + 50).unwrap().start_time(), B);
        assert_eq!(c.chain_at(B + 150).unwrap().start_time(), B);
        assert_eq!(c.chain_at(B + 170).unwrap().start_time(), B, "newest ending before");
        assert_eq!(c.chain_at(B + 999).unwrap().start_time(), B + 200);
        assert_eq!(c.chain_at(B - 10).unwrap().start_time(), B, "oldest");
        // Signature chain for a time (§6.6).
        assert_eq!(c.sig_chain_at(B + 250).unwrap().0.start_time(), B + 200);
        assert_eq!(c.sig_chain_at(B + 170).unwrap().0.start_time(), B);
        let (s, w) = c.sig_chain_at(B - 10).unwrap();
        assert_eq!((s.start_time(), w.is_some()), (B, true));
        assert_eq!(c.sig_chains[0].files_at(Some(B + 120)).len(), 2);
        assert_eq!(c.sig_chains[0].files_at(None).len(), 3);

        // Retention (§6.9).
        assert!(c.chains_older_than(B + 150).is_empty(), "end == t is not older");
        assert_eq!(c.chains_older_than(B + 151).len(), 1);
        assert_eq!(c.chains_older_than(B + 10_000).len(), 1, "never the primary chain");
        assert_eq!(c.sig_chains_older_than(B + 10_000).len(), 1);
        assert_eq!(c.sets_older_than_required(B + 50).len(), 1);
        assert_eq!(c.nth_last_full_time(1), Some(B + 200));
        assert_eq!(c.nth_last_full_time(2), Some(B));
        assert_eq!(c.nth_last_full_time(3), None);
        assert_eq!(c.nth_last_full_time(0), None);
    }

    #[test]
    fn orphans_and_incomplete() {
        let mut names = full(B, 1);
        names.extend(inc(B, B + 100, 1));
        // An incremental that continues nothing, its new-sig, a lone volume.
        names.extend(inc(B + 500, B + 600, 1));
        names.push(format!("duplicity-full.{}.vol1.difftar.gz", to_compact(B + 700)));
        let c = build(&names, &[]);
        assert_eq!(ends(&c), vec![(B, B + 100, 1)]);
        assert_eq!(c.orphaned_sets.len(), 1);
        assert_eq!(c.orphaned_sets[0].start_time, B + 500);
        assert_eq!(c.incomplete_sets.len(), 1);
        assert_eq!(c.incomplete_sets[0].kind, SetKind::Full);
        assert_eq!(c.remote_orphaned_sigs.len(), 1);
        let (local, remote) = c.extraneous();
        assert!(local.is_empty());
        assert_eq!(remote.len(), 4, "{remote:?}");
    }

    #[test]
    fn longer_incremental_replaces() {
        let mut names = full(B, 1);
        names.extend(inc(B, B + 100, 1));
        names.extend(inc(B, B + 200, 1));
        let c = build(&names, &[]);
        assert_eq!(ends(&c), vec![(B, B + 200, 1)]);
        assert!(c.orphaned_sets.is_empty());
        // The signature chain keeps the first new-sig and orphans the other.
        assert_eq!(c.remote_orphaned_sigs.len(), 1);
        assert_eq!(c.primary, None);
    }

    #[test]
    fn partial_set_from_cache() {
        // An interrupted full: two volumes uploaded, manifest and sig only as .part in the cache.
        let ts = to_compact(B);
        let remote: Vec<String> = (1..=2).map(|n| format!("duplicity-full.{ts}.vol{n}.difftar.gpg")).collect();
        let local = vec![
            format!("duplicity-full.{ts}.manifest.part"),
            format!("duplicity-full-signatures.{ts}.sigtar.part"),
            "lockfile".to_string(),
        ];
        let c = build(&remote, &local);
        assert_eq!(ends(&c), vec![(B, B, 0)]);
        let set = &c.chains[0].full;
        assert!(set.partial && set.encrypted);
        assert_eq!(set.local_manifest.as_deref(), Some(local[0].as_str()));
        assert_eq!(set.remote_files().len(), 2, "the local partial manifest is not a remote file");
        assert_eq!(c.primary, Some(0), "the local .part sig chain matches");
        assert!(c.primary_sig_chain().unwrap().local);
        // Without the cache the set is incomplete.
        let c = build(&remote, &[]);
        assert!(c.chains.is_empty());
        assert_eq!(c.incomplete_sets.len(), 1);
        // A published manifest wins over a stale .part.
        let mut remote2 = remote.clone();
        remote2.push(format!("duplicity-full.{ts}.manifest.gpg"));
        let c = build(&remote2, &local);
        assert!(!c.chains[0].full.partial);
        assert_eq!(c.chains[0].full.manifest.as_deref(), Some(remote2[2].as_str()));
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn local_sig_chain_preferred() {
        let names = [full(B, 1), inc(B, B + 100, 1)].concat();
        let local: Vec<String> = vec![
            format!("duplicity-full-signatures.{}.sigtar.gz", to_compact(B)),
            format!("duplicity-new-signatures.{}.to.{}.sigtar.gz", to_compact(B), to_compact(B + 100)),
            format!("duplicity-full.{}.manifest", to_compact(B)),
        ];
        let c = build(&names, &local);
        assert_eq!(c.sig_chains.len(), 2);
        assert!(!c.sig_chains[0].local && c.sig_chains[1].local, "remote first on equal end times");
        assert!(c.primary_sig_chain().unwrap().local);
        assert!(c.sig_chain_at(B + 50).unwrap().0.local);
        assert_eq!(c.chains[0].full.local_manifest.as_deref(), Some(local[2].as_str()));
        assert_eq!(c.chains[0].incs[0].local_manifest, None);
    }

    #[test]
    fn missing_last_signature() {
        // Two incrementals, the last new-sig missing: the last set is dropped.
        let mut names = [full(B, 1), inc(B, B + 100, 1), inc(B + 100, B + 200, 1)].concat();
        names.retain(|n| !n.contains(&format!("signatures.{}.to", to_compact(B + 100))));
        let c = build(&names, &[]);
        assert_eq!(ends(&c), vec![(B, B + 100, 1)]);
        assert_eq!(c.primary, Some(0));
        assert_eq!(c.incomplete_sets.len(), 1);
        assert_eq!(c.incomplete_sets[0].end_time, B + 200);
        assert_eq!(c.warnings.len(), 1);
        // With a single incremental duplicity does not drop it: no primary chain.
        let mut names = [full(B, 1), inc(B, B + 100, 1)].concat();
        names.retain(|n| !n.starts_with("duplicity-new-signatures"));
        let c = build(&names, &[]);
        assert_eq!(c.primary, None);
        assert_eq!(ends(&c), vec![(B, B + 100, 1)]);
        assert_eq!(c.secondary_chains().count(), 1);
    }

    #[test]
    fn duplicate_volume_is_an_error() {
        let ts = to_compact(B);
        let names = vec![
            format!("duplicity-full.{ts}.vol1.difftar.gz"),
            format!("duplicity-full.{ts}.vol1.difftar.gpg"),
            format!("duplicity-full.{ts}.manifest"),
        ];
        let e = Collection::build(&names, &[], &Naming::default()).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt);
    }

    #[test]
    fn overlapping_chains() {
        // Two fulls in the range of one chain: restore can't choose.
        let names = [full(B, 1), inc(B, B + 100, 1), full(B + 50, 1), inc(B + 50, B + 200, 1)].concat();
        let c = build(&names, &[]);
        assert_eq!(ends(&c), vec![(B, B + 100, 1), (B + 50, B + 200, 1)]);
        assert_eq!(c.chain_at(B + 60).unwrap_err().kind, Kind::Corrupt);
        assert_eq!(c.chain_at(B + 150).unwrap().start_time(), B + 50);
        let empty = build(&[], &[]);
        assert_eq!(empty.chain_at(B).unwrap_err().kind, Kind::NoBackup);
        assert_eq!(empty.sig_chain_at(B).unwrap_err().kind, Kind::NoBackup);
    }
}
