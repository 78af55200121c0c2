//! The VolumeDriver itself: volumes are directories `<root>/<name>`, mount reference counts are
//! kept per caller id, and both survive restarts in `<root>/.state.json` (temp file + rename).
//! With the Create option `tmpfs=SIZE` a volume is a tmpfs the plugin mounts on its directory
//! (through `/bin/busybox mount`, which the plugin's rootfs must then hold): what real drivers
//! do with FUSE or NFS, and what proves that mounts made inside the plugin reach the host.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Name of the state file inside the volume root; volume names may not start with '.', so no
/// volume can collide with it.
pub const STATE_FILE: &str = ".state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeState {
    created_at: String,
    /// Caller id -> number of mounts not yet unmounted.
    #[serde(default)]
    mounts: BTreeMap<String, u32>,
    /// A tmpfs of this size is mounted on the volume's directory (`-o tmpfs=SIZE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tmpfs: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct State {
    #[serde(default)]
    volumes: BTreeMap<String, VolumeState>,
}

/// The driver state; callers serialise access (one mutex in `main`).
#[derive(Debug)]
pub struct Driver {
    root: PathBuf,
    state: State,
}

/// An answer to one call: HTTP status and JSON body.
pub type Reply = (u16, Value);

fn ok(v: Value) -> Reply {
    (200, v)
}

/// Errors are answered with 500 and `{"Err": ...}`, as go-plugins-helpers does; Docker then
/// reports `VolumeDriver.<Method>: <Err>`.
fn err(msg: impl Into<String>) -> Reply {
    (500, json!({ "Err": msg.into() }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameReq {
    name: String,
    #[serde(default, rename = "ID")]
    id: Option<String>,
    /// Create's options: `tmpfs=SIZE` only; others are accepted and ignored.
    #[serde(default)]
    opts: Option<BTreeMap<String, String>>,
}

/// The program that mounts and unmounts tmpfs volumes (the plugin is std only).
const MOUNT_HELPER: &str = "/bin/busybox";

/// Runs `busybox <args>`; the error names the command and its output.
fn mount_helper(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(MOUNT_HELPER)
        .args(args)
        .output()
        .map_err(|e| format!("{MOUNT_HELPER} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{MOUNT_HELPER} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks a tmpfs size (digits with an optional k/m/g suffix) so it cannot smuggle options.
fn validate_size(size: &str) -> Result<(), String> {
    let digits = size.trim_end_matches(['k', 'm', 'g']);
    if !digits.is_empty()
        && digits.len() + 1 >= size.len()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!("invalid tmpfs size {size:?} (want e.g. 1m)"))
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("volume name is empty".into());
    }
    if name.starts_with('.') || name.contains('/') || name.contains('\0') || name.len() > 255 {
        return Err(format!(
            "invalid volume name {name:?}: must not contain '/' or start with '.'"
        ));
    }
    Ok(())
}

impl Driver {
    /// Opens the driver on `root`, creating it and loading the saved state if any.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let path = root.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("parse {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            root: root.to_path_buf(),
            state,
        })
    }

    /// Number of known volumes (for the startup log line).
    pub fn volume_count(&self) -> usize {
        self.state.volumes.len()
    }

    fn mountpoint(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// Writes `state` to `<root>/.state.json` atomically: temp file, fsync, rename, fsync dir.
    fn persist(&self, state: &State) -> io::Result<()> {
        let tmp = self
            .root
            .join(format!("{STATE_FILE}.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        let res = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.root.join(STATE_FILE))?;
            fs::File::open(&self.root)?.sync_all()
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Applies `change` to a copy of the state, persists it, and only then makes it current, so
    /// a failed write leaves memory and disk in agreement.
    fn commit(&mut self, change: impl FnOnce(&mut State)) -> Result<(), String> {
        let mut next = self.state.clone();
        change(&mut next);
        self.persist(&next)
            .map_err(|e| format!("save {}: {e}", self.root.join(STATE_FILE).display()))?;
        self.state = next;
        Ok(())
    }

    /// Handles one call; `method` is the part after `/VolumeDriver.`.
    pub fn handle(&mut self, method: &str, body: &[u8]) -> Reply {
        match method {
            "Capabilities" => return ok(json!({ "Capabilities": { "Scope": "local" } })),
            "List" => {
                let volumes: Vec<Value> = self
                    .state
                    .volumes
                    .keys()
                    .map(|n| json!({ "Name": n, "Mountpoint": self.mountpoint(n) }))
                    .collect();
                return ok(json!({ "Volumes": volumes, "Err": "" }));
            }
            "Create" | "Remove" | "Mount" | "Unmount" | "Path" | "Get" => {}
            _ => {
                return (
                    404,
                    json!({ "Err": format!("unknown method VolumeDriver.{method}") }),
                )
            }
        }
        let req: NameReq = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return (400, json!({ "Err": format!("invalid request body: {e}") })),
        };
        let name = req.name.as_str();
        if let Err(e) = validate_name(name) {
            return err(e);
        }
        if method == "Create" {
            let tmpfs = req.opts.as_ref().and_then(|o| o.get("tmpfs")).cloned();
            return self.create(name, tmpfs);
        }
        let Some(vol) = self.state.volumes.get(name) else {
            return err(format!("no such volume: {name}"));
        };
        match method {
            "Remove" => {
                let refs: u32 = vol.mounts.values().sum();
                if refs > 0 {
                    return err(format!("volume {name} is in use ({refs} mounts)"));
                }
                let dir = self.root.join(name);
                if vol.tmpfs.is_some() {
                    let target = dir.to_string_lossy().into_owned();
                    if let Err(e) = mount_helper(&["umount", &target]) {
                        return err(e);
                    }
                }
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return err(format!("remove {}: {e}", dir.display())),
                }
                match self.commit(|s| {
                    s.volumes.remove(name);
                }) {
                    Ok(()) => ok(json!({ "Err": "" })),
                    Err(e) => err(e),
                }
            }
            "Mount" => {
                let Some(id) = req.id.filter(|id| !id.is_empty()) else {
                    return err("mount request without ID");
                };
                let dir = self.root.join(name);
                // The directory may have been removed behind our back; mounting recreates it.
                if let Err(e) = fs::create_dir_all(&dir) {
                    return err(format!("create {}: {e}", dir.display()));
                }
                match self.commit(|s| {
                    if let Some(v) = s.volumes.get_mut(name) {
                        *v.mounts.entry(id).or_insert(0) += 1;
                    }
                }) {
                    Ok(()) => ok(json!({ "Mountpoint": self.mountpoint(name), "Err": "" })),
                    Err(e) => err(e),
                }
            }
            "Unmount" => {
                let id = req.id.unwrap_or_default();
                // Docker unmounts after a failed mount too, so an unknown id is not an error.
                if !vol.mounts.contains_key(&id) {
                    return ok(json!({ "Err": "" }));
                }
                match self.commit(|s| {
                    if let Some(v) = s.volumes.get_mut(name) {
                        if let Some(n) = v.mounts.get_mut(&id) {
                            *n -= 1;
                            if *n == 0 {
                                v.mounts.remove(&id);
                            }
                        }
                    }
                }) {
                    Ok(()) => ok(json!({ "Err": "" })),
                    Err(e) => err(e),
                }
            }
            "Path" => ok(json!({ "Mountpoint": self.mountpoint(name), "Err": "" })),
            "Get" => {
                let refs: u32 = vol.mounts.values().sum();
                ok(json!({
                    "Volume": {
                        "Name": name,
                        "Mountpoint": self.mountpoint(name),
                        "CreatedAt": vol.created_at,
                        "Status": { "mounts": refs },
                    },
                    "Err": "",
                }))
            }
            _ => unreachable!("method list checked above"),
        }
    }

    fn create(&mut self, name: &str, tmpfs: Option<String>) -> Reply {
        let dir = self.root.join(name);
        if let Err(e) = fs::create_dir_all(&dir) {
            return err(format!("create {}: {e}", dir.display()));
        }
        // Creating an existing volume succeeds, like Docker's local driver.
        if self.state.volumes.contains_key(name) {
            return ok(json!({ "Err": "" }));
        }
        if let Some(size) = &tmpfs {
            if let Err(e) = validate_size(size) {
                return err(e);
            }
            let target = dir.to_string_lossy().into_owned();
            let size = format!("size={size}");
            if let Err(e) = mount_helper(&["mount", "-t", "tmpfs", "-o", &size, "tmpfs", &target]) {
                let _ = fs::remove_dir(&dir);
                return err(e);
            }
        }
        let vol = VolumeState {
            created_at: rfc3339_now(),
            mounts: BTreeMap::new(),
            tmpfs,
        };
        match self.commit(|s| {
            s.volumes.insert(name.to_string(), vol);
        }) {
            Ok(()) => ok(json!({ "Err": "" })),
            Err(e) => err(e),
        }
    }
}

/// Current UTC time as RFC 3339 (`2006-01-02T15:04:05Z`).
fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn tmpfs_sizes_cannot_carry_options() {
        for good in ["1m", "512k", "2g", "4096"] {
            assert_eq!(validate_size(good), Ok(()), "{good}");
        }
        for bad in ["", "m", "1m,exec", "1mm", "-1", "1 m"] {
            assert!(validate_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", ".state.json", "/abs"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["v", "my-vol_1.2", "a..b"] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Driver::open(dir.path()).unwrap();
        assert_eq!(d.handle("Create", br#"{"Name":"v","Opts":null}"#).0, 200);
        assert_eq!(d.handle("Mount", br#"{"Name":"v","ID":"c1"}"#).0, 200);
        drop(d);
        let mut d = Driver::open(dir.path()).unwrap();
        assert_eq!(d.volume_count(), 1);
        // The mount reference survived: remove is refused until unmount.
        assert_eq!(d.handle("Remove", br#"{"Name":"v"}"#).0, 500);
        assert_eq!(d.handle("Unmount", br#"{"Name":"v","ID":"c1"}"#).0, 200);
        assert_eq!(d.handle("Remove", br#"{"Name":"v"}"#).0, 200);
        assert!(!dir.path().join("v").exists());
        // No temp files are left behind by the atomic writes.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()]);
    }
}
