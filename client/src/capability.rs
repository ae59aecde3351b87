//! Capability strings: `granary:<dataset-id>#<key>` for private data, `granary:<dataset-id>`
//! for public data. Whoever holds the string can read the dataset.

use std::{fmt, str::FromStr};

use crate::ids::{DatasetId, DatasetKey, base32, parse_base32_32};

const SCHEME: &str = "granary:";

/// What a user keeps and shares to read a dataset.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability {
    /// The dataset's id (hash of its root record).
    pub id: DatasetId,
    /// The decryption key; `None` for public datasets.
    pub key: Option<DatasetKey>,
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability")
            .field("id", &self.id)
            .field("private", &self.key.is_some())
            .finish()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.id)?;
        if let Some(k) = &self.key {
            write!(f, "#{}", base32(k.as_bytes()))?;
        }
        Ok(())
    }
}

/// Why a capability string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapabilityError {
    /// It does not start with `granary:`.
    #[error("a capability starts with `granary:`")]
    Scheme,
    /// The dataset id is not 52 base32 characters.
    #[error("the dataset id in the capability is malformed (expected 52 base32 characters)")]
    Id,
    /// The key after `#` is not 52 base32 characters (truncated or mistyped).
    #[error(
        "the key in the capability is malformed or truncated (expected 52 base32 characters after '#')"
    )]
    Key,
}

impl FromStr for Capability {
    type Err = CapabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(SCHEME)
            .ok_or(CapabilityError::Scheme)?;
        let (id, key) = match rest.split_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (rest, None),
        };
        let id = DatasetId(parse_base32_32(id).ok_or(CapabilityError::Id)?);
        let key = match key {
            Some(k) => Some(DatasetKey::from_bytes(
                parse_base32_32(k).ok_or(CapabilityError::Key)?,
            )),
            None => None,
        };
        Ok(Self { id, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let cap = Capability {
            id: DatasetId(*blake3::hash(b"x").as_bytes()),
            key: Some(DatasetKey::generate()),
        };
        let text = cap.to_string();
        assert_eq!(text.parse::<Capability>().unwrap(), cap);
        assert_eq!(
            text[..text.len() - 1].parse::<Capability>(),
            Err(CapabilityError::Key)
        );
        assert_eq!(
            text.replace("granary:", "grnry:").parse::<Capability>(),
            Err(CapabilityError::Scheme)
        );
        let public = Capability { key: None, ..cap };
        assert_eq!(public.to_string().parse::<Capability>().unwrap(), public);
        assert_eq!(
            "granary:abc".parse::<Capability>(),
            Err(CapabilityError::Id)
        );
    }
}
