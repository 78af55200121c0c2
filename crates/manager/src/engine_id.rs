//! The engine ID: a random UUID that names this daemon's state root, shown as `ID` by
//! `GET /info` (`docker info`). Like dockerd (`<data-root>/engine-id`), it is created once,
//! written atomically, and read back at every start, so it survives restarts and is the same
//! for every daemon that ever serves the root.

use std::path::{Path, PathBuf};

use plugind_sys::SysError;

/// File name of the engine ID under the state root (dockerd's name).
pub const ENGINE_ID_FILE: &str = "engine-id";

/// The engine ID stored in `root`, created (random UUID v4, atomic write) when the file is
/// missing or does not hold a UUID. Blocking: call it from a blocking context. The caller must
/// hold the root lock, so two daemons never race to create it.
pub fn load_or_create(root: &Path) -> Result<String, SysError> {
    let path = root.join(ENGINE_ID_FILE);
    remove_temp_leftovers(root);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_uuid(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(text) => {
            tracing::warn!(path = %path.display(), content = %text.escape_debug(), "engine id file does not hold a UUID; replacing it")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SysError::Io {
                op: "read",
                path,
                source,
            })
        }
    }
    let id = random_uuid();
    plugind_sys::fs::atomic_write_mode(&path, id.as_bytes(), 0o644)?;
    tracing::info!(engine_id = %id, "created the engine id");
    Ok(id)
}

/// Temporary files of an interrupted first write (the atomic writer's `.engine-id.tmp-*`).
fn remove_temp_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!(".{ENGINE_ID_FILE}");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && plugind_sys::fs::is_temp_name(name) {
            let p: PathBuf = entry.path();
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// A random (version 4, RFC 4122 variant) UUID in its lowercase hyphenated form.
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(is_uuid(&first), "{first}");
        assert_eq!(&first[14..15], "4", "version 4");
        assert_eq!(load_or_create(dir.path()).unwrap(), first, "reused");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ENGINE_ID_FILE)).unwrap(),
            first
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first, "random");
    }

    #[test]
    fn garbage_is_replaced_and_temp_leftovers_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ENGINE_ID_FILE), "not an id").unwrap();
        let leftover = dir.path().join(".engine-id.tmp-1-0");
        std::fs::write(&leftover, "x").unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert!(is_uuid(&id));
        assert!(!leftover.exists());
        // Docker's own file (written by dockerd, maybe with a newline) is accepted as is.
        std::fs::write(
            dir.path().join(ENGINE_ID_FILE),
            "0b1c0e9e-8f6a-4c1e-9a43-5e0e54e1b7c2\n",
        )
        .unwrap();
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            "0b1c0e9e-8f6a-4c1e-9a43-5e0e54e1b7c2"
        );
    }
}
