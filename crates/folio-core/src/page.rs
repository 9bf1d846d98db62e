//! A page: exactly [`PAGE_SIZE`] bytes. Constructing one checks the size, so code holding a
//! [`Page`] never re-checks it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The size of every page, in bytes.
pub const PAGE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("a page must be exactly {PAGE_SIZE} bytes, got {0}")]
    WrongSize(usize),
}

/// The bytes of one page. Cloning is cheap (reference-counted).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Bytes", into = "Bytes")]
pub struct Page(Bytes);

impl Page {
    pub fn new(bytes: Bytes) -> Result<Self, PageError> {
        if bytes.len() != PAGE_SIZE {
            return Err(PageError::WrongSize(bytes.len()));
        }
        Ok(Page(bytes))
    }

    pub fn zeroed() -> Self {
        Page(Bytes::from_static(&[0u8; PAGE_SIZE]))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl TryFrom<Bytes> for Page {
    type Error = PageError;
    fn try_from(b: Bytes) -> Result<Self, Self::Error> {
        Page::new(b)
    }
}

impl From<Page> for Bytes {
    fn from(p: Page) -> Bytes {
        p.0
    }
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Page({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_enforced() {
        assert!(Page::new(Bytes::from(vec![0u8; PAGE_SIZE])).is_ok());
        assert_eq!(
            Page::new(Bytes::from(vec![0u8; 4095])),
            Err(PageError::WrongSize(4095))
        );
        assert_eq!(Page::new(Bytes::new()), Err(PageError::WrongSize(0)));
    }
}
