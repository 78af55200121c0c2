//! plugind-manager: the plugin lifecycle.
//!
//! Not built yet: this crate is filled by issue 5. It exports nothing, so nothing can mistake it for
//! a working implementation.
