//! Rules: events of the bus become notifications for the endpoints subscribed to them and for the configured
//! email recipients, rendered through the templates.
//!
//! | event type | bus event | template |
//! | --- | --- | --- |
//! | `build.succeeded`, `build.failed`, `build.cancelled` | the build's | `build_finished` |
//! | `job.failed` | a job failed for good (not a notification job: no loops) | `job_failed` |
//! | `user.registered` | a user was created | `user_registered` |
//! | `endpoint.disabled` | an endpoint was disabled | `endpoint_disabled` |
//!
//! Every hub runs the rules for its own events (not its peers': an event becomes notifications once, where it
//! happened), whether or not it runs workers: they start when the hub is built inside a tokio runtime (else
//! with [`TechHub::start_workers`]) and stop when it is dropped. Each notification and its job are stored in
//! one write right after the event (the state change is already committed when the event is published); the
//! instances running workers deliver them.

use std::sync::Weak;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Event, EventKind, KindSubscriber};
use crate::hub::HubInner;
use crate::model::{BuildId, Channel, EndpointKind, JobId, UserId};
use crate::{Result, TechHub};

/// Every event type an endpoint or an email rule can subscribe to.
pub const EVENT_TYPES: [&str; 6] =
    ["build.succeeded", "build.failed", "build.cancelled", "job.failed", "user.registered", "endpoint.disabled"];

/// Runs the rules on `events` until the hub is dropped (its bus closes, or it is gone when an event comes).
pub(crate) async fn run(hub: Weak<HubInner>, mut events: KindSubscriber) {
    loop {
        match events.recv().await {
            // The instance that published an event runs its rules; the others only show it.
            Ok(event) if event.from_peer => {}
            Ok(event) => {
                let Some(hub) = TechHub::upgrade(&hub) else { return };
                if let Err(error) = dispatch(&hub, &event).await {
                    tracing::warn!(event = ?event.kind, error = %error, "a notification rule failed");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "the notification rules fell behind the event bus and missed events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The event type, template and template data of an event the rules act on.
async fn describe(hub: &TechHub, event: &Event) -> Result<Option<(&'static str, &'static str, Value)>> {
    let storage = hub.storage();
    let described = match event.kind {
        EventKind::BuildSucceeded | EventKind::BuildFailed | EventKind::BuildCancelled => {
            let event_type = match event.kind {
                EventKind::BuildSucceeded => "build.succeeded",
                EventKind::BuildFailed => "build.failed",
                _ => "build.cancelled",
            };
            let Some(build) = storage.get_build(BuildId::from_uuid(event.subject)).await? else { return Ok(None) };
            let data = json!({
                "build_id": build.id, "project": build.project, "ref": build.git_ref, "status": build.status,
                "duration_ms": build.duration_ms().unwrap_or_default(),
            });
            (event_type, "build_finished", data)
        }
        EventKind::JobFailed => {
            let Some(job) = storage.get_job(JobId::from_uuid(event.subject)).await? else { return Ok(None) };
            // A failing notification must not notify about itself, or one broken endpoint would loop.
            if job.kind == super::kinds::SEND || job.kind.starts_with("email.") {
                return Ok(None);
            }
            let data = json!({
                "job_id": job.id, "kind": job.kind, "queue": job.queue, "attempts": job.attempt,
                "error": job.last_error.clone().unwrap_or_default(),
            });
            ("job.failed", "job_failed", data)
        }
        EventKind::UserCreated => {
            let Some(user) = storage.get_user(UserId::from_uuid(event.subject)).await? else { return Ok(None) };
            ("user.registered", "user_registered", json!({ "user_id": user.id, "email": user.email }))
        }
        EventKind::EndpointDisabled => ("endpoint.disabled", "endpoint_disabled", event.data.clone()),
        _ => return Ok(None),
    };
    Ok(Some(described))
}

/// The kinds of events the rules act on (those [`event_type_of`] knows): the bus builds no other event for them.
pub(crate) const KINDS: [EventKind; 6] = [
    EventKind::BuildSucceeded,
    EventKind::BuildFailed,
    EventKind::BuildCancelled,
    EventKind::JobFailed,
    EventKind::UserCreated,
    EventKind::EndpointDisabled,
];

/// The event type the rules know `kind` as, if they act on it.
fn event_type_of(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::BuildSucceeded => "build.succeeded",
        EventKind::BuildFailed => "build.failed",
        EventKind::BuildCancelled => "build.cancelled",
        EventKind::JobFailed => "job.failed",
        EventKind::UserCreated => "user.registered",
        EventKind::EndpointDisabled => "endpoint.disabled",
        _ => return None,
    })
}

/// Queues the notifications `event` calls for; returns how many.
pub(crate) async fn dispatch(hub: &TechHub, event: &Event) -> Result<usize> {
    // Who subscribes is asked first, so an event nobody subscribes to costs one read (every hub runs the
    // rules, and most events concern nobody).
    let Some(event_type) = event_type_of(event.kind) else { return Ok(0) };
    let config = &hub.config().notify;
    let mailed = config.email_events.iter().any(|subscribed| subscribed == event_type);
    let recipients = if mailed { config.email_recipients.as_slice() } else { &[] };
    let mut endpoints = hub.storage().list_endpoints().await?;
    endpoints.retain(|endpoint| endpoint.receives(event_type));
    if endpoints.is_empty() && recipients.is_empty() {
        return Ok(0);
    }
    let Some((event_type, template, data)) = describe(hub, event).await? else { return Ok(0) };
    let service = hub.notifications();
    let mut queued = 0;
    for endpoint in endpoints {
        let channel = match endpoint.kind {
            EndpointKind::Webhook => Channel::Webhook,
            EndpointKind::Slack => Channel::Slack,
        };
        let rendered = service.render(template, channel, None, data.clone())?;
        service.queue(channel, &endpoint.id.to_string(), Some(template), Some(event_type), rendered).await?;
        queued += 1;
    }
    for recipient in recipients {
        let rendered = service.render(template, Channel::Email, None, data.clone())?;
        service.queue(Channel::Email, recipient.as_str(), Some(template), Some(event_type), rendered).await?;
        queued += 1;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_subscribe_to_exactly_the_kinds_they_act_on() {
        let types: Vec<&str> = KINDS.iter().filter_map(|kind| event_type_of(*kind)).collect();
        assert_eq!(types, EVENT_TYPES, "each rule kind has its event type, in the documented order");
    }
}
