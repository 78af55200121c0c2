//! `cargo xtask bench registry`: push and install against a loopback `docker-registry`
//! ([`run_registry_bench`]).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{median, ms, timed_shell, wait_store_empty, ROUNDS};
use crate::{
    daemon::Plugind,
    plugin,
    util::{cargo, run, workspace_root},
};

/// A `docker-registry` on a free loopback port with throwaway storage; killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl LocalRegistry {
    fn start(dir: &Path) -> anyhow::Result<LocalRegistry> {
        let binary = crate::util::find_program("docker-registry")
            .context("docker-registry is missing: run `cargo xtask setup`")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        fs::create_dir_all(dir.join("storage"))?;
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("storage").display()
        );
        fs::write(dir.join("config.yml"), config)?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log"))?)
            .spawn()?;
        let registry = LocalRegistry {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while head_requests(&registry.addr, &["/v2/"]).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {}", registry.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(registry)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// HEAD requests on one keep-alive connection with a minimal client (std only): the cheapest
/// way to ask a registry whether it holds objects.
fn head_requests(addr: &str, paths: &[&str]) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    for path in paths {
        write!(
            s,
            "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                bail!("connection closed");
            }
            head.push(byte[0]);
        }
    }
    Ok(())
}

/// A progress-stream request that must end without an error object.
fn stream_ok(d: &Plugind, method: &str, path: &str, body: &[u8]) -> anyhow::Result<String> {
    let text = d.ok(method, path, body)?;
    if text.contains("\"errorDetail\"") {
        bail!("{method} {path}: {text}");
    }
    Ok(text)
}

fn query_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace(':', "%3A")
        .replace('@', "%40")
}

/// Installs `remote` as `name` (disabled) with the privileges it asks for.
fn install(d: &Plugind, remote: &str, name: &str) -> anyhow::Result<()> {
    let privileges = d.ok(
        "GET",
        &format!("/plugins/privileges?remote={}", query_escape(remote)),
        &[],
    )?;
    stream_ok(
        d,
        "POST",
        &format!(
            "/plugins/pull?remote={}&name={}",
            query_escape(remote),
            query_escape(name)
        ),
        privileges.as_bytes(),
    )?;
    Ok(())
}

/// `cargo xtask bench registry`: issue 12's budgets, each against a baseline of the same run:
/// - push with the registry already holding everything vs the same HEAD requests made with
///   curl and with a minimal keep-alive client;
/// - install `--disable` (empty blob store) vs curl of manifest + config + layer piped through
///   `tar -xz`;
/// - install with enable (the docker CLI, and its API calls alone) vs Docker's fixed 796 ms;
/// - a 300 MB plugin: install throughput vs `curl | sha256sum` of its layer.
pub(crate) fn run_registry_bench() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--locked", "-p", "plugind"]))?;
    let out = plugin::build()?;
    let tar = fs::read(&out.tar).context("read plugin tar")?;
    let binary = workspace_root().join("target/release/plugind");
    let work = workspace_root().join("target/bench-registry");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let registry = LocalRegistry::start(&work.join("registry"))?;
    let addr = registry.addr.clone();
    let d = Plugind::start(&binary, "breg", false)?;

    // push: first to an empty registry, then again (nothing to upload)
    let name = format!("{addr}/bench/sample:1.0");
    d.ok("POST", &format!("/plugins/create?name={name}"), &tar)?;
    let t = Instant::now();
    let stream = stream_ok(&d, "POST", &format!("/plugins/{name}/push"), &[])?;
    let first_push = t.elapsed();
    if !stream.contains("\"aux\"") {
        bail!("no aux object in the push stream: {stream}");
    }
    let mut repushes = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        stream_ok(&d, "POST", &format!("/plugins/{name}/push"), &[])?;
        repushes.push(t.elapsed());
    }
    let manifest_json = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{addr}/v2/bench/sample/manifests/1.0"),
        ])
        .output()?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_json.stdout)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("config")?
        .to_owned();
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .context("layer")?
        .to_owned();
    let heads = [
        format!("/v2/bench/sample/blobs/{layer_digest}"),
        format!("/v2/bench/sample/blobs/{config_digest}"),
        "/v2/bench/sample/manifests/1.0".to_owned(),
    ];
    let head_refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut raw_heads = Vec::new();
    let mut curl_heads = Vec::new();
    let curl_script = format!(
        "curl -sf -I -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' {} >/dev/null",
        heads
            .iter()
            .map(|p| format!("http://{addr}{p}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for _ in 0..ROUNDS {
        let t = Instant::now();
        head_requests(&addr, &head_refs)?;
        raw_heads.push(t.elapsed());
        curl_heads.push(timed_shell(&curl_script)?);
    }
    let repush = median(repushes);
    let raw = median(raw_heads);
    let curl = median(curl_heads);
    println!("push, registry empty: {} (Docker 48-49 ms)", ms(first_push));
    println!(
        "push, registry holds everything (median of {ROUNDS}): {} (Docker 21-27 ms)",
        ms(repush)
    );
    println!(
        "  baseline: the same 3 HEAD requests with curl: {} -> ratio {:.2}x (budget <= 1.5x); with a minimal keep-alive client: {} -> ratio {:.1}x",
        ms(curl),
        repush.as_secs_f64() / curl.as_secs_f64(),
        ms(raw),
        repush.as_secs_f64() / raw.as_secs_f64()
    );

    // install --disable from an empty blob store vs curl + tar -xz
    let remote = format!("{addr}/bench/sample:1.0");
    let mut installs = Vec::new();
    let mut fetches = Vec::new();
    let extract = work.join("extract");
    let fetch_script = format!(
        "curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' http://{addr}/v2/bench/sample/manifests/1.0 >/dev/null && \
         curl -sf http://{addr}/v2/bench/sample/blobs/{config_digest} >/dev/null && \
         rm -rf {x} && mkdir -p {x} && curl -sf http://{addr}/v2/bench/sample/blobs/{layer_digest} | tar -xz -C {x}",
        x = extract.display()
    );
    d.ok("DELETE", &format!("/plugins/{name}"), &[])?;
    wait_store_empty(&d)?;
    for i in 0..ROUNDS {
        let t = Instant::now();
        install(&d, &remote, &format!("bench/i{i}"))?;
        installs.push(t.elapsed());
        d.ok("DELETE", &format!("/plugins/bench/i{i}"), &[])?;
        wait_store_empty(&d)?;
        fetches.push(timed_shell(&fetch_script)?);
    }
    let install_t = median(installs);
    let fetch_t = median(fetches);
    println!(
        "install --disable, empty blob store (median of {ROUNDS}): {} (Docker 224-251 ms)",
        ms(install_t)
    );
    println!(
        "  baseline: curl manifest + config + layer | tar -xz: {} -> ratio {:.2}x (budget <= 1.5x; Docker 2.3-2.6x)",
        ms(fetch_t),
        install_t.as_secs_f64() / fetch_t.as_secs_f64()
    );

    // install with enable, empty blob store: the docker CLI's `plugin install
    // --grant-all-permissions` (privileges, pull, enable), and the same three API calls
    // without the CLI process. Docker's figure is fixed (distribution.md §9), not measured here.
    let host = format!("unix://{}", d.socket().display());
    let mut cli_enables = Vec::new();
    let mut api_enables = Vec::new();
    for i in 0..ROUNDS {
        let alias = format!("bench/e{i}");
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["-H", &host, "plugin", "install", "--grant-all-permissions"])
            .args(["--alias", &alias, &remote])
            .stdin(Stdio::null())
            .output()
            .context("run the docker CLI")?;
        cli_enables.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "docker plugin install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        d.ok("DELETE", &format!("/plugins/{alias}?force=1"), &[])?;
        wait_store_empty(&d)?;
        let t = Instant::now();
        install(&d, &remote, &alias)?;
        d.ok("POST", &format!("/plugins/{alias}/enable?timeout=30"), &[])?;
        api_enables.push(t.elapsed());
        d.ok("DELETE", &format!("/plugins/{alias}?force=1"), &[])?;
        wait_store_empty(&d)?;
    }
    let cli_enable = median(cli_enables);
    let api_enable = median(api_enables);
    println!(
        "install with enable, empty blob store (median of {ROUNDS}): docker plugin install --grant-all-permissions: {} -> {:.3} of Docker's 796 ms (fixed reference, distribution.md §9, not measured in this run; budget <= 1/8 = 99.5 ms)",
        ms(cli_enable),
        cli_enable.as_secs_f64() * 1000.0 / 796.0
    );
    println!(
        "  the same three API calls (privileges, pull, enable) without the CLI process: {} -> {:.3} of 796 ms",
        ms(api_enable),
        api_enable.as_secs_f64() * 1000.0 / 796.0
    );

    // a 300 MB plugin: install throughput vs curl | sha256sum
    let big_dir = work.join("big");
    run(Command::new("cp").arg("-a").arg(&out.dir).arg(&big_dir))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "head -c 300000000 /dev/urandom > {}/rootfs/payload.bin",
        big_dir.display()
    )))?;
    let big_tar = work.join("big.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&big_dir)
        .arg("-cf")
        .arg(&big_tar)
        .args(["config.json", "rootfs"]))?;
    let big_name = format!("{addr}/bench/big:1.0");
    d.ok(
        "POST",
        &format!("/plugins/create?name={big_name}"),
        &fs::read(&big_tar)?,
    )?;
    fs::remove_file(&big_tar)?;
    fs::remove_dir_all(&big_dir)?;
    stream_ok(&d, "POST", &format!("/plugins/{big_name}/push"), &[])?;
    d.ok("DELETE", &format!("/plugins/{big_name}"), &[])?;
    wait_store_empty(&d)?;
    let big_manifest = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{addr}/v2/bench/big/manifests/1.0"),
        ])
        .output()?;
    let big_manifest: serde_json::Value = serde_json::from_slice(&big_manifest.stdout)?;
    let big_layer = big_manifest["layers"][0]["digest"]
        .as_str()
        .context("big layer")?
        .to_owned();
    let big_size = big_manifest["layers"][0]["size"].as_u64().context("size")?;
    let mut big_installs = Vec::new();
    let mut big_curls = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        install(&d, &big_name, &format!("bench/big{i}"))?;
        big_installs.push(t.elapsed());
        d.ok("DELETE", &format!("/plugins/bench/big{i}"), &[])?;
        wait_store_empty(&d)?;
        big_curls.push(timed_shell(&format!(
            "curl -sf http://{addr}/v2/bench/big/blobs/{big_layer} | sha256sum >/dev/null"
        ))?);
    }
    let mb = big_size as f64 / 1e6;
    let big_install = median(big_installs);
    let big_curl = median(big_curls);
    println!(
        "install of a {mb:.0} MB plugin (median of 3): {} = {:.0} MB/s; curl | sha256sum of its layer: {} = {:.0} MB/s -> {:.2}x (budget >= 0.8x)",
        ms(big_install),
        mb / big_install.as_secs_f64(),
        ms(big_curl),
        mb / big_curl.as_secs_f64(),
        big_curl.as_secs_f64() / big_install.as_secs_f64()
    );
    drop(d);
    drop(registry);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}
