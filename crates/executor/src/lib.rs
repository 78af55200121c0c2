//! plugind-executor: tasks through containerd-shim-runc-v2.
//!
//! Not built yet: this crate is filled by issue 4. It exports nothing, so nothing can mistake it for
//! a working implementation.
