//! `cargo xtask torture [--iterations N] [--seed S] [--keep-going]`: crash-consistency proof.
//!
//! Starts the real `plugind` on a throwaway root, exec root and socket, then loops: pick a
//! random operation (create, enable, disable, rm, rm -f, set, volume create/rm) against a
//! small pool of plugin and volume names, start it, SIGKILL plugind at a random moment
//! during it (or just after it), restart plugind with live restore alternately on and off,
//! and check the invariants once the daemon has settled:
//! - the daemon starts and answers `_ping`;
//! - every listed plugin inspects; an enabled one is running, its task and shim are alive and
//!   its socket answers `Plugin.Activate`; a disabled one has no task, can be enabled and
//!   disabled again (probed on one disabled plugin per iteration);
//! - no shim, runc state, cgroup, mount, bundle, runtime dir or log for a plugin that is not
//!   enabled (or not listed at all); no temp files, staging dirs, partial ingests, quarantines
//!   or unreferenced blobs; disk use of the root bounded by what the listed plugins need;
//! - every listed volume inspects.
//!
//! The sequence of random draws is fixed by the seed (each iteration draws from its own
//! stream, so one iteration's choices do not shift the next ones); the kill moment is a
//! seeded fraction of the operation's measured typical duration, so a reproduction replays
//! the same operations and kill points up to timing. On the first violation the run prints a
//! reproduction line and fails; `--keep-going` counts violations instead (a debris that stays
//! is counted once, when it appears). Everything started is cleaned up at the end, even on
//! failure: plugind, runc containers, shims, mounts, cgroups and the temp directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{
    daemon::http_timeout,
    plugin,
    util::{cargo, is_root, run as run_cmd, workspace_root},
};

/// Plugin names the operations pick from (small, so operations collide with each other).
const PLUGINS: &[&str] = &["torture/p0", "torture/p1", "torture/p2"];
/// Volume names the operations pick from.
const VOLUMES: &[&str] = &["tv0", "tv1", "tv2", "tv3"];
/// containerd namespace plugind gives its shims (`crates/daemon/src/wiring.rs`).
const NAMESPACE: &str = "plugind";
/// Refusals Docker itself answers with 500 (plain `fmt.Errorf` in moby): not violations.
const DOCKER_500S: &[&str] = &["cannot set on an active plugin"];
/// How long a restarted plugind may take to answer `_ping`.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Limit of each check request (a hung API is a violation, not a stuck harness).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// Limit of an operation's request (the kill ends it much earlier).
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of a run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Number of kill-and-restart iterations.
    pub(crate) iterations: u64,
    /// Seed of every random choice; drawn from the clock when absent (and printed).
    pub(crate) seed: Option<u64>,
    /// Count violations and continue instead of stopping at the first.
    pub(crate) keep_going: bool,
    /// How long restarted plugins may take to settle before a difference is a violation.
    pub(crate) settle: Duration,
    /// Kill only once the operation answered: restart alone, no interrupted operation (a
    /// control run for the checker: what fails here is not about crashes mid-operation).
    pub(crate) idle_kills: bool,
}

/// Builds plugind and the sample plugin, runs the loop, cleans up, prints the figures.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("cargo xtask torture runs plugins with runc: it needs root");
    }
    run_cmd(cargo().args(["build", "--locked", "-p", "plugind"]))?;
    let out = plugin::build()?;
    let tar = Arc::new(fs::read(&out.tar).context("read the sample plugin tar")?);
    let seed = opts.seed.unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    println!(
        "torture: seed {seed}, {} iterations (reproduce: cargo xtask torture --seed {seed} --iterations {})",
        opts.iterations, opts.iterations
    );
    let binary = workspace_root().join("target/debug/plugind");
    let mut t = Torture::new(&binary, tar, seed, opts.clone())?;
    let started = Instant::now();
    let result = t.run_loop();
    let log_copy = t.save_log();
    t.cleanup();
    t.print_figures(started.elapsed());
    if let Some(p) = log_copy {
        println!("torture: plugind's log kept at {}", p.display());
    }
    result?;
    if t.stats.violations > 0 {
        bail!(
            "{} invariant violations ({} distinct); first: {}",
            t.stats.violations,
            t.stats.distinct,
            t.stats.first.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

// ----- the seeded random source ---------------------------------------------------------------

/// SplitMix64: tiny, well distributed, and reproducible from a single `u64`.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// The stream of iteration `i`: independent of how many draws earlier iterations made.
    fn for_iteration(seed: u64, i: u64) -> Rng {
        let mut r = Rng(seed ^ (i + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Picks an index by weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

// ----- operations -----------------------------------------------------------------------------

/// One random operation.
#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Enable(String),
    Disable { name: String, force: bool },
    Remove { name: String, force: bool },
    Set { name: String, debug: bool },
    VolumeCreate { volume: String, driver: String },
    VolumeRemove { volume: String, force: bool },
    // Hook: `Install`/`Upgrade` from a local docker-registry belong here once
    // `crates/distribution` exists (today those routes answer 501).
}

impl Op {
    /// Index into the duration estimates.
    fn kind(&self) -> usize {
        match self {
            Op::Create(_) => 0,
            Op::Enable(_) => 1,
            Op::Disable { .. } => 2,
            Op::Remove { .. } => 3,
            Op::Set { .. } => 4,
            Op::VolumeCreate { .. } => 5,
            Op::VolumeRemove { .. } => 6,
        }
    }

    fn request(&self, tar: &Arc<Vec<u8>>) -> (&'static str, String, Vec<u8>) {
        match self {
            Op::Create(n) => ("POST", format!("/plugins/create?name={n}"), tar.to_vec()),
            Op::Enable(n) => ("POST", format!("/plugins/{n}/enable?timeout=30"), vec![]),
            Op::Disable { name, force } => (
                "POST",
                format!(
                    "/plugins/{name}/disable{}",
                    if *force { "?force=1" } else { "" }
                ),
                vec![],
            ),
            Op::Remove { name, force } => (
                "DELETE",
                format!("/plugins/{name}{}", if *force { "?force=1" } else { "" }),
                vec![],
            ),
            Op::Set { name, debug } => (
                "POST",
                format!("/plugins/{name}/set"),
                format!("[\"DEBUG={}\"]", u8::from(*debug)).into_bytes(),
            ),
            Op::VolumeCreate { volume, driver } => (
                "POST",
                "/volumes/create".to_owned(),
                format!("{{\"Name\":\"{volume}\",\"Driver\":\"{driver}\"}}").into_bytes(),
            ),
            Op::VolumeRemove { volume, force } => (
                "DELETE",
                format!("/volumes/{volume}{}", if *force { "?force=1" } else { "" }),
                vec![],
            ),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Create(n) => write!(f, "create {n}"),
            Op::Enable(n) => write!(f, "enable {n}"),
            Op::Disable { name, force } => {
                write!(f, "disable{} {name}", if *force { " -f" } else { "" })
            }
            Op::Remove { name, force } => write!(f, "rm{} {name}", if *force { " -f" } else { "" }),
            Op::Set { name, debug } => write!(f, "set {name} DEBUG={}", u8::from(*debug)),
            Op::VolumeCreate { volume, driver } => write!(f, "volume create -d {driver} {volume}"),
            Op::VolumeRemove { volume, force } => {
                write!(f, "volume rm{} {volume}", if *force { " -f" } else { "" })
            }
        }
    }
}

/// First guesses of each operation kind's duration in ms (debug build, 2 cores), refined by
/// a moving average of the uninterrupted runs.
const INITIAL_ESTIMATES_MS: [f64; 7] = [300.0, 300.0, 150.0, 80.0, 30.0, 60.0, 40.0];

/// Chooses an operation that makes sense most of the time for the state of a random name
/// (and sometimes one that must be refused). Draws a fixed number of values.
fn choose(rng: &mut Rng, snap: &Snapshot) -> Op {
    let name = PLUGINS[rng.below(PLUGINS.len() as u64) as usize].to_owned();
    let volume = VOLUMES[rng.below(VOLUMES.len() as u64) as usize].to_owned();
    let force = rng.below(2) == 1;
    let debug = rng.below(2) == 1;
    let pick = rng.next();
    let existing_volume = if snap.volumes.is_empty() {
        volume.clone()
    } else {
        snap.volumes[(pick % snap.volumes.len() as u64) as usize].clone()
    };
    let state = snap
        .plugins
        .iter()
        .find(|p| p.name == format!("{name}:latest"))
        .map(|p| p.enabled);
    // Weights: create, enable, disable, rm, rm -f, set, volume create, volume rm.
    let weights: [u64; 8] = match state {
        None => [60, 8, 4, 6, 6, 4, 8, 4],
        Some(false) => [4, 40, 3, 12, 10, 12, 8, 11],
        Some(true) => [2, 3, 25, 4, 16, 4, 26, 20],
    };
    match rng.weighted(&weights) {
        0 => Op::Create(name),
        1 => Op::Enable(name),
        2 => Op::Disable { name, force },
        3 => Op::Remove { name, force: false },
        4 => Op::Remove { name, force: true },
        5 => Op::Set { name, debug },
        6 => Op::VolumeCreate {
            volume,
            driver: name,
        },
        _ => Op::VolumeRemove {
            volume: existing_volume,
            force,
        },
    }
}

/// How an operation ended.
#[derive(Debug)]
enum Outcome {
    /// It answered (before the kill) after `took`.
    Answered {
        status: u16,
        body: String,
        took: Duration,
    },
    /// The kill cut it (or it never connected).
    Cut(String),
}

// ----- the daemon -----------------------------------------------------------------------------

/// The plugind under torture and its directories.
#[derive(Debug)]
struct Daemon {
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn exec_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("plugind.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("plugind.log")
    }

    /// Starts plugind and waits for `_ping`; returns how long it took.
    fn spawn(&mut self, live_restore: bool) -> anyhow::Result<Duration> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .arg(format!("--live-restore={live_restore}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawn {}", self.binary.display()))?,
        );
        while started.elapsed() < START_DEADLINE {
            if self
                .request("GET", "/_ping", &[])
                .is_ok_and(|(s, _)| s == 200)
            {
                return Ok(started.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "plugind exited with {status} at start:\n{}",
                    self.log_tail(15)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "plugind did not answer _ping within {START_DEADLINE:?}:\n{}",
            self.log_tail(15)
        )
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        http_timeout(&self.socket(), method, path, body, CHECK_TIMEOUT)
    }

    fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

// ----- observed state -------------------------------------------------------------------------

/// One plugin as `GET /plugins` shows it.
#[derive(Debug, Clone)]
struct PluginView {
    name: String,
    id: String,
    enabled: bool,
    state: String,
    pid: Option<u32>,
    socket: String,
}

/// What the API lists.
#[derive(Debug, Default)]
struct Snapshot {
    plugins: Vec<PluginView>,
    volumes: Vec<String>,
}

fn parse_plugins(text: &str) -> anyhow::Result<Vec<PluginView>> {
    let v: Value = serde_json::from_str(text).context("plugin list is not JSON")?;
    let list = v.as_array().context("plugin list is not an array")?;
    Ok(list
        .iter()
        .map(|p| PluginView {
            name: p["Name"].as_str().unwrap_or_default().to_owned(),
            id: p["Id"].as_str().unwrap_or_default().to_owned(),
            enabled: p["Enabled"].as_bool().unwrap_or(false),
            state: p["PluginD"]["State"].as_str().unwrap_or("?").to_owned(),
            pid: p["PluginD"]["Pid"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0),
            socket: p["Config"]["Interface"]["Socket"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect())
}

fn parse_volumes(text: &str) -> anyhow::Result<Vec<String>> {
    let v: Value = serde_json::from_str(text).context("volume list is not JSON")?;
    Ok(v["Volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["Name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    /// Stable name of the invariant (figures are counted per category).
    category: &'static str,
    /// What it is about (a plugin id, a path); with the category, the identity of a debris.
    subject: String,
    /// Details for the reader.
    detail: String,
}

fn violation(
    category: &'static str,
    subject: impl Into<String>,
    detail: impl Into<String>,
) -> Violation {
    Violation {
        category,
        subject: subject.into(),
        detail: detail.into(),
    }
}

fn is_plugin_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The 64-hex id a file name is about (`<id>`, `<id>.log`, `.<id>-deleting`, ...), if any.
fn id_in(name: &str) -> Option<&str> {
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let bytes = name.as_bytes();
    // All-ASCII windows only, so the slice below is on character boundaries.
    (0..bytes.len().saturating_sub(63))
        .find(|&i| bytes[i..i + 64].iter().all(hex))
        .map(|i| &name[i..i + 64])
}

/// Names that only exist while an operation is in flight.
fn is_temp_name(name: &str) -> bool {
    name.contains(".tmp") || name.ends_with("-removing") || name.ends_with("-deleting")
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Shims started for our exec root, by task id, with their pids.
fn our_shims(events_socket: &Path) -> BTreeMap<String, u32> {
    let needle = events_socket.to_string_lossy().into_owned();
    let mut out = BTreeMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
        if !is_shim || !args.contains(&needle) {
            continue;
        }
        if let Some(i) = args.iter().position(|a| a == "-id") {
            if let Some(id) = args.get(i + 1) {
                out.insert(id.clone(), pid);
            }
        }
    }
    out
}

/// The plugins each shim serves: a shim started for one task serves that task (`-id` is the
/// plugin id); a group shim (`-id group-<n>`, `--shim-group`) serves the tasks whose executor
/// membership file (`<exec>/tasks/<id>/group`) names its group.
fn served_by(exec: &Path, shims: &BTreeMap<String, u32>) -> BTreeMap<String, Vec<String>> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in dir_names(&exec.join("tasks")) {
        if let Ok(g) = fs::read_to_string(exec.join("tasks").join(&id).join("group")) {
            members.entry(g.trim().to_owned()).or_default().push(id);
        }
    }
    shims
        .keys()
        .map(|shim| {
            let served = if is_plugin_id(shim) {
                vec![shim.clone()]
            } else {
                members.remove(shim).unwrap_or_default()
            };
            (shim.clone(), served)
        })
        .collect()
}

/// Mount points at or under `dir` (deepest last).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// cgroup directories named after one of `ids`, in every hierarchy (v1 controllers and the
/// unified one; runc puts a container with no cgroupsPath at `/<id>` below the
/// hierarchy's root or the caller's own cgroup).
fn cgroups_named(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) {
                out.push(e.path());
            } else if depth < 5 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Bytes of regular files under `dir`, not following symlinks nor entering `skip`.
fn disk_use(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                if !skip(&e.path()) {
                    stack.push(e.path());
                }
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Every path under `dir` whose name marks it as temporary (not entering `skip`).
fn temp_files(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_temp_name(&name) {
                out.push(e.path());
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) && !skip(&e.path()) {
                stack.push(e.path());
            }
        }
    }
    out
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// ----- the loop -------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stats {
    iterations: u64,
    kills: u64,
    kills_mid_op: u64,
    restarts: u64,
    restarts_live: u64,
    violations: u64,
    distinct: u64,
    per_category: BTreeMap<&'static str, u64>,
    first: Option<String>,
    settle_max: Duration,
}

struct Torture {
    daemon: Daemon,
    tar: Arc<Vec<u8>>,
    seed: u64,
    opts: Options,
    live_restore: bool,
    estimates_ms: [f64; 7],
    /// Every plugin id seen in this run (for cgroups and clean-up).
    known_ids: BTreeSet<String>,
    /// Violations of the previous check, so a debris that stays is counted once.
    previous: BTreeSet<(&'static str, String)>,
    stats: Stats,
    cleaned: bool,
}

impl std::fmt::Debug for Torture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torture")
            .field("dir", &self.daemon.dir)
            .finish()
    }
}

impl Torture {
    fn new(binary: &Path, tar: Arc<Vec<u8>>, seed: u64, opts: Options) -> anyhow::Result<Torture> {
        // Short: plugin sockets (`run/plugins/<64 hex>/vol.sock`) must fit in 107 bytes.
        let dir = PathBuf::from(format!("/tmp/pdt-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        let mut t = Torture {
            daemon: Daemon {
                binary: binary.to_owned(),
                dir,
                child: None,
            },
            tar,
            seed,
            opts,
            live_restore: false,
            estimates_ms: INITIAL_ESTIMATES_MS,
            known_ids: BTreeSet::new(),
            previous: BTreeSet::new(),
            stats: Stats::default(),
            cleaned: false,
        };
        t.daemon.spawn(false)?;
        t.calibrate()?;
        Ok(t)
    }

    /// Times each kind of operation once, uninterrupted, so kill moments fall inside them.
    fn calibrate(&mut self) -> anyhow::Result<()> {
        let name = "torture/calibration".to_owned();
        let ops = [
            Op::Create(name.clone()),
            Op::Enable(name.clone()),
            Op::VolumeCreate {
                volume: "tcal".into(),
                driver: name.clone(),
            },
            Op::VolumeRemove {
                volume: "tcal".into(),
                force: false,
            },
            Op::Disable {
                name: name.clone(),
                force: false,
            },
            Op::Set {
                name: name.clone(),
                debug: true,
            },
            Op::Remove { name, force: false },
        ];
        for op in ops {
            let (method, path, body) = op.request(&self.tar);
            let t = Instant::now();
            let (status, text) =
                http_timeout(&self.daemon.socket(), method, &path, &body, OP_TIMEOUT)?;
            if !(200..300).contains(&status) {
                bail!("calibration: {op} answered {status}: {}", text.trim());
            }
            self.estimates_ms[op.kind()] = t.elapsed().as_secs_f64() * 1000.0;
        }
        let e = &self.estimates_ms;
        println!(
            "torture: operation times (ms): create {:.0}, enable {:.0}, disable {:.0}, rm {:.0}, set {:.0}, volume create {:.0}, volume rm {:.0}",
            e[0], e[1], e[2], e[3], e[4], e[5], e[6]
        );
        Ok(())
    }

    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let (status, text) = self.daemon.request("GET", "/plugins", &[])?;
        if status != 200 {
            bail!("GET /plugins: {status} {text}");
        }
        let plugins = parse_plugins(&text)?;
        for p in &plugins {
            self.known_ids.insert(p.id.clone());
        }
        let (status, text) = self.daemon.request("GET", "/volumes", &[])?;
        if status != 200 {
            bail!("GET /volumes: {status} {text}");
        }
        Ok(Snapshot {
            plugins,
            volumes: parse_volumes(&text)?,
        })
    }

    fn run_loop(&mut self) -> anyhow::Result<()> {
        // The calibration ran every operation once without a kill: what fails now is not
        // about crashes at all.
        let found = self.settled_check();
        if self.record(0, "calibration: each operation once, no kill", found) {
            return Ok(());
        }
        for i in 0..self.opts.iterations {
            let mut rng = Rng::for_iteration(self.seed, i);
            let snap = match self.snapshot() {
                Ok(s) => s,
                Err(e) => {
                    let v = violation("api-error", "list", format!("{e:#}"));
                    if self.record(i, "(before the operation)", vec![v]) {
                        return Ok(());
                    }
                    Snapshot::default()
                }
            };
            let op = choose(&mut rng, &snap);
            // 0..1.6 of the typical duration: mostly in the middle, about a third after the
            // end (so plugins also get enabled and volumes made, and idle kills are covered).
            let fraction = rng.below(1600) as f64 / 1000.0;
            let probe_pick = rng.next();
            let delay = Duration::from_secs_f64(self.estimates_ms[op.kind()] * fraction / 1000.0);
            let what = op.to_string();

            // The operation, on its own thread; the kill cuts its connection.
            let (method, path, body) = op.request(&self.tar);
            let socket = self.daemon.socket();
            let worker = std::thread::spawn(move || {
                let t = Instant::now();
                match http_timeout(&socket, method, &path, &body, OP_TIMEOUT) {
                    Ok((status, body)) => Outcome::Answered {
                        status,
                        body,
                        took: t.elapsed(),
                    },
                    Err(e) => Outcome::Cut(format!("{e:#}")),
                }
            });
            let outcome = if self.opts.idle_kills {
                let outcome = worker.join().unwrap_or(Outcome::Cut("panicked".into()));
                self.daemon.kill9();
                outcome
            } else {
                std::thread::sleep(delay);
                self.daemon.kill9();
                worker.join().unwrap_or(Outcome::Cut("panicked".into()))
            };
            self.stats.kills += 1;
            let mut found = Vec::new();
            let op_note = match &outcome {
                Outcome::Answered { status, body, took } => {
                    // Only work done counts: a refusal (404, 409) takes no time.
                    if (200..300).contains(status) {
                        let est = &mut self.estimates_ms[op.kind()];
                        *est = 0.8 * *est + 0.2 * took.as_secs_f64() * 1000.0;
                    }
                    if *status >= 500 && !DOCKER_500S.iter().any(|t| body.contains(t)) {
                        found.push(violation(
                            "op-5xx",
                            what.clone(),
                            format!("{what} answered {status}: {}", body.trim()),
                        ));
                    }
                    format!("answered {status} in {} ms", took.as_millis())
                }
                Outcome::Cut(reason) if reason.starts_with("connect") => {
                    "killed before it connected".to_owned()
                }
                Outcome::Cut(_) => {
                    self.stats.kills_mid_op += 1;
                    // Cut late: the operation is slower than estimated; let kills reach its end.
                    let est = &mut self.estimates_ms[op.kind()];
                    let at = delay.as_secs_f64() * 1000.0;
                    if at > *est {
                        *est = 0.8 * *est + 0.2 * at * 1.3;
                    }
                    "cut".to_owned()
                }
            };

            // Restart, alternating live restore.
            self.live_restore = !self.live_restore;
            self.stats.restarts += 1;
            self.stats.restarts_live += u64::from(self.live_restore);
            let up = match self.daemon.spawn(self.live_restore) {
                Ok(d) => d,
                Err(e) => {
                    found.push(violation("daemon-start", "plugind", format!("{e:#}")));
                    self.record(i, &what, found);
                    bail!("plugind does not start any more; stopping");
                }
            };
            let settle_start = Instant::now();
            found.extend(self.settled_check());
            let settled = settle_start.elapsed();
            self.stats.settle_max = self.stats.settle_max.max(settled);
            if found.iter().all(|v| v.category == "op-5xx") {
                found.extend(self.probe(probe_pick));
            }
            self.stats.iterations += 1;
            println!(
                "torture [{:>4}/{}] {what:<36} kill at {:>4} ms ({op_note}); restart{} {:>4} ms; settled {:>5} ms; {}",
                i + 1,
                self.opts.iterations,
                delay.as_millis(),
                if self.live_restore { " (live)" } else { "       " },
                up.as_millis(),
                settled.as_millis(),
                if found.is_empty() { "ok".to_owned() } else { format!("{} VIOLATIONS", found.len()) },
            );
            if self.record(i, &what, found) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Counts and prints violations; true when the run must stop (the first one without
    /// `--keep-going`).
    fn record(&mut self, i: u64, what: &str, found: Vec<Violation>) -> bool {
        let now: BTreeSet<(&'static str, String)> = found
            .iter()
            .map(|v| (v.category, v.subject.clone()))
            .collect();
        for v in &found {
            let new = !self.previous.contains(&(v.category, v.subject.clone()));
            self.stats.violations += 1;
            if new {
                self.stats.distinct += 1;
                *self.stats.per_category.entry(v.category).or_default() += 1;
            }
            println!(
                "  violation{} [{}] {}: {}",
                if new { "" } else { " (still)" },
                v.category,
                v.subject,
                v.detail
            );
        }
        self.previous = now;
        if found.is_empty() {
            return false;
        }
        let repro = format!(
            "cargo xtask torture --seed {} --iterations {}   # iteration {} ({what})",
            self.seed,
            i + 1,
            i + 1
        );
        if self.stats.first.is_none() {
            self.stats.first = Some(repro.clone());
        }
        if !self.opts.keep_going {
            println!("torture: invariant violated; reproduce with:\n  {repro}");
            return true;
        }
        false
    }

    /// Checks until everything holds or the settle deadline passes; returns what still fails.
    ///
    /// Plugins desired enabled are (re)started asynchronously after a restart, so their state
    /// gets the whole settle time. With `--keep-going`, debris (files, mounts, processes of
    /// plugins that are not enabled) that stays unchanged for `STABLE` is taken as final:
    /// waiting the whole settle time every iteration would only slow the count down. Without
    /// it, everything gets the whole settle time (the run stops at the first violation anyway).
    fn settled_check(&mut self) -> Vec<Violation> {
        const STABLE: Duration = Duration::from_secs(3);
        const CONVERGING: &[&str] = &[
            "enabled-not-running",
            "enabled-without-task",
            "dead-socket",
            "disabled-but-running",
            "api-error",
        ];
        let deadline = Instant::now() + self.opts.settle;
        let mut last: Option<(Vec<(&'static str, String)>, Instant)> = None;
        loop {
            let found = self.check();
            if found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            let keys: Vec<_> = found
                .iter()
                .map(|v| (v.category, v.subject.clone()))
                .collect();
            if self.opts.keep_going && keys.iter().all(|k| self.previous.contains(k)) {
                // Nothing new since the last iteration: debris that stays, counted already.
                return found;
            }
            // With --keep-going, what the previous iteration already reported is not expected
            // to converge now either.
            let converging = found.iter().any(|v| {
                CONVERGING.contains(&v.category)
                    && !(self.opts.keep_going
                        && self.previous.contains(&(v.category, v.subject.clone())))
            });
            match &last {
                Some((prev, since)) if *prev == keys => {
                    if !converging && self.opts.keep_going && since.elapsed() >= STABLE {
                        return found;
                    }
                }
                _ => last = Some((keys, Instant::now())),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One pass over every invariant.
    fn check(&mut self) -> Vec<Violation> {
        let mut out = Vec::new();
        let root = self.daemon.root();
        let exec = self.daemon.exec_root();
        let snap = match self.snapshot() {
            Ok(s) => s,
            Err(e) => return vec![violation("api-error", "list", format!("{e:#}"))],
        };
        let listed: BTreeSet<String> = snap.plugins.iter().map(|p| p.id.clone()).collect();
        let enabled: BTreeSet<String> = snap
            .plugins
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.id.clone())
            .collect();
        let shims = our_shims(&exec.join("events.sock"));
        let served = served_by(&exec, &shims);
        let served_ids: BTreeSet<&String> = served.values().flatten().collect();
        let runc_root = exec.join("runc").join(NAMESPACE);
        let runc_entries: BTreeSet<String> = dir_names(&runc_root).into_iter().collect();
        self.known_ids.extend(
            served
                .values()
                .flatten()
                .filter(|n| is_plugin_id(n))
                .cloned(),
        );
        self.known_ids
            .extend(runc_entries.iter().filter(|n| is_plugin_id(n)).cloned());

        // Every listed plugin: usable or cleanly disabled.
        for p in &snap.plugins {
            let short = format!("{} ({})", p.name, &p.id[..p.id.len().min(12)]);
            match self
                .daemon
                .request("GET", &format!("/plugins/{}/json", p.name), &[])
            {
                Ok((200, _)) => {}
                Ok((s, t)) => out.push(violation(
                    "inspect",
                    &p.id,
                    format!("{short}: inspect answered {s}: {}", t.trim()),
                )),
                Err(e) => out.push(violation(
                    "inspect",
                    &p.id,
                    format!("{short}: inspect: {e:#}"),
                )),
            }
            if p.enabled {
                if p.state != "running" {
                    out.push(violation(
                        "enabled-not-running",
                        &p.id,
                        format!("{short}: enabled but state {}", p.state),
                    ));
                    continue;
                }
                let mut missing = Vec::new();
                if !p.pid.is_some_and(pid_alive) {
                    missing.push(format!("pid {:?} not alive", p.pid));
                }
                if !served_ids.contains(&p.id) {
                    missing.push("no shim".to_owned());
                }
                if !runc_entries.contains(&p.id) {
                    missing.push("no runc state".to_owned());
                }
                if !missing.is_empty() {
                    out.push(violation(
                        "enabled-without-task",
                        &p.id,
                        format!("{short}: {}", missing.join(", ")),
                    ));
                    continue;
                }
                let sock = exec.join("plugins").join(&p.id).join(&p.socket);
                match http_timeout(
                    &sock,
                    "POST",
                    "/Plugin.Activate",
                    b"{}",
                    Duration::from_secs(5),
                ) {
                    Ok((200, body)) if body.contains("Implements") => {}
                    Ok((s, body)) => out.push(violation(
                        "dead-socket",
                        &p.id,
                        format!("{short}: Plugin.Activate answered {s}: {}", body.trim()),
                    )),
                    Err(e) => out.push(violation(
                        "dead-socket",
                        &p.id,
                        format!("{short}: {}: {e:#}", sock.display()),
                    )),
                }
            } else if p.state == "running" {
                out.push(violation(
                    "disabled-but-running",
                    &p.id,
                    format!("{short}: disabled but state {} pid {:?}", p.state, p.pid),
                ));
            }
        }

        // Tasks, shims, runc state and cgroups only for enabled plugins.
        for (shim, pid) in &shims {
            // A shim (a group's too) must serve at least one enabled plugin.
            let serves = &served[shim];
            if !serves.iter().any(|id| enabled.contains(id)) {
                let id = serves.first().unwrap_or(shim);
                out.push(violation(
                    "orphan-shim",
                    id,
                    format!(
                        "shim pid {pid} for {} plugin {id}",
                        if listed.contains(id) {
                            "disabled"
                        } else {
                            "unknown"
                        }
                    ),
                ));
            }
        }
        for id in &runc_entries {
            if !enabled.contains(id) {
                out.push(violation(
                    "orphan-runc-state",
                    id,
                    format!("{} for a plugin not enabled", runc_root.join(id).display()),
                ));
            }
        }
        let not_enabled: BTreeSet<String> = self.known_ids.difference(&enabled).cloned().collect();
        let mut cgroups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for cg in cgroups_named(&not_enabled) {
            let id = cg
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            cgroups.entry(id).or_default().push(cg);
        }
        for (id, dirs) in cgroups {
            out.push(violation(
                "orphan-cgroup",
                &id,
                format!(
                    "cgroup of a plugin that is not enabled in {} hierarchies (e.g. {})",
                    dirs.len(),
                    dirs[0].display()
                ),
            ));
        }

        // Mounts: only the propagated mounts of enabled plugins.
        for m in mounts_under(&self.daemon.dir) {
            let allowed = m.parent().is_some_and(|parent| {
                parent.parent() == Some(root.as_path())
                    && m.file_name().is_some_and(|n| n == "propagated-mount")
                    && parent
                        .file_name()
                        .is_some_and(|id| enabled.contains(&*id.to_string_lossy()))
            });
            if !allowed {
                out.push(violation(
                    "leftover-mount",
                    m.display().to_string(),
                    "mount of a plugin that is not enabled",
                ));
            }
        }

        // Exec root: bundles, task dirs, runtime dirs of enabled plugins; logs of listed ones.
        for sub in ["bundles", "tasks", "plugins"] {
            for name in dir_names(&exec.join(sub)) {
                let path = exec.join(sub).join(&name);
                if is_temp_name(&name) {
                    out.push(violation(
                        "temp-file",
                        path.display().to_string(),
                        "left by an interrupted operation",
                    ));
                } else if !enabled.contains(&name) {
                    out.push(violation(
                        "leftover-runtime-dir",
                        path.display().to_string(),
                        "for a plugin that is not enabled",
                    ));
                }
            }
        }
        for name in dir_names(&exec.join("logs")) {
            let path = exec.join("logs").join(&name);
            match id_in(&name) {
                Some(id) if listed.contains(id) => {}
                _ if is_temp_name(&name) => out.push(violation(
                    "temp-file",
                    path.display().to_string(),
                    "left by an interrupted operation",
                )),
                _ => out.push(violation(
                    "leftover-log",
                    path.display().to_string(),
                    "log of a plugin that is gone (logs go with the plugin on remove)",
                )),
            }
        }

        // Root: records of listed plugins only; no staging, temp files, ingests, quarantines.
        // Plugin contents are the plugin's business; staging under tmp/ is checked below.
        let inside_plugin = |p: &Path| {
            let in_plugin = p.parent().and_then(Path::parent) == Some(root.as_path())
                && p.file_name()
                    .is_some_and(|n| n == "rootfs" || n == "propagated-mount");
            in_plugin || p == root.join("tmp")
        };
        for name in dir_names(&root) {
            let path = root.join(&name);
            if is_plugin_id(&name) && !listed.contains(&name) {
                out.push(violation(
                    "leftover-record",
                    path.display().to_string(),
                    "state directory of a plugin that is not listed",
                ));
            }
        }
        for t in temp_files(&root, &inside_plugin) {
            out.push(violation(
                "temp-file",
                t.display().to_string(),
                "left by an interrupted operation",
            ));
        }
        for name in dir_names(&root.join("tmp")) {
            out.push(violation(
                "temp-file",
                root.join("tmp").join(&name).display().to_string(),
                "staging left by an interrupted operation",
            ));
        }
        for name in dir_names(&root.join("storage/ingest")) {
            out.push(violation(
                "partial-ingest",
                root.join("storage/ingest")
                    .join(&name)
                    .display()
                    .to_string(),
                "ingest not finished or discarded",
            ));
        }
        for q in [
            root.join("quarantine"),
            root.join("storage/quarantine"),
            root.join("volumes/quarantine"),
        ] {
            for name in dir_names(&q) {
                out.push(violation(
                    "quarantine",
                    q.join(&name).display().to_string(),
                    "quarantined after a crash",
                ));
            }
        }
        let records: String = listed
            .iter()
            .filter_map(|id| fs::read_to_string(root.join(id).join("config.json")).ok())
            .collect();
        for blob in dir_names(&root.join("storage/blobs/sha256")) {
            if !records.contains(&blob) {
                out.push(violation(
                    "unreferenced-blob",
                    &blob,
                    "blob referenced by no plugin record",
                ));
            }
        }
        let used = disk_use(&root, &|p: &Path| {
            p.file_name().is_some_and(|n| n == "propagated-mount")
        });
        let bound = (listed.len() as u64 + 1) * 3 * self.tar.len() as u64 + (1 << 20);
        if used > bound {
            out.push(violation(
                "disk-use",
                root.display().to_string(),
                format!("{used} bytes for {} plugins (bound {bound})", listed.len()),
            ));
        }

        // Volumes: every listed one inspects.
        for v in &snap.volumes {
            match self.daemon.request("GET", &format!("/volumes/{v}"), &[]) {
                Ok((200, _)) => {}
                Ok((s, t)) => out.push(violation(
                    "volume-inspect",
                    v,
                    format!("inspect answered {s}: {}", t.trim()),
                )),
                Err(e) => out.push(violation("volume-inspect", v, format!("{e:#}"))),
            }
        }
        out
    }

    /// A disabled plugin must enable and disable again (one per iteration, chosen by `pick`).
    fn probe(&mut self, pick: u64) -> Vec<Violation> {
        let Ok(snap) = self.snapshot() else {
            return Vec::new();
        };
        let disabled: Vec<&PluginView> = snap.plugins.iter().filter(|p| !p.enabled).collect();
        if disabled.is_empty() {
            return Vec::new();
        }
        let p = disabled[(pick % disabled.len() as u64) as usize];
        let mut out = Vec::new();
        match self.daemon.request(
            "POST",
            &format!("/plugins/{}/enable?timeout=30", p.name),
            &[],
        ) {
            Ok((200, _)) => {}
            Ok((s, t)) => {
                out.push(violation(
                    "probe-enable",
                    &p.id,
                    format!("{}: enable answered {s}: {}", p.name, t.trim()),
                ));
                return out;
            }
            Err(e) => {
                out.push(violation(
                    "probe-enable",
                    &p.id,
                    format!("{}: enable: {e:#}", p.name),
                ));
                return out;
            }
        }
        match self
            .daemon
            .request("POST", &format!("/plugins/{}/disable", p.name), &[])
        {
            Ok((s, _)) if s < 500 => {}
            Ok((s, t)) => out.push(violation(
                "probe-disable",
                &p.id,
                format!("{}: disable answered {s}: {}", p.name, t.trim()),
            )),
            Err(e) => out.push(violation(
                "probe-disable",
                &p.id,
                format!("{}: disable: {e:#}", p.name),
            )),
        }
        out
    }

    fn save_log(&self) -> Option<PathBuf> {
        let dir = workspace_root().join("target/torture");
        fs::create_dir_all(&dir).ok()?;
        let to = dir.join(format!("plugind-seed-{}.log", self.seed));
        fs::copy(self.daemon.log(), &to).ok()?;
        Some(to)
    }

    fn print_figures(&self, took: Duration) {
        let s = &self.stats;
        println!(
            "torture figures: seed {}, {} iterations in {:.1} s, {} kills ({} mid-operation), {} restarts ({} with live restore), longest settle {} ms, {} violations ({} distinct)",
            self.seed,
            s.iterations,
            took.as_secs_f64(),
            s.kills,
            s.kills_mid_op,
            s.restarts,
            s.restarts_live,
            s.settle_max.as_millis(),
            s.violations,
            s.distinct
        );
        for (cat, n) in &s.per_category {
            println!("  {cat}: {n}");
        }
        if let Some(first) = &s.first {
            println!("  first violation: {first}");
        }
    }

    /// Stops everything this run started, whatever state plugind left: plugind, runc
    /// containers (which takes their cgroups), shims, shim sockets, mounts, the directory.
    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        self.daemon.kill9();
        let exec = self.daemon.exec_root();
        let runc_root = exec.join("runc").join(NAMESPACE);
        for id in dir_names(&runc_root) {
            self.known_ids.insert(id.clone());
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "-f", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let shims = our_shims(&exec.join("events.sock"));
        for pid in shims.values() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The shims' own sockets live outside our directory; their addresses are in the bundles.
        for id in dir_names(&exec.join("bundles")) {
            if let Ok(addr) = fs::read_to_string(exec.join("bundles").join(&id).join("address")) {
                if let Some(path) = addr.trim().strip_prefix("unix://") {
                    let _ = fs::remove_file(path);
                }
            }
        }
        // Group shims (`--shim-group`) write theirs in their group directory.
        for g in dir_names(&exec.join("groups")) {
            if let Ok(addr) = fs::read_to_string(exec.join("groups").join(&g).join("address")) {
                if let Some(path) = addr.trim().strip_prefix("unix://") {
                    let _ = fs::remove_file(path);
                }
            }
        }
        for m in mounts_under(&self.daemon.dir).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let mut cgroups = cgroups_named(&self.known_ids);
        // Deepest first: a cgroup with children cannot be removed.
        cgroups.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for cg in cgroups {
            let _ = fs::remove_dir(&cg);
        }
        if let Err(e) = fs::remove_dir_all(&self.daemon.dir) {
            eprintln!("torture: cannot remove {}: {e}", self.daemon.dir.display());
        }
    }
}

impl Drop for Torture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_iteration(7, 3).next()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_iteration(7, 3).next(),
            Rng::for_iteration(7, 4).next()
        );
        assert_ne!(
            Rng::for_iteration(7, 3).next(),
            Rng::for_iteration(8, 3).next()
        );
    }

    #[test]
    fn ids_are_found_in_file_names() {
        let id = "f3f6ee5bb141007b6a75399e2824617980c4549ed75b308902edf76aee36fed8";
        assert_eq!(id_in(&format!("{id}.log.1")), Some(id));
        assert_eq!(id_in(&format!(".{id}-deleting")), Some(id));
        assert_eq!(id_in("plugind.lock"), None);
        assert!(is_temp_name(&format!(".{id}-deleting")));
        assert!(is_temp_name("config.json.tmp-12-3"));
        assert!(!is_temp_name(id));
    }
}
