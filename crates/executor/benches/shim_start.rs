//! Start-latency and re-attach benchmark (root; needs runc, containerd-shim-runc-v2, busybox).
//!
//! `cargo bench -p plugind-executor` measures, in one run, interleaved on identical busybox
//! bundles: (a) `ShimExecutor::create` (shim `start` + connect + Create + Start + State ==
//! running) against (b) `runc run -d` of the same kind of bundle, and prints medians and the
//! ratio; then the time for a fresh executor to re-attach to 100 running tasks.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use plugind_executor::{
    CreateTask, EventHandler, Executor, ExecutorConfig, RestoreOutcome, Runtimes, ShimExecutor,
};

const ROUNDS: usize = 20;
const REATTACH: usize = 100;

fn bundle(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let b = dir.join(id);
    fs::create_dir_all(b.join("rootfs/bin"))?;
    if fs::hard_link("/bin/busybox", b.join("rootfs/bin/busybox")).is_err() {
        fs::copy("/bin/busybox", b.join("rootfs/bin/busybox"))?;
    }
    let out = Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&b)
        .output()?;
    anyhow::ensure!(out.status.success(), "runc spec failed");
    let path = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "3600"]);
    v["root"]["readonly"] = true.into();
    fs::write(&path, serde_json::to_vec(&v)?)?;
    Ok(b)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Null;

#[async_trait::async_trait]
impl EventHandler for Null {
    async fn handle(&self, _event: plugind_executor::TaskEvent) {}
}

async fn executor(root: &Path, ns: &str) -> anyhow::Result<ShimExecutor> {
    let mut c = ExecutorConfig::new(root, ns);
    c.shim_binary = "/usr/bin/containerd-shim-runc-v2".into();
    c.rpc_timeout = Duration::from_secs(30);
    let handler: Arc<dyn EventHandler> = Arc::new(Null);
    Ok(ShimExecutor::new(c, &Runtimes::runc(), handler).await?)
}

async fn stop(ex: &ShimExecutor, id: &str) -> anyhow::Result<()> {
    ex.kill(id, Duration::from_millis(0)).await?;
    ex.delete(id).await?;
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let uid = fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    anyhow::ensure!(uid == "0", "the executor benchmark needs root");
    let tmp = tempfile::Builder::new().prefix("pb").tempdir_in("/tmp")?;
    let ns = format!("plugind-bench-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let root = tmp.path().join("x");
    let bundles = tmp.path().join("b");
    let direct_root = tmp.path().join("direct");
    let ex = executor(&root, &ns).await?;

    let mut shim_times = Vec::new();
    let mut runc_times = Vec::new();
    for i in 0..=ROUNDS {
        // (a) through the shim.
        let id = format!("s{i}");
        let b = bundle(&bundles, &id)?;
        let t = Instant::now();
        ex.create(CreateTask {
            id: id.clone(),
            bundle: b,
            runtime: None,
        })
        .await?;
        let d = t.elapsed();
        stop(&ex, &id).await?;
        // (b) runc run -d.
        let id = format!("r{i}");
        let b = bundle(&bundles, &id)?;
        let t = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&direct_root)
            .args(["run", "-d", "--bundle"])
            .arg(&b)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let r = t.elapsed();
        anyhow::ensure!(st.success(), "runc run -d failed");
        Command::new("runc")
            .arg("--root")
            .arg(&direct_root)
            .args(["delete", "-f", &id])
            .status()?;
        if i > 0 {
            // Round 0 warms caches.
            shim_times.push(d);
            runc_times.push(r);
        }
    }
    let (ms, mr) = (median(&mut shim_times), median(&mut runc_times));
    println!(
        "start until running, median of {ROUNDS} interleaved: shim {:.1} ms, runc run -d {:.1} ms, ratio {:.2}",
        ms.as_secs_f64() * 1e3,
        mr.as_secs_f64() * 1e3,
        ms.as_secs_f64() / mr.as_secs_f64()
    );

    // Re-attach: start REATTACH tasks, drop the executor (tasks keep running), restore them.
    let mut list = Vec::new();
    for i in 0..REATTACH {
        let id = format!("a{i}");
        let b = bundle(&bundles, &id)?;
        ex.create(CreateTask {
            id: id.clone(),
            bundle: b.clone(),
            runtime: None,
        })
        .await?;
        list.push((id, b));
    }
    ex.shutdown().await;
    drop(ex);
    let ex = executor(&root, &ns).await?;
    let t = Instant::now();
    let outcomes = ex.restore(list.clone()).await;
    let d = t.elapsed();
    let running = outcomes
        .iter()
        .filter(|o| matches!(o, RestoreOutcome::Running { .. }))
        .count();
    println!(
        "re-attach {REATTACH} running tasks: {:.1} ms ({running} running)",
        d.as_secs_f64() * 1e3
    );
    for (id, _) in &list {
        stop(&ex, id).await?;
    }
    ex.shutdown().await;
    anyhow::ensure!(
        running == REATTACH,
        "only {running} of {REATTACH} tasks re-attached"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
