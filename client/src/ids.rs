//! Identifiers and keys: newtypes over 32-byte values, displayed in lowercase base32.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lowercase RFC 4648 base32 without padding: the text form of ids and keys.
pub(crate) fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(bytes)
        .to_ascii_lowercase()
}

/// Decodes [`base32`] text into exactly 32 bytes.
pub(crate) fn parse_base32_32(text: &str) -> Option<[u8; 32]> {
    let upper = text.to_ascii_uppercase();
    let bytes = data_encoding::BASE32_NOPAD.decode(upper.as_bytes()).ok()?;
    bytes.try_into().ok()
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as a BLAKE3 hash value.
            pub fn as_hash(&self) -> blake3::Hash {
                blake3::Hash::from_bytes(self.0)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&base32(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &base32(&self.0)[..12])
            }
        }
    };
}

hash_id!(
    /// BLAKE3 hash of a shard's bytes: the name of the shard everywhere.
    ShardId
);
hash_id!(
    /// BLAKE3 hash of a dataset's root record: the name of a dataset.
    DatasetId
);
hash_id!(
    /// BLAKE3 hash of a file's plaintext.
    ContentHash
);

/// A dataset's secret key: confidentiality of its files and manifest.
#[derive(Clone, PartialEq, Eq)]
pub struct DatasetKey(pub(crate) [u8; 32]);

impl DatasetKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        // The OS RNG failing is unrecoverable for key generation.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut k).expect("the operating system's random number generator failed");
        Self(k)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DatasetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatasetKey(..)")
    }
}
