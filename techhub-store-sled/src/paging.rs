//! Cursor pages over trees whose keys end in a record id, so key order is id order.

use std::ops::Bound;

use sled::{IVec, Tree};
use techhub_core::model::{Page, PageRequest};
use techhub_core::storage::{StoreResult, decisions};
use uuid::Uuid;

use crate::engine::Sled;

/// A page of the records under `prefix` of `tree` (keys: `prefix · id`), after the page's cursor.
///
/// `load` turns an entry into its record (`None` skips it: a record deleted since the index was read);
/// `keep` filters; `id` gives a record's id for the next cursor. Reads `limit + 1` matches at most.
pub(crate) fn page_of<T>(
    tree: &Tree,
    prefix: &[u8],
    page: &PageRequest,
    load: impl Fn(&IVec, &IVec) -> StoreResult<Option<T>>,
    keep: impl Fn(&T) -> bool,
    id: impl Fn(&T) -> Uuid,
) -> StoreResult<Page<T>> {
    let start = match decisions::start_after(page)? {
        Some(after) => Bound::Excluded([prefix, after.as_bytes()].concat()),
        None => Bound::Included(prefix.to_vec()),
    };
    let mut items = Vec::new();
    for entry in tree.range((start, Bound::Unbounded)) {
        let (key, value) = entry.sled()?;
        if !key.starts_with(prefix) || items.len() > page.limit {
            break;
        }
        if let Some(record) = load(&key, &value)?
            && keep(&record)
        {
            items.push(record);
        }
    }
    Ok(Page::from_overfetch(items, page.limit, id))
}

/// The id a key ends with.
pub(crate) fn trailing_id(key: &[u8]) -> StoreResult<Uuid> {
    key.len()
        .checked_sub(16)
        .and_then(|start| Uuid::from_slice(&key[start..]).ok())
        .ok_or_else(|| crate::codec::corrupt("a key does not end in an id"))
}
