//! plugind-api: the Docker Engine API subset that `docker plugin ...` and the Python `docker`
//! SDK speak, over HTTP/1.1 on a unix socket.
//!
//! Main items:
//! - [`PluginBackend`]: the trait the plugin manager implements; the API calls nothing else;
//! - [`VolumeBackend`]: the same seam for the volume routes, implemented by
//!   `plugind_volumes::VolumeService`;
//! - [`bind`] and [`serve`]: open the socket and serve it until a shutdown future completes;
//! - [`serve_metrics`]: the `--metrics-addr` server (`GET /metrics`, Prometheus text);
//! - [`AuthzChain`]: the authorization plugin chain (`authz/1.0`) every request goes
//!   through when the daemon configures one (moby's `pkg/authorization` middleware);
//! - [`PluginJson`], [`EventMessage`], [`BackendError`]: what the backend hands back.
//!
//! Layout: `server` (socket, accept loop, routing, version checks, common headers), `plugins`
//! and `system` (the handlers), `filters` (Docker's `filters` parameter), `body` (size-limited
//! and streamed request bodies), `connection` (idle, header and write deadlines, the
//! descriptor budget), `gojson` (Go's JSON error texts), `progress` (Docker's
//! progress stream for pull, upgrade and push), `query` (Go's query, bool,
//! integer and time parsing), `error` (the single kind -> status mapping).
//!
//! Architecture invariant: only this crate knows the HTTP protocol and Docker's wire quirks;
//! it holds no plugin state and decides no plugin semantics.

#![warn(missing_docs)]

pub mod authz;
mod backend;
mod body;
mod connection;
mod error;
mod filters;
#[doc(hidden)]
pub mod fuzzing;
mod gojson;
mod manager_backend;
mod metrics_server;
mod plugins;
mod progress;
mod query;
mod remote;
mod server;
mod system;
mod volume_backend;
mod volume_json;
mod volumes;

pub use authz::{AuthzChain, AuthzRequest, AuthzResponse};
pub use backend::{
    BackendError, BackendInfo, EventActor, EventMessage, EventSubscription, HealthJson,
    HealthProbeJson, LogLine, LogSource, LogStream, LogsOptions, PluginBackend, PluginJson,
    PluginPrivilege, PluginSetEntryInfo, PluginSetInfo, PluginStatus, RemoteOperation, RuntimeInfo,
    Stage,
};
pub use connection::{connection_budget, reserved_descriptors};
pub use error::ApiError;
pub use manager_backend::{ManagerBackend, RuntimeFacts};
pub use metrics_server::{serve_metrics, MetricsListener};
pub use progress::ProgressSink;
pub use server::{
    bind, bind_owned, serve, ServerOptions, API_VERSION, DEFAULT_BODY_TIMEOUT,
    DEFAULT_CREATE_BODY_LIMIT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_JSON_BODY_LIMIT, DEFAULT_MAX_CONNECTIONS, MIN_API_VERSION,
};
pub use volume_backend::VolumeBackend;
