//! plugind-distribution: OCI registry client for plugin pull and push.
//!
//! Not built yet: this crate is filled by the distribution issue. It exports nothing, so nothing can mistake it for
//! a working implementation.
