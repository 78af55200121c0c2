//! The guard in front of tar-rs: it follows the tar stream's headers as the bytes go by and
//! refuses, before tar-rs acts on them, the members it would process without a budget
//! (oversized GNU long names/links and PAX headers, GNU sparse members).

use std::io::{self, Read};

use super::{shorten, LayerError};

/// The most bytes of a metadata member (GNU long name or link, PAX header) read: tar-rs reads
/// them whole into memory, whatever size they declare.
pub(super) const MAX_TAR_METADATA: u64 = 1 << 20;

/// Where [`TarGuard`] leaves the typed reason it refused a stream for (the tar reader only
/// passes on an `io::Error`).
#[derive(Debug, Clone, Default)]
pub(super) struct RefusedBy(std::rc::Rc<std::cell::RefCell<Option<LayerError>>>);

impl RefusedBy {
    pub(super) fn set(&self, e: LayerError) -> io::Error {
        let text = e.to_string();
        *self.0.borrow_mut() = Some(e);
        io::Error::new(io::ErrorKind::InvalidData, text)
    }

    pub(super) fn take(&self) -> Option<LayerError> {
        self.0.borrow_mut().take()
    }
}

/// Follows the tar stream's headers as the bytes go by, before the tar reader sees them, and
/// fails the read of a header the reader would act on without a budget: a metadata member (GNU
/// long name/link, PAX) over [`MAX_TAR_METADATA`] (read whole into memory by tar-rs) and a GNU
/// sparse member (whose extension headers and holes tar-rs would process).
pub(super) struct TarGuard<R> {
    inner: R,
    refused: RefusedBy,
    header: [u8; 512],
    header_fill: usize,
    /// Bytes of the current member (data and padding) still to pass.
    skip: u64,
    /// Data of a PAX header being collected (its `size` key applies to the next member).
    pax: Option<(Vec<u8>, u64)>,
    /// The size the last PAX header set for the next member.
    pax_size: Option<u64>,
    /// The end-of-archive block was seen: the reader stops there, and so do we.
    done: bool,
}

impl<R: Read> TarGuard<R> {
    pub(super) fn new(inner: R, refused: RefusedBy) -> Self {
        TarGuard {
            inner,
            refused,
            header: [0; 512],
            header_fill: 0,
            skip: 0,
            pax: None,
            pax_size: None,
            done: false,
        }
    }

    fn follow(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let k = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                if let Some((buf, want)) = &mut self.pax {
                    let room = usize::try_from(*want).unwrap_or(usize::MAX) - buf.len();
                    buf.extend_from_slice(&data[..k.min(room)]);
                }
                self.skip -= k as u64;
                data = &data[k..];
                if self.skip == 0 {
                    if let Some((buf, _)) = self.pax.take() {
                        self.pax_size = pax_size(&buf);
                    }
                }
                continue;
            }
            let k = (512 - self.header_fill).min(data.len());
            self.header[self.header_fill..self.header_fill + k].copy_from_slice(&data[..k]);
            self.header_fill += k;
            data = &data[k..];
            if self.header_fill == 512 {
                self.header_fill = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.header.iter().all(|&b| b == 0) {
            self.done = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.header);
        let kind = header.entry_type();
        // A size the reader cannot parse fails it the same way; stop following.
        let Ok(declared) = header.entry_size() else {
            self.done = true;
            return Ok(());
        };
        let path = || String::from_utf8_lossy(&header.path_bytes()).into_owned();
        // As tar-rs: a PAX size applies to the next member that is not an extension header,
        // and long names and PAX headers are only read as such in GNU or ustar headers.
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let size = if extension {
            declared
        } else {
            self.pax_size.take().unwrap_or(declared)
        };
        let metadata = extension && recognized;
        if kind.is_gnu_sparse() {
            let real = header
                .as_gnu()
                .and_then(|g| g.real_size().ok())
                .unwrap_or(size);
            return Err(self.refused.set(LayerError::Sparse {
                path: shorten(&path()),
                size: real,
            }));
        }
        if metadata && size > MAX_TAR_METADATA {
            return Err(self.refused.set(LayerError::TooLarge {
                what: "bytes of tar metadata in one member",
                limit: MAX_TAR_METADATA,
            }));
        }
        if kind.is_pax_local_extensions() && recognized {
            self.pax = Some((Vec::with_capacity(size as usize), size));
        }
        self.skip = size.div_ceil(512).saturating_mul(512);
        if self.skip == 0 {
            if let Some((buf, _)) = self.pax.take() {
                debug_assert!(buf.is_empty());
                self.pax_size = None;
            }
        }
        Ok(())
    }
}

/// The `size` of a PAX header's records, read exactly as tar-rs reads it (its
/// `pax_extensions_value`: the first `size` record; none after a malformed record), so the
/// guard and the reader never disagree on where the next header is.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}
