//! The one encoding of Raft entries, votes and state-machine records on disk and on the wire:
//! MessagePack through serde, behind a version tag. Every group shares it, so a log written by one
//! version of a group's code is read by the next as long as its types evolve compatibly.
//!
//! # Framing
//!
//! [`encode`] writes [`TAG`] (`0xC1`), then [`FORMAT_VERSION`], then the MessagePack body
//! (`rmp_serde::to_vec`). `0xC1` is the one byte MessagePack never uses, so it cannot begin an
//! untagged value: bytes written before the tag existed (format version 0, the same body encoding
//! without the tag) are told apart by their first byte and still decode. A version this build does
//! not know is refused, naming it and the newest version this build reads.
//!
//! Builds from before the tag read none of the tagged bytes (they see a reserved marker). A group
//! that mixes them during an upgrade works only while the leader runs the older build: upgrade the
//! followers first, the leader last.
//!
//! # How the body encodes a type, and which changes stay compatible
//!
//! `rmp_serde::to_vec` writes structs as arrays of their fields in declaration order, without
//! field names, and enums by variant name, never by position. The tests below check each rule.
//!
//! - **Struct fields.** Renaming a field is compatible (names are not written). Reordering,
//!   removing, or inserting a field before others is not. A new field may be added only as the
//!   last field and only with `#[serde(default)]`: older, shorter arrays then decode with the
//!   default. This holds for `Option` fields too: serde fills a missing `Option` with `None` only
//!   in maps, so an `Option` without `#[serde(default)]` refuses older bytes. The reverse does not
//!   hold: a build that does not know the new field refuses the longer array ("array had incorrect
//!   length"), so new bytes are unreadable by older nodes.
//! - **Enum variants.** A unit variant is its name as a string; a variant with data is a map of one
//!   entry, name → data (a struct variant's data is an array of its fields, under the struct
//!   rule; a newtype variant's is the value itself). Appending variants is compatible, and so is
//!   reordering them, because the position is never written. Renaming a variant is not (unless the
//!   old name stays as `#[serde(alias)]`), and removing one makes every stored value of it
//!   undecodable. Only the build that knows a new variant reads values of it.
//! - **Newtypes and integers.** A newtype struct (`Lsn(u64)`) is its inner value. MessagePack
//!   integers carry no width, so widening an integer field (`u32` → `u64`) is compatible; narrowing
//!   is compatible only for values that fit.
//! - **Bytes.** `bytes::Bytes` is a MessagePack `bin`; a `Vec<u8>` is an array of integers. The two
//!   are not interchangeable.
//!
//! Any other change needs a new [`FORMAT_VERSION`], and [`decode`] must keep reading every older
//! version (the golden files in `folio-state/tests/golden` hold the write tier's entries as each
//! version wrote them).

use serde::{Deserialize, Serialize};

/// First byte of a tagged encoding: the one byte MessagePack never uses.
pub const TAG: u8 = 0xC1;

/// The version [`encode`] writes: 1, the MessagePack body of version 0 behind the tag.
pub const FORMAT_VERSION: u8 = 1;

/// The version of bytes written before the tag existed: the same MessagePack body, untagged.
pub const LEGACY_VERSION: u8 = 0;

/// Why bytes from disk or the network did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "encoded with format version {found}, but this build reads versions up to {newest}: \
         it was written by a newer Folio"
    )]
    UnknownVersion { found: u8, newest: u8 },
    #[error("version tag without a version byte")]
    Truncated,
    #[error(transparent)]
    Body(#[from] rmp_serde::decode::Error),
}

/// Encodes a value Folio itself produced, tagged with [`FORMAT_VERSION`].
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![TAG, FORMAT_VERSION];
    rmp_serde::encode::write(&mut out, v).expect("Folio's own types always serialize");
    out
}

/// The format version of encoded bytes, and their body: [`LEGACY_VERSION`] for untagged bytes.
pub fn version(b: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match b {
        [TAG, version, body @ ..] => Ok((*version, body)),
        [TAG] => Err(DecodeError::Truncated),
        body => Ok((LEGACY_VERSION, body)),
    }
}

/// Decodes bytes that came from disk or the network, in any format version this build reads.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, DecodeError> {
    match version(b)? {
        (LEGACY_VERSION | FORMAT_VERSION, body) => Ok(rmp_serde::from_slice(body)?),
        (found, _) => Err(DecodeError::UnknownVersion {
            found,
            newest: FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u32,
        name: String,
        tags: BTreeMap<String, u64>,
    }

    fn record() -> Record {
        Record {
            id: 7,
            name: "seven".into(),
            tags: BTreeMap::from([("a".into(), 1), ("b".into(), u64::MAX)]),
        }
    }

    #[test]
    fn round_trip_writes_the_tag_then_the_legacy_body() {
        let b = encode(&record());
        assert_eq!(b[..2], [TAG, FORMAT_VERSION]);
        assert_eq!(b[2..], rmp_serde::to_vec(&record()).unwrap());
        assert_eq!(decode::<Record>(&b).unwrap(), record());
        assert_eq!(version(&b).unwrap().0, FORMAT_VERSION);
    }

    #[test]
    fn untagged_legacy_bytes_decode_as_version_0() {
        let legacy = rmp_serde::to_vec(&record()).unwrap();
        assert_ne!(legacy[0], TAG);
        assert_eq!(version(&legacy).unwrap().0, LEGACY_VERSION);
        assert_eq!(decode::<Record>(&legacy).unwrap(), record());
        let none: Option<u64> = None;
        assert_eq!(
            decode::<Option<u64>>(&rmp_serde::to_vec(&none).unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_version_is_refused_naming_it_and_the_newest_known() {
        let mut b = encode(&record());
        b[1] = FORMAT_VERSION + 1;
        let e = decode::<Record>(&b).unwrap_err();
        assert!(matches!(e, DecodeError::UnknownVersion { found, newest }
            if found == FORMAT_VERSION + 1 && newest == FORMAT_VERSION));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("format version {}", FORMAT_VERSION + 1)),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("reads versions up to {FORMAT_VERSION}")),
            "{msg}"
        );
        assert!(matches!(
            decode::<Record>(&[TAG]),
            Err(DecodeError::Truncated)
        ));
        assert!(matches!(decode::<Record>(&[]), Err(DecodeError::Body(_))));
    }

    // The shapes the module documentation describes.

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Old {
        Unit,
        Newtype(u32),
        Fields { a: u32, b: String },
    }

    #[test]
    fn structs_are_arrays_and_variants_are_named() {
        let body = |b: Vec<u8>| b[2..].to_vec();
        // [7, "seven", {...}]: a 3-element array, no field names.
        assert_eq!(body(encode(&record()))[0], 0x93);
        // "Unit": a string.
        assert_eq!(body(encode(&Old::Unit)), b"\xa4Unit");
        // {"Newtype": 5}: a map of one entry.
        assert_eq!(body(encode(&Old::Newtype(5))), b"\x81\xa7Newtype\x05");
        // {"Fields": [1, "x"]}
        assert_eq!(
            body(encode(&Old::Fields {
                a: 1,
                b: "x".into()
            })),
            b"\x81\xa6Fields\x92\x01\xa1x"
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Appended {
        id: u32,
        name: String,
        tags: BTreeMap<String, u64>,
        #[serde(default)]
        extra: Option<u64>,
        #[serde(default)]
        more: Vec<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AppendedWithoutDefault {
        id: u32,
        name: String,
        tags: BTreeMap<String, u64>,
        extra: Option<u64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        number: u32,
        label: String,
        tags: BTreeMap<String, u64>,
    }

    #[test]
    fn struct_fields_may_be_appended_with_a_default_and_renamed_only() {
        let old = encode(&record());
        assert_eq!(
            decode::<Appended>(&old).unwrap(),
            Appended {
                id: 7,
                name: "seven".into(),
                tags: record().tags,
                extra: None,
                more: vec![],
            }
        );
        assert_eq!(
            decode::<Renamed>(&old).unwrap(),
            Renamed {
                number: 7,
                label: "seven".into(),
                tags: record().tags,
            }
        );
        // Without `#[serde(default)]`, even an `Option` refuses the shorter array.
        assert!(decode::<AppendedWithoutDefault>(&old).is_err());
        // Older code refuses the longer array, even when the new field holds its default.
        let new = encode(&Appended {
            id: 1,
            name: String::new(),
            tags: BTreeMap::new(),
            extra: None,
            more: vec![],
        });
        assert!(decode::<Record>(&new).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum AppendedVariant {
        Unit,
        Newtype(u32),
        Fields { a: u32, b: String },
        Added { c: u64 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Reordered {
        Fields { a: u32, b: String },
        Newtype(u64),
        Unit,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Removed {
        Unit,
        Fields { a: u32, b: String },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum RenamedVariant {
        Nothing,
        Newtype(u32),
        Fields { a: u32, b: String },
    }

    #[test]
    fn variants_may_be_appended_or_reordered_but_not_removed_or_renamed() {
        let olds = [
            Old::Unit,
            Old::Newtype(5),
            Old::Fields {
                a: 1,
                b: "x".into(),
            },
        ];
        let bytes: Vec<Vec<u8>> = olds.iter().map(encode).collect();
        let appended: Vec<AppendedVariant> = bytes.iter().map(|b| decode(b).unwrap()).collect();
        assert_eq!(
            appended,
            [
                AppendedVariant::Unit,
                AppendedVariant::Newtype(5),
                AppendedVariant::Fields {
                    a: 1,
                    b: "x".into()
                },
            ]
        );
        // Reordered, and `Newtype` widened from u32 to u64.
        let reordered: Vec<Reordered> = bytes.iter().map(|b| decode(b).unwrap()).collect();
        assert_eq!(
            reordered,
            [
                Reordered::Unit,
                Reordered::Newtype(5),
                Reordered::Fields {
                    a: 1,
                    b: "x".into()
                },
            ]
        );
        assert!(decode::<Removed>(&bytes[1]).is_err());
        assert!(decode::<RenamedVariant>(&bytes[0]).is_err());
        // Only a build that knows a variant reads it.
        assert!(decode::<Old>(&encode(&AppendedVariant::Added { c: 1 })).is_err());
    }
}
