//! Walking a tree in duplicity order.
