//! `cargo xtask demo`: the main job, end to end and unattended. Builds everything and the
//! sample plugin, starts plugind on a throwaway root and socket, then drives it with the real
//! docker CLI: create the sample plugin, enable it, show `plugin ls` and `inspect`, use it
//! (a volume created, listed and removed through plugind's volume API, which calls the
//! plugin), show its logs, disable, remove, and stop plugind. Each step is printed.

use std::process::{Command, Stdio};

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

    step("create the sample plugin from its directory");
    cli(&["plugin", "create", NAME, &out.dir.to_string_lossy()])?;
    step("enable it (plugind waits until the plugin's socket answers)");
    cli(&["plugin", "enable", NAME])?;
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

    step("stop plugind");
    drop(d);
    println!("\ndemo finished: every step succeeded");
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}
