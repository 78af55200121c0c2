//! Mounts: `/proc/self/mountinfo` parsing, bind and unmount, the flags of a path's mount and
//! the facts of a device node.
//!
//! The parser is separate from the read ([`parse_mountinfo`] / [`read_mountinfo`]) so it can be
//! tested on captured text; mount points are unescaped (the kernel writes space, tab, newline and
//! backslash as `\040`, `\011`, `\012`, `\134`).

use std::{
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags},
    sys::statvfs::FsFlags,
};

use crate::{Result, SysError};

/// One line of `/proc/<pid>/mountinfo` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount.
    pub mount_id: u32,
    /// Id of the parent mount.
    pub parent_id: u32,
    /// `major:minor` of the filesystem's device.
    pub device: (u32, u32),
    /// The directory of the filesystem that forms the root of this mount.
    pub root: PathBuf,
    /// Where the mount is, relative to the reader's root (unescaped).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub mount_options: String,
    /// Optional fields such as `shared:5`, `master:3`.
    pub optional_fields: Vec<String>,
    /// Filesystem type (`tmpfs`, `ext4`, ...).
    pub fs_type: String,
    /// Filesystem-specific source (unescaped), `none` when absent.
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountInfo {
    /// True when the mount's propagation is shared (`shared:N` optional field).
    pub fn is_shared(&self) -> bool {
        self.optional_fields
            .iter()
            .any(|f| f.starts_with("shared:"))
    }
}

/// Parses the text of a mountinfo file; malformed lines are an error naming the line number.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            parse_line(line).ok_or_else(|| SysError::Io {
                op: "parse mountinfo",
                path: PathBuf::from(format!("/proc/self/mountinfo:{}", n + 1)),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_owned()),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let mut fields = line.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let device = (major.parse().ok()?, minor.parse().ok()?);
    let root = PathBuf::from(unescape(fields.next()?));
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let mount_options = fields.next()?.to_owned();
    let mut optional_fields = Vec::new();
    loop {
        let f = fields.next()?;
        if f == "-" {
            break;
        }
        optional_fields.push(f.to_owned());
    }
    let fs_type = fields.next()?.to_owned();
    let source = unescape(fields.next()?);
    let super_options = fields.next().unwrap_or_default().to_owned();
    Some(MountInfo {
        mount_id,
        parent_id,
        device,
        root,
        mount_point,
        mount_options,
        optional_fields,
        fs_type,
        source,
        super_options,
    })
}

/// Decodes the kernel's `\ooo` octal escapes; anything else is kept as is.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (u32::from(bytes[i + 1] - b'0') << 6)
                | (u32::from(bytes[i + 2] - b'0') << 3)
                | u32::from(bytes[i + 3] - b'0');
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Result<Vec<MountInfo>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|e| SysError::io("read", path, e))?;
    parse_mountinfo(&text)
}

/// The mount points of `table` at or below `dir` (component-wise: `/a/bc` is not below
/// `/a/b`), in table order (a path mounted over twice is listed oldest first).
pub fn mount_points_under(table: Vec<MountInfo>, dir: &Path) -> Vec<PathBuf> {
    table
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// [`mount_points_under`] this process's mount table. `dir` is resolved first when it exists,
/// because the table shows resolved paths.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(mount_points_under(read_mountinfo()?, &dir))
}

/// Unmounts the top mount at `path`; `detach` makes it lazy (`MNT_DETACH`).
///
/// Symlinks in the last component are not followed (`UMOUNT_NOFOLLOW`).
pub fn unmount(path: &Path, detach: bool) -> Result<()> {
    let mut flags = MntFlags::UMOUNT_NOFOLLOW;
    if detach {
        flags |= MntFlags::MNT_DETACH;
    }
    nix::mount::umount2(path, flags).map_err(|e| SysError::errno("unmount", path, e))
}

/// Bind-mounts `source` on `target` (recursively when `recursive`).
pub fn bind_mount(source: &Path, target: &Path, recursive: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| SysError::errno("bind mount", target, e))
}

/// Makes the mount at `path` (and every mount below it) shared, so mounts made inside a
/// container's view of it propagate back (Docker's `MakeRShared` of the propagated-mount dir).
pub fn make_rshared(path: &Path) -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| SysError::errno("make rshared", path, e))
}

/// True when `path` is itself a mount point according to `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(read_mountinfo()?.iter().any(|m| m.mount_point == path))
}

/// The flags of the mount that contains `path`, as `statvfs(2)` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    /// `MS_RDONLY`.
    pub read_only: bool,
    /// `MS_NODEV`.
    pub nodev: bool,
    /// `MS_NOEXEC`.
    pub noexec: bool,
    /// `MS_NOSUID`.
    pub nosuid: bool,
    /// `MS_NOATIME`.
    pub noatime: bool,
    /// `MS_RELATIME`.
    pub relatime: bool,
    /// `MS_NODIRATIME`.
    pub nodiratime: bool,
}

impl MountFlags {
    /// The mount options for the flags a user namespace cannot clear on a bind mount of this
    /// mount (the kernel's `CL_UNPRIVILEGED` locked flags, fs/namespace.c), in a fixed order.
    pub fn locked_option_names(&self) -> Vec<&'static str> {
        [
            (self.read_only, "ro"),
            (self.nodev, "nodev"),
            (self.noexec, "noexec"),
            (self.nosuid, "nosuid"),
            (self.noatime, "noatime"),
            (self.relatime, "relatime"),
            (self.nodiratime, "nodiratime"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

/// The flags of the mount holding `path` (`statvfs`).
pub fn mount_flags_of(path: &Path) -> Result<MountFlags> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| SysError::errno("statvfs", path, e))?;
    let f = st.flags();
    Ok(MountFlags {
        read_only: f.contains(FsFlags::ST_RDONLY),
        nodev: f.contains(FsFlags::ST_NODEV),
        noexec: f.contains(FsFlags::ST_NOEXEC),
        nosuid: f.contains(FsFlags::ST_NOSUID),
        noatime: f.contains(FsFlags::ST_NOATIME),
        relatime: f.contains(FsFlags::ST_RELATIME),
        nodiratime: f.contains(FsFlags::ST_NODIRATIME),
    })
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

/// The facts of a device node that a container spec needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The node's path, as given.
    pub path: PathBuf,
    /// Character or block.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits (`st_mode & 0o7777`), e.g. `0o666` for `/dev/null`.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Reads the device facts of `path` (following symlinks, as Docker's `DevicesFromPath` does);
/// anything but a character or block device is an `InvalidPath` error.
pub fn device_info(path: &Path) -> Result<DeviceInfo> {
    let md = fs::metadata(path).map_err(|e| SysError::io("stat", path, e))?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        DeviceKind::Char
    } else if ft.is_block_device() {
        DeviceKind::Block
    } else {
        return Err(SysError::InvalidPath {
            path: path.to_path_buf(),
            reason: "not a device node",
        });
    };
    let rdev = md.rdev();
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
35 22 0:30 / /tmp/a\\040b rw,nosuid,nodev shared:14 master:2 - tmpfs my\\134src rw,size=8k
36 35 0:31 /sub /tmp/a\\040b/c\\011d\\012e rw - tmpfs none rw
";

    #[test]
    fn parses_fields_and_unescapes_octal() {
        let m = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].device, (8, 1));
        assert!(m[0].is_shared());
        assert_eq!(m[1].mount_point, Path::new("/tmp/a b"));
        assert_eq!(m[1].optional_fields, ["shared:14", "master:2"]);
        assert_eq!(m[1].source, "my\\src");
        assert_eq!(m[1].parent_id, 22);
        assert_eq!(m[2].mount_point, Path::new("/tmp/a b/c\td\ne"));
        assert_eq!(m[2].root, Path::new("/sub"));
        assert!(!m[2].is_shared());
    }

    #[test]
    fn mount_points_under_compares_whole_components() {
        let table = || parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(
            mount_points_under(table(), Path::new("/tmp/a b")),
            [Path::new("/tmp/a b"), Path::new("/tmp/a b/c\td\ne")]
        );
        assert!(mount_points_under(table(), Path::new("/tmp/a")).is_empty());
        assert_eq!(mount_points_under(table(), Path::new("/")).len(), 3);
    }

    #[test]
    fn mounts_under_reads_this_process_table() {
        // `/proc` is mounted in every environment these tests run in.
        assert!(mounts_under(Path::new("/proc"))
            .unwrap()
            .contains(&PathBuf::from("/proc")));
    }

    #[test]
    fn malformed_line_is_an_error() {
        assert!(parse_mountinfo("1 2 3\n").is_err());
        assert!(parse_mountinfo("x 1 0:1 / / rw - tmpfs none rw\n").is_err());
        // A trailing backslash or a non-octal escape is kept literally.
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\09x"), "a\\09x");
    }

    #[test]
    fn reads_own_mountinfo() {
        let m = read_mountinfo().unwrap();
        assert!(m.iter().any(|m| m.mount_point == Path::new("/")));
        assert!(is_mount_point(Path::new("/")).unwrap());
    }

    #[test]
    fn device_info_of_dev_null() {
        let d = device_info(Path::new("/dev/null")).unwrap();
        assert_eq!(
            (d.kind, d.major, d.minor, d.file_mode),
            (DeviceKind::Char, 1, 3, 0o666)
        );
        let err = device_info(Path::new("/")).unwrap_err();
        assert!(matches!(err, SysError::InvalidPath { .. }));
        assert!(device_info(Path::new("/nonexistent-dev"))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn mount_flags_and_locked_names() {
        let f = mount_flags_of(Path::new("/proc")).unwrap();
        // Which flags /proc has depends on the host; the names must follow the flags.
        let names = f.locked_option_names();
        assert_eq!(names.contains(&"nosuid"), f.nosuid);
        let all = MountFlags {
            read_only: true,
            nodev: true,
            noexec: true,
            nosuid: true,
            noatime: true,
            relatime: true,
            nodiratime: true,
        };
        assert_eq!(
            all.locked_option_names(),
            [
                "ro",
                "nodev",
                "noexec",
                "nosuid",
                "noatime",
                "relatime",
                "nodiratime"
            ]
        );
        assert!(MountFlags::default().locked_option_names().is_empty());
    }
}
