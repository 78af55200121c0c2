//! plugind-bundle: OCI bundle directories.
//!
//! Not built yet: this crate is filled by issue 3. It exports nothing, so nothing can mistake it for
//! a working implementation.
