//! dup's integration tests, one binary (linking the whole stack once, not
//! once a file): each module runs the built programs, real duplicity, gpg
//! and the loopback servers as its file says. `cargo test --test it
//! wrapper::` runs one module.

mod common;

mod api;
mod api_cancel;
mod api_example;
mod api_verbs;
mod backends;
mod compat;
mod conformance;
mod crypto;
mod encryption;
mod fuzz_replay;
mod get;
mod hostile;
mod index;
mod manpages;
mod progress;
mod retention;
mod scan;
mod seek;
mod source_change;
mod stream;
mod trust_lock;
mod trust_restore;
mod wrapper;
