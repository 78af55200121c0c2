//! plugind-api: the Docker Engine API subset.
//!
//! Not built yet: this crate is filled by issue 6. It exports nothing, so nothing can mistake it for
//! a working implementation.
