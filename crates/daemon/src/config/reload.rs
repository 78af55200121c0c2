//! What a SIGHUP changes: which re-read settings apply at once and which wait for a restart
//! ([`ReloadDiff`]), and the running configuration with the applied ones swapped in.

use super::*;

/// What a SIGHUP changed: settings applied at once, and settings that differ from the running
/// ones but take effect only after a restart (named as in the TOML file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadDiff {
    /// Changed and applied.
    pub applied: Vec<&'static str>,
    /// Changed, but the running daemon keeps its value until it is restarted.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadDiff {
    /// Compares the running configuration with a re-read one.
    pub fn between(running: &Config, new: &Config) -> ReloadDiff {
        let mut diff = ReloadDiff::default();
        let mut check = |changed: bool, name: &'static str, live: bool| {
            if changed {
                if live {
                    diff.applied.push(name);
                } else {
                    diff.needs_restart.push(name);
                }
            }
        };
        check(running.runtimes != new.runtimes, "runtimes", true);
        check(
            running.default_runtime != new.default_runtime,
            "default-runtime",
            true,
        );
        check(
            running.shutdown_timeout != new.shutdown_timeout,
            "shutdown-timeout",
            true,
        );
        check(running.root != new.root, "root", false);
        check(running.exec_root != new.exec_root, "exec-root", false);
        check(running.socket != new.socket, "host", false);
        check(
            running.live_restore != new.live_restore,
            "live-restore",
            false,
        );
        check(running.log_level != new.log_level, "log-level", false);
        check(running.log_format != new.log_format, "log-format", false);
        check(
            running.create_body_limit != new.create_body_limit,
            "create-body-limit",
            false,
        );
        check(
            running.volume_timeout != new.volume_timeout,
            "volume-timeout",
            false,
        );
        check(
            running.plugin_start_timeout != new.plugin_start_timeout,
            "plugin-start-timeout",
            false,
        );
        check(running.publish_dir != new.publish_dir, "publish-dir", false);
        check(
            running.docker_specs_dir != new.docker_specs_dir,
            "publish-docker-specs",
            false,
        );
        check(
            running.insecure_registries != new.insecure_registries,
            "insecure-registries",
            false,
        );
        check(running.plugins != new.plugins, "plugin", true);
        check(running.prune != new.prune, "prune", true);
        check(
            running.metrics_addr != new.metrics_addr,
            "metrics-addr",
            false,
        );
        // Applied at once: monitors read the policy at every round.
        check(running.health != new.health, "health", true);
        check(running.group != new.group, "group", false);
        check(
            running.authorization_plugins != new.authorization_plugins,
            "authorization-plugins",
            true,
        );
        check(
            running.events_max_bytes != new.events_max_bytes,
            "events-max-bytes",
            false,
        );
        check(
            running.events_max_age != new.events_max_age,
            "events-max-age",
            false,
        );
        check(running.shim_group != new.shim_group, "shim-group", false);
        diff
    }

    /// The running configuration after the reload: `new`'s applied settings, `running`'s others.
    pub fn apply(running: &Config, new: &Config) -> Config {
        Config {
            runtimes: new.runtimes.clone(),
            default_runtime: new.default_runtime.clone(),
            shutdown_timeout: new.shutdown_timeout,
            plugins: new.plugins.clone(),
            prune: new.prune,
            health: new.health,
            authorization_plugins: new.authorization_plugins.clone(),
            ..running.clone()
        }
    }
}
