//! dup: duplicity-compatible backups as small binaries over one record stream.
//!
//! **For a program, [`api`] is the surface**: backup, snapshots, files,
//! changes, restore, verify, delete, coalesce and connection tests, each a
//! function over owned options with a [`progress::Progress`] sink and an
//! [`api::Cancel`] token, keeping no global state. [`progress`] (events),
//! [`record`] (the entries listed), [`crypto`] (keys) and [`error`] are
//! what its types are made of. The other modules (hidden from these docs)
//! are the binaries' internals and change without notice.
//!
//! Everything shared lives here; each binary in `cmds/` is argument parsing
//! plus a loop over records. Nothing in the library prints to stdout. The
//! folders follow the pipeline, each depending only on those below it:
//!
//! * [`api`]: the operations of a front end, running the stages in threads;
//! * `stage`: one module per binary (scan, sig, delta, pack, put, sync,
//!   ls, get), the work behind each;
//! * `archive`: one archive as the stages open it (backend, cache, names,
//!   keys);
//! * [`crypto`]: OpenPGP as duplicity uses it, keys and passphrases;
//! * `dupfmt`: duplicity's formats (names, times, manifests, tar volumes,
//!   librsync signatures, path order);
//! * [`record`]: the record stream between the binaries;
//! * `io`: storage backends, the local cache, spools, in-process pipes,
//!   parallel block compression;
//! * [`error`], [`progress`], [`cancel`], `cli`: the base every binary shares.

pub mod api;
#[doc(hidden)]
pub mod archive;
pub mod cancel;
#[doc(hidden)]
pub mod cli;
pub mod crypto;
#[doc(hidden)]
pub mod dupfmt;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod io;
#[doc(hidden)]
pub mod joblog;
#[doc(hidden)]
pub mod names;
pub mod progress;
pub mod record;
#[doc(hidden)]
pub mod stage;

pub use error::{Error, Kind, Result};
