//! plugind-sys: the only home of nix/libc (atomic files, locks, mounts, signals, probes).
//!
//! Not built yet: this crate is filled by issue 2. It exports nothing, so nothing can mistake it for
//! a working implementation.
