//! App side of TAS (low-level API). Work in progress.
