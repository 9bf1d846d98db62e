//! Index runs: immutable sorted tables mapping byte keys to byte values, read from the object
//! store whole or with ranged GETs (the footer, then the block index, then one block):
//!
//! ```text
//! header   12 bytes   "FOLIORUN", version u16, reserved u16
//! blocks   variable   data blocks back to back, each its entries back to back:
//!                     key length u16, value length u32, key, value
//! index    variable   per block: offset u64, length u32, crc32c u32, first key length u16,
//!                     first key
//! footer   48 bytes   index offset u64, entry count u64, index length u32, index crc32c u32,
//!                     header crc32c u32, block count u32, version u16, reserved u16,
//!                     footer crc32c u32 (of the 36 bytes before it), "ENDOFRUN"
//! ```
//!
//! All integers are little-endian. Keys are strictly increasing across the whole table. A block
//! holds at most [`BLOCK_BYTES`]: an entry that would take a non-empty block past that starts a
//! new one, so only a single entry larger than that makes a larger block, of its own. Blocks
//! follow each other without gaps from the end of the header to the index. A table with no
//! entries has no blocks and an empty index.
//!
//! The footer repeats the version, so a reader that never fetches the header still knows the
//! format, and has its own checksum, so no offset in it is used before it is verified. Every
//! block's checksum is in the index, and the index's and header's are in the footer. Decoders
//! check every length against a limit before allocating for it. Encoding is deterministic.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

pub const TABLE_HEADER_LEN: usize = 12;
pub const TABLE_FOOTER_LEN: usize = 48;
pub const TABLE_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"FOLIORUN";
const END_MAGIC: &[u8; 8] = b"ENDOFRUN";

/// Bytes a data block holds before it closes; one ranged GET per lookup fetches about this much.
pub const BLOCK_BYTES: usize = 64 * 1024;
/// Bytes in one key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Bytes in one value.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Bytes in a block index: over a million blocks of short keys, far more than any run holds.
pub const MAX_INDEX_BYTES: usize = 64 << 20;
/// Bytes in one data block as a decoder accepts it: more than [`BLOCK_BYTES`] and more than one
/// entry of the largest key and value.
pub const MAX_BLOCK_BYTES: usize = 2 << 20;

/// An entry's key length and value length.
const ENTRY_FIXED_LEN: usize = 2 + 4;
/// A block handle with an empty first key: offset, length, crc, key length.
const HANDLE_FIXED_LEN: usize = 8 + 4 + 4 + 2;
/// The footer bytes its checksum covers.
const FOOTER_CRC_AT: usize = 36;

const _: () = assert!(MAX_BLOCK_BYTES >= BLOCK_BYTES);
const _: () = assert!(MAX_BLOCK_BYTES >= ENTRY_FIXED_LEN + MAX_KEY_BYTES + MAX_VALUE_BYTES);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("bad magic in the table {0}")]
    Magic(&'static str),
    #[error("unknown table version {0} (this build reads version {TABLE_VERSION})")]
    Version(u16),
    #[error("table {0} checksum mismatch")]
    Checksum(&'static str),
    #[error("checksum mismatch in the table block at offset {0}")]
    BlockChecksum(u64),
    #[error("table is truncated: {0}")]
    Truncated(String),
    #[error("table limit exceeded: {0}")]
    Limit(String),
    #[error("table keys out of order: {0}")]
    OutOfOrder(String),
    #[error("table layout is inconsistent: {0}")]
    Layout(String),
}

/// The error for `what` being `got` bytes where `want` were expected.
fn wrong_len(what: &str, got: u64, want: u64) -> TableError {
    let msg = format!("{what} is {got} bytes, expected {want}");
    if got < want {
        TableError::Truncated(msg)
    } else {
        TableError::Layout(msg)
    }
}

/// Builds a table from entries pushed in strictly increasing key order.
#[derive(Debug)]
pub struct TableBuilder {
    /// The header and the blocks so far, the open block last.
    out: BytesMut,
    /// Where the open block starts in `out`.
    block_start: usize,
    block_first_key: Vec<u8>,
    index: BytesMut,
    blocks: u32,
    last_key: Vec<u8>,
    entries: u64,
}

impl Default for TableBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TableBuilder {
    pub fn new() -> Self {
        let mut out = BytesMut::with_capacity(BLOCK_BYTES);
        out.put_slice(MAGIC);
        out.put_u16_le(TABLE_VERSION);
        out.put_u16_le(0);
        TableBuilder {
            block_start: out.len(),
            out,
            block_first_key: Vec::new(),
            index: BytesMut::new(),
            blocks: 0,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Appends an entry. Its key must be greater than every key pushed before, and key and value
    /// within [`MAX_KEY_BYTES`] and [`MAX_VALUE_BYTES`]. On an error nothing is added.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(TableError::Limit(format!(
                "key of {} bytes exceeds {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(TableError::Limit(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        if self.entries > 0 && key <= self.last_key.as_slice() {
            return Err(TableError::OutOfOrder(format!(
                "entry {} is not greater than the one before",
                self.entries
            )));
        }
        // This entry closes at most two blocks: the open one and the one it may fill.
        if self.index.len() + 2 * (HANDLE_FIXED_LEN + MAX_KEY_BYTES) > MAX_INDEX_BYTES {
            return Err(TableError::Limit(format!(
                "the block index would exceed {MAX_INDEX_BYTES} bytes"
            )));
        }
        let entry_len = ENTRY_FIXED_LEN + key.len() + value.len();
        if self.open_len() > 0 && self.open_len() + entry_len > BLOCK_BYTES {
            self.close_block();
        }
        if self.open_len() == 0 {
            self.block_first_key.clear();
            self.block_first_key.extend_from_slice(key);
        }
        self.out.put_u16_le(key.len() as u16);
        self.out.put_u32_le(value.len() as u32);
        self.out.put_slice(key);
        self.out.put_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        if self.open_len() >= BLOCK_BYTES {
            self.close_block();
        }
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes [`finish`](Self::finish) would return now (exact, despite the name).
    pub fn len_estimate(&self) -> usize {
        let open_handle = if self.open_len() > 0 {
            HANDLE_FIXED_LEN + self.block_first_key.len()
        } else {
            0
        };
        self.out.len() + self.index.len() + open_handle + TABLE_FOOTER_LEN
    }

    /// The encoded table.
    pub fn finish(mut self) -> Bytes {
        if self.open_len() > 0 {
            self.close_block();
        }
        let index_offset = self.out.len() as u64;
        let header_crc = crc32c::crc32c(&self.out[..TABLE_HEADER_LEN]);
        let index_crc = crc32c::crc32c(&self.index);
        self.out.reserve(self.index.len() + TABLE_FOOTER_LEN);
        self.out.put_slice(&self.index);
        let footer_start = self.out.len();
        self.out.put_u64_le(index_offset);
        self.out.put_u64_le(self.entries);
        self.out.put_u32_le(self.index.len() as u32);
        self.out.put_u32_le(index_crc);
        self.out.put_u32_le(header_crc);
        self.out.put_u32_le(self.blocks);
        self.out.put_u16_le(TABLE_VERSION);
        self.out.put_u16_le(0);
        let footer_crc = crc32c::crc32c(&self.out[footer_start..]);
        self.out.put_u32_le(footer_crc);
        self.out.put_slice(END_MAGIC);
        debug_assert_eq!(self.out.len() - footer_start, TABLE_FOOTER_LEN);
        self.out.freeze()
    }

    fn open_len(&self) -> usize {
        self.out.len() - self.block_start
    }

    fn close_block(&mut self) {
        let block = &self.out[self.block_start..];
        self.index.put_u64_le(self.block_start as u64);
        self.index.put_u32_le(block.len() as u32);
        self.index.put_u32_le(crc32c::crc32c(block));
        self.index.put_u16_le(self.block_first_key.len() as u16);
        self.index.put_slice(&self.block_first_key);
        self.blocks += 1;
        self.block_start = self.out.len();
    }
}

/// The footer: where the block index is, the checksums of index and header, and the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFooter {
    pub index_offset: u64,
    pub entries: u64,
    pub index_len: u32,
    pub index_crc: u32,
    pub header_crc: u32,
    pub blocks: u32,
}

impl TableFooter {
    /// Parses and verifies the last [`TABLE_FOOTER_LEN`] bytes of a table.
    pub fn decode(tail: &[u8]) -> Result<TableFooter, TableError> {
        if tail.len() != TABLE_FOOTER_LEN {
            return Err(wrong_len(
                "footer",
                tail.len() as u64,
                TABLE_FOOTER_LEN as u64,
            ));
        }
        if &tail[FOOTER_CRC_AT + 4..] != END_MAGIC {
            return Err(TableError::Magic("footer"));
        }
        let mut c = Cursor::new(tail);
        let f = TableFooter {
            index_offset: c.u64().expect("footer length checked"),
            entries: c.u64().expect("footer length checked"),
            index_len: c.u32().expect("footer length checked"),
            index_crc: c.u32().expect("footer length checked"),
            header_crc: c.u32().expect("footer length checked"),
            blocks: c.u32().expect("footer length checked"),
        };
        let version = c.u16().expect("footer length checked");
        let _reserved = c.u16().expect("footer length checked");
        let crc = c.u32().expect("footer length checked");
        if crc32c::crc32c(&tail[..FOOTER_CRC_AT]) != crc {
            return Err(TableError::Checksum("footer"));
        }
        if version != TABLE_VERSION {
            return Err(TableError::Version(version));
        }
        if f.index_len as usize > MAX_INDEX_BYTES {
            return Err(TableError::Limit(format!(
                "index of {} bytes exceeds {MAX_INDEX_BYTES}",
                f.index_len
            )));
        }
        // These bound every later length (no arithmetic on them overflows) and what the index
        // decoder allocates.
        let blocks = u64::from(f.blocks);
        if blocks * HANDLE_FIXED_LEN as u64 > u64::from(f.index_len) {
            return Err(TableError::Layout(format!(
                "{} block handles cannot fit in an index of {} bytes",
                f.blocks, f.index_len
            )));
        }
        let Some(data_len) = f.index_offset.checked_sub(TABLE_HEADER_LEN as u64) else {
            return Err(TableError::Layout(format!(
                "index at offset {}, inside the header",
                f.index_offset
            )));
        };
        if data_len > blocks * MAX_BLOCK_BYTES as u64 {
            return Err(TableError::Layout(format!(
                "{} blocks cannot hold {data_len} bytes",
                f.blocks
            )));
        }
        if f.entries < blocks || f.entries.saturating_mul(ENTRY_FIXED_LEN as u64) > data_len {
            return Err(TableError::Layout(format!(
                "{} entries in {} blocks of {data_len} bytes",
                f.entries, f.blocks
            )));
        }
        Ok(f)
    }

    /// Byte range of the block index within the table, for a ranged GET.
    pub fn index_range(&self) -> Range<u64> {
        self.index_offset..self.index_offset + u64::from(self.index_len)
    }

    /// Total table length this footer implies.
    pub fn table_len(&self) -> u64 {
        self.index_range().end + TABLE_FOOTER_LEN as u64
    }
}

/// Where one data block is, its checksum, and its first key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    /// Byte range within the table, for a ranged GET.
    pub range: Range<u64>,
    pub crc: u32,
    pub first_key: Bytes,
}

/// A verified block index: the blocks in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableIndex {
    blocks: Vec<BlockHandle>,
    key_bytes: usize,
}

impl TableIndex {
    /// Parses and verifies the index bytes named by `footer` ([`TableFooter::index_range`]).
    pub fn decode(footer: &TableFooter, bytes: &[u8]) -> Result<TableIndex, TableError> {
        if bytes.len() as u64 != u64::from(footer.index_len) {
            return Err(wrong_len(
                "index",
                bytes.len() as u64,
                u64::from(footer.index_len),
            ));
        }
        if crc32c::crc32c(bytes) != footer.index_crc {
            return Err(TableError::Checksum("index"));
        }
        let mut c = Cursor::new(bytes);
        let mut blocks: Vec<BlockHandle> = Vec::with_capacity(footer.blocks as usize);
        let mut key_bytes = 0;
        let mut next = TABLE_HEADER_LEN as u64;
        for i in 0..footer.blocks {
            let truncated = || TableError::Truncated(format!("index ends inside block {i}"));
            let offset = c.u64().ok_or_else(truncated)?;
            let len = c.u32().ok_or_else(truncated)?;
            let crc = c.u32().ok_or_else(truncated)?;
            let key_len = c.u16().ok_or_else(truncated)? as usize;
            if key_len > MAX_KEY_BYTES {
                return Err(TableError::Limit(format!(
                    "first key of block {i} is {key_len} bytes, more than {MAX_KEY_BYTES}"
                )));
            }
            let first_key = c.take(key_len).ok_or_else(truncated)?;
            if offset != next {
                return Err(TableError::Layout(format!(
                    "block {i} at offset {offset}, expected {next}"
                )));
            }
            if len == 0 || len as usize > MAX_BLOCK_BYTES {
                return Err(TableError::Limit(format!(
                    "block {i} is {len} bytes, not 1 to {MAX_BLOCK_BYTES}"
                )));
            }
            if blocks
                .last()
                .is_some_and(|p| p.first_key.as_ref() >= first_key)
            {
                return Err(TableError::OutOfOrder(format!(
                    "first key of block {i} is not greater than the one before"
                )));
            }
            next = offset + u64::from(len);
            key_bytes += key_len;
            blocks.push(BlockHandle {
                range: offset..next,
                crc,
                first_key: Bytes::copy_from_slice(first_key),
            });
        }
        if !c.rest().is_empty() {
            return Err(TableError::Layout(format!(
                "{} bytes after the last block handle",
                c.rest().len()
            )));
        }
        if next != footer.index_offset {
            return Err(TableError::Layout(format!(
                "blocks end at {next}, the index starts at {}",
                footer.index_offset
            )));
        }
        Ok(TableIndex { blocks, key_bytes })
    }

    pub fn blocks(&self) -> &[BlockHandle] {
        &self.blocks
    }

    /// The last block whose first key is at most `key`: the only block that can hold `key` or the
    /// greatest entry below it. `None` if `key` sorts before every entry.
    pub fn floor_block(&self, key: &[u8]) -> Option<usize> {
        self.blocks
            .partition_point(|b| b.first_key.as_ref() <= key)
            .checked_sub(1)
    }

    /// The block where a forward scan for the first entry at or after `key` starts. That entry
    /// may be in a later block, when every entry of this one is smaller.
    pub fn seek_block(&self, key: &[u8]) -> usize {
        self.floor_block(key).unwrap_or(0)
    }

    /// Approximate heap and inline bytes, for weighing in a cache.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.blocks.len() * std::mem::size_of::<BlockHandle>()
            + self.key_bytes
    }
}

/// A verified data block: its entries, sorted by key.
#[derive(Clone, Debug)]
pub struct Block {
    bytes: Bytes,
    /// Where each entry starts in `bytes`.
    starts: Vec<u32>,
}

impl Block {
    /// Parses and verifies a block's bytes (for example from a ranged GET of `handle.range`).
    pub fn decode(handle: &BlockHandle, bytes: Bytes) -> Result<Block, TableError> {
        let at = handle.range.start;
        let want = handle.range.end.saturating_sub(at);
        if bytes.len() as u64 != want {
            return Err(wrong_len(
                &format!("block at offset {at}"),
                bytes.len() as u64,
                want,
            ));
        }
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(TableError::Limit(format!(
                "block at offset {at} is {} bytes, more than {MAX_BLOCK_BYTES}",
                bytes.len()
            )));
        }
        if crc32c::crc32c(&bytes) != handle.crc {
            return Err(TableError::BlockChecksum(at));
        }
        let mut c = Cursor::new(&bytes);
        let mut starts = Vec::new();
        let mut prev: Option<&[u8]> = None;
        while !c.rest().is_empty() {
            let start = c.pos;
            let truncated =
                || TableError::Truncated(format!("block at offset {at} ends inside an entry"));
            let key_len = c.u16().ok_or_else(truncated)? as usize;
            let value_len = c.u32().ok_or_else(truncated)? as usize;
            if key_len > MAX_KEY_BYTES || value_len > MAX_VALUE_BYTES {
                return Err(TableError::Limit(format!(
                    "entry of a {key_len}-byte key and a {value_len}-byte value in the block at \
                     offset {at}"
                )));
            }
            let key = c.take(key_len).ok_or_else(truncated)?;
            c.take(value_len).ok_or_else(truncated)?;
            if prev.is_some_and(|p| p >= key) {
                return Err(TableError::OutOfOrder(format!(
                    "entry {} of the block at offset {at}",
                    starts.len()
                )));
            }
            prev = Some(key);
            starts.push(start as u32);
        }
        let block = Block { bytes, starts };
        match block.get(0) {
            None => Err(TableError::Layout(format!("block at offset {at} is empty"))),
            Some((k, _)) if k != handle.first_key.as_ref() => Err(TableError::Layout(format!(
                "block at offset {at} does not start with the first key the index names"
            ))),
            Some(_) => Ok(block),
        }
    }

    /// Entries in the block.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The `i`th entry, as (key, value).
    pub fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let start = *self.starts.get(i)? as usize;
        let mut c = Cursor::new(&self.bytes[start..]);
        let key_len = c.u16().expect("verified at decode") as usize;
        let value_len = c.u32().expect("verified at decode") as usize;
        let key = c.take(key_len).expect("verified at decode");
        let value = c.take(value_len).expect("verified at decode");
        Some((key, value))
    }

    fn key(&self, i: usize) -> &[u8] {
        self.get(i).expect("index within the block").0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index within the block"))
    }

    /// The greatest entry whose key is at most `key`.
    pub fn floor(&self, key: &[u8]) -> Option<(&[u8], &[u8])> {
        let end = self.partition(|k| k <= key);
        end.checked_sub(1).and_then(|i| self.get(i))
    }

    /// The position of the first entry whose key is at least `key`; [`len`](Self::len) if none.
    pub fn seek(&self, key: &[u8]) -> usize {
        self.partition(|k| k < key)
    }

    /// Approximate heap and inline bytes, for weighing in a cache.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bytes.len() + self.starts.len() * 4
    }

    /// The number of leading entries whose key satisfies `pred`, which must hold for a prefix.
    fn partition(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A whole table, decoded and verified.
#[derive(Clone, Debug)]
pub struct Table {
    index: TableIndex,
    blocks: Vec<Block>,
    entries: u64,
}

impl Table {
    /// Verifies footer, header, index and every block, and that keys increase across blocks.
    pub fn decode(bytes: Bytes) -> Result<Table, TableError> {
        if bytes.len() < TABLE_HEADER_LEN + TABLE_FOOTER_LEN {
            return Err(TableError::Truncated(format!(
                "{} bytes, less than a header and a footer",
                bytes.len()
            )));
        }
        let footer = TableFooter::decode(&bytes[bytes.len() - TABLE_FOOTER_LEN..])?;
        if footer.table_len() != bytes.len() as u64 {
            return Err(wrong_len("table", bytes.len() as u64, footer.table_len()));
        }
        let header = &bytes[..TABLE_HEADER_LEN];
        if crc32c::crc32c(header) != footer.header_crc {
            return Err(TableError::Checksum("header"));
        }
        if &header[..8] != MAGIC {
            return Err(TableError::Magic("header"));
        }
        let version = u16::from_le_bytes(header[8..10].try_into().expect("2 bytes"));
        if version != TABLE_VERSION {
            return Err(TableError::Version(version));
        }
        let r = footer.index_range();
        let index = TableIndex::decode(&footer, &bytes[r.start as usize..r.end as usize])?;
        let mut blocks: Vec<Block> = Vec::with_capacity(index.blocks().len());
        for h in index.blocks() {
            let block =
                Block::decode(h, bytes.slice(h.range.start as usize..h.range.end as usize))?;
            if blocks
                .last()
                .is_some_and(|p| p.key(p.len() - 1) >= h.first_key.as_ref())
            {
                return Err(TableError::OutOfOrder(format!(
                    "the block at offset {} does not start after the one before ends",
                    h.range.start
                )));
            }
            blocks.push(block);
        }
        let entries: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        if entries != footer.entries {
            return Err(TableError::Layout(format!(
                "blocks hold {entries} entries, the footer says {}",
                footer.entries
            )));
        }
        Ok(Table {
            index,
            blocks,
            entries,
        })
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn index(&self) -> &TableIndex {
        &self.index
    }

    /// Every entry, as (key, value), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.blocks.iter().flat_map(Block::iter)
    }

    /// The greatest entry whose key is at most `key`.
    pub fn floor(&self, key: &[u8]) -> Option<(&[u8], &[u8])> {
        let b = self.index.floor_block(key)?;
        self.blocks[b].floor(key)
    }

    /// The entries whose key is at least `key`, in key order.
    pub fn iter_from<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let b = self.index.seek_block(key);
        let skip = self.blocks.get(b).map_or(0, |block| block.seek(key));
        self.blocks[b..].iter().flat_map(Block::iter).skip(skip)
    }
}

/// One table holding the entries of both; where both hold a key, `newer`'s value wins.
pub fn merge(newer: &Table, older: &Table) -> Result<Bytes, TableError> {
    let mut out = TableBuilder::new();
    let (mut a, mut b) = (newer.iter().peekable(), older.iter().peekable());
    loop {
        let take_newer = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    b.next();
                    true
                }
            },
        };
        let (k, v) = if take_newer { a.next() } else { b.next() }.expect("peeked");
        out.push(k, v)?;
    }
    Ok(out.finish())
}

/// Reads little-endian fields off the front of untrusted bytes; `None` when they run out.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.rest().get(..n)?;
        self.pos += n;
        Some(out)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        Some(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}
