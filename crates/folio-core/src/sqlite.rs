//! The parts of SQLite's database header (the first 100 bytes of page 1) that the SQLite VFS
//! (folio-sqlite) and `folio volume import --sqlite` read: a database's page 1 is a volume's
//! page 0, so these checks say whether a volume, or a file, can be served as a database.

use crate::PAGE_SIZE;

pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// What `folio volume import` (without `--sqlite`) puts at the start of page 0.
pub const FOLIO_FILE_MAGIC: &[u8; 8] = b"FOLIOFIL";

/// Byte 18 and 19 of the header: 1 for a rollback journal, 2 for WAL.
pub const JOURNAL_VERSION: std::ops::Range<usize> = 18..20;

/// What page 0 of a volume says about it as a database.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// Never written, or all zeros: an empty database.
    Empty,
    /// A SQLite database of `pages` pages.
    Database { pages: u32 },
}

/// Reads page 0 of a volume. The error says, in words for a person, why it cannot be opened.
pub fn parse(page: &[u8]) -> Result<Header, String> {
    if page.iter().all(|b| *b == 0) {
        return Ok(Header::Empty);
    }
    if page.starts_with(FOLIO_FILE_MAGIC) {
        return Err(
            "the volume holds a file imported as bytes, not a database: import SQLite \
                    databases with `folio volume import --sqlite`"
                .into(),
        );
    }
    if page.len() < 100 || &page[..16] != MAGIC {
        return Err("the volume's page 0 is not a SQLite database header".into());
    }
    let size = match u16::from_be_bytes([page[16], page[17]]) {
        1 => 65536,
        n => n as usize,
    };
    if size != PAGE_SIZE {
        return Err(format!(
            "the database's page size is {size}; Folio stores {PAGE_SIZE}-byte pages: convert it \
             with `sqlite3 in.db \"PRAGMA page_size={PAGE_SIZE}; VACUUM INTO 'out.db'\"`"
        ));
    }
    if page[18] == 2 || page[19] == 2 {
        return Err(
            "the database is in WAL mode, which the Folio VFS does not support: run \
                    `PRAGMA journal_mode=DELETE` on it (or import it with `folio volume import \
                    --sqlite`, which does)"
                .into(),
        );
    }
    let counter = &page[24..28];
    let valid_for = &page[92..96];
    if counter != valid_for {
        return Err(
            "the database's in-header size is stale (it was last written by SQLite \
                    older than 3.7.0): run VACUUM on it with a current SQLite"
                .into(),
        );
    }
    Ok(Header::Database {
        pages: u32::from_be_bytes([page[28], page[29], page[30], page[31]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, version: u8, pages: u32) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        p[..16].copy_from_slice(MAGIC);
        p[16..18].copy_from_slice(&page_size.to_be_bytes());
        p[18] = version;
        p[19] = version;
        p[24..28].copy_from_slice(&7u32.to_be_bytes());
        p[92..96].copy_from_slice(&7u32.to_be_bytes());
        p[28..32].copy_from_slice(&pages.to_be_bytes());
        p
    }

    #[test]
    fn reads_databases_and_refuses_what_it_cannot_serve() {
        assert_eq!(parse(&[0u8; PAGE_SIZE]).unwrap(), Header::Empty);
        assert_eq!(
            parse(&header(4096, 1, 12)).unwrap(),
            Header::Database { pages: 12 }
        );
        assert!(parse(&header(1024, 1, 12))
            .unwrap_err()
            .contains("VACUUM INTO"));
        assert!(parse(&header(1, 1, 12)).unwrap_err().contains("65536"));
        assert!(parse(&header(4096, 2, 12)).unwrap_err().contains("WAL"));
        let mut stale = header(4096, 1, 12);
        stale[95] = 8;
        assert!(parse(&stale).unwrap_err().contains("stale"));
        let mut file = vec![0u8; PAGE_SIZE];
        file[..8].copy_from_slice(FOLIO_FILE_MAGIC);
        assert!(parse(&file).unwrap_err().contains("--sqlite"));
        assert!(parse(b"hello").is_err());
    }
}
