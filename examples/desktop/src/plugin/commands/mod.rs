//! The commands, one file per area. Each authenticates the signed-in session and passes its `Actor` to the
//! core, which decides; none re-checks a rule itself.

pub(crate) mod auth;
pub(crate) mod builds;
pub(crate) mod jobs;
pub(crate) mod users;

use techhub_core::model::{Cursor, DEFAULT_PAGE_LIMIT, PageRequest};

/// The page after `cursor` (the first without one), of the core's default size.
fn page(cursor: Option<Cursor>) -> PageRequest {
    match cursor {
        Some(cursor) => PageRequest::after(cursor, DEFAULT_PAGE_LIMIT),
        None => PageRequest::first(DEFAULT_PAGE_LIMIT),
    }
}
