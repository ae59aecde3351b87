//! Wire-format tests: a hexdump snapshot of every message (changing one is a protocol change)
//! and proptest round trips with `encoded_len` checks.

use proptest::prelude::*;

use crate::{
    frame::{HEADER_LEN, MAX_FRAME},
    identity::{NodeId, SecretKey, Signature},
    message::*,
};

fn key(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

fn fresh() -> Freshness {
    Freshness {
        timestamp_ms: 1_700_000_000_000,
        nonce: [0xaa; 16],
    }
}

/// One deterministic instance of every message type.
pub(crate) fn samples() -> Vec<Message> {
    vec![
        Message::Error(ErrorMsg::new(crate::ErrorCode::NotFound, "no")),
        Message::NodeInfo(NodeInfoRequest),
        Message::NodeInfoOk(NodeInfo {
            id: key(1),
            version: "0.1.0".into(),
            capacity: 1 << 30,
            free: 1000,
            used: 24,
            label: "z1".into(),
            shard_count: 2,
        }),
        Message::StoreShard(StoreShard {
            shard_id: ShardId([0x11; 32]),
            size: 300,
            owner: key(2),
            tag: [0x77; 32],
            node: key(1),
            freshness: fresh(),
            signature: Signature([0x55; 64]),
        }),
        Message::StoreShardOk(StoreShardOk {
            outcome: StoreOutcome::AlreadyHeld,
        }),
        Message::FetchRange(FetchRange {
            shard_id: ShardId([0x22; 32]),
            start: 5,
            end: 200,
        }),
        Message::FetchRangeOk(FetchRangeOk {
            size: 1000,
            end: 200,
            encoded_len: 195,
        }),
        Message::HasShards(HasShards {
            ids: vec![ShardId([1; 32]), ShardId([2; 32])],
        }),
        Message::HasShardsOk(HasShardsOk {
            bitmap: pack_bits(&[true, false, true]),
        }),
        Message::DeleteShards(DeleteShards {
            ids: vec![ShardId([3; 32])],
            owner: key(2),
            tag: [0x78; 32],
            node: key(1),
            freshness: fresh(),
            signature: Signature([0x66; 64]),
        }),
        Message::DeleteShardsOk(DeleteShardsOk {
            outcomes: vec![
                DeleteOutcome::Deleted,
                DeleteOutcome::Released,
                DeleteOutcome::NotOwner,
            ],
        }),
        Message::Challenge(ChallengeRequest {
            seed: [0x12; 32],
            units: vec![[0x13; 32]],
            chunks: 1000,
        }),
        Message::ChallengeOk(ChallengeOk {
            proof_len: 1_500_000,
        }),
        Message::SealProof(SealProofRequest {
            comm_r: [0x14; 32],
            seed: [0x15; 32],
            openings: 271,
        }),
        Message::SealProofOk(SealProofOk {
            proof_len: 4_000_000,
        }),
        Message::SealInfo(SealInfo {
            ids: vec![ShardId([4; 32])],
        }),
        Message::SealInfoOk(SealInfoOk { body_len: 2048 }),
        Message::TagShards(TagShards {
            ids: vec![ShardId([5; 32])],
            owner: key(2),
            tag: [0x79; 32],
            node: key(1),
            freshness: fresh(),
            signature: Signature([0x67; 64]),
        }),
        Message::TagShardsOk(TagShardsOk {
            outcomes: vec![TagOutcome::Tagged, TagOutcome::NotHeld],
        }),
    ]
}

/// Snapshot of `samples()`: frame header, then body (hex), one per line.
const SNAPSHOT: &str = include_str!("wire_snapshot.txt");

fn render() -> String {
    let mut out = String::new();
    for m in samples() {
        let f = m.to_frame().unwrap();
        out.push_str(&format!(
            "{:?}: {} | {}\n",
            m.msg_type(),
            hex::encode(&f[..HEADER_LEN]),
            hex::encode(&f[HEADER_LEN..])
        ));
    }
    out
}

#[test]
fn hexdump_snapshot() {
    let got = render();
    if std::env::var_os("GRANARY_UPDATE_SNAPSHOT").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/src/wire_snapshot.txt"),
            &got,
        )
        .unwrap();
    }
    assert_eq!(
        got, SNAPSHOT,
        "wire format changed; if intended, bump PROTOCOL_VERSION and re-run with GRANARY_UPDATE_SNAPSHOT=1"
    );
}

#[test]
fn samples_round_trip() {
    for m in samples() {
        let f = m.to_frame().unwrap();
        assert_eq!(f.len(), m.encoded_len().unwrap());
        assert_eq!(
            Message::decode_frame(&f).unwrap(),
            Some((m.clone(), f.len()))
        );
        // Every strict prefix asks for more bytes, never errors or panics.
        for cut in 0..f.len() {
            assert_eq!(
                Message::decode_frame(&f[..cut]).unwrap(),
                None,
                "{m:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn oversized_messages_are_refused_by_the_encoder() {
    let m = Message::Error(ErrorMsg {
        code: 1,
        detail: "x".repeat(MAX_FRAME as usize),
    });
    assert!(matches!(m.to_frame(), Err(EncodeError::TooLarge { .. })));
}

fn arb_id() -> impl Strategy<Value = ShardId> {
    any::<[u8; 32]>().prop_map(ShardId)
}

fn arb_node() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(|s| SecretKey::from_bytes(&s).public())
}

fn arb_fresh() -> impl Strategy<Value = Freshness> {
    (any::<u64>(), any::<[u8; 16]>()).prop_map(|(timestamp_ms, nonce)| Freshness {
        timestamp_ms,
        nonce,
    })
}

fn arb_sig() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let ids = || proptest::collection::vec(arb_id(), 0..50);
    prop_oneof![
        (any::<u16>(), "[a-z ]{0,100}")
            .prop_map(|(code, detail)| Message::Error(ErrorMsg { code, detail })),
        Just(Message::NodeInfo(NodeInfoRequest)),
        (
            arb_node(),
            any::<[u64; 4]>(),
            "[a-z0-9.]{0,20}",
            "[a-z0-9/-]{0,40}"
        )
            .prop_map(|(id, n, version, label)| {
                Message::NodeInfoOk(NodeInfo {
                    id,
                    version,
                    capacity: n[0],
                    free: n[1],
                    used: n[2],
                    label,
                    shard_count: n[3],
                })
            }),
        (
            arb_id(),
            0..=MAX_SHARD_SIZE,
            arb_node(),
            arb_node(),
            arb_fresh(),
            arb_sig()
        )
            .prop_map(|(shard_id, size, owner, node, freshness, signature)| {
                Message::StoreShard(StoreShard {
                    shard_id,
                    size,
                    owner,
                    tag: *owner.as_bytes(),
                    node,
                    freshness,
                    signature,
                })
            }),
        any::<bool>().prop_map(|b| Message::StoreShardOk(StoreShardOk {
            outcome: if b {
                StoreOutcome::Stored
            } else {
                StoreOutcome::AlreadyHeld
            }
        })),
        (arb_id(), any::<u64>(), any::<u64>()).prop_map(|(shard_id, start, end)| {
            Message::FetchRange(FetchRange {
                shard_id,
                start,
                end,
            })
        }),
        any::<[u64; 3]>().prop_map(|n| Message::FetchRangeOk(FetchRangeOk {
            size: n[0],
            end: n[1],
            encoded_len: n[2]
        })),
        ids().prop_map(|ids| Message::HasShards(HasShards { ids })),
        proptest::collection::vec(any::<bool>(), 0..100).prop_map(|b| Message::HasShardsOk(
            HasShardsOk {
                bitmap: pack_bits(&b)
            }
        )),
        (ids(), arb_node(), arb_node(), arb_fresh(), arb_sig()).prop_map(
            |(ids, owner, node, freshness, signature)| {
                Message::DeleteShards(DeleteShards {
                    ids,
                    owner,
                    tag: *node.as_bytes(),
                    node,
                    freshness,
                    signature,
                })
            }
        ),
        proptest::collection::vec(0u8..3, 0..100).prop_map(|v| Message::DeleteShardsOk(
            DeleteShardsOk {
                outcomes: v
                    .into_iter()
                    .map(|o| match o {
                        0 => DeleteOutcome::Deleted,
                        1 => DeleteOutcome::Released,
                        _ => DeleteOutcome::NotOwner,
                    })
                    .collect()
            }
        )),
    ]
}

proptest! {
    #[test]
    fn any_message_round_trips(m in arb_message()) {
        let f = m.to_frame().unwrap();
        prop_assert_eq!(f.len(), m.encoded_len().unwrap());
        prop_assert_eq!(Message::decode_frame(&f).unwrap(), Some((m.clone(), f.len())));
        // Followed by more bytes (a raw body), the frame still decodes on its own.
        let mut more = f.clone();
        more.extend_from_slice(&[1, 2, 3]);
        prop_assert_eq!(Message::decode_frame(&more).unwrap(), Some((m, f.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode_frame(&bytes);
    }

    #[test]
    fn bits_round_trip(b in proptest::collection::vec(any::<bool>(), 0..200)) {
        prop_assert_eq!(unpack_bits(&pack_bits(&b), b.len()), Some(b.clone()));
        prop_assert_eq!(unpack_bits(&pack_bits(&b), b.len() + 8), None);
    }
}
