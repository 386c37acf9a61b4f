//! Collection status as records: every set of an archive with its place
//! (primary or secondary chain, orphaned, incomplete).

use crate::dupfmt::collection::{BackupSet, Collection, SetKind};
use crate::record::{SetInfo, SetStatus, SetType};

fn info(s: &BackupSet, status: SetStatus, chain: Option<u64>) -> SetInfo {
    SetInfo {
        set_type: if s.kind == SetKind::Full { SetType::Full } else { SetType::Inc },
        start: s.start_time,
        end: s.end_time,
        volumes: s.volumes.len() as u64,
        status,
        chain,
        encrypted: s.encrypted,
        compressed: s.compressed,
        files: s.remote_files().into_iter().map(str::to_string).collect(),
    }
}

/// All sets: chains oldest first (each full, then its incrementals), then
/// orphaned and incomplete sets.
pub fn sets(coll: &Collection) -> Vec<SetInfo> {
    let mut out = Vec::new();
    for (i, chain) in coll.chains.iter().enumerate() {
        let status = if Some(i) == coll.primary { SetStatus::Primary } else { SetStatus::Secondary };
        for s in chain.sets() {
            out.push(info(s, status, Some(i as u64 + 1)));
        }
    }
    out.extend(coll.orphaned_sets.iter().map(|s| info(s, SetStatus::Orphaned, None)));
    out.extend(coll.incomplete_sets.iter().map(|s| info(s, SetStatus::Incomplete, None)));
    out
}
