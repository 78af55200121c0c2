//! plugind-blobstore: content-addressed sha256 blob storage.
//!
//! Not built yet: this crate is filled by issue 2. It exports nothing, so nothing can mistake it for
//! a working implementation.
