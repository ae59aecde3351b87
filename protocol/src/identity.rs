//! Ed25519 identities of nodes and clients.
//!
//! A [`SecretKey`] is the 32-byte ed25519 seed; its public half is the [`NodeId`]. The same key
//! signs owner requests (store, delete) and backs the self-signed TLS certificate (see
//! [`crate::tls`]). On disk a key is a file holding the seed as 64 lowercase hex digits and a
//! newline, created with mode `0600`; loading refuses files readable by group or others.

use std::{fmt, fs, io, io::Write, path::Path, str::FromStr};

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

/// Length of a public key / node id in bytes.
pub const NODE_ID_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 secret key (the 32-byte seed).
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().fmt_short())
    }
}

/// The public identity of a node or client: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId([u8; NODE_ID_LEN]);

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_serde")] pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

mod sig_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        v.try_into()
            .map_err(|_| D::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

/// Why a key file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not 64 hex digits.
    #[error("key file {path} is not a 32-byte hex ed25519 seed")]
    Malformed {
        /// The file.
        path: String,
    },
    /// The file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file already exists (refusing to overwrite a key).
    #[error("key file {path} already exists")]
    Exists {
        /// The file.
        path: String,
    },
}

/// Why a node id string or bytes could not be parsed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// Not 64 hex digits.
    #[error("node id must be 64 hex digits")]
    Format,
    /// Not a valid ed25519 point.
    #[error("node id is not a valid ed25519 public key")]
    InvalidKey,
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("signature by {signer} does not verify")]
pub struct SignatureError {
    /// The claimed signer.
    pub signer: NodeId,
}

impl SecretKey {
    /// Generates a fresh key from the OS random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        // The OS RNG failing is unrecoverable; there is nothing sensible to return.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut seed).expect("OS random source unavailable");
        Self::from_bytes(&seed)
    }

    /// Builds a key from its 32-byte seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }

    /// The key as PKCS#8 v2 DER (for TLS).
    pub(crate) fn to_pkcs8_der(&self) -> Option<Vec<u8>> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        self.0.to_pkcs8_der().ok().map(|d| d.as_bytes().to_vec())
    }

    /// Loads a key file (see module docs).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let p = path.display().to_string();
        let io_err = |source| IdentityError::Io {
            path: p.clone(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::InsecurePermissions { path: p, mode });
            }
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| IdentityError::Malformed { path: p.clone() })?;
        Ok(Self::from_bytes(&seed))
    }

    /// Writes the key to a new file with mode `0600`; refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let p = path.display().to_string();
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                IdentityError::Exists { path: p.clone() }
            } else {
                IdentityError::Io {
                    path: p.clone(),
                    source,
                }
            }
        })?;
        let line = format!("{}\n", hex::encode(self.to_bytes()));
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|source| IdentityError::Io { path: p, source })
    }
}

impl NodeId {
    /// Builds a node id from raw bytes, checking that they are a valid ed25519 point.
    pub fn from_bytes(bytes: &[u8; NODE_ID_LEN]) -> Result<Self, ParseNodeIdError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| ParseNodeIdError::InvalidKey)?;
        Ok(Self(*bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// First 10 hex digits, for logs.
    pub fn fmt_short(&self) -> String {
        hex::encode(&self.0[..5])
    }

    /// Verifies `sig` over `msg` by this key (strict verification: no malleability).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let err = SignatureError { signer: *self };
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| err)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(msg, &sig).map_err(|_| err)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.fmt_short())
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; NODE_ID_LEN];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| ParseNodeIdError::Format)?;
        Self::from_bytes(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_0600() {
        let dir = std::env::temp_dir().join(format!("granary-id-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let path = dir.join("k");
        let _ = fs::remove_file(&path);
        let k = SecretKey::generate();
        k.save(&path).unwrap();
        assert!(matches!(k.save(&path), Err(IdentityError::Exists { .. })));
        let back = SecretKey::load(&path).unwrap();
        assert_eq!(back.public(), k.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                SecretKey::load(&path),
                Err(IdentityError::InsecurePermissions { mode: 0o644, .. })
            ));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn sign_verify_and_parse() {
        let k = SecretKey::from_bytes(&[7; 32]);
        let sig = k.sign(b"hello");
        k.public().verify(b"hello", &sig).unwrap();
        assert!(k.public().verify(b"hellO", &sig).is_err());
        let other = SecretKey::from_bytes(&[8; 32]).public();
        assert_eq!(
            other.verify(b"hello", &sig),
            Err(SignatureError { signer: other })
        );
        let s = k.public().to_string();
        assert_eq!(s.parse::<NodeId>().unwrap(), k.public());
        assert_eq!("zz".parse::<NodeId>(), Err(ParseNodeIdError::Format));
    }
}

/// A node's id and socket address, written `<64 hex id>@<ip:port>` (e.g. in CLI flags and
/// devnet files). The address says where to dial; the id is what the dialer pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The node's id.
    pub id: NodeId,
    /// Where it listens (UDP).
    pub addr: std::net::SocketAddr,
}

/// Why a `NodeAddr` string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeAddrError {
    /// No `@` separator.
    #[error("expected <node id>@<ip:port>")]
    Format,
    /// The id part is invalid.
    #[error("node id: {0}")]
    Id(#[from] ParseNodeIdError),
    /// The address part is invalid.
    #[error("address: {0}")]
    Addr(#[from] std::net::AddrParseError),
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl FromStr for NodeAddr {
    type Err = ParseNodeAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s.trim().split_once('@').ok_or(ParseNodeAddrError::Format)?;
        Ok(Self {
            id: id.parse()?,
            addr: addr.parse()?,
        })
    }
}

#[cfg(test)]
mod node_addr_tests {
    use super::*;

    #[test]
    fn node_addr_round_trips() {
        let id = SecretKey::from_bytes(&[5; 32]).public();
        let na = NodeAddr {
            id,
            addr: "127.0.0.1:7400".parse().unwrap(),
        };
        assert_eq!(na.to_string().parse::<NodeAddr>().unwrap(), na);
        let v6 = format!("{id}@[::1]:7400");
        assert_eq!(v6.parse::<NodeAddr>().unwrap().addr.port(), 7400);
        assert_eq!("nope".parse::<NodeAddr>(), Err(ParseNodeAddrError::Format));
        assert!(matches!(
            format!("{id}@nope").parse::<NodeAddr>(),
            Err(ParseNodeAddrError::Addr(_))
        ));
    }
}
