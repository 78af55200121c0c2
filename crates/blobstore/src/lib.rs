//! plugind-blobstore: content-addressed sha256 blob storage, with containerd's local content
//! store semantics and its known holes closed.
//!
//! Job: keep plugin blobs (layers, configs, manifests) by digest. Data is streamed into an
//! *ingest* under a caller-chosen ref, hashed in the same pass as it is written, verified against
//! the expected size and digest, and published atomically; once committed a blob is read-only
//! and never changes. Reads, listing, deletion, garbage collection against a caller-given live
//! set, and re-verification of everything on disk complete the job.
//!
//! Main types:
//! - [`BlobStore`]: the store; [`BlobStore::open`], [`BlobStore::writer`], the
//!   [`BlobStore::ingest`] convenience, [`BlobStore::info`], [`BlobStore::reader`],
//!   [`BlobStore::read_at`], [`BlobStore::walk`], [`BlobStore::delete`], [`BlobStore::sweep`],
//!   [`BlobStore::verify`];
//! - [`Writer`]: one exclusive, resumable ingest ([`std::io::Write`], `commit`, `close`, `abort`);
//! - [`BlobInfo`], [`IngestInfo`], [`SweepReport`], [`BlobReader`], [`Walk`];
//! - [`BlobError`] with [`BlobError::kind`].
//!
//! On-disk layout under the root given to [`BlobStore::open`] (e.g. `<state root>/storage`):
//!
//! ```text
//! blobs/sha256/<hex>        committed blob, mode 0444, named by the sha256 of its content
//! ingest/<hex(sha256(ref))>/
//!     lock                  flock held by the ingest's writer (any process)
//!     ref                   the caller's ref, verbatim
//!     data                  bytes written so far; its length is the resume offset
//! quarantine/<hex>[.<n>]    blobs that failed `verify`, kept for inspection
//! ```
//!
//! Invariants:
//! - a name in `blobs/sha256` always holds the whole content that hashes to it: commit fsyncs the
//!   data, hard-links it into place (never replacing a name), then fsyncs the directory, so a
//!   crash leaves either the whole blob or none of it;
//! - at most one writer per ref, across processes; a sweep never removes an ingest a writer holds;
//! - the store never decides which blobs are live: [`BlobStore::sweep`] takes the live set, and
//!   the caller keeps sweeps away from blobs it committed but has not recorded yet;
//! - data is hashed in the same pass that writes it and never read back for verification;
//!   [`BlobStore::ingest`] runs read, hash, write and periodic fsync as a pipeline on separate
//!   threads, so its throughput stays close to that of sha256 alone.
//!
//! Not done here: labels, leases and other content metadata (callers keep their own records);
//! algorithms other than sha256.

#![warn(missing_docs)]

mod error;
mod store;
mod writer;

pub use error::{BlobError, Result};
pub use store::{BlobInfo, BlobReader, BlobStore, IngestInfo, SweepReport, Walk};
pub use writer::Writer;
