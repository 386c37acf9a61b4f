//! dup: duplicity-compatible backups as small binaries over one record stream.
//!
//! Everything shared lives here; each binary in `cmds/` is argument parsing
//! plus a loop over records. Nothing in the library prints to stdout.

pub mod api;
pub mod archive;
pub mod cache;
pub mod cli;
pub mod crypto;
pub mod delta;
pub mod dupfmt;
pub mod error;
pub mod index;
pub mod pack;
pub mod parblock;
pub mod pipe;
pub mod progress;
pub mod put;
pub mod record;
pub mod restore;
pub mod retention;
pub mod rsync;
pub mod scan;
pub mod select;
pub mod sigstate;
pub mod spool;
pub mod status;
pub mod storage;
pub mod sync;
pub mod table;

pub use error::{Error, Kind, Result};
