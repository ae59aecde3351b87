//! Client-side encryption: AES-256-GCM over 64 KiB chunks under per-file keys derived from the
//! dataset key.
//!
//! * Each file is encrypted under its own key, `derive(K, content hash)` (or a random seed for
//!   stdin streams, which cannot be hashed before they are sent). Identical files under one
//!   dataset key therefore encrypt identically and are stored once, and two different files
//!   never share a key, so the nonce — the chunk index — never repeats under one key. A file
//!   larger than one [`parts::PART`] has a key per 16 MiB part instead,
//!   `derive(K, part chaining value ‖ part index)`, so that it is read and hashed only once
//!   (see [`crate::parts`]); the same argument holds part by part.
//! * A file's stored form is its chunks in order, each `ciphertext ‖ 16-byte tag`; chunk *i*
//!   covers plaintext bytes `[i·64 KiB, (i+1)·64 KiB)`. A byte range needs only the chunks that
//!   cover it, so range reads stay cheap; each chunk is authenticated on its own.
//! * Integrity does not rest on the cipher alone: every stored byte is also verified against
//!   its shard id (BLAKE3), shard ids are in the manifest, and the manifest is hashed into the
//!   dataset id that the capability names.
//! * The manifest is encrypted with XChaCha20 under `derive(K, "manifest")` and a random
//!   192-bit nonce kept in the root record; its integrity comes from its hash in the root record.
//!
//! Why AES-GCM (ring) rather than ChaCha20 or AES-CTR (RustCrypto): measured 5–6× faster here, in
//! one run of benches/benches/data_path.rs; see docs/architecture.md and docs/performance.md.

use std::{ops::Range, sync::Arc};

use chacha20::{
    XChaCha20,
    cipher::{KeyIvInit, StreamCipher},
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::{
    ids::{ContentHash, DatasetKey},
    parts,
};

/// Plaintext bytes per encrypted chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag bytes after each chunk.
pub const TAG_LEN: usize = 16;
/// Stored bytes of a full chunk.
pub const STORED_CHUNK: usize = CHUNK + TAG_LEN;

const FILE_KEY_CONTEXT: &str = "granary 2026-11 file key v1";
const PART_KEY_CONTEXT: &str = "granary 2026-11 file part key v1";
/// Chunks per part of a large file: chunk `i` is sealed under the key of part `i / this`.
pub const CHUNKS_PER_PART: u64 = parts::PART / CHUNK as u64;
const MANIFEST_KEY_CONTEXT: &str = "granary 2026-11 manifest key v1";
const KEY_CHECK_CONTEXT: &str = "granary 2026-11 key check v1";

fn derive(context: &str, key: &DatasetKey, extra: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(key.as_bytes());
    h.update(extra);
    *h.finalize().as_bytes()
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A stored chunk failed authentication.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// Tag mismatch or a chunk too short to hold a tag.
    #[error("encrypted chunk {chunk} failed authentication")]
    ChunkAuth {
        /// Chunk index within the file.
        chunk: u64,
    },
}

/// The cipher of one file; without a key (public datasets) it stores plaintext as is. A file
/// has one key, or one per [`parts::PART`] (chunk `i` uses key `i / CHUNKS_PER_PART`).
#[derive(Clone)]
pub struct FileCipher(Option<Arc<Keys>>);

/// The keys of a file: one for every chunk, or those of parts `first..` of a file split into
/// parts (only the parts a read needs are derived).
struct Keys {
    keys: Box<[LessSafeKey]>,
    first_part: Option<u64>,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FileCipher(aes-256-gcm)"
        } else {
            "FileCipher(public)"
        })
    }
}

/// Where a plaintext range of a file lies in its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpan {
    /// Stored bytes to read (whole chunks).
    pub stored: Range<u64>,
    /// Index of the first chunk in `stored`.
    pub first_chunk: u64,
    /// Plaintext bytes to drop from the start of the decrypted span.
    pub skip: u64,
}

impl FileCipher {
    /// The cipher for a file whose key material is `seed` (its content hash, or a random seed).
    pub fn new(key: Option<&DatasetKey>, seed: &ContentHash) -> Self {
        Self(key.map(|k| {
            Arc::new(Keys {
                keys: Box::new([aes_key(&derive(FILE_KEY_CONTEXT, k, &seed.0))]),
                first_part: None,
            })
        }))
    }

    /// The cipher of parts `parts` of a file split into parts, from the chaining values of all
    /// its parts (a file of many parts read in a small range needs only a key or two).
    pub fn of_parts(key: Option<&DatasetKey>, cvs: &[ContentHash], parts: Range<usize>) -> Self {
        let end = parts.end.min(cvs.len());
        let start = parts.start.min(end);
        Self(key.map(|k| {
            Arc::new(Keys {
                keys: (start..end)
                    .map(|i| aes_key(&part_key(k, i as u64, &cvs[i])))
                    .collect(),
                first_part: Some(start as u64),
            })
        }))
    }

    /// The cipher of part `index` of a file split into parts alone (its chunks
    /// `index * CHUNKS_PER_PART ..`), from that part's chaining value.
    pub fn part(key: Option<&DatasetKey>, index: u64, cv: &ContentHash) -> Self {
        Self(key.map(|k| {
            Arc::new(Keys {
                keys: Box::new([aes_key(&part_key(k, index, cv))]),
                first_part: Some(index),
            })
        }))
    }

    /// The key of chunk `index`; `None` if this cipher has no key for its part (a corrupt
    /// entry, or a part outside the parts it was made for).
    fn key_of(keys: &Keys, index: u64) -> Option<&LessSafeKey> {
        match keys.first_part {
            None => keys.keys.first(),
            Some(first) => {
                let part = (index / CHUNKS_PER_PART).checked_sub(first)?;
                keys.keys.get(usize::try_from(part).ok()?)
            }
        }
    }

    /// Whether this cipher encrypts at all.
    pub fn is_encrypting(&self) -> bool {
        self.0.is_some()
    }

    /// Stored length of a file of `plain` bytes.
    pub fn stored_len(&self, plain: u64) -> u64 {
        match self.0 {
            Some(_) => plain + TAG_LEN as u64 * plain.div_ceil(CHUNK as u64),
            None => plain,
        }
    }

    /// The stored bytes that hold plaintext `range` of a file of `size` bytes.
    pub fn stored_span(&self, range: Range<u64>, size: u64) -> StoredSpan {
        if self.0.is_none() || range.is_empty() {
            return StoredSpan {
                stored: range.clone(),
                first_chunk: 0,
                skip: 0,
            };
        }
        let c = CHUNK as u64;
        let first = range.start / c;
        let last = (range.end - 1) / c;
        let end = ((last + 1) * STORED_CHUNK as u64).min(self.stored_len(size));
        StoredSpan {
            stored: first * STORED_CHUNK as u64..end,
            first_chunk: first,
            skip: range.start - first * c,
        }
    }

    /// Appends the stored form of chunk `index` — `plain` (at most [`CHUNK`] bytes) sealed in
    /// place, then its tag — to `out`, with no intermediate copy. Without a key the plaintext
    /// is appended as is.
    pub fn seal_chunk_into(&self, index: u64, plain: &[u8], out: &mut Vec<u8>) {
        let key = self.0.as_deref().map(|keys| sealing_key(keys, index));
        seal_into(key, index, plain, out);
    }

    /// Decrypts stored chunk `index` (`ciphertext ‖ tag`, as sealed) in place and checks its tag;
    /// returns the plaintext length. Without a key the bytes are plaintext already.
    pub fn open_chunk_in_place(&self, index: u64, stored: &mut [u8]) -> Result<usize, CryptoError> {
        match &self.0 {
            Some(key) => self.open_chunk(key, index, stored),
            None => Ok(stored.len()),
        }
    }

    /// Decrypts a stored chunk (`ciphertext ‖ tag`) in place; returns the plaintext length.
    fn open_chunk(&self, keys: &Keys, index: u64, stored: &mut [u8]) -> Result<usize, CryptoError> {
        let key = Self::key_of(keys, index).ok_or(CryptoError::ChunkAuth { chunk: index })?;
        if stored.len() < TAG_LEN {
            return Err(CryptoError::ChunkAuth { chunk: index });
        }
        key.open_in_place(nonce(index), Aad::empty(), stored)
            .map(|p| p.len())
            .map_err(|_| CryptoError::ChunkAuth { chunk: index })
    }
}

/// The key to seal chunk `index` with: sealing only ever runs on a cipher built for the chunks
/// being sealed (the whole file, or the part being read), which has a key for each.
fn sealing_key(keys: &Keys, index: u64) -> &LessSafeKey {
    #[allow(clippy::expect_used)]
    FileCipher::key_of(keys, index).expect("a key for every chunk being sealed")
}

fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256.
    #[allow(clippy::expect_used)]
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 key length");
    LessSafeKey::new(unbound)
}

fn part_key(key: &DatasetKey, index: u64, cv: &ContentHash) -> [u8; 32] {
    let mut extra = [0u8; 40];
    extra[..32].copy_from_slice(&cv.0);
    extra[32..].copy_from_slice(&index.to_le_bytes());
    derive(PART_KEY_CONTEXT, key, &extra)
}

/// Appends chunk `index` — `plain` (at most [`CHUNK`] bytes) sealed in place under `key`, then
/// its tag — to `out`; without a key, `plain` as is.
fn seal_into(key: Option<&LessSafeKey>, index: u64, plain: &[u8], out: &mut Vec<u8>) {
    debug_assert!(plain.len() <= CHUNK);
    let start = out.len();
    out.extend_from_slice(plain);
    if let Some(key) = key {
        let tag = seal_chunk(key, index, &mut out[start..]);
        out.extend_from_slice(tag.as_ref());
    }
}

/// Encrypts chunk `index` in place and returns its tag.
fn seal_chunk(key: &LessSafeKey, index: u64, chunk: &mut [u8]) -> Tag {
    // Sealing fails only for inputs over ~64 GB; chunks are 64 KiB.
    #[allow(clippy::expect_used)]
    key.seal_in_place_separate_tag(nonce(index), Aad::empty(), chunk)
        .expect("AES-GCM seal of a 64 KiB chunk")
}

/// Turns a file's plaintext, fed in pieces of any size, into its stored form.
#[derive(Debug)]
pub struct Sealer {
    cipher: FileCipher,
    index: u64,
    pending: Vec<u8>,
}

impl Sealer {
    /// A sealer for a file, starting at chunk 0.
    pub fn new(cipher: FileCipher) -> Self {
        Self {
            cipher,
            index: 0,
            pending: Vec::new(),
        }
    }

    /// Feeds plaintext; `out` receives stored bytes and returns false to stop.
    pub fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let Some(keys) = self.cipher.0.clone() else {
            return out(data);
        };
        let mut buf = [0u8; STORED_CHUNK];
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= CHUNK {
                buf[..CHUNK].copy_from_slice(&data[..CHUNK]);
                data = &data[CHUNK..];
            } else {
                let take = (CHUNK - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.pending.len() < CHUNK {
                    break;
                }
                buf[..CHUNK].copy_from_slice(&self.pending);
                self.pending.clear();
            }
            let tag = seal_chunk(
                sealing_key(&keys, self.index),
                self.index,
                &mut buf[..CHUNK],
            );
            buf[CHUNK..].copy_from_slice(tag.as_ref());
            self.index += 1;
            if !out(&buf) {
                return false;
            }
        }
        true
    }

    /// Seals the last partial chunk.
    pub fn finish(mut self, out: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let Some(keys) = self.cipher.0.clone() else {
            return true;
        };
        if self.pending.is_empty() {
            return true;
        }
        let n = self.pending.len();
        let mut chunk = std::mem::take(&mut self.pending);
        let tag = seal_chunk(sealing_key(&keys, self.index), self.index, &mut chunk);
        chunk.extend_from_slice(tag.as_ref());
        debug_assert_eq!(chunk.len(), n + TAG_LEN);
        out(&chunk)
    }
}

/// Turns stored bytes of a file, fed in pieces of any size, back into plaintext.
#[derive(Debug)]
pub struct Opener {
    cipher: FileCipher,
    index: u64,
    pending: Vec<u8>,
}

impl Opener {
    /// An opener whose first stored byte is the start of chunk `first_chunk`.
    pub fn new(cipher: FileCipher, first_chunk: u64) -> Self {
        Self {
            cipher,
            index: first_chunk,
            pending: Vec::with_capacity(STORED_CHUNK),
        }
    }

    /// Feeds stored bytes; `out` receives plaintext.
    pub fn push<E: From<CryptoError>>(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(keys) = self.cipher.0.clone() else {
            return out(data);
        };
        while !data.is_empty() {
            let take = (STORED_CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == STORED_CHUNK {
                let n = self
                    .cipher
                    .open_chunk(&keys, self.index, &mut self.pending)?;
                out(&self.pending[..n])?;
                self.pending.clear();
                self.index += 1;
            }
        }
        Ok(())
    }

    /// Opens the last partial chunk.
    pub fn finish<E: From<CryptoError>>(
        mut self,
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(keys) = self.cipher.0.clone() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self
            .cipher
            .open_chunk(&keys, self.index, &mut self.pending)?;
        out(&self.pending[..n])
    }
}

/// Encrypts or decrypts a manifest blob in place.
pub fn apply_manifest_cipher(key: &DatasetKey, nonce: &[u8; 24], buf: &mut [u8]) {
    let k = derive(MANIFEST_KEY_CONTEXT, key, &[]);
    let mut c = XChaCha20::new(&k.into(), nonce.into());
    c.apply_keystream(buf);
}

/// A 16-byte tag that tells a wrong key from a right one without revealing the key.
pub fn key_check(key: &DatasetKey) -> [u8; 16] {
    let full = derive(KEY_CHECK_CONTEXT, key, &[]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// 24 random bytes for a manifest nonce.
pub fn random_nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut n).expect("the operating system's random number generator failed");
    n
}

/// 32 random bytes, the key seed of a stream that cannot be hashed in advance.
pub fn random_seed() -> ContentHash {
    let mut n = [0u8; 32];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut n).expect("the operating system's random number generator failed");
    ContentHash(n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seal_all(c: &FileCipher, data: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = Sealer::new(c.clone());
        for p in data.chunks(piece.max(1)) {
            assert!(s.push(p, &mut |b| {
                out.extend_from_slice(b);
                true
            }));
        }
        assert!(s.finish(&mut |b| {
            out.extend_from_slice(b);
            true
        }));
        out
    }

    proptest! {
        #[test]
        fn any_split_round_trips_and_ranges_decrypt(len in 0usize..300_000, piece in 1usize..100_000, a in any::<u64>(), b in any::<u64>()) {
            let key = DatasetKey::from_bytes([4; 32]);
            let c = FileCipher::new(Some(&key), &ContentHash([7; 32]));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 300) as u8).collect();
            let stored = seal_all(&c, &data, piece);
            prop_assert_eq!(stored.len() as u64, c.stored_len(len as u64));
            // Same content, same key: same stored bytes (dedup), whatever the read pieces.
            prop_assert_eq!(&stored, &seal_all(&c, &data, 65_536));
            let (mut s, mut e) = (a % (len as u64 + 1), b % (len as u64 + 1));
            if s > e { std::mem::swap(&mut s, &mut e); }
            let span = c.stored_span(s..e, len as u64);
            let mut plain = Vec::new();
            let mut o = Opener::new(c.clone(), span.first_chunk);
            o.push::<CryptoError>(&stored[span.stored.start as usize..span.stored.end as usize], &mut |p| { plain.extend_from_slice(p); Ok(()) }).unwrap();
            o.finish::<CryptoError>(&mut |p| { plain.extend_from_slice(p); Ok(()) }).unwrap();
            let got = &plain[span.skip as usize..span.skip as usize + (e - s) as usize];
            prop_assert_eq!(got, &data[s as usize..e as usize]);
        }
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let key = DatasetKey::from_bytes([4; 32]);
        let c = FileCipher::new(Some(&key), &ContentHash([7; 32]));
        let data = vec![9u8; 100_000];
        let mut stored = seal_all(&c, &data, 4096);
        assert_ne!(&stored[..100], &data[..100]);
        let mut bad = stored.clone();
        bad[10_000] ^= 1;
        let mut o = Opener::new(c.clone(), 0);
        let r = o.push::<CryptoError>(&bad, &mut |_| Ok(()));
        assert_eq!(r, Err(CryptoError::ChunkAuth { chunk: 0 }));
        // The last, partial chunk is checked when the stream ends.
        stored[90_000] ^= 1;
        let mut o = Opener::new(c.clone(), 0);
        o.push::<CryptoError>(&stored, &mut |_| Ok(())).unwrap();
        assert_eq!(
            o.finish::<CryptoError>(&mut |_| Ok(())),
            Err(CryptoError::ChunkAuth { chunk: 1 })
        );
        let other = FileCipher::new(Some(&key), &ContentHash([8; 32]));
        let stored = seal_all(&c, &data, 4096);
        assert_ne!(
            stored,
            seal_all(&other, &data, 4096),
            "different files get different keys"
        );
        let public = FileCipher::new(None, &ContentHash([7; 32]));
        assert_eq!(seal_all(&public, &data, 999), data);
    }
}
