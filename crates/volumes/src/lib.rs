//! plugind-volumes: Docker's volume service over volume-driver plugins.
//!
//! Not built yet: this crate is filled by issue 7. It exports nothing, so nothing can mistake it for
//! a working implementation.
