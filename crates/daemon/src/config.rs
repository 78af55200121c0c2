//! The daemon's configuration: command-line flags (dockerd's spellings where dockerd has the
//! same setting), an optional TOML file, and the validated [`Config`] the rest of the program
//! sees. Flags given on the command line override the file; the file overrides the defaults.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{parser::ValueSource, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

/// The runtime every daemon knows; like dockerd, it cannot be redefined.
pub const BUILTIN_RUNTIME: &str = "runc";

/// plugind: runs Docker managed plugins and serves the Docker plugin API.
#[derive(Debug, Clone, Parser)]
// Like dockerd (pflag), a flag given twice is not an error: the last occurrence wins.
// `--version` is ours (not clap's): it also asks runc and the shim for theirs.
#[command(
    name = "plugind",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Cli {
    /// Print plugind's version and commit and the runc/shim versions found, then exit.
    #[arg(short = 'v', long, short_alias = 'V')]
    pub version: bool,
    /// Check the configuration and the host, print what is wrong, then exit (also spelled
    /// `plugind check [OPTIONS]`).
    #[arg(long)]
    pub validate: bool,
    /// Print the Podman containers.conf drop-in naming every published volume plugin (as the
    /// running daemon keeps it in the publish directory), then exit (also spelled
    /// `plugind podman-conf [OPTIONS]`).
    #[arg(long)]
    pub podman_conf: bool,
    /// With --podman-conf: write the drop-in to FILE (atomically) instead of printing it, e.g.
    /// /etc/containers/containers.conf.d/plugind.conf.
    #[arg(long, value_name = "FILE", requires = "podman_conf")]
    pub podman_conf_output: Option<PathBuf>,
    /// `--root` and `--exec-root`.
    #[command(flatten)]
    pub roots: Roots,
    /// API socket to listen on; only unix://PATH is supported.
    #[arg(
        short = 'H',
        long,
        value_name = "unix://PATH",
        default_value = "unix:///run/plugind/plugind.sock"
    )]
    pub host: String,
    /// Keep plugins running while the daemon is down, and re-attach to them at start.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub live_restore: bool,
    /// Read settings from this TOML file; flags given on the command line take precedence.
    #[arg(long = "config-file", visible_alias = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Runtime used for plugins unless configured otherwise.
    #[arg(long, value_name = "NAME", default_value = BUILTIN_RUNTIME)]
    pub default_runtime: String,
    /// Register a runtime: NAME=PATH[,ARG...] (repeatable; the file's [runtimes.NAME] tables
    /// use `path` and `args`).
    #[arg(long = "add-runtime", value_name = "NAME=PATH[,ARG...]")]
    pub add_runtime: Vec<String>,
    /// Seconds to wait for requests and plugins to stop at shutdown before exiting anyway.
    #[arg(long, value_name = "SECONDS", default_value = "15")]
    pub shutdown_timeout: u64,
    /// Log level.
    #[arg(short = 'l', long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Shorthand for --log-level=debug.
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest plugin tar accepted by `docker plugin create`, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = plugind_api::DEFAULT_CREATE_BODY_LIMIT)]
    pub create_body_limit: u64,
    /// Deadline of each volume-driver call, in seconds; 0 keeps Docker's (2 min for Create and
    /// Mount, 1 min for the others). A hung plugin never holds a volume request longer.
    #[arg(long, value_name = "SECONDS", default_value = "0")]
    pub volume_timeout: u64,
    /// Most API connections served at once; more are answered 503. Lowered at start to fit
    /// the descriptor limit with room left for plugins.
    #[arg(long, value_name = "N", default_value_t = plugind_api::DEFAULT_MAX_CONNECTIONS)]
    pub api_max_connections: usize,
    /// Seconds a client has to send a request's head once it started it.
    #[arg(long, value_name = "SECONDS", default_value_t = plugind_api::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub api_header_timeout: u64,
    /// Seconds an idle keep-alive API connection stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = plugind_api::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub api_idle_timeout: u64,
    /// Seconds a request body may send nothing, or a client may read nothing of its answer,
    /// before the connection is cut (per read: uploads that keep moving are never cut).
    #[arg(long, value_name = "SECONDS", default_value_t = plugind_api::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub api_body_timeout: u64,
    /// Seconds an enabled plugin may take to accept connections on its socket before its start
    /// fails (Docker's fixed value: 12.5).
    #[arg(long, value_name = "SECONDS", default_value = "12.5")]
    pub plugin_start_timeout: f64,
    /// Directory of the published volume-plugin sockets for Podman and Docker daemons
    /// (default `<exec-root>/publish`).
    #[arg(long, value_name = "DIR")]
    pub publish_dir: Option<PathBuf>,
    /// Also write a Docker v1 spec file (`<name>.spec`) per published volume plugin, so a
    /// Docker daemon on this host finds it; off by default (a Docker daemon may have its own).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub publish_docker_specs: bool,
    /// Where `--publish-docker-specs` writes spec files.
    #[arg(long, value_name = "DIR", default_value = plugind_volumes::publish::DOCKER_SPECS_DIR)]
    pub docker_specs_dir: PathBuf,
    /// A registry reached over plain HTTP besides loopback: `HOST[:PORT]` or a CIDR
    /// (repeatable; the file's `insecure-registries` list), as dockerd's.
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registry: Vec<String>,
    /// Serve Prometheus metrics at `/metrics` on this address: `unix:///PATH`, or
    /// `tcp://127.0.0.1:PORT` / `127.0.0.1:PORT` (loopback only; dockerd's flag). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Time between health probes of a running plugin (`30s`, `1m`; `0` disables them);
    /// a plugin overrides it with `docker plugin set NAME plugind.health.interval=...`.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub health_interval: String,
    /// Deadline of one health probe (`plugind.health.timeout` per plugin).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub health_timeout: String,
    /// Failed probes in a row that make a plugin unhealthy, and restarted
    /// (`plugind.health.retries` per plugin).
    #[arg(long, value_name = "N", default_value = "3")]
    pub health_retries: u32,
    /// Group of the API socket and the published sockets (`root:GROUP`, mode 0660), as
    /// dockerd's: default `docker` when that group exists, else root's group; a named group
    /// that does not exist stops the start.
    #[arg(short = 'G', long, value_name = "GROUP", default_value = plugind_sys::socket::DEFAULT_SOCKET_GROUP)]
    pub group: String,
    /// Authorization plugin (`authz/1.0`) every API request goes through, in order
    /// (repeatable; the file's `authorization-plugins` list); reloaded on SIGHUP.
    #[arg(long = "authorization-plugin", value_name = "NAME")]
    pub authorization_plugin: Vec<String>,
    /// Most bytes of event history kept under `<root>/events/` (`docker events --since`
    /// answers from it across restarts).
    #[arg(long, value_name = "BYTES", default_value_t = plugind_manager::JournalConfig::DEFAULT.max_bytes)]
    pub events_max_bytes: u64,
    /// Events older than this are dropped from the history: a duration such as `168h`, `7d`
    /// or `30m`.
    #[arg(long, value_name = "DURATION", default_value = "168h")]
    pub events_max_age: String,
    /// How plugins share `containerd-shim-runc-v2` processes: `none` (a shim per plugin, as
    /// Docker), `all` (one shim for every plugin), or N (groups of at most N plugins). The
    /// default, 16, was chosen from measurements (ARCHITECTURE.md, "Shim groups"): plugind +
    /// shims cost 0.57 MiB per plugin (2.67 with `none`, 0.34 with `all`) while a shim crash
    /// restarts at most 16 plugins.
    #[arg(long, value_name = "none|all|N", default_value = "16")]
    pub shim_group: String,
    /// Which options were given on the command line (filled by [`Cli::parse_from`]).
    #[arg(skip)]
    explicit: Vec<String>,
}

/// `--log-level` values (dockerd's; `fatal` logs errors only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-request traces.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that were handled.
    Warn,
    /// Failures.
    Error,
    /// Same as error.
    Fatal,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// `events-max-age`: a duration (`168h`, `7d`, `90m`, `1h30m`), at least a second.
fn parse_age(text: &str) -> anyhow::Result<Duration> {
    let age = humantime::parse_duration(text.trim())
        .with_context(|| format!("events-max-age: invalid duration {text:?} (e.g. 168h, 7d)"))?;
    if age < Duration::from_secs(1) {
        bail!("events-max-age must be at least 1s, got {text:?}");
    }
    Ok(age)
}

/// The two directories plugind works in: the daemon's flags and `plugind fsck`'s, declared once.
#[derive(Debug, Clone, clap::Args)]
pub struct Roots {
    /// State directory: plugin records, root filesystems, blobs.
    #[arg(
        long,
        visible_alias = "data-root",
        value_name = "DIR",
        default_value = "/var/lib/plugind"
    )]
    pub root: PathBuf,
    /// Runtime directory: plugin sockets, OCI bundles, runtime wrappers.
    #[arg(long, value_name = "DIR", default_value = "/run/plugind")]
    pub exec_root: PathBuf,
}

impl Cli {
    /// Parses arguments (the first is the program name), remembering which were explicit.
    pub fn parse_from(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
        let mut args: Vec<OsString> = args.into_iter().collect();
        // `plugind check [OPTIONS]` is `plugind --validate [OPTIONS]`: a word rather than a
        // clap subcommand, so that every daemon flag may follow it.
        if args.get(1).is_some_and(|a| a == "check") {
            args[1] = "--validate".into();
        }
        // `plugind podman-conf [OPTIONS]` likewise.
        if args.get(1).is_some_and(|a| a == "podman-conf") {
            args[1] = "--podman-conf".into();
        }
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.explicit = explicit_ids(&matches);
        Ok(cli)
    }

    fn given(&self, id: &str) -> bool {
        self.explicit.iter().any(|e| e == id)
    }
}

fn explicit_ids(m: &ArgMatches) -> Vec<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_owned())
        .collect()
}

/// The TOML file; every key optional, unknown keys rejected (dockerd rejects them too).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    #[serde(alias = "data-root")]
    root: Option<PathBuf>,
    exec_root: Option<PathBuf>,
    host: Option<String>,
    live_restore: Option<bool>,
    default_runtime: Option<String>,
    #[serde(default)]
    runtimes: BTreeMap<String, FileRuntime>,
    shutdown_timeout: Option<u64>,
    log_level: Option<LogLevel>,
    log_format: Option<LogFormat>,
    create_body_limit: Option<u64>,
    volume_timeout: Option<u64>,
    api_max_connections: Option<usize>,
    api_header_timeout: Option<u64>,
    api_idle_timeout: Option<u64>,
    api_body_timeout: Option<u64>,
    plugin_start_timeout: Option<f64>,
    publish_dir: Option<PathBuf>,
    publish_docker_specs: Option<bool>,
    docker_specs_dir: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
    events_max_bytes: Option<u64>,
    events_max_age: Option<String>,
    group: Option<String>,
    authorization_plugins: Option<Vec<String>>,
    metrics_addr: Option<String>,
    health_interval: Option<String>,
    health_timeout: Option<String>,
    health_retries: Option<u32>,
    prune: Option<bool>,
    #[serde(default)]
    plugin: Vec<PluginEntryConfig>,
    shim_group: Option<FileShimGroup>,
}

/// `shim-group` in the file: `"none"`, `"all"`, or a number (quoted or not).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileShimGroup {
    Number(u64),
    Text(String),
}

/// One `[[plugin]]` table: a plugin of the declarative plugin set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PluginEntryConfig {
    /// The remote reference (`registry/repo:tag` or `@sha256:…`).
    pub reference: String,
    /// The local name (`docker plugin install --alias`); default: the reference's name.
    pub alias: Option<String>,
    /// `docker plugin set` arguments (`KEY=VALUE`).
    #[serde(default)]
    pub settings: Vec<String>,
    /// Accepted privileges: name -> values (`mount = ["/data"]`).
    #[serde(default)]
    pub privileges: BTreeMap<String, Vec<String>>,
    /// Whether the plugin should run.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Registry credentials: a docker CLI `config.json` or one auth object (absolute path).
    pub registry_auth_file: Option<PathBuf>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRuntime {
    path: String,
    #[serde(default, alias = "runtimeArgs")]
    args: Vec<String>,
    #[serde(default = "single_call_default", rename = "single-call")]
    single_call: bool,
}

fn single_call_default() -> bool {
    true
}

/// An OCI runtime plugins can run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Executable (a name looked up in PATH, or an absolute path).
    pub path: String,
    /// Arguments inserted before the runtime's own.
    pub args: Vec<String>,
    /// Start each plugin with one runtime call (`run --detach`) instead of `create` + `start`
    /// (default; every runc-compatible CLI has it). TOML `single-call = false` turns it off.
    pub single_call: bool,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// State root (absolute).
    pub root: PathBuf,
    /// Runtime root (absolute).
    pub exec_root: PathBuf,
    /// API socket path (absolute).
    pub socket: PathBuf,
    /// Keep plugins running across daemon restarts.
    pub live_restore: bool,
    /// Name of the default runtime; always a key of `runtimes`.
    pub default_runtime: String,
    /// Every runtime by name, including the built-in `runc`.
    pub runtimes: BTreeMap<String, Runtime>,
    /// How long shutdown may take.
    pub shutdown_timeout: Duration,
    /// Log level.
    pub log_level: LogLevel,
    /// Log format.
    pub log_format: LogFormat,
    /// Create body limit in bytes.
    pub create_body_limit: u64,
    /// Deadline of every volume-driver call; `None` keeps Docker's per-call deadlines.
    pub volume_timeout: Option<Duration>,
    /// How long a plugin may take to open its socket after its task started.
    pub plugin_start_timeout: Duration,
    /// The file the settings were read from, if any (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// API connections served at once (before fitting it to the descriptor limit).
    pub api_max_connections: usize,
    /// Time to send a request head once started.
    pub api_header_timeout: Duration,
    /// Time an idle API connection stays open.
    pub api_idle_timeout: Duration,
    /// Time a request body or a response write may make no progress.
    pub api_body_timeout: Duration,
    /// Directory of the published volume-plugin sockets (absolute).
    pub publish_dir: PathBuf,
    /// Where Docker spec files of published plugins are written; `None`: not written.
    pub docker_specs_dir: Option<PathBuf>,
    /// Registries reached over plain HTTP besides loopback (`host[:port]` or CIDR).
    pub insecure_registries: Vec<String>,
    /// How plugins share shims.
    pub shim_group: plugind_executor::ShimGroup,
    /// Most bytes of durable event history.
    pub events_max_bytes: u64,
    /// Age after which events leave the history.
    pub events_max_age: Duration,
    /// Group of the sockets plugind serves (`docker`, the default, falls back to root's group
    /// when it does not exist).
    pub group: String,
    /// The authorization plugin chain, in order, without repeats.
    pub authorization_plugins: Vec<String>,
    /// The declarative plugin set (`[[plugin]]` tables), checked by [`Config::plugin_set`].
    pub plugins: Vec<PluginEntryConfig>,
    /// Remove installed plugins the set does not name (except those in use).
    pub prune: bool,
    /// Where `/metrics` is served; `None`: not served.
    pub metrics_addr: Option<MetricsAddr>,
    /// Health checks of running plugins (daemon defaults).
    pub health: plugind_manager::HealthPolicy,
}

/// Where the Prometheus metrics are served (`--metrics-addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A unix socket at this absolute path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(std::net::SocketAddr),
}

/// Parses `--metrics-addr`: `unix:///PATH`, `tcp://HOST:PORT` or dockerd's bare `HOST:PORT`,
/// with a loopback host (an IP or `localhost`). The metrics name every plugin installed and
/// are served without authentication or TLS, so a non-loopback address is refused (dockerd
/// accepts any); expose them through a proxy or the unix socket instead. Empty: off.
pub fn parse_metrics_addr(addr: &str) -> anyhow::Result<Option<MetricsAddr>> {
    if addr.is_empty() {
        return Ok(None);
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            bail!("--metrics-addr {addr:?}: the unix socket path must be absolute");
        }
        return Ok(Some(MetricsAddr::Unix(path)));
    }
    if let Some((scheme, _)) = addr.split_once("://") {
        if scheme != "tcp" {
            bail!("--metrics-addr {addr:?}: unsupported scheme {scheme:?} (unix:// or tcp://)");
        }
    }
    let hostport = addr.strip_prefix("tcp://").unwrap_or(addr);
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--metrics-addr {addr:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--metrics-addr {addr:?}: invalid port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().map_err(|_| {
            anyhow::anyhow!("--metrics-addr {addr:?}: the host must be an IP address or localhost")
        })?
    };
    if !ip.is_loopback() {
        bail!(
            "--metrics-addr {addr:?}: metrics are served without authentication, so only a loopback address is allowed (use unix:///PATH or a proxy to expose them)"
        );
    }
    Ok(Some(MetricsAddr::Tcp(std::net::SocketAddr::new(ip, port))))
}

impl Config {
    /// Merges the flags over the file (if any) over the defaults, and validates the result.
    pub fn load(cli: &Cli) -> anyhow::Result<Config> {
        let file = match &cli.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(cli, file)
    }

    fn merge(cli: &Cli, file: FileConfig) -> anyhow::Result<Config> {
        // A flag wins when given on the command line; else the file; else the flag's default.
        fn pick<T: Clone>(cli: &Cli, id: &str, flag: &T, file: Option<T>) -> T {
            if cli.given(id) {
                flag.clone()
            } else {
                file.unwrap_or_else(|| flag.clone())
            }
        }
        let host = pick(cli, "host", &cli.host, file.host);
        let mut runtimes = BTreeMap::from([(
            BUILTIN_RUNTIME.to_owned(),
            Runtime {
                path: BUILTIN_RUNTIME.to_owned(),
                args: Vec::new(),
                single_call: true,
            },
        )]);
        let from_file = file.runtimes.into_iter().map(|(name, r)| {
            (
                name,
                Runtime {
                    path: r.path,
                    args: r.args,
                    single_call: r.single_call,
                },
            )
        });
        let from_flags = cli
            .add_runtime
            .iter()
            .map(|spec| parse_runtime_flag(spec))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (name, runtime) in from_file.chain(from_flags) {
            validate_runtime(&name, &runtime)?;
            runtimes.insert(name, runtime);
        }
        let log_level = if cli.debug {
            LogLevel::Debug
        } else {
            pick(cli, "log_level", &cli.log_level, file.log_level)
        };
        let config = Config {
            root: pick(cli, "root", &cli.roots.root, file.root),
            exec_root: pick(cli, "exec_root", &cli.roots.exec_root, file.exec_root),
            socket: parse_host(&host)?,
            live_restore: pick(cli, "live_restore", &cli.live_restore, file.live_restore),
            default_runtime: pick(
                cli,
                "default_runtime",
                &cli.default_runtime,
                file.default_runtime,
            ),
            runtimes,
            shutdown_timeout: Duration::from_secs(pick(
                cli,
                "shutdown_timeout",
                &cli.shutdown_timeout,
                file.shutdown_timeout,
            )),
            log_level,
            log_format: pick(cli, "log_format", &cli.log_format, file.log_format),
            create_body_limit: pick(
                cli,
                "create_body_limit",
                &cli.create_body_limit,
                file.create_body_limit,
            ),
            volume_timeout: match pick(
                cli,
                "volume_timeout",
                &cli.volume_timeout,
                file.volume_timeout,
            ) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            plugin_start_timeout: {
                let secs = pick(
                    cli,
                    "plugin_start_timeout",
                    &cli.plugin_start_timeout,
                    file.plugin_start_timeout,
                );
                // Bounded so that the Duration cannot overflow and a typo cannot mean "forever".
                if !(secs > 0.0 && secs <= 3600.0) {
                    bail!("--plugin-start-timeout must be more than 0 and at most 3600 seconds, got {secs}");
                }
                Duration::from_secs_f64(secs)
            },
            config_file: cli.config_file.clone(),
            api_max_connections: pick(
                cli,
                "api_max_connections",
                &cli.api_max_connections,
                file.api_max_connections,
            ),
            api_header_timeout: Duration::from_secs(pick(
                cli,
                "api_header_timeout",
                &cli.api_header_timeout,
                file.api_header_timeout,
            )),
            api_idle_timeout: Duration::from_secs(pick(
                cli,
                "api_idle_timeout",
                &cli.api_idle_timeout,
                file.api_idle_timeout,
            )),
            api_body_timeout: Duration::from_secs(pick(
                cli,
                "api_body_timeout",
                &cli.api_body_timeout,
                file.api_body_timeout,
            )),
            publish_dir: PathBuf::new(),
            docker_specs_dir: None,
            insecure_registries: pick(
                cli,
                "insecure_registry",
                &cli.insecure_registry,
                file.insecure_registries,
            ),
            plugins: file.plugin,
            prune: file.prune.unwrap_or(false),
            metrics_addr: match pick(
                cli,
                "metrics_addr",
                &cli.metrics_addr,
                file.metrics_addr.map(Some),
            ) {
                Some(addr) => parse_metrics_addr(&addr)?,
                None => None,
            },
            health: {
                let duration = |what: &str, v: &str| {
                    plugind_manager::manager::parse_duration(v)
                        .map_err(|e| anyhow::anyhow!("{what} {v:?}: {e}"))
                };
                let policy = plugind_manager::HealthPolicy {
                    interval: duration(
                        "--health-interval",
                        &pick(
                            cli,
                            "health_interval",
                            &cli.health_interval,
                            file.health_interval,
                        ),
                    )?,
                    timeout: duration(
                        "--health-timeout",
                        &pick(
                            cli,
                            "health_timeout",
                            &cli.health_timeout,
                            file.health_timeout,
                        ),
                    )?,
                    retries: pick(
                        cli,
                        "health_retries",
                        &cli.health_retries,
                        file.health_retries,
                    ),
                };
                if policy.timeout.is_zero() {
                    bail!("--health-timeout must be greater than 0");
                }
                if policy.retries == 0 {
                    bail!("--health-retries must be at least 1");
                }
                policy
            },
            group: pick(cli, "group", &cli.group, file.group),
            authorization_plugins: {
                // moby's NewPlugins: a name given twice is one plugin of the chain.
                let mut chain: Vec<String> = Vec::new();
                for name in pick(
                    cli,
                    "authorization_plugin",
                    &cli.authorization_plugin,
                    file.authorization_plugins,
                ) {
                    if name.is_empty() {
                        bail!("--authorization-plugin: empty plugin name");
                    }
                    if !chain.contains(&name) {
                        chain.push(name);
                    }
                }
                chain
            },
            events_max_bytes: pick(
                cli,
                "events_max_bytes",
                &cli.events_max_bytes,
                file.events_max_bytes,
            ),
            events_max_age: parse_age(&pick(
                cli,
                "events_max_age",
                &cli.events_max_age,
                file.events_max_age,
            ))?,
            shim_group: {
                let text = pick(
                    cli,
                    "shim_group",
                    &cli.shim_group,
                    file.shim_group.map(|g| match g {
                        FileShimGroup::Number(n) => n.to_string(),
                        FileShimGroup::Text(t) => t,
                    }),
                );
                text.parse()
                    .map_err(|e| anyhow::anyhow!("--shim-group: {e}"))?
            },
        };
        let mut config = config;
        let exec_root = config.exec_root.clone();
        config.publish_dir = pick(
            cli,
            "publish_dir",
            &cli.publish_dir,
            file.publish_dir.map(Some),
        )
        .unwrap_or_else(|| exec_root.join("publish"));
        let specs = pick(
            cli,
            "publish_docker_specs",
            &cli.publish_docker_specs,
            file.publish_docker_specs,
        );
        let specs_dir = pick(
            cli,
            "docker_specs_dir",
            &cli.docker_specs_dir,
            file.docker_specs_dir,
        );
        config.docker_specs_dir = specs.then_some(specs_dir);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (what, path) in [
            ("--root", &self.root),
            ("--exec-root", &self.exec_root),
            ("--publish-dir", &self.publish_dir),
        ] {
            if !path.is_absolute() {
                bail!("{what} must be an absolute path, got {}", path.display());
            }
        }
        if self.root == self.exec_root {
            bail!(
                "--root and --exec-root must differ, both are {}",
                self.root.display()
            );
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            bail!(
                "default runtime {:?} is not configured (known: {})",
                self.default_runtime,
                self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if self.create_body_limit == 0 {
            bail!("--create-body-limit must be greater than 0");
        }
        if self.api_max_connections == 0 {
            bail!("--api-max-connections must be greater than 0");
        }
        for (what, value) in [
            ("--api-header-timeout", self.api_header_timeout),
            ("--api-idle-timeout", self.api_idle_timeout),
            ("--api-body-timeout", self.api_body_timeout),
        ] {
            if value.is_zero() {
                bail!("{what} must be greater than 0");
            }
        }
        self.plugin_set()?;
        Ok(())
    }

    /// The `[[plugin]]` tables and `prune` as the manager's checked plugin set: a bad
    /// reference or alias, a duplicate alias, a malformed setting or an unknown privilege name
    /// is a configuration error (reported by `plugind check`, at start and on reload).
    pub fn plugin_set(&self) -> anyhow::Result<plugind_manager::PluginSet> {
        let entries = self
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let what = format!("[[plugin]] {} ({})", i + 1, p.reference);
                let entry = plugind_manager::PluginSetEntry::parse(
                    &what,
                    &p.reference,
                    p.alias.as_deref(),
                    p.settings.clone(),
                    p.privileges.clone(),
                    p.enabled,
                )?;
                match &p.registry_auth_file {
                    Some(path) => entry.with_auth_file(&what, path),
                    None => Ok(entry),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .context("invalid plugin set")?;
        plugind_manager::PluginSet::new(entries, self.prune).context("invalid plugin set")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// `unix:///abs/path` -> `/abs/path`.
fn parse_host(host: &str) -> anyhow::Result<PathBuf> {
    let Some(path) = host.strip_prefix("unix://") else {
        bail!("unsupported host {host:?}: only unix://PATH is supported");
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        bail!("host {host:?} must name an absolute socket path");
    }
    Ok(path)
}

/// `NAME=PATH[,ARG...]`.
fn parse_runtime_flag(spec: &str) -> anyhow::Result<(String, Runtime)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("invalid --add-runtime {spec:?}: expected NAME=PATH[,ARG...]");
    };
    let mut parts = rest.split(',');
    let path = parts.next().unwrap_or_default().to_owned();
    Ok((
        name.to_owned(),
        Runtime {
            path,
            args: parts.map(str::to_owned).collect(),
            single_call: true,
        },
    ))
}

fn validate_runtime(name: &str, runtime: &Runtime) -> anyhow::Result<()> {
    if name == BUILTIN_RUNTIME {
        bail!("runtime name '{BUILTIN_RUNTIME}' is reserved");
    }
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!("invalid runtime name {name:?}: use letters, digits, '_', '.', '-'");
    }
    if runtime.path.is_empty() {
        bail!("runtime {name:?} has an empty path");
    }
    Ok(())
}

#[path = "config/reload.rs"]
mod reload;

pub use reload::ReloadDiff;

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
