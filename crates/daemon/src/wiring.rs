//! Where the daemon meets the plugin manager: [`build_backend`] turns a [`Config`] into the
//! API's [`PluginBackend`] and a [`Lifecycle`] handle for reload and shutdown.
//!
//! The manager is not wired yet: until it is, [`build_backend`] fails instead of serving an
//! API that pretends to manage plugins.

use std::sync::Arc;

use async_trait::async_trait;
use plugind_api::PluginBackend;

use crate::config::Config;

/// What the daemon asks of the manager besides the API calls.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Applies a re-read configuration (SIGHUP); only runtimes and the default runtime change
    /// at run time.
    async fn reload(&self, config: &Config) -> anyhow::Result<()>;

    /// Stops the manager. With live restore plugins keep running; otherwise they are stopped.
    async fn shutdown(&self) -> anyhow::Result<()>;
}

/// Builds the plugin manager for `config` (it takes the lock on its root).
pub async fn build_backend(
    config: &Config,
) -> anyhow::Result<(Arc<dyn PluginBackend>, Box<dyn Lifecycle>)> {
    anyhow::bail!(
        "plugin manager not wired yet (root {}): plugind cannot serve plugins in this build",
        config.root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_to_pretend() {
        let cli = crate::config::Cli::parse_from(["plugind".into()]).unwrap();
        let config = Config::load(&cli).unwrap();
        let err = build_backend(&config)
            .await
            .err()
            .expect("must fail until wired");
        assert!(err.to_string().contains("plugin manager not wired yet"));
    }
}
