//! Typed configuration of a [`TechHub`](crate::TechHub).

/// How a hub behaves. Build it with [`Config::default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// How many events a subscriber may fall behind before it starts missing them (default 1024).
    pub event_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { event_capacity: 1024 }
    }
}

impl Config {
    /// Sets [`Config::event_capacity`].
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }
}
