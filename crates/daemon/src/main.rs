//! `plugind`: the daemon binary (configuration, logging, signals, wiring).
//!
//! Not built yet: the daemon arrives with issue 6. Until then this binary refuses to run
//! rather than pretend to serve the API.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("plugind: the daemon is not implemented yet (issue 6)")
}
