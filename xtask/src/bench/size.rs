//! Create size scaling (issue 15): plugins of 3, 30 and 300 MB, their rootfs the sample
//! plugin's plus generated files (80% incompressible random bytes in files of up to 8 MiB, 20%
//! compressible text in 64 KiB files), created through the API against `tar -x` + `sha256sum`
//! of the same tar (what create must do at least: unpack the bytes and hash them). Each timed
//! step starts after a `sync`, so none pays for the writeback of the step before it.

use std::{fs, io::Write, path::Path, process::Command, time::Instant};

use super::{median, ms, timed_shell, verdict, wait_store_empty};
use crate::{daemon::Plugind, util::run as run_cmd};

/// Plugin sizes, in MB (10^6 bytes).
const SIZES_MB: [u64; 3] = [3, 30, 300];
/// Largest generated random file.
const RANDOM_FILE: u64 = 8 << 20;
/// Size of each generated compressible file.
const TEXT_FILE: u64 = 64 << 10;

pub(super) fn run(binary: &Path, sample_dir: &Path) -> anyhow::Result<()> {
    let work = Path::new("/tmp").join(format!("pd-size-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let d = Plugind::start(binary, "size", false)?;
    let result = (|| {
        for mb in SIZES_MB {
            let tar = make_plugin(&work, sample_dir, mb * 1_000_000)?;
            let body = fs::read(&tar)?;
            let rounds = if mb >= 300 { 3 } else { 5 };
            let mut creates = Vec::new();
            let mut baselines = Vec::new();
            let extract = work.join("x");
            for i in 0..rounds {
                // Each timed step starts with nothing dirty in the page cache: create makes its
                // rootfs durable with syncfs, which would otherwise also write out the files
                // the previous round's `tar -x` left dirty (300 MB at the largest size).
                sync_disks()?;
                let t = Instant::now();
                d.ok(
                    "POST",
                    &format!("/plugins/create?name=size/p{mb}-{i}"),
                    &body,
                )?;
                creates.push(t.elapsed());
                d.ok("DELETE", &format!("/plugins/size/p{mb}-{i}"), &[])?;
                wait_store_empty(&d)?;
                let _ = fs::remove_dir_all(&extract);
                fs::create_dir_all(&extract)?;
                sync_disks()?;
                baselines.push(timed_shell(&format!(
                    "tar -xf {t} -C {x} && sha256sum {t} >/dev/null",
                    t = tar.display(),
                    x = extract.display()
                ))?);
            }
            let _ = fs::remove_dir_all(&extract);
            fs::remove_file(&tar)?;
            let create = median(creates);
            let baseline = median(baselines);
            let ratio = create.as_secs_f64() / baseline.as_secs_f64();
            let budget = if mb >= 300 {
                format!(" (budget <= 1.3x: {})", verdict(ratio <= 1.3))
            } else {
                String::new()
            };
            println!(
                "create of a {mb} MB plugin ({} MB tar, median of {rounds}): {} = {:.0} MB/s; tar -x + sha256sum of the same tar: {} -> ratio {ratio:.2}x{budget}",
                body.len() / 1_000_000,
                ms(create),
                body.len() as f64 / 1e6 / create.as_secs_f64(),
                ms(baseline)
            );
        }
        Ok::<_, anyhow::Error>(())
    })();
    drop(d);
    let _ = fs::remove_dir_all(&work);
    result
}

/// Writes out every dirty page (`sync`), outside any timed step.
fn sync_disks() -> anyhow::Result<()> {
    anyhow::ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

/// Builds `<work>/plugin-<bytes>.tar`: the sample plugin with `bytes` of generated files
/// added under `rootfs/data/`.
fn make_plugin(work: &Path, sample_dir: &Path, bytes: u64) -> anyhow::Result<std::path::PathBuf> {
    let dir = work.join(format!("plugin-{bytes}"));
    let _ = fs::remove_dir_all(&dir);
    run_cmd(Command::new("cp").arg("-a").arg(sample_dir).arg(&dir))?;
    let data = dir.join("rootfs/data");
    fs::create_dir_all(&data)?;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ bytes);
    let random = bytes * 4 / 5;
    let mut written = 0;
    let mut n = 0;
    while written < random {
        let len = RANDOM_FILE.min(random - written);
        let mut f = fs::File::create(data.join(format!("random-{n}.bin")))?;
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all(&buf)?;
        written += len;
        n += 1;
    }
    let line = b"plugind benchmark text: compressible, repeated lines of a log or a config file\n";
    while written < bytes {
        let len = TEXT_FILE.min(bytes - written);
        let text: Vec<u8> = line.iter().copied().cycle().take(len as usize).collect();
        fs::write(data.join(format!("text-{n}.txt")), text)?;
        written += len;
        n += 1;
    }
    let tar = work.join(format!("plugin-{bytes}.tar"));
    run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .args(["config.json", "rootfs"]),
    )?;
    fs::remove_dir_all(&dir)?;
    Ok(tar)
}

/// xorshift64*: fast incompressible bytes without a dependency (not for secrets).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
