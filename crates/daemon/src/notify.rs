//! systemd readiness (`sd_notify`): `READY=1` once the API socket listens and restore is done,
//! `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1` at shutdown.
//!
//! A small sender over std's `UnixDatagram` (no `libc`, no new dependency) rather than the
//! `sd-notify` crate: that crate reads `NOTIFY_SOCKET` from the environment at every call,
//! while plugind takes the variable out of its environment before any thread or child starts.
//! Left in, it would reach whatever plugind runs; under a shim `runc create`/`start` with
//! `NOTIFY_SOCKET` set proxy the socket into the container and wait for the *plugin* to send
//! `READY=1`, which a plugin never does. (The executor also starts shims with a cleared
//! environment; this does not rely on it.)

use std::{
    ffi::OsString,
    io,
    os::unix::{ffi::OsStrExt, net::UnixDatagram},
    path::PathBuf,
};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where the service manager listens, taken from the environment once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in `NOTIFY_SOCKET`), name without the `@`.
    Abstract(Vec<u8>),
}

/// Sends state changes to the service manager; does nothing when not started by one.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` out of the environment (so no child inherits it) and remembers it.
    /// Must run before any thread starts: changing the environment is not thread-safe.
    pub fn take_from_env() -> Notifier {
        let value = std::env::var_os(NOTIFY_SOCKET);
        std::env::remove_var(NOTIFY_SOCKET);
        Notifier::from_value(value)
    }

    fn from_value(value: Option<OsString>) -> Notifier {
        let target = value.and_then(|v| {
            let bytes = v.as_bytes();
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(v))),
                // systemd only ever sets an absolute path or an abstract name.
                _ => {
                    tracing::warn!(value = ?v, "ignoring NOTIFY_SOCKET: neither a path nor @name");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Whether a service manager asked for notifications.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram. Failures are
    /// logged, never fatal: a lost notification must not stop the daemon.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send(target, state) {
            tracing::warn!(error = %e, state, "cannot notify the service manager");
        }
    }
}

fn send(target: &Target, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    // A service manager that stopped reading must not block an async worker thread.
    socket.set_nonblocking(true)?;
    let sent = match target {
        Target::Path(path) => socket.send_to(state.as_bytes(), path)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short datagram: {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::from_value(Some(path.clone().into_os_string()));
        assert!(notifier.enabled());
        notifier.notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("plugind-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::from_value(Some(format!("@{name}").into())).notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn without_or_with_a_bad_variable_nothing_is_sent() {
        assert!(!Notifier::from_value(None).enabled());
        assert!(!Notifier::from_value(Some("relative/path".into())).enabled());
        assert!(!Notifier::from_value(Some("".into())).enabled());
        // Sending without a target is a no-op, not an error.
        Notifier::from_value(None).notify("READY=1");
    }
}
