//! plugind-queue: per-key ordered job queue.
//!
//! Not built yet: this crate is filled by issue 2. It exports nothing, so nothing can mistake it for
//! a working implementation.
