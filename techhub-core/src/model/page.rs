//! Cursor pagination: lists are read in id order, a page at a time, with an opaque cursor.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// The page size when none is asked for.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// The largest page size served.
pub const MAX_PAGE_LIMIT: usize = 500;

/// An opaque position in a list: pass the `next_cursor` of one page to get the next. Clients must not
/// build or parse cursors; their form may change.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

const CURSOR_PREFIX: &str = "c1";

impl Cursor {
    /// The cursor that continues after the record with id `last`.
    pub fn after(last: impl Into<Uuid>) -> Self {
        Self(format!("{CURSOR_PREFIX}{}", last.into().simple()))
    }

    /// Wraps a cursor a client sent back; it is checked when used.
    pub fn from_client(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id this cursor continues after.
    pub fn position(&self) -> Result<Uuid, Error> {
        self.0
            .strip_prefix(CURSOR_PREFIX)
            .filter(|hex| hex.len() == 32)
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .ok_or_else(|| Error::invalid_field("cursor", "the cursor is not one this server issued"))
    }

    /// The cursor's text, to hand to a client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many items (1..=[`MAX_PAGE_LIMIT`]).
    pub limit: usize,
    /// Continue after this cursor; `None` starts at the beginning.
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The first page of at most `limit` items (clamped to 1..=[`MAX_PAGE_LIMIT`]).
    pub fn first(limit: usize) -> Self {
        Self { limit: limit.clamp(1, MAX_PAGE_LIMIT), cursor: None }
    }

    /// The page after `cursor`, of at most `limit` items (clamped).
    pub fn after(cursor: Cursor, limit: usize) -> Self {
        Self { limit: limit.clamp(1, MAX_PAGE_LIMIT), cursor: Some(cursor) }
    }

    /// The id to continue after, checked.
    pub fn position(&self) -> Result<Option<Uuid>, Error> {
        self.cursor.as_ref().map(Cursor::position).transpose()
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_PAGE_LIMIT)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// A page from `limit + 1` candidate items in id order: the extra one, if present, only proves there is a
    /// next page. `id` gives an item's id for the cursor.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> Uuid) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| Cursor::after(id(last)))
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        let id = Uuid::now_v7();
        assert_eq!(Cursor::after(id).position().expect("valid"), id);
        for forged in ["", "c1", "c2deadbeef", "c1zz", &format!("c1{}x", id.simple())] {
            assert!(Cursor::from_client(forged).position().is_err(), "{forged:?}");
        }
    }

    #[test]
    fn page_limits_are_clamped() {
        assert_eq!(PageRequest::first(0).limit, 1);
        assert_eq!(PageRequest::first(10_000).limit, MAX_PAGE_LIMIT);
    }

    #[test]
    fn overfetch_sets_the_cursor_only_when_more_exist() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_overfetch(ids.clone(), 2, |id| *id);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(page.next_cursor.expect("more").position().expect("valid"), ids[1]);
        assert!(Page::from_overfetch(ids, 3, |id| *id).next_cursor.is_none());
    }
}
