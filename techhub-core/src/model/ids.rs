//! Identifier newtypes: UUID v7, so ids sort by creation time and index well in every store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id. UUID v7: its time prefix comes from the wall clock and only orders ids (no logic
            /// reads time from it), and ids made in one process are strictly increasing.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (read back from storage or from a request).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the UUID, big-endian, so byte order equals id order.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| {
                    crate::Error::invalid_input(concat!("not a valid ", stringify!($name), " (expected a UUID)"))
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies a [`User`](crate::model::User).
    UserId
);
uuid_id!(
    /// Identifies a [`Job`](crate::model::Job).
    JobId
);
uuid_id!(
    /// Identifies a [`Build`](crate::model::Build).
    BuildId
);
uuid_id!(
    /// Identifies a [`Notification`](crate::model::Notification).
    NotificationId
);
uuid_id!(
    /// Identifies a notification [`Endpoint`](crate::model::Endpoint) (a webhook or Slack target).
    EndpointId
);
uuid_id!(
    /// Identifies an audit log entry (its time order is the log's order).
    AuditId
);
uuid_id!(
    /// Identifies a token family: the chain of refresh tokens of one login session. Revoking the family ends
    /// the session.
    TokenFamilyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_in_sequence_are_increasing() {
        let ids: Vec<JobId> = (0..1_000).map(|_| JobId::new()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        let id = UserId::new();
        assert_eq!(id.to_string().parse::<UserId>().expect("parses"), id);
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, format!("\"{id}\""));
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
