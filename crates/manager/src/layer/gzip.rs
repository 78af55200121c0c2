//! The gzip encoder of layer blobs: deflate at the fastest level where it pays, stored blocks
//! where it does not.
//!
//! Plugin rootfs are mostly binaries and data that deflate barely shrinks, or already compressed
//! files it cannot shrink at all; compressing those costs most of a create's CPU time for
//! nothing. So the stream is probed as it goes: a window of [`PROBE`] bytes is deflated and
//! flushed to a byte boundary; if that saved less than 1/[`MIN_SAVING`] of it, the next
//! [`STORED_RUN`] bytes go out as stored blocks (a copy), then the next window is probed again.
//! Compressible data is thus compressed within a stored run of where it starts, or from the start
//! of its tar entry (the layer builder marks each with [`LayerGzip::entry_starts`]).
//!
//! The output is one ordinary gzip member (RFC 1952) of one deflate stream (RFC 1951): stored
//! blocks and deflate's own blocks may follow each other freely once a block ends on a byte
//! boundary, which the sync flush before every stored run guarantees. The deflater is reset
//! before it starts again after stored blocks: its history must be exactly the bytes it emitted
//! itself since the last reset, never the stored ones.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes deflated to decide whether deflating pays.
const PROBE: u64 = 64 << 10;

/// Bytes stored without trying after a probe that did not pay.
const STORED_RUN: u64 = 1 << 20;

/// A probe pays when it saved at least 1/`MIN_SAVING` of its bytes.
const MIN_SAVING: u64 = 16;

/// Largest stored block (its length is a 16-bit field).
const MAX_STORED_BLOCK: usize = 0xffff;

/// Deflater output taken per call.
const DEFLATE_SCRATCH: usize = 64 << 10;

/// Output gathered before it is written on: few, large writes into the blob.
const OUT_BUFFER: usize = 1 << 20;

/// The gzip header: no name, no time, "unknown" OS; always the same bytes, so the same rootfs
/// makes the same blob.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

enum Mode {
    /// Deflating; `probe_in`/`probe_out` count the bytes of the window being probed.
    Deflate { probe_in: u64, probe_out: u64 },
    /// Storing; `left` bytes before the next probe.
    Stored { left: u64 },
}

/// A gzip writer choosing, window by window, between deflate and stored blocks.
pub(super) struct LayerGzip<W: Write> {
    inner: W,
    deflate: Compress,
    crc: flate2::Crc,
    mode: Mode,
    /// The stored block being filled.
    stored: Vec<u8>,
    /// Where the deflater writes before its output is appended to `out`.
    scratch: Box<[u8]>,
    out: Vec<u8>,
}

impl<W: Write> LayerGzip<W> {
    pub(super) fn new(inner: W) -> LayerGzip<W> {
        let mut out = Vec::with_capacity(OUT_BUFFER + (64 << 10));
        out.extend_from_slice(&HEADER);
        LayerGzip {
            inner,
            deflate: Compress::new(Compression::fast(), false),
            crc: flate2::Crc::new(),
            mode: Mode::Deflate {
                probe_in: 0,
                probe_out: 0,
            },
            stored: Vec::with_capacity(MAX_STORED_BLOCK),
            scratch: vec![0; DEFLATE_SCRATCH].into_boxed_slice(),
            out,
        }
    }

    /// Runs the deflater over `input` (all of it) with `flush`, appending to `out`; returns the
    /// bytes it produced.
    fn deflate(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<u64> {
        let before = self.deflate.total_out();
        loop {
            let read_before = self.deflate.total_in();
            let out_before = self.deflate.total_out();
            // Into a scratch buffer, not `compress_vec`: that zero-fills the vector's whole
            // spare capacity on every call (a megabyte per 8 KiB written).
            let status = self
                .deflate
                .compress(input, &mut self.scratch, flush)
                .map_err(io::Error::other)?;
            let read = (self.deflate.total_in() - read_before) as usize;
            let wrote = (self.deflate.total_out() - out_before) as usize;
            self.out.extend_from_slice(&self.scratch[..wrote]);
            input = &input[read..];
            let room_left = wrote < self.scratch.len();
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // Everything taken and the output not cut short by a full buffer: all is out.
                FlushCompress::Sync => input.is_empty() && room_left,
                // Everything taken: what the deflater keeps comes out with a later call.
                _ => input.is_empty(),
            };
            if done {
                break;
            }
            if read == 0 && wrote == 0 {
                return Err(io::Error::other("deflate made no progress"));
            }
        }
        Ok(self.deflate.total_out() - before)
    }

    /// Adds `data` to the stored run, emitting every full stored block. Block boundaries
    /// depend only on the position in the stream, never on how the bytes were written, so the
    /// same layer always makes the same blob.
    fn store(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min(MAX_STORED_BLOCK - self.stored.len());
            self.stored.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.stored.len() == MAX_STORED_BLOCK {
                self.end_stored_block();
            }
        }
    }

    /// Emits what the stored run holds as one stored block (the stream is at a byte boundary).
    fn end_stored_block(&mut self) {
        if self.stored.is_empty() {
            return;
        }
        let len = self.stored.len() as u16;
        // BFINAL 0, BTYPE 00, then the rest of the byte as padding.
        self.out.push(0);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(&(!len).to_le_bytes());
        self.out.extend_from_slice(&self.stored);
        self.stored.clear();
    }

    fn write_out(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Marks the start of a tar entry: after a stored run, its bytes are probed at once rather
    /// than at the end of the run (an incompressible file followed by small text files would
    /// otherwise store up to a run of text).
    pub(super) fn entry_starts(&mut self) {
        if let Mode::Stored { .. } = self.mode {
            self.end_stored_block();
            self.mode = Mode::Deflate {
                probe_in: 0,
                probe_out: 0,
            };
        }
    }

    /// Ends the stream (deflate's final block, or an empty final stored block after stored
    /// ones) and writes the trailer; returns the inner writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        match self.mode {
            Mode::Deflate { .. } => {
                self.deflate(&[], FlushCompress::Finish)?;
            }
            Mode::Stored { .. } => {
                self.end_stored_block();
                self.out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
            }
        }
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.write_out()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for LayerGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match &mut self.mode {
                Mode::Deflate { probe_in, .. } => {
                    let take = rest.len().min((PROBE - *probe_in) as usize);
                    let (now, later) = rest.split_at(take);
                    let produced = self.deflate(now, FlushCompress::None)?;
                    let Mode::Deflate {
                        probe_in,
                        probe_out,
                    } = &mut self.mode
                    else {
                        unreachable!("deflating")
                    };
                    *probe_in += take as u64;
                    *probe_out += produced;
                    if *probe_in == PROBE {
                        let produced = *probe_out + self.deflate(&[], FlushCompress::Sync)?;
                        if produced > PROBE - PROBE / MIN_SAVING {
                            // Start afresh after the stored run: see the module docs.
                            self.deflate.reset();
                            self.mode = Mode::Stored { left: STORED_RUN };
                        } else {
                            self.mode = Mode::Deflate {
                                probe_in: 0,
                                probe_out: 0,
                            };
                        }
                    }
                    self.crc.update(now);
                    rest = later;
                }
                Mode::Stored { left } => {
                    let take = rest.len().min(*left as usize);
                    let (now, later) = rest.split_at(take);
                    *left -= take as u64;
                    let run_ends = *left == 0;
                    self.store(now);
                    if run_ends {
                        self.end_stored_block();
                        self.mode = Mode::Deflate {
                            probe_in: 0,
                            probe_out: 0,
                        };
                    }
                    self.crc.update(now);
                    rest = later;
                }
            }
            if self.out.len() >= OUT_BUFFER {
                self.write_out()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::layer::tests::noise;

    fn text(len: usize) -> Vec<u8> {
        b"a line of a config file, compressible\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    /// Encodes `data` written in pieces of `piece` bytes.
    fn encode(data: &[u8], piece: usize) -> Vec<u8> {
        let mut gz = LayerGzip::new(Vec::new());
        for p in data.chunks(piece.max(1)) {
            gz.write_all(p).unwrap();
        }
        gz.finish().unwrap()
    }

    fn decode(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn any_mix_of_data_round_trips_as_one_gzip_member() {
        let random = noise(3 << 20, 1);
        let compressible = text(3 << 20);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            compressible.clone(),
            random.clone(),
            // Ends inside a stored run, in a probe after one, on a probe's last byte.
            [&random[..], &compressible[..100]].concat(),
            [&random[..(1 << 20) + (64 << 10) + 5], &compressible[..7]].concat(),
            random[..(PROBE as usize)].to_vec(),
            [
                &compressible[..],
                &random[..],
                &compressible[..],
                &random[..],
            ]
            .concat(),
        ];
        for data in &cases {
            for piece in [1 << 20, 8192, 511] {
                let gz = encode(data, piece);
                assert_eq!(
                    decode(&gz),
                    *data,
                    "{} bytes in pieces of {piece}",
                    data.len()
                );
                // One member: nothing after it (a first-member-only reader misses nothing).
                let mut decoder = flate2::bufread::GzDecoder::new(&gz[..]);
                std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
                assert!(decoder.into_inner().is_empty());
            }
        }
    }

    #[test]
    fn incompressible_data_is_stored_and_compressible_data_deflated() {
        let random = noise(8 << 20, 2);
        let compressible = text(8 << 20);
        let stored = encode(&random, 8192);
        // Stored blocks cost 5 bytes in 65,535 (and a little per write); probes may save a bit.
        assert!(
            stored.len() < random.len() + random.len() / 1000,
            "{}",
            stored.len()
        );
        let deflated = encode(&compressible, 8192);
        assert!(
            deflated.len() < compressible.len() / 20,
            "{}",
            deflated.len()
        );
        // After incompressible data, compressible data is deflated again within a stored run.
        let both = encode(&[&random[..], &compressible[..]].concat(), 8192);
        assert!(
            both.len() < random.len() + (STORED_RUN as usize) + (1 << 20),
            "{}",
            both.len()
        );
        // The same bytes always give the same blob, however they were written.
        let mixed = [&random[..], &compressible[..], &random[..(3 << 20) + 17]].concat();
        let once = encode(&mixed, 1 << 20);
        for piece in [8192, 1000, 65535, 3 << 20] {
            assert!(encode(&mixed, piece) == once, "pieces of {piece}");
        }
    }
}
