//! plugind-store: plugin records on disk.
//!
//! Not built yet: this crate is filled by issue 2. It exports nothing, so nothing can mistake it for
//! a working implementation.
