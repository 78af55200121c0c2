//! Tests of layer import and unpack: budgets, hostile entries, Docker's texts.

use std::io::Write;

use super::{guard::MAX_TAR_METADATA, *};

fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, *data).unwrap(),
        }
    }
    b.into_inner().unwrap()
}

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&dir.path().join("storage")).unwrap();
    (dir, blobs)
}

#[test]
fn create_tar_splits_config_and_stripped_rootfs() {
    let (dir, blobs) = store();
    let input = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        ("rootfs/", tar::EntryType::Directory, b"", None),
        ("rootfs/bin/x", tar::EntryType::Regular, b"hello", None),
        (
            "rootfs/bin/y",
            tar::EntryType::Link,
            b"",
            Some("rootfs/bin/x"),
        ),
        ("rootfs/sh", tar::EntryType::Symlink, b"", Some("/bin/x")),
        ("other", tar::EntryType::Regular, b"ignored", None),
    ]);
    let out = import_create_tar(&blobs, "t", &input[..], &LayerLimits::DEFAULT).unwrap();
    assert_eq!(out.config, b"{}");
    let dest = dir.path().join("rootfs");
    fs::create_dir(&dest).unwrap();
    unpack_layer(&blobs, &out.layer, &dest, &LayerLimits::DEFAULT).unwrap();
    assert_eq!(fs::read(dest.join("bin/x")).unwrap(), b"hello");
    assert_eq!(fs::read(dest.join("bin/y")).unwrap(), b"hello");
    assert_eq!(fs::read_link(dest.join("sh")).unwrap(), Path::new("/bin/x"));
    assert!(!dest.join("other").exists() && !dest.join("config.json").exists());
    // Same rootfs again: the layer blob is shared, not an error.
    let again = import_create_tar(&blobs, "t2", &input[..], &LayerLimits::DEFAULT).unwrap();
    assert_eq!(again.layer, out.layer);
}

#[test]
fn missing_parts_use_dockers_errors() {
    let (_d, blobs) = store();
    let no_config = tar_of(&[("rootfs/", tar::EntryType::Directory, b"", None)]);
    assert!(matches!(
        import_create_tar(&blobs, "a", &no_config[..], &LayerLimits::DEFAULT),
        Err(LayerError::ConfigNotFound)
    ));
    let no_rootfs = tar_of(&[("config.json", tar::EntryType::Regular, b"{}", None)]);
    let err = import_create_tar(&blobs, "b", &no_rootfs[..], &LayerLimits::DEFAULT).unwrap_err();
    assert_eq!(err.to_string(), "no rootfs found: EOF");
    // Neither: moby's rootfs stream fails first.
    let neither = tar_of(&[("other", tar::EntryType::Regular, b"x", None)]);
    let err = import_create_tar(&blobs, "n", &neither[..], &LayerLimits::DEFAULT).unwrap_err();
    assert_eq!(err.to_string(), "no rootfs found: EOF");
    assert_eq!(
        import_create_tar(&blobs, "c", &no_config[..], &LayerLimits::DEFAULT)
            .unwrap_err()
            .to_string(),
        "config not found"
    );
    let truncated = &no_rootfs[..700];
    let err = import_create_tar(&blobs, "t", truncated, &LayerLimits::DEFAULT).unwrap_err();
    assert!(
        err.to_string().starts_with("failed to read from tar: "),
        "{err}"
    );
    assert_eq!(
        blobs.walk().unwrap().count(),
        0,
        "a refused tar stores nothing"
    );
}

/// Builds a raw tar whose entry names are written verbatim (tar-rs' builder refuses `..`).
fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.as_old_mut().linkflag[0] = *kind;
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn dot_dot_entries_are_refused() {
    let (_d, blobs) = store();
    let evil = raw_tar(&[
        ("config.json", b'0', b"{}", ""),
        ("rootfs/../../etc/evil", b'0', b"x", ""),
    ]);
    let err = import_create_tar(&blobs, "c", &evil[..], &LayerLimits::DEFAULT).unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
}

#[test]
fn writes_through_symlinks_and_outside_hard_links_are_refused() {
    let (dir, blobs) = store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let through_symlink = raw_tar(&[
        ("esc", b'2', b"", outside.to_str().unwrap()),
        ("esc/pwned", b'0', b"x", ""),
    ]);
    let digest = blobs
        .ingest("l1", &gzip(&through_symlink)[..], None)
        .unwrap()
        .digest;
    let dest = dir.path().join("r1");
    fs::create_dir(&dest).unwrap();
    let err = unpack_layer(&blobs, &digest, &dest, &LayerLimits::DEFAULT).unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
    assert!(!outside.join("pwned").exists());

    let hard = raw_tar(&[("passwd", b'1', b"", "/etc/passwd")]);
    let digest = blobs.ingest("l2", &gzip(&hard)[..], None).unwrap().digest;
    let dest = dir.path().join("r2");
    fs::create_dir(&dest).unwrap();
    let err = unpack_layer(&blobs, &digest, &dest, &LayerLimits::DEFAULT).unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
    assert!(!dest.join("passwd").exists());
}

#[test]
fn limits_stop_tar_bombs() {
    let (dir, blobs) = store();
    let big = tar_of(&[("f", tar::EntryType::Regular, &[0u8; 4096], None)]);
    let digest = blobs.ingest("l", &gzip(&big)[..], None).unwrap().digest;
    let dest = dir.path().join("r");
    fs::create_dir(&dest).unwrap();
    let limits = LayerLimits {
        max_unpacked_bytes: 1024,
        ..LayerLimits::DEFAULT
    };
    assert!(matches!(
        unpack_layer(&blobs, &digest, &dest, &limits),
        Err(LayerError::TooLarge { what: "bytes", .. })
    ));
}

/// A 10 KB tar whose one member declares a sparse 100 GB file (one data byte at the end).
fn sparse_bomb() -> Vec<u8> {
    let mut out = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        ("rootfs/", tar::EntryType::Directory, b"", None),
    ]);
    out.truncate(out.len() - 1024); // drop the end-of-archive blocks
    let real = 100u64 << 30;
    let mut h = tar::Header::new_gnu();
    h.set_path("rootfs/big").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(real);
    gnu.sparse[0].set_offset(real - 512);
    gnu.sparse[0].set_length(512);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[7u8; 512]);
    out.resize(out.len() + 1024, 0);
    assert!(out.len() <= 10 * 1024);
    out
}

/// The issue's "10 KB tar declaring a sparse 100 GB file" kept a core busy for minutes
/// (the holes were expanded and gzipped); it is now refused at its header, storing nothing.
#[test]
fn a_sparse_member_is_refused_before_any_work() {
    let (dir, blobs) = store();
    let err =
        import_create_tar(&blobs, "s", &sparse_bomb()[..], &LayerLimits::DEFAULT).unwrap_err();
    assert!(
        matches!(err, LayerError::Sparse { size, .. } if size == 100 << 30),
        "{err}"
    );
    assert!(err.to_string().contains("sparse"), "{err}");
    assert_eq!(blobs.walk().unwrap().count(), 0, "nothing stored");
    assert_no_ingests(dir.path());
    // A layer holding one (e.g. from a registry later) is refused at unpack the same way.
    let bomb = sparse_bomb();
    // The sparse header, its 512 data bytes and the end-of-archive blocks.
    let raw_layer = &bomb[bomb.len() - 2048..];
    let digest = blobs
        .ingest("l", &gzip(raw_layer)[..], None)
        .unwrap()
        .digest;
    let dest = dir.path().join("r");
    fs::create_dir(&dest).unwrap();
    let err = unpack_layer(&blobs, &digest, &dest, &LayerLimits::DEFAULT).unwrap_err();
    assert!(matches!(err, LayerError::Sparse { .. }), "{err}");
    assert!(!dest.join("big").exists());
}

fn assert_no_ingests(root: &Path) {
    let mut leftovers = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                leftovers.push(e.path());
            }
        }
    }
    leftovers.retain(|p| !p.ends_with("lock") && !p.to_string_lossy().contains(".lock"));
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A member declaring more bytes than the budget is refused by its header: the tar itself
/// is tiny (the data is not there), so the refusal cannot come from reading it.
#[test]
fn declared_sizes_and_entry_counts_are_budgeted_at_create() {
    let (_d, blobs) = store();
    let mut out = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        ("rootfs/", tar::EntryType::Directory, b"", None),
    ]);
    out.truncate(out.len() - 1024);
    let mut h = tar::Header::new_gnu();
    h.set_path("rootfs/huge").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1 << 40);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.resize(out.len() + 1024, 0);
    let err = import_create_tar(&blobs, "big", &out[..], &LayerLimits::DEFAULT).unwrap_err();
    assert!(
        matches!(err, LayerError::TooLarge { what: "bytes", .. }),
        "{err}"
    );

    // The same declared through a PAX `size` (the ustar header says 0).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, "config.json", &b"{}"[..]).unwrap();
    let huge = (1u64 << 40).to_string();
    b.append_pax_extensions([("size", huge.as_bytes())])
        .unwrap();
    let mut pax = b.into_inner().unwrap();
    pax.truncate(pax.len() - 1024);
    let mut h = tar::Header::new_ustar();
    h.set_path("rootfs/huge").unwrap();
    h.set_mode(0o644);
    h.set_size(0);
    h.set_cksum();
    pax.extend_from_slice(h.as_bytes());
    pax.resize(pax.len() + 4096, 0);
    let err = import_create_tar(&blobs, "pax", &pax[..], &LayerLimits::DEFAULT).unwrap_err();
    assert!(
        matches!(err, LayerError::TooLarge { what: "bytes", .. }),
        "{err}"
    );

    let small = LayerLimits {
        max_unpacked_bytes: 100,
        ..LayerLimits::DEFAULT
    };
    let files = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        ("rootfs/a", tar::EntryType::Regular, &[1u8; 60], None),
        ("rootfs/b", tar::EntryType::Regular, &[2u8; 60], None),
    ]);
    assert!(matches!(
        import_create_tar(&blobs, "sum", &files[..], &small),
        Err(LayerError::TooLarge { what: "bytes", .. })
    ));
    let few = LayerLimits {
        max_entries: 2,
        ..LayerLimits::DEFAULT
    };
    assert!(matches!(
        import_create_tar(&blobs, "count", &files[..], &few),
        Err(LayerError::TooLarge {
            what: "entries",
            ..
        })
    ));
    assert!(import_create_tar(&blobs, "ok", &files[..], &LayerLimits::DEFAULT).is_ok());
}

/// A 1,000-deep directory chain (which crashed plugind on `rm`) is refused at create.
#[test]
fn deep_or_long_paths_are_refused_at_create() {
    let (_d, blobs) = store();
    let mut path = String::from("rootfs");
    let mut entries = vec![("config.json".to_owned(), tar::EntryType::Regular)];
    for _ in 0..1000 {
        path.push_str("/d");
        entries.push((format!("{path}/"), tar::EntryType::Directory));
    }
    let refs: Vec<(&str, tar::EntryType, &[u8], Option<&str>)> = entries
        .iter()
        .map(|(p, k)| {
            let data: &[u8] = if k.is_dir() { b"" } else { b"{}" };
            (p.as_str(), *k, data, None)
        })
        .collect();
    let deep = tar_of(&refs);
    let err = import_create_tar(&blobs, "deep", &deep[..], &LayerLimits::DEFAULT).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::PathTooLong {
                what: "levels",
                limit: 128,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("(truncated)"), "{err}");
    // Within the limits the same chain is fine.
    let roomy = LayerLimits {
        max_path_depth: 2000,
        ..LayerLimits::DEFAULT
    };
    assert!(import_create_tar(&blobs, "deep2", &deep[..], &roomy).is_ok());

    let long = format!("rootfs/{}", "x".repeat(5000));
    let tar = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        (long.as_str(), tar::EntryType::Regular, b"", None),
    ]);
    assert!(matches!(
        import_create_tar(&blobs, "long", &tar[..], &LayerLimits::DEFAULT),
        Err(LayerError::PathTooLong { what: "bytes", .. })
    ));
}

/// GNU long names and PAX headers are read whole into memory by tar-rs: one declaring
/// gigabytes is refused at its header, before that memory is spent.
#[test]
fn oversized_metadata_members_are_refused_at_their_header() {
    let (dir, blobs) = store();
    for kind in [b'L', b'K', b'x'] {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(4 << 30);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&[b'a'; 4096]);
        let err = import_create_tar(&blobs, "m", &out[..], &LayerLimits::DEFAULT).unwrap_err();
        assert!(
            matches!(err, LayerError::TooLarge { limit, .. } if limit == MAX_TAR_METADATA),
            "{}: {err}",
            kind as char
        );
    }
    assert_eq!(blobs.walk().unwrap().count(), 0);
    assert_no_ingests(dir.path());
}

/// The guard follows PAX sizes, long names and real tars exactly: what it lets through is
/// what the reader reads.
#[test]
fn the_guard_follows_pax_and_long_names() {
    let (dir, blobs) = store();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(2);
    b.append_data(&mut h, "config.json", &b"{}"[..]).unwrap();
    let long = format!("rootfs/{}/{}/f", "n".repeat(150), "m".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(700);
    b.append_data(&mut h, &long, &[3u8; 700][..]).unwrap();
    // A PAX header whose size overrides the ustar one (0 here, 1000 really).
    b.append_pax_extensions([("size", &b"1000"[..]), ("SCHILY.xattr.user.k", b"v")])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("rootfs/pax").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    let mut out = b.into_inner().unwrap();
    out.truncate(out.len() - 1024); // the builder's end-of-archive blocks
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[9u8; 1000]);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut tail = tar::Header::new_gnu();
    tail.set_path("rootfs/after").unwrap();
    tail.set_entry_type(tar::EntryType::Regular);
    tail.set_mode(0o644);
    tail.set_uid(0);
    tail.set_gid(0);
    tail.set_mtime(0);
    tail.set_size(5);
    tail.set_cksum();
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(b"after");
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    let created = import_create_tar(&blobs, "p", &out[..], &LayerLimits::DEFAULT).unwrap();
    let dest = dir.path().join("r");
    fs::create_dir(&dest).unwrap();
    unpack_layer(&blobs, &created.layer, &dest, &LayerLimits::DEFAULT).unwrap();
    assert_eq!(fs::read(dest.join(&long[7..])).unwrap(), vec![3u8; 700]);
    assert_eq!(fs::read(dest.join("pax")).unwrap(), vec![9u8; 1000]);
    assert_eq!(fs::read(dest.join("after")).unwrap(), b"after");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Random bytes (xorshift): incompressible, so a few MiB of them fill the tee's channel.
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Nothing a refused import leaves: no blob, no ingest.
fn assert_nothing_stored(blobs: &BlobStore) {
    assert_eq!(
        blobs.walk().unwrap().count(),
        0,
        "a refused tar stores no blob"
    );
    assert!(blobs.ingests().unwrap().is_empty(), "nor an ingest");
}

#[test]
fn one_pass_import_unpacks_exactly_the_layer_it_stores() {
    let (dir, blobs) = store();
    let big = noise(3 << 20, 7);
    let input = tar_of(&[
        ("rootfs/", tar::EntryType::Directory, b"", None),
        ("rootfs/bin/x", tar::EntryType::Regular, b"hello", None),
        ("rootfs/big", tar::EntryType::Regular, &big, None),
        (
            "rootfs/bin/y",
            tar::EntryType::Link,
            b"",
            Some("rootfs/bin/x"),
        ),
        ("rootfs/sh", tar::EntryType::Symlink, b"", Some("/bin/x")),
        ("config.json", tar::EntryType::Regular, b"{}", None),
    ]);
    let one_pass = dir.path().join("one-pass");
    fs::create_dir(&one_pass).unwrap();
    let (out, guard) = import_create_tar_unpacking(
        &blobs,
        "t",
        &input[..],
        &one_pass,
        &LayerLimits::DEFAULT,
        || "guard",
    )
    .unwrap();
    assert_eq!((out.config.as_slice(), guard), (&b"{}"[..], "guard"));
    // The same blob as the import alone makes, and its unpack is the same tree.
    let blob_only = import_create_tar(&blobs, "t2", &input[..], &LayerLimits::DEFAULT).unwrap();
    assert_eq!(blob_only.layer, out.layer);
    let from_blob = dir.path().join("from-blob");
    fs::create_dir(&from_blob).unwrap();
    unpack_layer(&blobs, &out.layer, &from_blob, &LayerLimits::DEFAULT).unwrap();
    for rootfs in [&one_pass, &from_blob] {
        assert_eq!(fs::read(rootfs.join("bin/x")).unwrap(), b"hello");
        assert_eq!(fs::read(rootfs.join("bin/y")).unwrap(), b"hello");
        assert_eq!(fs::read(rootfs.join("big")).unwrap(), big);
        assert_eq!(
            fs::read_link(rootfs.join("sh")).unwrap(),
            Path::new("/bin/x")
        );
        assert!(!rootfs.join("config.json").exists());
    }
}

#[test]
fn an_unpack_failure_stops_the_one_pass_import_and_stores_nothing() {
    let (dir, blobs) = store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // The rewrite lets this through (only the unpacker knows `esc` is a symlink by then); the
    // megabytes after it find the unpacker gone.
    let big = noise(8 << 20, 3);
    let mut input = raw_tar(&[
        ("config.json", b'0', b"{}", ""),
        ("rootfs/esc", b'2', b"", outside.to_str().unwrap()),
        ("rootfs/esc/pwned", b'0', b"x", ""),
        ("rootfs/big", b'0', &big, ""),
    ]);
    let dest = dir.path().join("r");
    fs::create_dir(&dest).unwrap();
    let err =
        import_create_tar_unpacking(&blobs, "u", &input[..], &dest, &LayerLimits::DEFAULT, || ())
            .unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
    assert!(!outside.join("pwned").exists());
    assert_nothing_stored(&blobs);
    // Docker's order: the rootfs stream's failure comes before a missing config.
    input.drain(..1024);
    let dest = dir.path().join("r2");
    fs::create_dir(&dest).unwrap();
    let err = import_create_tar_unpacking(
        &blobs,
        "u2",
        &input[..],
        &dest,
        &LayerLimits::DEFAULT,
        || (),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Escape { .. }), "{err}");
    assert_nothing_stored(&blobs);
}

#[test]
fn a_producer_failure_cuts_the_unpacker_off_and_stores_nothing() {
    let (dir, blobs) = store();
    let big = noise(6 << 20, 5);
    let input = tar_of(&[
        ("config.json", tar::EntryType::Regular, b"{}", None),
        ("rootfs/", tar::EntryType::Directory, b"", None),
        ("rootfs/big", tar::EntryType::Regular, &big, None),
        ("rootfs/after", tar::EntryType::Regular, b"after", None),
    ]);
    // Cut in the middle of `big`: the unpacker has written part of it when the upload ends.
    let cut = &input[..4 << 20];
    let dest = dir.path().join("r");
    fs::create_dir(&dest).unwrap();
    let err = import_create_tar_unpacking(&blobs, "p", cut, &dest, &LayerLimits::DEFAULT, || ())
        .unwrap_err();
    assert!(
        err.to_string().starts_with("failed to read from tar: "),
        "{err}"
    );
    assert!(!dest.join("after").exists());
    assert_nothing_stored(&blobs);
    // A failing upload reader: its error is the answer, whatever the unpacker made of the cut.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("client went away"));
            }
            self.0.read(out)
        }
    }
    let dest = dir.path().join("r2");
    fs::create_dir(&dest).unwrap();
    let err = import_create_tar_unpacking(
        &blobs,
        "p2",
        Failing(cut),
        &dest,
        &LayerLimits::DEFAULT,
        || (),
    )
    .unwrap_err();
    assert!(err.to_string().contains("failed to read from tar"), "{err}");
    assert!(format!("{:?}", err).contains("client went away"), "{err:?}");
    assert_nothing_stored(&blobs);
    // Limits refused by the rewrite stop the unpacker too.
    let dest = dir.path().join("r3");
    fs::create_dir(&dest).unwrap();
    let small = LayerLimits {
        max_unpacked_bytes: 1 << 20,
        ..LayerLimits::DEFAULT
    };
    let err =
        import_create_tar_unpacking(&blobs, "p3", &input[..], &dest, &small, || ()).unwrap_err();
    assert!(
        matches!(err, LayerError::TooLarge { what: "bytes", .. }),
        "{err}"
    );
    assert!(!dest.join("big").exists());
    assert_nothing_stored(&blobs);
}
