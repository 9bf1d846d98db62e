//! Small records a group keeps in the bucket: its identity, its nodes' claims, and the manifests
//! naming its index runs. Each is framed the same way:
//!
//! ```text
//! magic [8], version u16, body, crc32c u32 of everything before it
//! ```
//!
//! with these bodies (version 1; all integers little-endian, ids as in `folio_core`, a group id
//! as its u64):
//!
//! ```text
//! "FOLIOMAN" manifest   group u64, incarnation u128, seq u64, through [16], created_ms u64,
//!                       run count u32, then per run (newest first): seq u64, nonce u64,
//!                       first [16], last [16], entries u64, bytes u64
//! "FOLIOIDN" identity   group u64, incarnation u128, created_ms u64, created_by u64
//! "FOLIONOD" node claim group u64, node u64, incarnation u128, created_ms u64
//! ```
//!
//! Encoding is deterministic. Decoding checks the checksum first, then the magic (a record of
//! another kind fails there), the version and every count before allocating for it.

use bytes::{BufMut, Bytes, BytesMut};
use folio_core::{GroupId, SegmentId};

/// The version written and read.
pub const RECORD_VERSION: u16 = 1;
/// Runs in one manifest.
pub const MAX_RUNS: usize = 100_000;

const MANIFEST_MAGIC: &[u8; 8] = b"FOLIOMAN";
const IDENTITY_MAGIC: &[u8; 8] = b"FOLIOIDN";
const NODE_CLAIM_MAGIC: &[u8; 8] = b"FOLIONOD";
/// Magic, version and checksum.
const FRAME_LEN: usize = 8 + 2 + 4;
/// One run in a manifest.
const RUN_LEN: usize = 8 + 8 + 16 + 16 + 8 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{0} record is truncated")]
    Truncated(&'static str),
    #[error("{0} record checksum mismatch")]
    Checksum(&'static str),
    #[error("bad magic: not a {0} record")]
    Magic(&'static str),
    #[error("unknown {kind} record version {version} (this build reads version {RECORD_VERSION})")]
    Version { kind: &'static str, version: u16 },
    #[error("{kind} record is invalid: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

/// A version of a group's index: the runs that together hold the index and commit records of
/// every segment up to `through`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub group: GroupId,
    pub incarnation: u128,
    pub seq: u64,
    pub through: SegmentId,
    pub created_ms: u64,
    /// Newest first; at most [`MAX_RUNS`].
    pub runs: Vec<RunRef>,
}

/// One index run a manifest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRef {
    /// With `nonce`, names the run's object.
    pub seq: u64,
    pub nonce: u64,
    /// The run covers the commits of segments `first..=last`.
    pub first: SegmentId,
    pub last: SegmentId,
    pub entries: u64,
    pub bytes: u64,
}

/// Who a group is: written once when the group is created; `incarnation` tells a re-created group
/// from an earlier one of the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub group: GroupId,
    pub incarnation: u128,
    pub created_ms: u64,
    pub created_by: u64,
}

/// A node's claim to its id within an incarnation of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClaim {
    pub group: GroupId,
    pub node: u64,
    pub incarnation: u128,
    pub created_ms: u64,
}

impl Manifest {
    const KIND: &'static str = "manifest";

    /// # Panics
    ///
    /// If it names more than [`MAX_RUNS`] runs: no decoder would accept the record, so this is
    /// caught here rather than as an unreadable manifest in the bucket.
    pub fn encode(&self) -> Bytes {
        assert!(
            self.runs.len() <= MAX_RUNS,
            "manifest names {} runs, more than {MAX_RUNS}",
            self.runs.len()
        );
        frame(
            MANIFEST_MAGIC,
            8 + 16 + 8 + 16 + 8 + 4 + self.runs.len() * RUN_LEN,
            |b| {
                b.put_u64_le(self.group.0);
                b.put_u128_le(self.incarnation);
                b.put_u64_le(self.seq);
                b.put_slice(self.through.as_bytes());
                b.put_u64_le(self.created_ms);
                b.put_u32_le(self.runs.len() as u32);
                for r in &self.runs {
                    b.put_u64_le(r.seq);
                    b.put_u64_le(r.nonce);
                    b.put_slice(r.first.as_bytes());
                    b.put_slice(r.last.as_bytes());
                    b.put_u64_le(r.entries);
                    b.put_u64_le(r.bytes);
                }
            },
        )
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, RecordError> {
        let mut r = unframe(MANIFEST_MAGIC, Self::KIND, bytes)?;
        let group = GroupId(r.u64()?);
        let incarnation = r.u128()?;
        let seq = r.u64()?;
        let through = r.segment()?;
        let created_ms = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_RUNS || count > r.rest.len() / RUN_LEN {
            return Err(r.invalid(format!(
                "{count} runs: more than {MAX_RUNS} or than {} bytes hold",
                r.rest.len()
            )));
        }
        let mut runs = Vec::with_capacity(count);
        for i in 0..count {
            let run = RunRef {
                seq: r.u64()?,
                nonce: r.u64()?,
                first: r.segment()?,
                last: r.segment()?,
                entries: r.u64()?,
                bytes: r.u64()?,
            };
            if run.first > run.last {
                return Err(r.invalid(format!("run {i} starts after it ends")));
            }
            runs.push(run);
        }
        r.finish()?;
        Ok(Manifest {
            group,
            incarnation,
            seq,
            through,
            created_ms,
            runs,
        })
    }
}

impl Identity {
    const KIND: &'static str = "identity";

    pub fn encode(&self) -> Bytes {
        frame(IDENTITY_MAGIC, 8 + 16 + 8 + 8, |b| {
            b.put_u64_le(self.group.0);
            b.put_u128_le(self.incarnation);
            b.put_u64_le(self.created_ms);
            b.put_u64_le(self.created_by);
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Identity, RecordError> {
        let mut r = unframe(IDENTITY_MAGIC, Self::KIND, bytes)?;
        let id = Identity {
            group: GroupId(r.u64()?),
            incarnation: r.u128()?,
            created_ms: r.u64()?,
            created_by: r.u64()?,
        };
        r.finish()?;
        Ok(id)
    }
}

impl NodeClaim {
    const KIND: &'static str = "node claim";

    pub fn encode(&self) -> Bytes {
        frame(NODE_CLAIM_MAGIC, 8 + 8 + 16 + 8, |b| {
            b.put_u64_le(self.group.0);
            b.put_u64_le(self.node);
            b.put_u128_le(self.incarnation);
            b.put_u64_le(self.created_ms);
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeClaim, RecordError> {
        let mut r = unframe(NODE_CLAIM_MAGIC, Self::KIND, bytes)?;
        let claim = NodeClaim {
            group: GroupId(r.u64()?),
            node: r.u64()?,
            incarnation: r.u128()?,
            created_ms: r.u64()?,
        };
        r.finish()?;
        Ok(claim)
    }
}

/// Frames the body `write` puts (`body_len` bytes) with magic, version and checksum.
fn frame(magic: &[u8; 8], body_len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(FRAME_LEN + body_len);
    b.put_slice(magic);
    b.put_u16_le(RECORD_VERSION);
    write(&mut b);
    debug_assert_eq!(b.len(), 8 + 2 + body_len);
    let crc = crc32c::crc32c(&b);
    b.put_u32_le(crc);
    b.freeze()
}

/// Checks a record's frame and returns a reader over its body.
fn unframe<'a>(
    magic: &[u8; 8],
    kind: &'static str,
    bytes: &'a [u8],
) -> Result<Body<'a>, RecordError> {
    let Some(crc_at) = bytes.len().checked_sub(4).filter(|&n| n >= 8 + 2) else {
        return Err(RecordError::Truncated(kind));
    };
    let crc = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..crc_at]) != crc {
        return Err(RecordError::Checksum(kind));
    }
    if &bytes[..8] != magic {
        return Err(RecordError::Magic(kind));
    }
    let version = u16::from_le_bytes(bytes[8..10].try_into().expect("2 bytes"));
    if version != RECORD_VERSION {
        return Err(RecordError::Version { kind, version });
    }
    Ok(Body {
        kind,
        rest: &bytes[10..crc_at],
    })
}

/// Reads little-endian fields off the front of a record's body.
struct Body<'a> {
    kind: &'static str,
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(RecordError::Truncated(self.kind));
        };
        self.rest = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        self.array().map(u64::from_le_bytes)
    }

    fn u128(&mut self) -> Result<u128, RecordError> {
        self.array().map(u128::from_le_bytes)
    }

    fn segment(&mut self) -> Result<SegmentId, RecordError> {
        let b: [u8; 16] = self.array()?;
        Ok(SegmentId::from_slice(&b).expect("16 bytes"))
    }

    fn invalid(&self, reason: String) -> RecordError {
        RecordError::Invalid {
            kind: self.kind,
            reason,
        }
    }

    /// Fails if any of the body is left unread.
    fn finish(self) -> Result<(), RecordError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(format!("{} bytes after the body", self.rest.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u32) -> SegmentId {
        SegmentId::new(1_700_000_000_000 + u64::from(n), GroupId(3), n)
    }

    fn manifest(runs: usize) -> Manifest {
        Manifest {
            group: GroupId(3),
            incarnation: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            seq: 42,
            through: seg(90),
            created_ms: 1_700_000_000_123,
            runs: (0..runs as u32)
                .map(|i| RunRef {
                    seq: 40 - u64::from(i),
                    nonce: 0xdead_beef ^ u64::from(i),
                    first: seg(80 - 10 * i),
                    last: seg(89 - 10 * i),
                    entries: 1000 + u64::from(i),
                    bytes: 1 << 20,
                })
                .collect(),
        }
    }

    fn identity() -> Identity {
        Identity {
            group: GroupId(3),
            incarnation: u128::MAX - 5,
            created_ms: 1_700_000_000_000,
            created_by: 2,
        }
    }

    fn claim() -> NodeClaim {
        NodeClaim {
            group: GroupId(3),
            node: 7,
            incarnation: 99,
            created_ms: 1_700_000_000_001,
        }
    }

    type Decode = fn(&[u8]) -> Result<(), RecordError>;

    fn decode_manifest(b: &[u8]) -> Result<(), RecordError> {
        Manifest::decode(b).map(drop)
    }

    fn decode_identity(b: &[u8]) -> Result<(), RecordError> {
        Identity::decode(b).map(drop)
    }

    fn decode_claim(b: &[u8]) -> Result<(), RecordError> {
        NodeClaim::decode(b).map(drop)
    }

    /// Every record kind, encoded, with its decoder.
    fn all() -> Vec<(Bytes, Decode)> {
        vec![
            (manifest(3).encode(), decode_manifest),
            (manifest(0).encode(), decode_manifest),
            (identity().encode(), decode_identity),
            (claim().encode(), decode_claim),
        ]
    }

    /// Recomputes a record's checksum after editing it.
    fn reseal(mut b: Vec<u8>) -> Vec<u8> {
        let at = b.len() - 4;
        let crc = crc32c::crc32c(&b[..at]);
        b[at..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn records_round_trip_deterministically() {
        for m in [manifest(0), manifest(1), manifest(5)] {
            let b = m.encode();
            assert_eq!(b, m.encode());
            assert_eq!(Manifest::decode(&b).unwrap(), m);
        }
        assert_eq!(Identity::decode(&identity().encode()).unwrap(), identity());
        assert_eq!(NodeClaim::decode(&claim().encode()).unwrap(), claim());
    }

    #[test]
    fn records_have_the_documented_layout() {
        let b = claim().encode();
        assert_eq!(b.len(), FRAME_LEN + 8 + 8 + 16 + 8);
        assert_eq!(&b[..8], b"FOLIONOD");
        assert_eq!(&b[8..10], &1u16.to_le_bytes());
        assert_eq!(&b[10..18], &3u64.to_le_bytes());
        assert_eq!(&b[18..26], &7u64.to_le_bytes());
        assert_eq!(&b[26..42], &99u128.to_le_bytes());
        assert_eq!(&b[42..50], &1_700_000_000_001u64.to_le_bytes());
        assert_eq!(&b[50..], &crc32c::crc32c(&b[..50]).to_le_bytes());

        let m = manifest(2);
        let b = m.encode();
        assert_eq!(b.len(), FRAME_LEN + 60 + 2 * RUN_LEN);
        assert_eq!(&b[..8], b"FOLIOMAN");
        assert_eq!(&b[10..18], &3u64.to_le_bytes());
        assert_eq!(&b[18..34], &m.incarnation.to_le_bytes());
        assert_eq!(&b[34..42], &42u64.to_le_bytes());
        assert_eq!(&b[42..58], m.through.as_bytes());
        assert_eq!(&b[58..66], &m.created_ms.to_le_bytes());
        assert_eq!(&b[66..70], &2u32.to_le_bytes());
        let run = &b[70..70 + RUN_LEN];
        assert_eq!(&run[..8], &40u64.to_le_bytes());
        assert_eq!(&run[8..16], &0xdead_beefu64.to_le_bytes());
        assert_eq!(&run[16..32], seg(80).as_bytes());
        assert_eq!(&run[32..48], seg(89).as_bytes());
        assert_eq!(&run[48..56], &1000u64.to_le_bytes());
        assert_eq!(&run[56..64], &(1u64 << 20).to_le_bytes());

        let b = identity().encode();
        assert_eq!(&b[..8], b"FOLIOIDN");
        assert_eq!(b.len(), FRAME_LEN + 8 + 16 + 8 + 8);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        for (b, decode) in all() {
            for i in 0..b.len() {
                let mut bad = b.to_vec();
                bad[i] ^= 0x04;
                assert!(decode(&bad).is_err(), "flip at {i} of {}", b.len());
            }
            for n in 0..b.len() {
                assert!(decode(&b[..n]).is_err(), "truncated to {n}");
            }
            let mut bad = b.to_vec();
            bad[3] ^= 1;
            assert!(matches!(decode(&bad), Err(RecordError::Checksum(_))));
            assert!(matches!(decode(&b[..5]), Err(RecordError::Truncated(_))));
        }
    }

    #[test]
    fn a_record_of_another_kind_is_bad_magic() {
        let err = Manifest::decode(&identity().encode()).unwrap_err();
        assert_eq!(err, RecordError::Magic("manifest"));
        assert_eq!(err.to_string(), "bad magic: not a manifest record");
        assert_eq!(
            NodeClaim::decode(&manifest(1).encode()),
            Err(RecordError::Magic("node claim"))
        );
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        for (b, decode) in all() {
            let mut v2 = b.to_vec();
            v2[8..10].copy_from_slice(&2u16.to_le_bytes());
            let err = decode(&reseal(v2)).unwrap_err();
            assert!(
                matches!(err, RecordError::Version { version: 2, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("version 2"), "{err}");
        }
    }

    #[test]
    fn counts_and_lengths_are_checked() {
        let b = manifest(2).encode().to_vec();
        // A run count past the limit, past the bytes, and short of them.
        for count in [u32::MAX, MAX_RUNS as u32 + 1, 3, 1] {
            let mut bad = b.clone();
            bad[66..70].copy_from_slice(&count.to_le_bytes());
            assert!(
                matches!(
                    Manifest::decode(&reseal(bad)),
                    Err(RecordError::Invalid { .. })
                ),
                "count {count}"
            );
        }
        // A run that starts after it ends.
        let mut bad = b.clone();
        bad[70 + 16..70 + 32].copy_from_slice(seg(100).as_bytes());
        assert!(matches!(
            Manifest::decode(&reseal(bad)),
            Err(RecordError::Invalid { .. })
        ));
        // Trailing bytes in the body.
        let mut long = identity().encode().to_vec();
        long.insert(long.len() - 4, 0);
        assert!(matches!(
            Identity::decode(&reseal(long)),
            Err(RecordError::Invalid { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "runs")]
    fn encoding_too_many_runs_panics() {
        let mut m = manifest(1);
        m.runs = vec![m.runs[0]; MAX_RUNS + 1];
        m.encode();
    }
}
