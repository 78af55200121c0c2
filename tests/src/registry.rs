//! [`TestRegistry`]: Debian's `docker-registry` (distribution 2.8) on a free loopback port with
//! a throwaway config and storage directory, optionally behind htpasswd Basic auth; its access
//! log is kept so tests can count the requests it served.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::find_program;

/// A running registry, killed and its storage removed on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts an open registry.
    pub fn start() -> TestRegistry {
        Self::start_inner(None)
    }

    /// Starts a registry that requires Basic credentials `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_htpasswd(user: &str, password: &str) -> TestRegistry {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(credentials: Option<(&str, &str)>) -> TestRegistry {
        let binary = find_program("docker-registry")
            .or_else(|| find_program("registry"))
            .expect("registry tests need Debian's docker-registry on PATH (cargo xtask setup)");
        let dir = tempfile::tempdir().expect("registry temp dir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("registry storage dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match credentials {
            Some((user, password)) => {
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: plugind-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut registry = TestRegistry { child, addr, dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait registry") {
                panic!("docker-registry exited with {status}:\n{}", self.log());
            }
            if let Some(status) = self.get_status("/v2/") {
                // 200 when open, 401 with htpasswd: either means it serves.
                if status == 200 || status == 401 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry logged (including its access log).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests in the access log whose request line starts with `method` and contains
    /// `path_part` (e.g. `("PUT", "/blobs/uploads/")`).
    pub fn count_requests(&self, method: &str, path_part: &str) -> usize {
        let needle = format!("\"{method} ");
        self.log()
            .lines()
            .filter_map(|l| l.find(&needle).map(|i| &l[i + needle.len()..]))
            .filter(|rest| {
                rest.split(' ')
                    .next()
                    .is_some_and(|p| p.contains(path_part))
            })
            .count()
    }

    /// The status of a plain `GET path` (no credentials), `None` if nothing answers.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
