//! End-to-end: the Python docker SDK (docker-py, installed by `cargo xtask setup` in xtask's
//! venv) against the built `plugind`: `plugins.create`, `list`, `get`, `enable`, `disable`,
//! `configure`, `remove`, and its `NotFound` error.

use std::process::Command;

use plugind_tests::{sample_plugin_dir, workspace, Daemon};

const SCRIPT: &str = r#"
import sys, docker
client = docker.DockerClient(base_url="unix://" + sys.argv[1])
plugin_dir = sys.argv[2]
p = client.plugins.create("pysdk/vol", plugin_dir)
assert p.name == "pysdk/vol:latest", p.name
assert [x.name for x in client.plugins.list()] == ["pysdk/vol:latest"]
p = client.plugins.get("pysdk/vol")
assert not p.enabled
p.configure({"DEBUG": "1"})
p.reload()
assert "DEBUG=1" in p.settings["Env"], p.settings
p.enable(timeout=10)
p.reload()
assert p.enabled
assert p.attrs["PluginD"]["State"] == "running", p.attrs
p.disable()
p.reload()
assert not p.enabled
p.remove()
try:
    client.plugins.get("pysdk/vol")
    raise SystemExit("expected NotFound")
except docker.errors.NotFound as e:
    assert 'plugin "pysdk/vol" not found' in str(e), str(e)
print("SDK OK")
"#;

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker SDK venv (cargo xtask setup) and the packaged sample plugin"]
fn python_sdk_drives_plugind() {
    let python = workspace().join("target/xtask-tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `cargo xtask setup`",
        python.display()
    );
    let d = Daemon::start(false);
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(d.socket())
        .arg(sample_plugin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SDK OK"),
        "SDK script failed: {}\n{}\nplugind log:\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}
