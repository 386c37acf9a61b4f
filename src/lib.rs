//! dup: duplicity-compatible backups as small binaries over one record stream.
//!
//! Everything shared lives here; each binary in `cmds/` is argument parsing
//! plus a loop over records. Nothing in the library prints to stdout. The
//! folders follow the pipeline, each depending only on those below it:
//!
//! * [`api`]: the operations of a front end, running the stages in threads;
//! * [`stage`]: one module per binary (scan, sig, delta, pack, put, sync,
//!   ls, get), the work behind each;
//! * [`archive`]: one archive as the stages open it (backend, cache, names,
//!   keys);
//! * [`crypto`]: OpenPGP as duplicity uses it, keys and passphrases;
//! * [`dupfmt`]: duplicity's formats (names, times, manifests, tar volumes,
//!   librsync signatures, path order);
//! * [`record`]: the record stream between the binaries;
//! * [`io`]: storage backends, the local cache, spools, in-process pipes,
//!   parallel block compression;
//! * [`error`], [`progress`], [`cli`]: the base every binary shares.

pub mod api;
pub mod archive;
pub mod cancel;
pub mod cli;
pub mod crypto;
pub mod dupfmt;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod names;
pub mod progress;
pub mod record;
pub mod stage;

pub use error::{Error, Kind, Result};
