//! duplicity selection rules.
