//! `cargo xtask bench daemon` and `cargo xtask bench registry`: the budgets of design.md and
//! of the issues measured end to end against the release `plugind`, each printed with a
//! baseline measured in the same run and its budget (met/missed). Nothing here asserts on
//! time: the figures are for reading. One module per group of figures:
//! - `daemon`: the run's order and the small figures (create, enable -> ready with its phases,
//!   disable, remove, memory and restore at 100 plugins);
//! - `baseline`: `runc run -d` and `crun run -d` of the plugin's own bundle, to socket-ready;
//! - `memory`: the memory of plugind, its shims and the plugins' processes, from /proc;
//! - `fleet`: 1,000 plugins (create + enable, idle memory, restore after kill -9, disable);
//! - `size`: create of 3, 30 and 300 MB plugins against `tar -x` + `sha256sum`;
//! - `registry`: push and install against a loopback `docker-registry`.

mod baseline;
mod daemon;
mod fleet;
mod memory;
mod registry;
mod size;

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

pub(crate) use daemon::run_daemon_bench;
pub(crate) use registry::run_registry_bench;

/// Rounds of each repeated measurement (medians are printed).
const ROUNDS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// "met" or "MISSED", for a figure printed next to its budget.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(key)? + key.len();
    Some(json[start..].split('"').next()?.to_owned())
}

/// Runs `sh -c script`, which must succeed, and returns how long it took.
fn timed_shell(script: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let status = Command::new("sh").arg("-c").arg(script).status()?;
    let elapsed = t.elapsed();
    if !status.success() {
        bail!("baseline failed: {script}");
    }
    Ok(elapsed)
}

/// Waits until the blob store holds no blob (the sweep after a remove is asynchronous).
fn wait_store_empty(d: &crate::daemon::Plugind) -> anyhow::Result<()> {
    let blobs = d.dir.join("root/storage/blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_dir(&blobs).map(|r| r.count()).unwrap_or(0) > 0 {
        if Instant::now() > deadline {
            bail!("blobs still stored 10 s after remove");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Bytes and regular files under a directory (apparent sizes, symlinks not followed).
#[derive(Debug, Default)]
struct TreeSize {
    bytes: u64,
    files: u64,
}

fn tree_size(root: &Path) -> anyhow::Result<TreeSize> {
    let mut size = TreeSize::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                size.bytes += meta.len();
                size.files += 1;
            }
        }
    }
    Ok(size)
}

/// Runs `job(i)` for every `i` in `0..count` on `workers` threads; the first error wins.
fn parallel(
    count: usize,
    workers: usize,
    job: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            return Ok(());
                        }
                        job(i)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a worker panicked")))
            .collect::<anyhow::Result<Vec<()>>>()
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_size_counts_regular_files_at_every_depth() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-size-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("top"), vec![0u8; 1000]).unwrap();
        fs::write(dir.join("a/b/deep"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("top", dir.join("link")).unwrap();
        let size = tree_size(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((size.bytes, size.files), (1024, 2));
    }

    #[test]
    fn parallel_runs_every_index_once_and_reports_an_error() {
        let seen = std::sync::Mutex::new(Vec::new());
        parallel(100, 8, |i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        let err = parallel(10, 3, |i| if i == 7 { bail!("job 7") } else { Ok(()) });
        assert_eq!(err.unwrap_err().to_string(), "job 7");
    }
}
