//! duplicity 0.8 archive formats: file names, manifests, tar volumes, times.
