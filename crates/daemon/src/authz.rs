//! The authorization plugin chain (`--authorization-plugin`, `authorization-plugins`) the API
//! consults, over the plugin manager: each name is a managed plugin with `authz` in its
//! interface types, or else a v1 plugin found by name where Docker looks
//! (`/run/docker/plugins/NAME.sock`, `NAME.spec`/`NAME.json` under `/etc/docker/plugins` and
//! `/usr/lib/docker/plugins`, each also as `NAME/NAME.<ext>`).
//!
//! The chain is checked when it is loaded (start, SIGHUP): a name that is no plugin, no
//! authorization plugin, disabled, or not running is an error, and plugind does not start
//! (a reload keeps the chain in force). A managed plugin that is disabled later drops out of
//! the chain, as in moby; a plugin of the chain that fails or hangs denies (500), never opens.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{bail, Context};
use async_trait::async_trait;
use plugind_api::{authz::AUTHZ_CAPABILITY, AuthzChain, AuthzRequest, AuthzResponse};
use plugind_manager::{
    client::{PluginCallError, PluginClient},
    Manager,
};

/// Deadline of one authorization call (Docker's plugin client default); a managed plugin
/// enabled with `--timeout` gets that shorter one.
pub const AUTHZ_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where v1 plugins are found, Docker's directories by default.
#[derive(Debug, Clone)]
pub struct V1Dirs {
    /// Sockets (`NAME.sock`).
    pub sockets: PathBuf,
    /// Spec files (`NAME.spec`, `NAME.json`), in order.
    pub specs: Vec<PathBuf>,
}

impl Default for V1Dirs {
    fn default() -> Self {
        V1Dirs {
            sockets: PathBuf::from("/run/docker/plugins"),
            specs: vec![
                PathBuf::from("/etc/docker/plugins"),
                PathBuf::from("/usr/lib/docker/plugins"),
            ],
        }
    }
}

/// One plugin of the chain.
#[derive(Debug, Clone)]
enum Member {
    /// A managed plugin, by id (a re-created plugin of the same name is another plugin).
    Managed { id: String, name: String },
    /// A v1 plugin on a host socket.
    V1 { name: String, client: PluginClient },
}

impl Member {
    fn name(&self) -> &str {
        match self {
            Member::Managed { name, .. } | Member::V1 { name, .. } => name,
        }
    }
}

/// The chain in force; shared by the API server and the daemon's SIGHUP handler.
#[derive(Debug)]
pub struct Authz {
    manager: Manager,
    dirs: V1Dirs,
    members: RwLock<Vec<Member>>,
}

impl Authz {
    /// Resolves and checks `names` (see the module doc); an error names the culprit.
    pub async fn load(
        manager: Manager,
        dirs: V1Dirs,
        names: &[String],
    ) -> anyhow::Result<Arc<Self>> {
        let authz = Arc::new(Authz {
            manager,
            dirs,
            members: RwLock::new(Vec::new()),
        });
        authz.reload(names).await?;
        Ok(authz)
    }

    /// Replaces the chain with `names` once every one of them checks out; otherwise the chain
    /// in force stays (SIGHUP with a bad list changes nothing).
    pub async fn reload(&self, names: &[String]) -> anyhow::Result<()> {
        let mut members = Vec::with_capacity(names.len());
        for name in names {
            members.push(self.resolve(name).await?);
        }
        let shown: Vec<&str> = members.iter().map(Member::name).collect();
        tracing::info!(chain = %shown.join(","), "authorization plugins");
        *plugind_sys::sync::write(&self.members) = members;
        Ok(())
    }

    async fn resolve(&self, name: &str) -> anyhow::Result<Member> {
        if let Ok(view) = self.manager.inspect(name) {
            let record = view.record;
            let full = record.name().to_owned();
            if !record
                .plugin
                .config
                .capabilities()
                .any(|c| c == AUTHZ_CAPABILITY)
            {
                bail!("authorization plugin {name}: plugin {full} is not an authorization plugin (no authz/1.0 in its interface types)");
            }
            // moby's plugin getter: a disabled plugin is an error, no fallback to v1.
            if !record.desired_enabled() {
                bail!("authorization plugin {name}: plugin {full} found but disabled");
            }
            self.manager
                .get_enabled(record.id().as_str(), AUTHZ_CAPABILITY)
                .with_context(|| {
                    format!("authorization plugin {name}: plugin {full} is not running")
                })?;
            return Ok(Member::Managed {
                id: record.id().as_str().to_owned(),
                name: full,
            });
        }
        let dirs = self.dirs.clone();
        let owned = name.to_owned();
        let socket = tokio::task::spawn_blocking(move || find_v1(&dirs, &owned))
            .await
            .context("looking up a v1 plugin")??;
        let Some(socket) = socket else {
            bail!("authorization plugin {name}: plugin not found (no managed plugin of that name, no v1 plugin in /run/docker/plugins, /etc/docker/plugins or /usr/lib/docker/plugins)");
        };
        let client = PluginClient::new(name, &socket);
        // Docker's handshake: the plugin must say it implements authz.
        let answer = client
            .call("Plugin.Activate", None, AUTHZ_CALL_TIMEOUT)
            .await
            .with_context(|| {
                format!(
                    "authorization plugin {name}: activating {}",
                    socket.display()
                )
            })?;
        let implements = answer
            .get("Implements")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|i| i.as_str() == Some(AUTHZ_CAPABILITY)));
        if !implements {
            bail!(
                "authorization plugin {name}: the v1 plugin at {} does not implement authz",
                socket.display()
            );
        }
        Ok(Member::V1 {
            name: name.to_owned(),
            client,
        })
    }

    /// The members in force now: managed plugins that were disabled or removed meanwhile
    /// drop out (moby's `RemovePlugin` on disable).
    fn current(&self) -> Vec<Member> {
        plugind_sys::sync::read(&self.members)
            .iter()
            .filter(|m| match m {
                Member::Managed { id, .. } => self
                    .manager
                    .inspect(id)
                    .is_ok_and(|v| v.record.desired_enabled()),
                Member::V1 { .. } => true,
            })
            .cloned()
            .collect()
    }
}

#[async_trait]
impl AuthzChain for Authz {
    fn plugins(&self) -> Vec<String> {
        self.current().iter().map(|m| m.name().to_owned()).collect()
    }

    async fn call(
        &self,
        name: &str,
        method: &str,
        request: &AuthzRequest,
    ) -> Result<AuthzResponse, String> {
        let member = self
            .current()
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("{name} is no longer an authorization plugin"))?;
        let client = match member {
            Member::V1 { client, .. } => client,
            // A crashed plugin (desired enabled, not running) fails here: closed, not open.
            Member::Managed { id, .. } => {
                self.manager
                    .get_enabled(&id, AUTHZ_CAPABILITY)
                    .map_err(|e| e.to_string())?
                    .client
            }
        };
        let body = serde_json::to_value(request).map_err(|e| e.to_string())?;
        let answer = client
            .call(method, Some(&body), AUTHZ_CALL_TIMEOUT)
            .await
            .map_err(|e| call_error(&e))?;
        serde_json::from_value(answer).map_err(|e| format!("{method}: invalid answer: {e}"))
    }

    fn guards(&self, name: &str) -> Option<String> {
        let view = self.manager.inspect(name).ok()?;
        let id = view.record.id().as_str();
        self.current().into_iter().find_map(|m| match m {
            Member::Managed { id: member, name } if member == id => Some(name),
            _ => None,
        })
    }
}

/// A failed call in the words that follow `plugin <name> failed with error: ` (the name is
/// not repeated).
fn call_error(e: &PluginCallError) -> String {
    match e {
        PluginCallError::Connect { socket, source, .. } => {
            format!("cannot connect to {}: {source}", socket.display())
        }
        PluginCallError::Timeout {
            method, timeout, ..
        } => format!("{method}: no answer within {timeout:?}"),
        PluginCallError::NotImplemented { method, .. } => format!("{method}: not implemented"),
        PluginCallError::Remote { message, .. } => message.clone(),
        PluginCallError::Protocol { method, detail, .. } => format!("{method}: {detail}"),
    }
}

/// Docker's v1 lookup: the socket first, then spec files; `None` when there is none. The name
/// is one path component (no `/`, not `.` or `..`), so it cannot leave the directories.
fn find_v1(dirs: &V1Dirs, name: &str) -> anyhow::Result<Option<PathBuf>> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("authorization plugin {name:?}: not a valid plugin name");
    }
    let candidates = |base: &Path, ext: &str| {
        [
            base.join(format!("{name}{ext}")),
            base.join(name).join(format!("{name}{ext}")),
        ]
    };
    for path in candidates(&dirs.sockets, ".sock") {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(Some(path));
        }
    }
    for base in &dirs.specs {
        for ext in [".spec", ".json"] {
            for path in candidates(base, ext) {
                if !path.exists() {
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let addr = if ext == ".json" {
                    let spec: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", path.display()))?;
                    spec.get("Addr")
                        .and_then(|a| a.as_str())
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    text.trim().to_owned()
                };
                let Some(socket) = addr.strip_prefix("unix://") else {
                    bail!("authorization plugin {name}: {} names {addr:?}; only unix:// addresses are supported", path.display());
                };
                let socket = PathBuf::from(socket);
                if !socket.is_absolute() {
                    bail!(
                        "authorization plugin {name}: {} names a relative socket path",
                        path.display()
                    );
                }
                return Ok(Some(socket));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_do_not_repeat_the_plugin_name() {
        let e = PluginCallError::Timeout {
            plugin: "authz/plugin:latest".into(),
            method: "AuthZPlugin.AuthZReq".into(),
            timeout: Duration::from_secs(2),
        };
        assert_eq!(call_error(&e), "AuthZPlugin.AuthZReq: no answer within 2s");
    }

    #[test]
    fn v1_plugins_are_found_where_docker_looks() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = V1Dirs {
            sockets: dir.path().join("run"),
            specs: vec![dir.path().join("etc"), dir.path().join("lib")],
        };
        std::fs::create_dir_all(&dirs.sockets).unwrap();
        std::fs::create_dir_all(dirs.specs[0].join("nested")).unwrap();
        std::fs::create_dir_all(&dirs.specs[1]).unwrap();
        assert!(find_v1(&dirs, "none").unwrap().is_none());
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(find_v1(&dirs, bad).is_err(), "{bad:?}");
        }
        let sock = dirs.sockets.join("direct.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(find_v1(&dirs, "direct").unwrap(), Some(sock));
        std::fs::write(
            dirs.specs[0].join("nested/nested.spec"),
            "unix:///run/x.sock\n",
        )
        .unwrap();
        assert_eq!(
            find_v1(&dirs, "nested").unwrap(),
            Some(PathBuf::from("/run/x.sock"))
        );
        std::fs::write(
            dirs.specs[1].join("j.json"),
            r#"{"Name":"j","Addr":"unix:///run/j.sock"}"#,
        )
        .unwrap();
        assert_eq!(
            find_v1(&dirs, "j").unwrap(),
            Some(PathBuf::from("/run/j.sock"))
        );
        std::fs::write(dirs.specs[1].join("t.spec"), "tcp://127.0.0.1:1\n").unwrap();
        assert!(find_v1(&dirs, "t")
            .unwrap_err()
            .to_string()
            .contains("only unix://"));
    }
}
