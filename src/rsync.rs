//! librsync signatures, deltas and patches, streamed.
