//! The stages of the pipeline, one module per binary in `cmds/`:
//!
//! * [`scan`] (dup-scan): walk a tree with duplicity's selection rules;
//! * [`sig`] (dup-sig): the signature state of an archive at a time;
//! * [`delta`] (dup-delta): what changed against that state, with its data;
//! * [`pack`] (dup-pack): volumes, signature tar and manifest;
//! * [`put`] (dup-put): store them on a backend, manifest last;
//! * [`sync`] (dup-sync): the local cache brought in line with the backend;
//! * [`ls`] (dup-ls): collection status, retention plans, record tables;
//! * [`get`] (dup-get): restore, verify or stream a backup.

pub mod delta;
pub mod get;
pub mod ls;
pub mod pack;
pub mod put;
pub mod scan;
pub mod sig;
pub mod sync;
