//! plugind-spec: a plugin's config and settings -> the OCI runtime spec that runs it.
//!
//! [`build`] reproduces every rule of moby's plugin `InitSpec` (plugin-protocol.md §2), starting
//! from Docker's default container spec ([`default_spec`]): default capabilities, the `/proc`,
//! `/dev`, `/dev/pts`, `/sys`, `/sys/fs/cgroup`, `/dev/mqueue`, `/dev/shm` mounts, masked and
//! read-only paths, new namespaces and the default device cgroup rules.
//!
//! Main types: [`SpecInput`] (everything the spec depends on), [`HostFacts`] (kernel, runtime
//! and user-namespace facts), [`HostDevice`] (a resolved device node), [`SpecError`].
//!
//! Architecture invariant: this crate does no IO. Everything that depends on the host (device
//! numbers, whether the kernel and runtime support `rro`, whether we run in a user namespace,
//! the flags of a bind source's mount) comes in as arguments; `plugind-sys` probes them.
//!
//! Deliberate differences from Docker:
//! - a plugin mount under `/dev/` replaces the default mount with the same destination, and
//!   nothing else is removed (moby deletes from the slice it iterates and so may also drop the
//!   plugin's own mount; see the `devices-mounts` fixture);
//! - read-only recursive binds use `rro` when both the kernel and the runtime support it;
//! - a device setting without a path, or a config mount without a source, is a typed error
//!   rather than a nil dereference or a runtime failure.

#![warn(missing_docs)]

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

/// The OCI spec types, re-exported so that callers (manager, bundle tests) use the exact
/// oci-spec version this crate builds with, without declaring their own dependency.
pub use oci_spec;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount, Process, Root, Spec,
};
use plugind_types::{
    config::{PluginConfig, PluginMount, PluginSettings},
    ErrorKind, PluginId,
};

/// Result alias for this crate.
pub type Result<T, E = SpecError> = std::result::Result<T, E>;

/// Where the plugin's runtime directory (its socket) appears inside the plugin.
pub const PLUGIN_RUNTIME_DESTINATION: &str = "/run/docker/plugins";

/// The first environment entry of every plugin (moby `oci.DefaultPathEnv`).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI version Docker 20.10 writes.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A config mount has no source (moby: `mount source is not specified`).
    #[error("mount source is not specified for mount {destination:?} of plugin {id}")]
    MountWithoutSource {
        /// The plugin.
        id: PluginId,
        /// The mount's destination inside the plugin.
        destination: String,
    },
    /// A device setting has no path.
    #[error("device {name:?} of plugin {id} has no path")]
    DeviceWithoutPath {
        /// The plugin.
        id: PluginId,
        /// The device setting's name.
        name: String,
    },
    /// The caller resolved no [`HostDevice`] for a device setting's path.
    #[error("device {path} of plugin {id} was not resolved on the host")]
    DeviceNotResolved {
        /// The plugin.
        id: PluginId,
        /// The device path of the setting.
        path: String,
    },
    /// A capability name is not a Linux capability.
    #[error("unknown capability {capability:?} in plugin {id}")]
    UnknownCapability {
        /// The plugin.
        id: PluginId,
        /// The name as written in the config.
        capability: String,
    },
    /// In a user namespace, the flags of a bind mount's source mount are needed and unknown.
    #[error("mount flags of bind source {source_path} unknown for plugin {id}")]
    MountFlagsUnknown {
        /// The plugin.
        id: PluginId,
        /// The bind mount's host source.
        source_path: PathBuf,
    },
}

impl SpecError {
    /// The error's kind, for the API's status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpecError::MountWithoutSource { .. }
            | SpecError::DeviceWithoutPath { .. }
            | SpecError::UnknownCapability { .. } => ErrorKind::InvalidArgument,
            SpecError::MountFlagsUnknown { .. } => ErrorKind::FailedPrecondition,
            SpecError::DeviceNotResolved { .. } => ErrorKind::Internal,
        }
    }
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `c`.
    Char,
    /// `b`.
    Block,
}

/// A device node's facts as read on the host (e.g. by `plugind_sys::mount::device_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The host path, equal to the device setting's path; also the path inside the plugin.
    pub path: PathBuf,
    /// Character or block.
    pub kind: DeviceKind,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits (`0o666` for `/dev/null`).
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Facts about the host that change the spec.
pub struct HostFacts<'a> {
    /// The daemon runs in a user namespace (rootless): bind mounts must repeat the locked
    /// flags of their source mount, or the runtime's remount fails with `EPERM`.
    pub in_user_namespace: bool,
    /// The kernel supports recursive read-only mounts (`mount_setattr` with `AT_RECURSIVE`).
    pub kernel_recursive_readonly: bool,
    /// Mount options the runtime advertises (`runc features` `mountOptions`); `rro` is used
    /// only when listed here.
    pub runtime_mount_options: &'a [String],
    /// The locked mount options (`ro`, `nodev`, `noexec`, `nosuid`, `noatime`, `relatime`,
    /// `nodiratime`) of the mount holding a bind source; consulted only in a user namespace.
    /// `None` means the flags could not be read (e.g. the source does not exist).
    pub locked_mount_options: &'a dyn Fn(&Path) -> Option<Vec<String>>,
}

impl fmt::Debug for HostFacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFacts")
            .field("in_user_namespace", &self.in_user_namespace)
            .field("kernel_recursive_readonly", &self.kernel_recursive_readonly)
            .field("runtime_mount_options", &self.runtime_mount_options)
            .finish_non_exhaustive()
    }
}

impl HostFacts<'_> {
    /// Neither a user namespace nor `rro` support: the facts under which Docker 20.10's specs
    /// (the fixtures) were generated.
    pub fn plain() -> HostFacts<'static> {
        HostFacts {
            in_user_namespace: false,
            kernel_recursive_readonly: false,
            runtime_mount_options: &[],
            locked_mount_options: &|_| None,
        }
    }

    fn recursive_readonly(&self) -> bool {
        self.kernel_recursive_readonly && self.runtime_mount_options.iter().any(|o| o == "rro")
    }
}

/// Everything a plugin's spec is built from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// The plugin (for error messages).
    pub id: &'a PluginId,
    /// The plugin's config; its `Mounts` are the mounts of the spec.
    pub config: &'a PluginConfig,
    /// The user's settings: args, env, devices, and the sources set on mounts.
    pub settings: &'a PluginSettings,
    /// Absolute host path of the plugin's rootfs; becomes `root.path` (writable).
    pub rootfs: &'a Path,
    /// The plugin's runtime directory on the host (`<exec-root>/plugins/<id>`), bound at
    /// [`PLUGIN_RUNTIME_DESTINATION`].
    pub runtime_dir: &'a Path,
    /// Host source of the propagated mount (`<root>/<id>/propagated-mount`); used only when
    /// the config sets `PropagatedMount`.
    pub propagated_mount_source: &'a Path,
    /// Resolved facts for every device setting's path.
    pub devices: &'a [HostDevice],
    /// Kernel, runtime and namespace facts.
    pub host: &'a HostFacts<'a>,
}

/// The 14 capabilities of Docker's default spec, in Docker's order.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Number of mounts in [`default_spec`]; the `/dev/` override pass only removes these.
const DEFAULT_MOUNT_COUNT: usize = 7;

fn mount(destination: &str, typ: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_owned()))
        .set_source(Some(source.to_path_buf()))
        .set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    m
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow)
        .set_typ(typ)
        .set_major(major)
        .set_minor(minor)
        .set_access(Some("rwm".to_owned()));
    r
}

/// Docker's default container spec (moby `oci.DefaultLinuxSpec`, as Docker 20.10 writes it).
pub fn default_spec() -> Spec {
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities
        .set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);

    let mut process = Process::default();
    process
        .set_terminal(None)
        .set_args(None)
        .set_env(Some(vec![DEFAULT_PATH_ENV.to_owned()]))
        .set_cwd(PathBuf::from("/"))
        .set_capabilities(Some(capabilities))
        .set_rlimits(None)
        .set_no_new_privileges(None)
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_oom_score_adj(None);
    *process.user_mut() = Default::default();

    let mounts = vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777"],
        ),
    ];
    debug_assert_eq!(mounts.len(), DEFAULT_MOUNT_COUNT);

    use LinuxDeviceType::C;
    let device_rules = vec![
        device_rule(false, None, None, None),
        device_rule(true, Some(C), Some(1), Some(5)),
        device_rule(true, Some(C), Some(1), Some(3)),
        device_rule(true, Some(C), Some(1), Some(9)),
        device_rule(true, Some(C), Some(1), Some(8)),
        device_rule(true, Some(C), Some(5), Some(0)),
        device_rule(true, Some(C), Some(5), Some(1)),
        device_rule(false, Some(C), Some(10), Some(229)),
    ];
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(device_rules));

    let mut linux = oci_spec::runtime::Linux::default();
    linux
        .set_resources(Some(resources))
        .set_namespaces(Some(
            [
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
            ]
            .into_iter()
            .map(namespace)
            .collect(),
        ))
        .set_devices(None)
        .set_rootfs_propagation(None)
        .set_masked_paths(Some(strings(&[
            "/proc/asound",
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
        ])))
        .set_readonly_paths(Some(strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ])));

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_owned())
        .set_process(Some(process))
        .set_root(None)
        .set_hostname(None)
        .set_mounts(Some(mounts))
        .set_annotations(None)
        .set_linux(Some(linux));
    spec
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Parses a capability name as Docker accepts it (`CAP_SYS_ADMIN` or `SYS_ADMIN`, any case).
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).ok()
}

/// The mounts the plugin itself brings: `Config.Mounts` in config order, each with the source
/// the user set. Docker builds from `Config.Mounts`, whose sources `set` rewrites through a
/// pointer shared with `Settings.Mounts` (docker-plugin-api.md §7); plugind may store the two
/// separately, so the set source is taken from the settings entry of the same name.
fn plugin_mounts<'a>(
    config: &'a PluginConfig,
    settings: &'a PluginSettings,
) -> Vec<(&'a PluginMount, Option<&'a str>)> {
    config
        .mounts
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
            let set = settings
                .mounts
                .get(i)
                .filter(|s| s.name == m.name && s.destination == m.destination)
                .or_else(|| {
                    (!m.name.is_empty())
                        .then(|| settings.mounts.iter().find(|s| s.name == m.name))
                        .flatten()
                });
            let source = set.unwrap_or(m).source.as_deref();
            (m, source)
        })
        .collect()
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Builds the OCI spec of a plugin (moby `InitSpec`, see the crate docs for the differences).
pub fn build(input: &SpecInput<'_>) -> Result<Spec> {
    let SpecInput {
        id,
        config,
        settings,
        rootfs,
        runtime_dir,
        propagated_mount_source,
        devices,
        host,
    } = *input;
    let mut spec = default_spec();
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf()).set_readonly(None);
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut linux = spec.linux().clone().unwrap_or_default();

    if !config.propagated_mount.is_empty() {
        mounts.push(mount(
            &config.propagated_mount,
            "bind",
            propagated_mount_source,
            &["rbind", "rw", "rshared"],
        ));
        linux.set_rootfs_propagation(Some("rshared".to_owned()));
    }

    let own = plugin_mounts(config, settings);
    let mut own_destinations = HashSet::new();
    for (m, source) in &own {
        let source = source.ok_or_else(|| SpecError::MountWithoutSource {
            id: id.clone(),
            destination: m.destination.clone(),
        })?;
        let mut spec_mount = Mount::default();
        spec_mount
            .set_destination(PathBuf::from(&m.destination))
            .set_typ(Some(m.r#type.clone()))
            .set_source(Some(PathBuf::from(source)))
            .set_options(m.options.clone());
        mounts.push(spec_mount);
        own_destinations.insert(m.destination.as_str());
    }
    mounts.push(mount(
        PLUGIN_RUNTIME_DESTINATION,
        "bind",
        runtime_dir,
        &["rbind", "rshared"],
    ));

    let network = config.network.r#type.as_str();
    if !network.is_empty() {
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            mounts.push(mount(file, "bind", Path::new(file), &["rbind", "ro"]));
        }
    }

    // A plugin mount under /dev/ replaces the default mount of the same destination. Only the
    // defaults are candidates: the plugin's own mount must survive (moby's in-place deletion
    // while iterating drops it in some orders; see the crate docs).
    let mut index = 0;
    mounts.retain(|m| {
        let is_default = index < DEFAULT_MOUNT_COUNT;
        index += 1;
        let dest = m.destination().to_string_lossy();
        !(is_default && dest.starts_with("/dev/") && own_destinations.contains(dest.as_ref()))
    });

    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut drop_ns = Vec::new();
    if network == "host" {
        drop_ns.push(LinuxNamespaceType::Network);
    }
    if config.pid_host {
        drop_ns.push(LinuxNamespaceType::Pid);
    }
    if config.ipc_host {
        drop_ns.push(LinuxNamespaceType::Ipc);
    }
    namespaces.retain(|ns| !drop_ns.contains(&ns.typ()));
    linux.set_namespaces(Some(namespaces));

    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    if config.linux.allow_all_devices {
        rules = vec![device_rule(true, None, None, None)];
    }
    let mut nodes = Vec::new();
    for d in &settings.devices {
        let path = d
            .path
            .as_deref()
            .ok_or_else(|| SpecError::DeviceWithoutPath {
                id: id.clone(),
                name: d.name.clone(),
            })?;
        let host_dev = devices
            .iter()
            .find(|h| h.path == Path::new(path))
            .ok_or_else(|| SpecError::DeviceNotResolved {
                id: id.clone(),
                path: path.to_owned(),
            })?;
        let typ = match host_dev.kind {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
        };
        let mut node = LinuxDevice::default();
        node.set_path(host_dev.path.clone())
            .set_typ(typ)
            .set_major(host_dev.major)
            .set_minor(host_dev.minor)
            .set_file_mode(Some(host_dev.file_mode))
            .set_uid(Some(host_dev.uid))
            .set_gid(Some(host_dev.gid));
        nodes.push(node);
        rules.push(device_rule(
            true,
            Some(typ),
            Some(host_dev.major),
            Some(host_dev.minor),
        ));
    }
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    if !nodes.is_empty() {
        linux.set_devices(Some(nodes));
    }

    let mut process = spec.process().clone().unwrap_or_default();
    let mut env = vec![DEFAULT_PATH_ENV.to_owned()];
    env.extend(settings.env.iter().cloned());
    let mut args = config.entrypoint.clone().unwrap_or_default();
    args.extend(settings.args.iter().cloned());
    let cwd = if config.work_dir.is_empty() {
        "/"
    } else {
        config.work_dir.as_str()
    };
    // `terminal` stays absent, which runtimes read as false (Docker's omitempty output).
    process
        .set_terminal(None)
        .set_args(Some(args))
        .set_cwd(PathBuf::from(cwd))
        .set_env(Some(env));

    let extra = config
        .linux
        .capabilities
        .iter()
        .flatten()
        .map(|name| {
            parse_capability(name).ok_or_else(|| SpecError::UnknownCapability {
                id: id.clone(),
                capability: name.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let with_extra = |set: Option<Capabilities>| {
        let mut set = set.unwrap_or_default();
        set.extend(extra.iter().copied());
        Some(set)
    };
    let (b, e, p) = (
        caps.bounding().clone(),
        caps.effective().clone(),
        caps.permitted().clone(),
    );
    caps.set_bounding(with_extra(b))
        .set_effective(with_extra(e))
        .set_permitted(with_extra(p));
    // Docker's default spec has no inheritable set (CVE-2022-24769), so it holds exactly the
    // config's capabilities, and is absent when there are none.
    caps.set_inheritable((!extra.is_empty()).then(|| extra.iter().copied().collect()));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));

    let use_rro = host.recursive_readonly();
    for m in &mut mounts {
        if !is_bind(m) {
            continue;
        }
        let mut options = m.options().clone().unwrap_or_default();
        if use_rro && options.iter().any(|o| o == "rbind") {
            for o in &mut options {
                if o == "ro" {
                    *o = "rro".to_owned();
                }
            }
        }
        if host.in_user_namespace {
            let source = m.source().clone().unwrap_or_default();
            let locked = (host.locked_mount_options)(&source).ok_or_else(|| {
                SpecError::MountFlagsUnknown {
                    id: id.clone(),
                    source_path: source.clone(),
                }
            })?;
            for o in locked {
                let present = options.iter().any(|x| *x == o || (o == "ro" && x == "rro"));
                if !present {
                    options.push(o);
                }
            }
        }
        m.set_options(Some(options));
    }

    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    Ok(spec)
}
