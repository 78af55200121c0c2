//! End-to-end: `plugind fsck` on the root of a real plugind: a rootfs damaged while plugind
//! is down is reported (exit 1), repaired from its layer (exit 0) and the plugin works again;
//! `--repair` is refused while plugind serves the root, a report is not.

use std::process::Command;

use plugind_tests::{http_over_unix, plugind_bin, sample_plugin_dir, Daemon};

fn fsck(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(plugind_bin())
        .arg("fsck")
        .arg("--root")
        .arg(d.dir.join("root"))
        .arg("--exec-root")
        .arg(d.dir.join("run"))
        .args(args)
        .output()
        .expect("run plugind fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root, runc, containerd-shim-runc-v2, the docker CLI and the packaged sample plugin"]
fn fsck_reports_and_repairs_a_damaged_rootfs_of_a_real_root() {
    let plugin = sample_plugin_dir().to_string_lossy().into_owned();
    let mut d = Daemon::start(false);
    d.docker_ok(&["plugin", "create", "checked", &plugin]);
    let id = d
        .docker_ok(&["plugin", "inspect", "-f", "{{.Id}}", "checked"])
        .trim()
        .to_owned();

    // While plugind serves: a report runs (and says so), a repair is refused.
    let (code, out, err) = fsck(&d, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("notice root-in-use"), "{out}");
    let (code, _, err) = fsck(&d, &["--repair"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is in use by plugind") && err.contains("stop it before"),
        "{err}"
    );

    d.stop();
    let binary = d.dir.join(format!("root/{id}/rootfs/volume-plugin"));
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&binary, &bytes).unwrap();

    let (code, out, _) = fsck(&d, &["--full"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem rootfs-differs") && out.contains("volume-plugin: content differs"),
        "{out}"
    );
    let (code, json, _) = fsck(&d, &["--full", "--format", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["remaining"], 1);
    assert_eq!(report["findings"][0]["kind"], "rootfs-differs");
    assert_eq!(report["checked"]["records"], 1);

    let (code, out, _) = fsck(&d, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("repaired: unpacked again from layer sha256:"),
        "{out}"
    );
    assert_eq!(fsck(&d, &["--full"]).0, 0);

    d.restart();
    d.docker_ok(&["plugin", "enable", "checked"]);
    let sock = d.dir.join(format!("run/plugins/{id}/vol.sock"));
    let (status, _) = http_over_unix(&sock, "POST", "/VolumeDriver.List", Some("{}")).unwrap();
    assert_eq!(status, 200, "the repaired plugin works");
    // An enabled plugin (init layer, propagated mount) reports clean while plugind serves.
    let (code, out, _) = fsck(&d, &[]);
    assert_eq!(code, 0, "{out}");
    d.docker_ok(&["plugin", "disable", "checked"]);
    d.docker_ok(&["plugin", "rm", "checked"]);
    // The cheap checks ran at start (in the background; long done by now).
    assert!(d.log().contains("state root checked"), "{}", d.log());
}
