//! Cursor pages over id-ordered maps.

use std::collections::BTreeMap;
use std::ops::Bound;

use techhub_core::model::{Page, PageRequest};
use techhub_core::storage::{StoreResult, decisions};
use uuid::Uuid;

/// The range bounds that continue after `position`.
pub(crate) fn after<K: From<Uuid>>(position: Option<Uuid>) -> (Bound<K>, Bound<K>) {
    (position.map_or(Bound::Unbounded, |id| Bound::Excluded(K::from(id))), Bound::Unbounded)
}

/// A page of the values of `map` (ordered by id) that pass `keep`; `id_of` gives a value's id for the cursor.
pub(crate) fn page_of<K, V>(
    map: &BTreeMap<K, V>,
    page: &PageRequest,
    keep: impl Fn(&V) -> bool,
    id_of: impl Fn(&V) -> Uuid,
) -> StoreResult<Page<V>>
where
    K: Ord + From<Uuid>,
    V: Clone,
{
    let items: Vec<V> = map
        .range(after::<K>(decisions::start_after(page)?))
        .map(|(_, value)| value)
        .filter(|value| keep(value))
        .take(page.limit + 1)
        .cloned()
        .collect();
    Ok(Page::from_overfetch(items, page.limit, id_of))
}
