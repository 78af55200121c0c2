//! plugind-tests: the workspace's cross-crate tests (tidy rules now; end-to-end tests against
//! real runc, the shim, a registry and the docker CLI as the crates arrive).
