//! Where bytes go and come from, knowing nothing of records:
//!
//! * [`storage`]: backends (opendal) behind one small blocking interface;
//! * [`cache`]: the local metadata cache, in duplicity's layout;
//! * [`spool`]: write-then-read buffers that spill to disk;
//! * [`pipe`]: bounded in-process pipes between threads;
//! * [`parblock`]: block-parallel compression into an ordered writer;
//! * [`owners`]: user and group names and ids (passwd, group).

pub mod cache;
pub mod owners;
pub mod parblock;
pub mod pipe;
pub mod spool;
pub mod storage;
