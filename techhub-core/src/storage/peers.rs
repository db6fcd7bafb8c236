//! What passes between the app instances that share one store (several servers on one PostgreSQL database).
//!
//! A store whose data other processes share and that can carry signals between them (a server database with
//! a notification channel) returns a [`Peers`] from [`Storage::peers`](super::Storage::peers). The hub then
//! wires itself to it when built:
//!
//! - every event published on this instance's bus is passed to [`Peers::publish`], and the other instances
//!   deliver it to their own subscribers (WebSocket clients, Tauri windows) through [`PeerInbox::event`]
//!   (the store may pass them only to instances that have such subscribers: [`Peers::subscribed`]);
//! - the store tells the other instances when it queued jobs, and each wakes that many idle workers of the
//!   queue through [`PeerInbox::jobs_due`] (without it they would find the jobs only at their poll interval).
//!
//! Stores used by one process (memory, SQLite, sled) return `None`, and nothing changes for them.

use std::fmt;
use std::sync::Weak;

use crate::events::Event;

/// The other instances sharing the store, as the store reaches them.
pub trait Peers: Send + Sync + fmt::Debug {
    /// Passes `event`, just published on this instance's bus, to the other instances, without waiting.
    ///
    /// Events from one instance reach every other instance in the order it published them (so the events
    /// of one subject, all published by the instance doing the work, stay in order). Delivery is best effort:
    /// while the store's server is unreachable, events are dropped, as a lagging subscriber's are.
    fn publish(&self, event: &Event);

    /// A subscriber to every event (a WebSocket client, a window) just subscribed to this instance's bus: from
    /// now on the other instances' events must reach it. A store may pass events only to the instances that
    /// have such subscribers, and then must deliver to this one every event the others publish from now on.
    /// Called on every such subscription (cheap when nothing changes).
    fn subscribed(&self) {}

    /// Adds where this instance receives the other instances' signals (the hub, once, when it is built).
    /// Held weakly: a hub that is dropped receives nothing more.
    fn attach(&self, inbox: Weak<dyn PeerInbox>);
}

/// Receives what the other instances signal. Implemented by the hub.
pub trait PeerInbox: Send + Sync {
    /// Another instance queued `count` jobs on `queue` that are due now: wake up to that many idle workers.
    fn jobs_due(&self, queue: &str, count: usize);

    /// Another instance published `event`: deliver it to this instance's subscribers (it gets this bus's next
    /// sequence number, and is not passed back to the peers).
    fn event(&self, event: Event);

    /// Whether this instance has a subscriber to every event now (see [`Peers::subscribed`]); a store asks
    /// from time to time, to stop sending events to instances whose subscribers have all left.
    fn wants_events(&self) -> bool {
        true
    }

    /// The link to the other instances was down and is back: wake-ups sent meanwhile were missed, so every
    /// idle worker should look for due jobs once.
    fn reconnected(&self);
}
