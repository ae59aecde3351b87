//! The rewards ledger: an append-only chain of entries, each signed by the auditor and naming
//! the hash of the one before, so that anyone holding a copy and the auditor's id can check that
//! nothing was changed, dropped, reordered or inserted, and recompute every reward from the audit
//! results it records (sans-IO: [`crate::state`] stores the entries in RocksDB).
//!
//! ```text
//! entry n  = { version, seq: n, prev: H(signed entry n-1), time_ms, record }
//! signed   = { body: postcard(entry), signature: ed25519(auditor, DOMAIN ‖ body) }
//! H(x)     = BLAKE3(postcard(x));  prev of entry 0 = BLAKE3("granary ledger genesis" ‖ auditor id)
//! ```

use std::{collections::BTreeMap, io};

use granary_protocol::{NodeId, SecretKey, Signature};
use serde::{Deserialize, Serialize};

/// Format version of [`Entry`].
pub const LEDGER_VERSION: u8 = 1;
/// Domain separation for entry signatures.
const DOMAIN: &[u8] = b"granary/ledger-entry/v1\0";
/// Largest encoded entry accepted when reading an export.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Bytes per GiB, the unit rewards are priced in.
const GIB: u128 = 1 << 30;

/// How rewards are computed; fixed in the ledger's first entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Seconds between epochs.
    pub epoch_secs: u64,
    /// Credits paid per GiB proven per epoch.
    pub reward_per_gib_epoch: u64,
    /// Challenged chunks per node per epoch.
    pub chunks: u32,
    /// Seal-proof openings per new unit.
    pub openings: u32,
    /// Challenge answer deadline.
    pub deadline_ms: u64,
}

pub use granary_client::audit::Verdict;

/// One node's audit in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The epoch.
    pub epoch: u64,
    /// The node.
    pub node: [u8; 32],
    /// The outcome.
    pub verdict: Verdict,
    /// Registered shards placed on the node.
    pub shards: u64,
    /// Of those, sealed and proven.
    pub sealed: u64,
    /// Of those, held but not sealed yet.
    pub pending: u64,
    /// Of those, acknowledged earlier and now gone.
    pub missing: u64,
    /// Of those, never acknowledged by the node (not held, not its fault).
    pub unacknowledged: u64,
    /// Bytes of the sealed shards (what the reward pays for).
    pub sealed_bytes: u64,
    /// Challenge round trip, ms.
    pub challenge_ms: Option<u32>,
    /// What went wrong, if anything.
    pub detail: Option<String>,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The first entry: whose ledger this is and the rules its rewards follow.
    Genesis {
        /// The auditor's id (the key every entry is signed with).
        auditor: NodeId,
        /// Reward rules.
        rules: Rules,
    },
    /// A dataset was registered by its owner (or its registration replaced).
    Registered {
        /// Dataset id.
        dataset: [u8; 32],
        /// Owner key.
        owner: NodeId,
        /// Nodes it is placed on.
        nodes: u32,
        /// Shards registered.
        shards: u64,
    },
    /// The owner withdrew a dataset from auditing.
    Withdrawn {
        /// Dataset id.
        dataset: [u8; 32],
        /// Owner key.
        owner: NodeId,
    },
    /// One node's audit result.
    Audit(AuditRecord),
    /// What one node earned in an epoch; follows its [`Record::Audit`].
    Reward {
        /// The epoch.
        epoch: u64,
        /// The node.
        node: [u8; 32],
        /// Credits.
        amount: u64,
    },
    /// The end of an epoch.
    EpochClosed {
        /// The epoch.
        epoch: u64,
        /// Nodes audited.
        nodes: u32,
        /// Credits paid in the epoch.
        paid: u64,
    },
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// [`LEDGER_VERSION`].
    pub version: u8,
    /// Position, from 0.
    pub seq: u64,
    /// Hash of the previous signed entry ([`genesis_prev`] for entry 0).
    pub prev: [u8; 32],
    /// When it was written (ms since the Unix epoch).
    pub time_ms: u64,
    /// What it records.
    pub record: Record,
}

/// An [`Entry`] as stored: its encoding and the auditor's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// postcard encoding of the [`Entry`].
    pub body: Vec<u8>,
    /// The auditor's signature over `DOMAIN ‖ body`.
    pub signature: Signature,
}

impl SignedEntry {
    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serialising to memory cannot fail")
    }

    /// Parses stored bytes (no checks beyond the format; see [`Verifier`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        postcard::from_bytes(bytes).map_err(|e| LedgerError::Malformed(e.to_string()))
    }

    /// The hash the next entry names as `prev`.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// The entry, decoded (not verified).
    pub fn entry(&self) -> Result<Entry, LedgerError> {
        postcard::from_bytes(&self.body).map_err(|e| LedgerError::Malformed(e.to_string()))
    }
}

/// `prev` of the first entry of `auditor`'s ledger.
pub fn genesis_prev(auditor: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"granary ledger genesis");
    h.update(auditor.as_bytes());
    *h.finalize().as_bytes()
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    [DOMAIN, body].concat()
}

/// The reward rule: a node that proved its sealed bytes in time (pass, or pending for what is
/// not sealed yet) earns `reward_per_gib_epoch` per GiB of them; late, failed and offline nodes
/// earn nothing for the epoch.
pub fn reward(rules: &Rules, verdict: Verdict, sealed_bytes: u64) -> u64 {
    match verdict {
        Verdict::Pass | Verdict::Pending => {
            let r = u128::from(sealed_bytes) * u128::from(rules.reward_per_gib_epoch) / GIB;
            u64::try_from(r).unwrap_or(u64::MAX)
        }
        Verdict::Late | Verdict::Fail | Verdict::Offline => 0,
    }
}

/// Why a ledger does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Bytes that are not an entry.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// An entry from a newer Granary.
    #[error("entry {seq}: format {version} is newer than this build understands")]
    Version {
        /// Position.
        seq: u64,
        /// Its version.
        version: u8,
    },
    /// The chain is broken at `seq`.
    #[error("entry {seq}: {why}")]
    Broken {
        /// Position.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// Reading an export failed.
    #[error("reading the ledger: {0}")]
    Io(#[from] io::Error),
}

fn broken(seq: u64, why: impl Into<String>) -> LedgerError {
    LedgerError::Broken {
        seq,
        why: why.into(),
    }
}

/// The writer's end of a chain: signs each new record onto the last entry.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Seq of the next entry.
    pub next_seq: u64,
    /// Hash of the last entry.
    pub prev: [u8; 32],
}

impl Chain {
    /// An empty ledger of `auditor`.
    pub fn new(auditor: &NodeId) -> Self {
        Self {
            next_seq: 0,
            prev: genesis_prev(auditor),
        }
    }

    /// Signs `record` as the next entry and advances.
    pub fn append(&mut self, key: &SecretKey, time_ms: u64, record: Record) -> SignedEntry {
        let entry = Entry {
            version: LEDGER_VERSION,
            seq: self.next_seq,
            prev: self.prev,
            time_ms,
            record,
        };
        let body = postcard::to_stdvec(&entry).expect("serialising to memory cannot fail");
        let signed = SignedEntry {
            signature: key.sign(&signed_bytes(&body)),
            body,
        };
        self.next_seq += 1;
        self.prev = signed.hash();
        signed
    }
}

/// Totals for one node over the whole ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeTotals {
    /// Epochs it was audited in.
    pub epochs: u64,
    /// Of those, with each verdict.
    pub pass: u64,
    /// Pending.
    pub pending: u64,
    /// Late.
    pub late: u64,
    /// Fail.
    pub fail: u64,
    /// Offline.
    pub offline: u64,
    /// Bytes proven in its latest audit.
    pub last_sealed_bytes: u64,
    /// Its latest verdict.
    pub last_verdict: Option<&'static str>,
    /// Credits earned in all.
    pub earned: u64,
}

/// What a verified ledger says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entries checked.
    pub entries: u64,
    /// Hash of the last entry (hex); what a copy must end with to be this ledger.
    pub head: String,
    /// Epochs closed.
    pub epochs: u64,
    /// Datasets registered and not withdrawn.
    pub datasets: u64,
    /// Credits paid in all.
    pub paid: u64,
    /// Per node (hex id), totals.
    pub nodes: BTreeMap<String, NodeTotals>,
}

/// Checks a ledger entry by entry: chain, signatures, and that every reward and epoch total is
/// what the rules give for the recorded audits.
#[derive(Debug)]
pub struct Verifier {
    auditor: NodeId,
    chain: Chain,
    rules: Option<Rules>,
    epoch: Option<u64>,
    /// Audits of the open epoch still owed their reward entry.
    owed: BTreeMap<[u8; 32], u64>,
    /// Nodes audited in the open epoch (each at most once).
    audited: std::collections::BTreeSet<[u8; 32]>,
    paid_in_epoch: u64,
    datasets: std::collections::BTreeSet<[u8; 32]>,
    summary: Summary,
}

impl Verifier {
    /// A verifier for `auditor`'s ledger.
    pub fn new(auditor: NodeId) -> Self {
        Self {
            chain: Chain::new(&auditor),
            auditor,
            rules: None,
            epoch: None,
            owed: BTreeMap::new(),
            audited: Default::default(),
            paid_in_epoch: 0,
            datasets: Default::default(),
            summary: Summary::default(),
        }
    }

    /// Checks the next entry.
    pub fn push(&mut self, signed: &SignedEntry) -> Result<Entry, LedgerError> {
        let seq = self.chain.next_seq;
        self.auditor
            .verify(&signed_bytes(&signed.body), &signed.signature)
            .map_err(|_| broken(seq, "signature is not the auditor's"))?;
        let version = signed.body.first().copied().unwrap_or(0);
        if version > LEDGER_VERSION {
            return Err(LedgerError::Version { seq, version });
        }
        let entry = signed.entry()?;
        if entry.seq != seq {
            return Err(broken(seq, format!("says it is entry {}", entry.seq)));
        }
        if entry.prev != self.chain.prev {
            return Err(broken(seq, "does not follow the previous entry"));
        }
        self.check_record(seq, &entry.record)?;
        self.chain.next_seq += 1;
        self.chain.prev = signed.hash();
        self.summary.entries += 1;
        Ok(entry)
    }

    fn check_record(&mut self, seq: u64, record: &Record) -> Result<(), LedgerError> {
        let rules = match (record, self.rules) {
            (Record::Genesis { auditor, rules }, None) if seq == 0 => {
                if *auditor != self.auditor {
                    return Err(broken(seq, "genesis names another auditor"));
                }
                self.rules = Some(*rules);
                return Ok(());
            }
            (Record::Genesis { .. }, _) => return Err(broken(seq, "a second genesis")),
            (_, None) => return Err(broken(seq, "the ledger does not start with its genesis")),
            (_, Some(r)) => r,
        };
        match record {
            Record::Genesis { .. } => unreachable!("handled above"),
            Record::Registered { dataset, .. } => {
                self.datasets.insert(*dataset);
            }
            Record::Withdrawn { dataset, .. } => {
                self.datasets.remove(dataset);
            }
            Record::Audit(a) => {
                self.open_epoch(seq, a.epoch)?;
                if !self.audited.insert(a.node) {
                    return Err(broken(seq, "a node audited twice in one epoch"));
                }
                self.owed
                    .insert(a.node, reward(&rules, a.verdict, a.sealed_bytes));
                let t = self.summary.nodes.entry(hex::encode(a.node)).or_default();
                t.epochs += 1;
                match a.verdict {
                    Verdict::Pass => t.pass += 1,
                    Verdict::Pending => t.pending += 1,
                    Verdict::Late => t.late += 1,
                    Verdict::Fail => t.fail += 1,
                    Verdict::Offline => t.offline += 1,
                }
                t.last_sealed_bytes = a.sealed_bytes;
                t.last_verdict = Some(a.verdict.name());
            }
            Record::Reward {
                epoch,
                node,
                amount,
            } => {
                self.open_epoch(seq, *epoch)?;
                let due = self
                    .owed
                    .remove(node)
                    .ok_or_else(|| broken(seq, "a reward without an audit"))?;
                if *amount != due {
                    return Err(broken(
                        seq,
                        format!("reward {amount}, but the rules give {due} for the audit"),
                    ));
                }
                self.paid_in_epoch += amount;
                self.summary.paid += amount;
                self.summary
                    .nodes
                    .entry(hex::encode(node))
                    .or_default()
                    .earned += amount;
            }
            Record::EpochClosed { epoch, nodes, paid } => {
                self.open_epoch(seq, *epoch)?;
                if !self.owed.is_empty() {
                    return Err(broken(seq, "epoch closed with audits not rewarded"));
                }
                if *paid != self.paid_in_epoch || *nodes as usize != self.audited.len() {
                    return Err(broken(seq, "epoch totals do not add up"));
                }
                self.epoch = None;
                self.audited.clear();
                self.paid_in_epoch = 0;
                self.summary.epochs += 1;
            }
        }
        Ok(())
    }

    /// Entries of epoch `e` may follow only entries of the same open epoch, or a closed one
    /// with a lower number.
    fn open_epoch(&mut self, seq: u64, e: u64) -> Result<(), LedgerError> {
        match self.epoch {
            Some(open) if open == e => Ok(()),
            Some(open) => Err(broken(seq, format!("epoch {e} inside open epoch {open}"))),
            None if e < self.summary.epochs => Err(broken(seq, format!("epoch {e} again"))),
            None => {
                self.epoch = Some(e);
                Ok(())
            }
        }
    }

    /// The totals, once every entry was pushed.
    /// The totals, once every entry was pushed. An epoch left open is an error: the auditor
    /// writes each epoch in one atomic batch, so a ledger never ends inside one.
    pub fn finish(mut self) -> Result<Summary, LedgerError> {
        if let Some(e) = self.epoch {
            return Err(broken(
                self.chain.next_seq,
                format!("the ledger ends inside epoch {e}"),
            ));
        }
        self.summary.head = hex::encode(self.chain.prev);
        self.summary.datasets = self.datasets.len() as u64;
        Ok(self.summary)
    }
}

/// Writes `entries` as an export: each entry's bytes after its length (u32, little-endian).
pub fn write_export(
    out: &mut impl io::Write,
    entries: impl IntoIterator<Item = SignedEntry>,
) -> io::Result<u64> {
    let mut n = 0;
    for e in entries {
        let b = e.to_bytes();
        out.write_all(&(b.len() as u32).to_le_bytes())?;
        out.write_all(&b)?;
        n += 1;
    }
    Ok(n)
}

/// Reads the next entry of an export; `None` at its end. A truncated or oversized entry is an
/// error.
pub fn read_export_entry(input: &mut impl io::Read) -> Result<Option<SignedEntry>, LedgerError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_ENTRY_BYTES {
        return Err(LedgerError::Malformed(format!(
            "an entry of {len} bytes (at most {MAX_ENTRY_BYTES})"
        )));
    }
    let mut b = vec![0u8; len];
    input
        .read_exact(&mut b)
        .map_err(|e| LedgerError::Malformed(format!("truncated entry: {e}")))?;
    SignedEntry::from_bytes(&b).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        epoch_secs: 60,
        reward_per_gib_epoch: 1000,
        chunks: 100,
        openings: 10,
        deadline_ms: 1000,
    };

    fn genesis(c: &mut Chain, key: &SecretKey) -> SignedEntry {
        c.append(
            key,
            1,
            Record::Genesis {
                auditor: key.public(),
                rules: RULES,
            },
        )
    }

    fn audit(epoch: u64, node: u8, verdict: Verdict, sealed_bytes: u64) -> Record {
        Record::Audit(AuditRecord {
            epoch,
            node: [node; 32],
            verdict,
            shards: 4,
            sealed: 4,
            pending: 0,
            missing: 0,
            unacknowledged: 0,
            sealed_bytes,
            challenge_ms: Some(20),
            detail: None,
        })
    }

    /// A ledger of two epochs over two nodes.
    fn sample(key: &SecretKey) -> Vec<SignedEntry> {
        let mut c = Chain::new(&key.public());
        let mut out = vec![genesis(&mut c, key)];
        out.push(c.append(
            key,
            2,
            Record::Registered {
                dataset: [7; 32],
                owner: SecretKey::from_bytes(&[5; 32]).public(),
                nodes: 2,
                shards: 8,
            },
        ));
        for epoch in 0..2 {
            let results = [(1, Verdict::Pass, 3u64 << 30), (2, Verdict::Fail, 0)];
            let mut paid = 0;
            for (node, v, bytes) in results {
                out.push(c.append(key, 3, audit(epoch, node, v, bytes)));
                let amount = reward(&RULES, v, bytes);
                paid += amount;
                out.push(c.append(
                    key,
                    3,
                    Record::Reward {
                        epoch,
                        node: [node; 32],
                        amount,
                    },
                ));
            }
            out.push(c.append(
                key,
                4,
                Record::EpochClosed {
                    epoch,
                    nodes: 2,
                    paid,
                },
            ));
        }
        out
    }

    fn verify(key: &NodeId, entries: &[SignedEntry]) -> Result<Summary, LedgerError> {
        let mut v = Verifier::new(*key);
        for e in entries {
            v.push(e)?;
        }
        v.finish()
    }

    #[test]
    fn rewards_follow_the_rule() {
        assert_eq!(reward(&RULES, Verdict::Pass, 1 << 30), 1000);
        assert_eq!(reward(&RULES, Verdict::Pending, 1 << 29), 500);
        for v in [Verdict::Late, Verdict::Fail, Verdict::Offline] {
            assert_eq!(reward(&RULES, v, 1 << 40), 0);
        }
        assert_eq!(
            reward(&RULES, Verdict::Pass, u64::MAX),
            u64::MAX / (1 << 30) * 1000 + 999
        );
    }

    #[test]
    fn an_honest_ledger_verifies_and_sums_up() {
        let key = SecretKey::from_bytes(&[1; 32]);
        let entries = sample(&key);
        let s = verify(&key.public(), &entries).unwrap();
        assert_eq!(s.entries, entries.len() as u64);
        assert_eq!(s.epochs, 2);
        assert_eq!(s.datasets, 1);
        assert_eq!(s.paid, 6000);
        let n1 = &s.nodes[&hex::encode([1u8; 32])];
        assert_eq!((n1.pass, n1.earned), (2, 6000));
        let n2 = &s.nodes[&hex::encode([2u8; 32])];
        assert_eq!((n2.fail, n2.earned), (2, 0));
        assert_eq!(s.head, hex::encode(entries.last().unwrap().hash()));
        // Export and read back.
        let mut buf = Vec::new();
        write_export(&mut buf, entries.clone()).unwrap();
        let mut r = &buf[..];
        let mut back = Vec::new();
        while let Some(e) = read_export_entry(&mut r).unwrap() {
            back.push(e);
        }
        assert_eq!(back, entries);
        // A truncated export is an error, not a shorter ledger.
        let mut r = &buf[..buf.len() - 3];
        let err = loop {
            match read_export_entry(&mut r) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("truncation not noticed"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn every_kind_of_tampering_is_caught() {
        let key = SecretKey::from_bytes(&[1; 32]);
        let id = key.public();
        let entries = sample(&key);
        // Any flipped bit in any stored entry.
        for i in 0..entries.len() {
            let bytes = entries[i].to_bytes();
            for bit in (0..bytes.len() * 8).step_by(7) {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let mut copy = entries.clone();
                match SignedEntry::from_bytes(&b) {
                    Ok(e) => copy[i] = e,
                    Err(_) => continue,
                }
                assert!(
                    verify(&id, &copy).is_err(),
                    "flip of bit {bit} in entry {i}"
                );
            }
        }
        // A dropped, a swapped, a duplicated entry.
        for i in 1..entries.len() {
            let mut dropped = entries.clone();
            dropped.remove(i);
            // The last one too: the sample ends with an epoch's close.
            assert!(verify(&id, &dropped).is_err(), "entry {i} dropped");
            let mut swapped = entries.clone();
            swapped.swap(i - 1, i);
            assert!(verify(&id, &swapped).is_err(), "entries {i} swapped");
            let mut dup = entries.clone();
            dup.insert(i, entries[i].clone());
            assert!(verify(&id, &dup).is_err(), "entry {i} duplicated");
        }
        // Cut inside an epoch (a prefix ending between an audit and its epoch's close).
        assert!(
            verify(&id, &entries[..3]).is_err(),
            "an open epoch at the end"
        );
        // Another auditor's key, even with a well-formed chain.
        let other = SecretKey::from_bytes(&[2; 32]);
        assert!(verify(&id, &sample(&other)).is_err());
        assert!(verify(&other.public(), &entries).is_err());
    }

    #[test]
    fn the_auditor_cannot_pay_what_the_rules_do_not_give() {
        // A correctly signed and chained ledger whose reward disagrees with its audit.
        let key = SecretKey::from_bytes(&[1; 32]);
        let mut c = Chain::new(&key.public());
        let entries = vec![
            genesis(&mut c, &key),
            c.append(&key, 2, audit(0, 9, Verdict::Fail, 1 << 30)),
            c.append(
                &key,
                2,
                Record::Reward {
                    epoch: 0,
                    node: [9; 32],
                    amount: 1000,
                },
            ),
        ];
        let err = verify(&key.public(), &entries).unwrap_err();
        assert!(err.to_string().contains("rules give 0"), "{err}");
        // Or that closes an epoch with an audit unpaid.
        let mut c = Chain::new(&key.public());
        let entries = vec![
            genesis(&mut c, &key),
            c.append(&key, 2, audit(0, 9, Verdict::Pass, 1 << 30)),
            c.append(
                &key,
                2,
                Record::EpochClosed {
                    epoch: 0,
                    nodes: 1,
                    paid: 0,
                },
            ),
        ];
        assert!(verify(&key.public(), &entries).is_err());
    }
}
