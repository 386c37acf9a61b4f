//! dup-ls's library side: an archive's sets as records ([`status`]), what
//! the retention commands delete ([`retention`]), and any record stream as
//! a table for people ([`table`]).

pub mod files;
pub mod retention;
pub mod status;
pub mod table;
