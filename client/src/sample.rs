//! Deterministic sample datasets for demos, benchmarks and tests: a tree of files of mixed sizes
//! (many small, some medium, a few large) filled with incompressible pseudo-random bytes.

use std::{fs, io::Write, path::Path};

/// Shape of a generated dataset.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Number of files.
    pub files: usize,
    /// Approximate total bytes.
    pub total_bytes: u64,
    /// Seed for sizes and contents.
    pub seed: u64,
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Fills `buf` with pseudo-random bytes from `seed`.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut r = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = r.next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// Writes a sample dataset under `root` and returns (files, bytes) written.
///
/// Sizes: 70% of files small (1–64 KiB), 25% medium (64 KiB–1 MiB), 5% large; scaled so the
/// total is close to `total_bytes`.
pub fn generate(root: &Path, spec: SampleSpec) -> std::io::Result<(usize, u64)> {
    let mut r = XorShift(spec.seed | 1);
    let mut sizes: Vec<u64> = (0..spec.files)
        .map(|_| match r.next() % 100 {
            0..70 => 1024 + r.next() % (63 * 1024),
            70..95 => 64 * 1024 + r.next() % (960 * 1024),
            _ => 1024 * 1024 + r.next() % (16 * 1024 * 1024),
        })
        .collect();
    let raw: u64 = sizes.iter().sum::<u64>().max(1);
    let scale = spec.total_bytes as f64 / raw as f64;
    for s in &mut sizes {
        *s = ((*s as f64) * scale) as u64;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for (i, size) in sizes.iter().enumerate() {
        let dir = root.join(format!("part-{:03}", i % 64));
        fs::create_dir_all(&dir)?;
        let mut f = fs::File::create(dir.join(format!("sample-{i:06}.bin")))?;
        let mut left = *size;
        let mut block = 0u64;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], spec.seed ^ ((i as u64) << 20) ^ block);
            f.write_all(&buf[..n])?;
            left -= n as u64;
            block += 1;
        }
        total += size;
    }
    Ok((sizes.len(), total))
}

/// Compares two trees file by file; returns the first difference, if any.
pub fn compare_trees(a: &Path, b: &Path) -> std::io::Result<Option<String>> {
    let wa = crate::walk::walk(a).map_err(std::io::Error::other)?;
    let wb = crate::walk::walk(b).map_err(std::io::Error::other)?;
    if wa.entries.len() != wb.entries.len() {
        return Ok(Some(format!(
            "{} paths vs {} paths",
            wa.entries.len(),
            wb.entries.len()
        )));
    }
    for (x, y) in wa.entries.iter().zip(&wb.entries) {
        if x.rel != y.rel || x.kind != y.kind {
            return Ok(Some(format!("{} differs", String::from_utf8_lossy(&x.rel))));
        }
        if let crate::walk::WalkKind::File { .. } = x.kind
            && hash_file(&x.abs)? != hash_file(&y.abs)?
        {
            return Ok(Some(format!(
                "{} content differs",
                String::from_utf8_lossy(&x.rel)
            )));
        }
    }
    Ok(None)
}

fn hash_file(p: &Path) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(p)?)?;
    Ok(h.finalize())
}
