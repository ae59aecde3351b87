//! Client-side encryption: seekable ChaCha20 keystreams under keys derived from the dataset key.
//!
//! * Each file's bytes are encrypted under its own key, `derive(K, content hash)` (or a random
//!   salt for stdin streams, which cannot be hashed before they are sent). Identical files under
//!   one dataset key therefore encrypt identically and are stored once, and two different files
//!   never share a key, so the fixed nonce can never repeat under one key.
//! * The cipher is a stream cipher: any byte range decrypts on its own (seek to the offset), so
//!   range reads stay cheap. Integrity does not come from the cipher but from BLAKE3: every shard
//!   byte is verified against its shard id, shard ids are in the manifest, and the manifest is
//!   hashed into the dataset id that the capability names (as Tahoe-LAFS does with AES-CTR).
//! * The manifest is encrypted with XChaCha20 under `derive(K, "manifest")` and a random 192-bit
//!   nonce kept in the root record.
//!
//! Why ChaCha20 and not AES-CTR or chunked AEAD: see docs/architecture.md and the `cipher`
//! benchmark in benches/benches/data_path.rs.

use chacha20::{
    ChaCha20, XChaCha20,
    cipher::{KeyIvInit, StreamCipher, StreamCipherSeek},
};

use crate::ids::{ContentHash, DatasetKey};

const FILE_KEY_CONTEXT: &str = "granary 2026-11 file key v1";
const MANIFEST_KEY_CONTEXT: &str = "granary 2026-11 manifest key v1";
const KEY_CHECK_CONTEXT: &str = "granary 2026-11 key check v1";

fn derive(context: &str, key: &DatasetKey, extra: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(key.as_bytes());
    h.update(extra);
    *h.finalize().as_bytes()
}

/// The keystream of one file; `None` inside means a public (unencrypted) dataset.
#[derive(Clone)]
pub struct FileCipher(Option<[u8; 32]>);

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FileCipher(chacha20)"
        } else {
            "FileCipher(public)"
        })
    }
}

impl FileCipher {
    /// The cipher for a file whose key material is `seed` (its content hash, or a random salt).
    pub fn new(key: Option<&DatasetKey>, seed: &ContentHash) -> Self {
        Self(key.map(|k| derive(FILE_KEY_CONTEXT, k, &seed.0)))
    }

    /// Encrypts or decrypts `buf` in place, where `buf` starts at byte `offset` of the file.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        if let Some(key) = &self.0 {
            let mut c = ChaCha20::new(key.into(), &[0u8; 12].into());
            c.seek(offset);
            c.apply_keystream(buf);
        }
    }

    /// Whether this cipher changes bytes at all.
    pub fn is_encrypting(&self) -> bool {
        self.0.is_some()
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
    use super::*;

    #[test]
    fn seek_equals_stream() {
        let key = DatasetKey::generate();
        let c = FileCipher::new(Some(&key), &ContentHash([7; 32]));
        let mut whole = vec![0u8; 10_000];
        c.apply(0, &mut whole);
        for (a, b) in [(0, 1), (63, 65), (64, 128), (1000, 9999), (9999, 10_000)] {
            let mut part = vec![0u8; b - a];
            c.apply(a as u64, &mut part);
            assert_eq!(part, whole[a..b]);
        }
        assert_ne!(whole, vec![0u8; 10_000]);
        let other = FileCipher::new(Some(&key), &ContentHash([8; 32]));
        let mut w2 = vec![0u8; 10_000];
        other.apply(0, &mut w2);
        assert_ne!(w2, whole, "different files must get different keystreams");
        let public = FileCipher::new(None, &ContentHash([7; 32]));
        let mut p = vec![5u8; 100];
        public.apply(3, &mut p);
        assert_eq!(p, vec![5u8; 100]);
    }
}
