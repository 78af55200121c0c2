//! `cargo xtask demo`: the main job, end to end and unattended. Builds everything and the
//! sample plugin, starts plugind on a throwaway root and socket, then drives it with the real
//! docker CLI: create the sample plugin, push it to a local registry (Debian's
//! `docker-registry`, started by the demo on a free loopback port and stopped afterwards),
//! remove it and install it back from the registry, show `plugin ls` and `inspect`, use it
//! (a volume created, listed and removed through plugind's volume API, which calls the
//! plugin), show its logs, disable, remove, and stop plugind. Each step is printed.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    daemon::Plugind,
    plugin,
    util::{cargo, find_program, run as run_cmd, workspace_root},
};

const NAME: &str = "plugind/sample-volume";

pub(crate) fn run() -> anyhow::Result<()> {
    step("build everything");
    run_cmd(cargo().args(["build", "--locked", "--workspace"]))?;
    step("build and package the sample volume plugin");
    let out = plugin::build()?;
    let docker = find_program("docker").context("the docker CLI is needed for the demo")?;

    step("start plugind on a throwaway root and socket");
    let binary = workspace_root().join("target/debug/plugind");
    let d = Plugind::start(&binary, "demo", false)?;
    println!("plugind listening on {}", d.socket().display());
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        println!("$ docker {}", args.join(" "));
        let o = Command::new(&docker)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
            .env("DOCKER_CONFIG", d.dir.join("docker-cli"))
            .stdin(Stdio::null())
            .output()
            .context("run docker")?;
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        print!("{stdout}");
        if !o.status.success() {
            bail!(
                "docker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(stdout)
    };

    step("start a local registry (docker-registry on a free loopback port)");
    let registry = LocalRegistry::start(&d.dir.join("registry"))?;
    println!("registry listening on {}", registry.addr);
    let remote = format!("{}/{NAME}:1.0", registry.addr);

    step("create the sample plugin from its directory and push it");
    cli(&["plugin", "create", &remote, &out.dir.to_string_lossy()])?;
    cli(&["plugin", "push", &remote])?;
    cli(&["plugin", "rm", &remote])?;

    step("install it from the registry (pull, then enable: plugind waits for its socket)");
    cli(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--alias",
        NAME,
        &remote,
    ])?;
    step("the state");
    cli(&["plugin", "ls"])?;
    cli(&["plugin", "inspect", "--format", "{{.Name}} enabled={{.Enabled}} state={{.PluginD.State}} pid={{.PluginD.Pid}} implements={{.Config.Interface.Types}}", NAME])?;

    step("use it: a volume through the plugin");
    cli(&["volume", "create", "-d", NAME, "demo-volume"])?;
    cli(&["volume", "ls"])?;
    cli(&["volume", "inspect", "demo-volume"])?;
    cli(&["volume", "rm", "demo-volume"])?;

    step("its logs (plugind's GET /plugins/{name}/logs)");
    let logs = d.ok("GET", &format!("/plugins/{NAME}/logs?tail=10"), &[])?;
    print!("{logs}");

    step("disable and remove");
    cli(&["plugin", "disable", NAME])?;
    cli(&["plugin", "rm", NAME])?;
    cli(&["plugin", "ls"])?;

    step("stop plugind and the registry");
    drop(d);
    drop(registry);
    println!("\ndemo finished: every step succeeded");
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Debian's `docker-registry` on a free loopback port with its storage under `dir`; killed
/// when dropped.
struct LocalRegistry {
    child: Child,
    addr: String,
}

impl LocalRegistry {
    fn start(dir: &Path) -> anyhow::Result<LocalRegistry> {
        let binary = find_program("docker-registry")
            .or_else(|| find_program("registry"))
            .context("the demo needs Debian's docker-registry (cargo xtask setup)")?;
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let registry = LocalRegistry { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.answers() {
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {}", registry.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// `GET /v2/` answers 200.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
