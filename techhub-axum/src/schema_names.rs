//! The closed sets of the API as OpenAPI enums. The core's enums carry no schema (the core does not depend on
//! utoipa), so each has a schema-only twin here, named by `value_type`; the unit test below keeps each twin's
//! names equal to what the core's enum serializes to.

// The twins are never built outside the test below: only their schemas are read.
#![cfg_attr(not(test), allow(dead_code))]

use serde::Serialize;
use utoipa::ToSchema;

/// A user's role.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Role)]
pub(crate) enum RoleName {
    /// A regular user.
    User,
    /// An administrator.
    Admin,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JobState)]
pub(crate) enum JobStateName {
    /// Waiting.
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = BuildStatus)]
pub(crate) enum BuildStatusName {
    /// Waiting to run.
    Queued,
    /// Modules are running.
    Running,
    /// Every module succeeded (or was allowed to fail).
    Succeeded,
    /// A module failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Ran out of time.
    TimedOut,
}

/// Where a module is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ModuleStatus)]
pub(crate) enum ModuleStatusName {
    /// Waiting for its dependencies.
    Pending,
    /// Running.
    Running,
    /// Succeeded.
    Succeeded,
    /// Failed.
    Failed,
    /// Skipped: a dependency did not succeed.
    Skipped,
    /// Cancelled.
    Cancelled,
    /// Ran out of time.
    TimedOut,
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LogStream)]
pub(crate) enum LogStreamName {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// TechHub's own notes.
    System,
}

/// The stream an external executor's lines come from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ExecutorStream)]
pub(crate) enum ExecutorStreamName {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The file format of a user export or import.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TransferFormat)]
pub(crate) enum TransferFormatName {
    /// Comma-separated values with a header row.
    Csv,
    /// A JSON array.
    Json,
}

/// The token type of a token pair.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = TokenType)]
pub(crate) enum TokenTypeName {
    /// `Authorization: Bearer <access_token>`.
    Bearer,
}

/// How a notification travels.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Channel)]
pub(crate) enum ChannelName {
    /// An email.
    Email,
    /// A signed webhook delivery.
    Webhook,
    /// A Slack message.
    Slack,
    /// The server's log.
    Log,
}

/// Whether a notification was delivered.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NotificationStatus)]
pub(crate) enum NotificationStatusName {
    /// Not yet delivered.
    Pending,
    /// Delivered.
    Sent,
    /// Failed for good.
    Failed,
}

/// What an endpoint receives deliveries as.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = EndpointKind)]
pub(crate) enum EndpointKindName {
    /// Signed Standard Webhooks deliveries.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use techhub_core::model::{BuildStatus, JobState, LogStream, ModuleStatus, Role};
    use techhub_core::users::TransferFormat;

    use super::*;

    fn names<T: Serialize>(values: impl IntoIterator<Item = T>) -> Vec<String> {
        values.into_iter().map(|value| serde_json::to_value(value).expect("serializes").to_string()).collect()
    }

    #[test]
    fn every_twin_names_what_the_core_serializes() {
        assert_eq!(names([Role::User, Role::Admin]), names([RoleName::User, RoleName::Admin]));
        assert_eq!(
            names(JobState::ALL),
            names([
                JobStateName::Queued,
                JobStateName::Running,
                JobStateName::Succeeded,
                JobStateName::Failed,
                JobStateName::Cancelled
            ])
        );
        assert_eq!(
            names(BuildStatus::ALL),
            names([
                BuildStatusName::Queued,
                BuildStatusName::Running,
                BuildStatusName::Succeeded,
                BuildStatusName::Failed,
                BuildStatusName::Cancelled,
                BuildStatusName::TimedOut
            ])
        );
        assert_eq!(
            names(ModuleStatus::ALL),
            names([
                ModuleStatusName::Pending,
                ModuleStatusName::Running,
                ModuleStatusName::Succeeded,
                ModuleStatusName::Failed,
                ModuleStatusName::Skipped,
                ModuleStatusName::Cancelled,
                ModuleStatusName::TimedOut
            ])
        );
        assert_eq!(
            names([LogStream::Stdout, LogStream::Stderr, LogStream::System]),
            names([LogStreamName::Stdout, LogStreamName::Stderr, LogStreamName::System])
        );
        assert_eq!(
            names([LogStream::Stdout, LogStream::Stderr]),
            names([ExecutorStreamName::Stdout, ExecutorStreamName::Stderr])
        );
        assert_eq!(
            names([TransferFormat::Csv, TransferFormat::Json]),
            names([TransferFormatName::Csv, TransferFormatName::Json])
        );
        assert_eq!(names([TokenTypeName::Bearer]), ["\"Bearer\""]);
        assert_eq!(
            names(techhub_core::model::Channel::ALL),
            names([ChannelName::Email, ChannelName::Webhook, ChannelName::Slack, ChannelName::Log])
        );
        assert_eq!(
            names(techhub_core::model::NotificationStatus::ALL),
            names([NotificationStatusName::Pending, NotificationStatusName::Sent, NotificationStatusName::Failed])
        );
        assert_eq!(
            names([techhub_core::model::EndpointKind::Webhook, techhub_core::model::EndpointKind::Slack]),
            names([EndpointKindName::Webhook, EndpointKindName::Slack])
        );
    }
}
