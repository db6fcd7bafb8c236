//! Authentication building blocks.

pub(crate) mod one_time;
