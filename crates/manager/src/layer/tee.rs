//! The layer tar going two ways at once: every byte the layer builder writes goes to the gzip
//! encoder of the blob and, in chunks over a bounded channel, to the thread unpacking the
//! rootfs. The channel carries an explicit end marker, sent only once the whole layer went by:
//! a stream that stops without it (the producer failed, whatever it wrote last) is an error to
//! the unpacker, never a short but clean tar.

use std::{
    cell::Cell,
    io::{self, Read, Write},
    rc::Rc,
    sync::mpsc,
};

/// Bytes gathered before they are handed to the unpacker: large enough that the channel costs
/// nothing next to the copy, small enough that the unpacker starts early.
const CHUNK: usize = 1 << 20;

/// Chunks in flight between the two threads (besides the one each side holds).
const CHUNKS_IN_FLIGHT: usize = 4;

enum Piece {
    Data(Vec<u8>),
    End,
}

/// The producer's end, before it is wrapped around the gzip encoder.
pub(super) struct LayerTee {
    to_unpacker: Option<mpsc::SyncSender<Piece>>,
    unpacker_gone: Rc<Cell<bool>>,
}

impl LayerTee {
    /// A tee feeding an unpacker, and the stream that unpacker reads.
    pub(super) fn with_unpacker() -> (LayerTee, LayerStream) {
        let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let tee = LayerTee {
            to_unpacker: Some(tx),
            unpacker_gone: Rc::default(),
        };
        let stream = LayerStream {
            rx,
            current: Vec::new(),
            at: 0,
            ended: false,
        };
        (tee, stream)
    }

    /// A tee with no unpacker: the bytes only go to the blob.
    pub(super) fn alone() -> LayerTee {
        LayerTee {
            to_unpacker: None,
            unpacker_gone: Rc::default(),
        }
    }

    /// Set once a write found the unpacker gone (it stopped on an error of its own).
    pub(super) fn unpacker_gone(&self) -> Rc<Cell<bool>> {
        self.unpacker_gone.clone()
    }

    pub(super) fn into_writer<W: Write>(self, blob: W) -> LayerTeeWriter<W> {
        LayerTeeWriter {
            blob,
            to_unpacker: self.to_unpacker,
            unpacker_gone: self.unpacker_gone,
            pending: Vec::new(),
        }
    }
}

/// Writes to the blob's encoder and queues the same bytes for the unpacker.
pub(super) struct LayerTeeWriter<W> {
    blob: W,
    to_unpacker: Option<mpsc::SyncSender<Piece>>,
    unpacker_gone: Rc<Cell<bool>>,
    pending: Vec<u8>,
}

impl<W: Write> LayerTeeWriter<W> {
    fn send(&mut self, piece: Piece) -> io::Result<()> {
        let Some(tx) = &self.to_unpacker else {
            return Ok(());
        };
        if tx.send(piece).is_err() {
            self.unpacker_gone.set(true);
            self.to_unpacker = None;
            return Err(io::Error::other("the layer unpacker stopped"));
        }
        Ok(())
    }

    /// The blob's encoder.
    pub(super) fn blob_mut(&mut self) -> &mut W {
        &mut self.blob
    }

    /// Hands the unpacker what is left and the end marker; returns the blob's encoder.
    pub(super) fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.send(Piece::Data(chunk))?;
        }
        self.send(Piece::End)?;
        Ok(self.blob)
    }
}

impl<W: Write> Write for LayerTeeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.blob.write(buf)?;
        if self.to_unpacker.is_some() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(CHUNK);
            }
            self.pending.extend_from_slice(&buf[..n]);
            if self.pending.len() >= CHUNK {
                let chunk = std::mem::take(&mut self.pending);
                self.send(Piece::Data(chunk))?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()
    }
}

/// The unpacker's end: the layer tar as a reader. Reading past the last chunk without the end
/// marker (the producer is gone) fails.
pub(super) struct LayerStream {
    rx: mpsc::Receiver<Piece>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for LayerStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(mpsc::RecvError) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer stream was cut off",
                    ))
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
