//! Entry points for the fuzz targets in `fuzz/` and the seed-corpus test on stable
//! (`tests/tests/fuzz_corpora.rs`): the create tar import and unpack, and plugin HTTP answers.
//! A panic, a hang or a write outside the scratch directory is a bug; errors are expected.

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use plugind_blobstore::BlobStore;
use plugind_types::config::PluginConfig;

use crate::{
    client::PluginClient,
    layer::{self, LayerLimits},
};

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty scratch directory.
    pub fn new(what: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "plugind-fuzz-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        Scratch(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Limits small enough that every fuzz input finishes quickly (the update keeps any limit
/// added later at its default).
#[allow(clippy::needless_update)]
const LIMITS: LayerLimits = LayerLimits {
    max_config_bytes: 1 << 20,
    max_unpacked_bytes: 16 << 20,
    max_entries: 10_000,
    ..LayerLimits::DEFAULT
};

/// A `docker plugin create` tar: split into config and layer blob as create does, check the
/// config, then unpack the layer into a staging directory. Nothing may appear in the scratch
/// directory but the blob store and the staging directory.
pub fn create_tar(data: &[u8]) {
    let scratch = Scratch::new("tar");
    let blobs = BlobStore::open(&scratch.path().join("storage")).expect("open blob store");
    let Ok(imported) = layer::import_create_tar(&blobs, "create-fuzz", data, &LIMITS) else {
        return;
    };
    if let Ok(config) = PluginConfig::from_json(&imported.config) {
        let _ = config.validate();
    }
    let staging = scratch.path().join("rootfs");
    std::fs::create_dir(&staging).expect("create staging");
    let _ = layer::unpack_layer(&blobs, &imported.layer, &staging, &LIMITS);
    let mut names: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("read scratch")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["rootfs", "storage"],
        "unpack wrote outside its directory"
    );
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
}

/// The answer a fuzz input makes a plugin give: the first byte chooses a status line with a
/// `Content-Length` for the rest, or (0) the raw bytes as the whole HTTP response.
fn http_answer(data: &[u8]) -> Vec<u8> {
    const STATUS: [&str; 5] = [
        "200 OK",
        "404 Not Found",
        "500 Internal Server Error",
        "201 Created",
        "400 Bad Request",
    ];
    match data.split_first() {
        None => Vec::new(),
        Some((0, raw)) => raw.to_vec(),
        Some((n, body)) => {
            let mut out = format!(
                "HTTP/1.1 {}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n",
                STATUS[usize::from(*n) % STATUS.len()],
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        }
    }
}

/// Serves `answer` to every connection on a unix socket in `scratch` (after reading the
/// request head and body) and runs `call` with a client for it, on a current-thread runtime.
pub fn with_plugin_answer<F, Fut>(data: &[u8], call: F)
where
    F: FnOnce(PluginClient) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let scratch = Scratch::new("answer");
    let socket = scratch.path().join("p.sock");
    let listener = UnixListener::bind(&socket).expect("bind plugin socket");
    listener.set_nonblocking(false).expect("blocking listener");
    let answer = http_answer(data);
    let stop = scratch.path().join("stop");
    let server = std::thread::spawn({
        let stop = stop.clone();
        move || {
            for conn in listener.incoming() {
                if stop.exists() {
                    return;
                }
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = read_request(&mut conn);
                let _ = conn.write_all(&answer);
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    });
    let client = PluginClient::new("fuzz", &socket);
    RUNTIME.with(|rt| rt.block_on(call(client)));
    std::fs::write(&stop, b"").expect("stop marker");
    // Wake the accept loop so it sees the marker.
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    server.join().expect("answer server");
}

/// Reads an HTTP request head and its `Content-Length` body.
fn read_request(conn: &mut impl Read) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A plugin's HTTP answer to `Plugin.Activate` and a volume call, as the manager's client
/// decodes it.
pub fn plugin_answer(data: &[u8]) {
    with_plugin_answer(data, |client| async move {
        let _ = client
            .call("Plugin.Activate", None, Duration::from_secs(5))
            .await;
    });
}
