//! The conformance suite every [`Store`] implementation must pass.

use granary_protocol::{NodeId, SecretKey, ShardId};

use super::{AddOutcome, OwnerUsage, Quota, RemoveOutcome, ShardRecord, Store, StoreError, Usage};

/// The tag of the untagged part of the suite.
const T: [u8; 32] = [0xee; 32];

fn owner(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

/// Runs every check against an empty store.
#[allow(clippy::unwrap_used)]
pub(crate) fn run(s: &dyn Store) {
    let q = Quota {
        capacity: 1000,
        per_owner: 600,
    };
    let (a, b, c) = (owner(1), owner(2), owner(3));
    let (x, y, z) = (ShardId([1; 32]), ShardId([2; 32]), ShardId([3; 32]));

    assert_eq!(s.usage().unwrap(), Usage::default());
    assert_eq!(
        s.add_reference(&x, 300, &a, &T, &q).unwrap(),
        AddOutcome::NewShard
    );
    assert_eq!(
        s.add_reference(&x, 300, &a, &T, &q).unwrap(),
        AddOutcome::AlreadyReferenced
    );
    assert_eq!(
        s.add_reference(&x, 300, &b, &T, &q).unwrap(),
        AddOutcome::NewReference
    );
    assert!(matches!(
        s.add_reference(&x, 301, &b, &T, &q),
        Err(StoreError::SizeConflict { .. })
    ));
    assert_eq!(
        s.shard(&x).unwrap(),
        Some(ShardRecord {
            size: 300,
            refs: 2,
            outboard_indexed: false
        })
    );
    assert_eq!(
        s.usage().unwrap(),
        Usage {
            used: 300,
            shards: 1
        }
    );
    assert_eq!(
        s.owner_usage(&a).unwrap(),
        OwnerUsage {
            bytes: 300,
            shards: 1
        }
    );
    assert!(s.is_referenced_by(&x, &b).unwrap());

    // Owner quota: a has 300 of 600.
    assert!(matches!(
        s.add_reference(&y, 301, &a, &T, &q),
        Err(StoreError::OwnerQuota { .. })
    ));
    assert_eq!(
        s.add_reference(&y, 300, &a, &T, &q).unwrap(),
        AddOutcome::NewShard
    );
    // Node capacity: 600 of 1000 used.
    assert!(matches!(
        s.add_reference(&z, 401, &c, &T, &q),
        Err(StoreError::NodeQuota { .. })
    ));
    assert_eq!(
        s.shard(&z).unwrap(),
        None,
        "refused add leaves nothing behind"
    );
    assert_eq!(s.has(&[x, y, z]).unwrap(), vec![true, true, false]);

    // Deletes: only owners' references count.
    assert_eq!(
        s.remove_reference(&y, &b, &T).unwrap(),
        RemoveOutcome::NotOwner
    );
    assert_eq!(
        s.remove_reference(&x, &a, &T).unwrap(),
        RemoveOutcome::Released
    );
    assert_eq!(
        s.remove_reference(&x, &a, &T).unwrap(),
        RemoveOutcome::NotOwner
    );
    assert_eq!(
        s.remove_reference(&x, &b, &T).unwrap(),
        RemoveOutcome::LastReference
    );
    assert_eq!(s.shard(&x).unwrap(), None);
    assert_eq!(
        s.usage().unwrap(),
        Usage {
            used: 300,
            shards: 1
        }
    );
    assert_eq!(s.owner_usage(&b).unwrap(), OwnerUsage::default());
    assert_eq!(
        s.owners().unwrap(),
        vec![(
            a,
            OwnerUsage {
                bytes: 300,
                shards: 1
            }
        )]
    );

    // Quarantine drops every reference.
    s.add_reference(&y, 300, &b, &T, &q).unwrap();
    assert_eq!(
        s.drop_shard(&y).unwrap(),
        Some(ShardRecord {
            size: 300,
            refs: 2,
            outboard_indexed: false
        })
    );
    assert_eq!(s.usage().unwrap(), Usage::default());
    assert_eq!(s.owner_usage(&a).unwrap(), OwnerUsage::default());
    assert_eq!(s.shards().unwrap(), vec![]);

    // Nonces.
    assert!(s.remember_nonce(&a, &[7; 16], 100).unwrap());
    assert!(!s.remember_nonce(&a, &[7; 16], 100).unwrap());
    assert!(s.remember_nonce(&b, &[7; 16], 200).unwrap());
    assert_eq!(s.expire_nonces(150).unwrap(), 1);
    assert!(s.remember_nonce(&a, &[7; 16], 300).unwrap());

    // Sealed units and placements.
    let (u1, u2) = ([1u8; 32], [2u8; 32]);
    let (m1, m2, m3) = (ShardId([11; 32]), ShardId([12; 32]), ShardId([13; 32]));
    s.put_unit(&u1, b"one", &[m1, m2]).unwrap();
    s.put_unit(&u2, b"two", &[m3]).unwrap();
    assert_eq!(s.unit(&u1).unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.units().unwrap().len(), 2);
    assert_eq!(s.placement(&m2).unwrap(), Some(u1));
    assert_eq!(s.placement(&ShardId([14; 32])).unwrap(), None);
    // m2 re-sealed into u2 later: removing u1 must not drop m2's newer placement.
    s.put_unit(&u2, b"two", &[m3, m2]).unwrap();
    s.remove_unit(&u1, &[m1, m2]).unwrap();
    assert_eq!(s.unit(&u1).unwrap(), None);
    assert_eq!(s.placement(&m1).unwrap(), None);
    assert_eq!(s.placement(&m2).unwrap(), Some(u2));
    assert_eq!(s.placements().unwrap(), vec![(m2, u2), (m3, u2)]);

    // Tags: an owner holds a shard once per tag; its hold (and quota charge) ends with the last.
    let (t1, t2) = ([1u8; 32], [2u8; 32]);
    let w = ShardId([21; 32]);
    let q = Quota {
        capacity: 1 << 20,
        per_owner: 1 << 20,
    };
    let before = s.owner_usage(&a).unwrap();
    assert_eq!(
        s.add_reference(&w, 500, &a, &t1, &q).unwrap(),
        AddOutcome::NewShard
    );
    assert_eq!(
        s.add_reference(&w, 500, &a, &t2, &q).unwrap(),
        AddOutcome::AlreadyReferenced
    );
    assert_eq!(
        s.owner_usage(&a).unwrap().bytes,
        before.bytes + 500,
        "charged once"
    );
    assert_eq!(
        s.remove_reference(&w, &a, &t1).unwrap(),
        RemoveOutcome::StillTagged
    );
    assert_eq!(
        s.remove_reference(&w, &a, &t1).unwrap(),
        RemoveOutcome::StillTagged,
        "an absent tag releases nothing while another remains"
    );
    assert!(s.shard(&w).unwrap().is_some());
    assert_eq!(
        s.remove_reference(&w, &a, &t2).unwrap(),
        RemoveOutcome::LastReference
    );
    assert_eq!(s.shard(&w).unwrap(), None);
    assert_eq!(s.owner_usage(&a).unwrap(), before);
    // Quarantine drops every tag: a re-stored shard starts clean.
    s.add_reference(&w, 500, &a, &t1, &q).unwrap();
    s.drop_shard(&w).unwrap();
    s.add_reference(&w, 500, &a, &t2, &q).unwrap();
    assert_eq!(
        s.remove_reference(&w, &a, &t2).unwrap(),
        RemoveOutcome::LastReference
    );

    // The outboard travels with the index entry: stored when the shard is first indexed, kept
    // by further references, forgotten with the last one and on quarantine.
    let (d, e) = (owner(7), owner(8));
    let v = ShardId([0x0b; 32]);
    let flagged = |s: &dyn Store| s.shard(&v).unwrap().map(|r| r.outboard_indexed);
    s.add_shard(&v, 10, &d, &T, &q, Some(b"first")).unwrap();
    assert_eq!(s.outboard(&v).unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(
        flagged(s),
        Some(true),
        "the record says its outboard is indexed"
    );
    s.add_shard(&v, 10, &e, &T, &q, Some(b"second")).unwrap();
    assert_eq!(
        s.outboard(&v).unwrap().as_deref(),
        Some(&b"first"[..]),
        "an indexed shard keeps its outboard"
    );
    assert_eq!(flagged(s), Some(true), "and its flag");
    s.remove_reference(&v, &d, &T).unwrap();
    assert!(s.outboard(&v).unwrap().is_some(), "e still holds it");
    assert_eq!(
        s.remove_reference(&v, &e, &T).unwrap(),
        RemoveOutcome::LastReference
    );
    assert_eq!(s.outboard(&v).unwrap(), None);
    s.add_shard(&v, 10, &d, &T, &q, Some(b"again")).unwrap();
    s.drop_shard(&v).unwrap();
    assert_eq!(s.outboard(&v).unwrap(), None);
    // Indexed by a plain reference: no outboard here, and a later store with one keeps it so.
    s.add_reference(&v, 10, &d, &T, &q).unwrap();
    assert_eq!(s.outboard(&v).unwrap(), None);
    s.add_shard(&v, 10, &e, &T, &q, Some(b"late")).unwrap();
    assert_eq!(s.outboard(&v).unwrap(), None);
    assert_eq!(flagged(s), Some(false));
    s.drop_shard(&v).unwrap();
}
