//! Typed identifiers. Every id is a UUIDv7 (time-ordered, so indexes stay
//! append-mostly), stored as its canonical text in both databases.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            /// The stored text form.
            pub fn to_db(&self) -> String {
                self.0.to_string()
            }

            /// Reads the stored text form; a malformed value is a corrupted row.
            pub fn from_db(s: &str) -> Result<Self, uuid::Error> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type! {
    /// An account: fan, organizer, staff, support or admin.
    UserId,
    /// A tenant: the organizer's company.
    OrganizationId,
    /// An event (a dated performance at a venue).
    EventId,
    /// A kind of ticket for an event, with a price.
    TicketTypeId,
    /// A pool of inventory shared by one or more ticket types.
    QuotaId,
    /// A cart reservation with an expiry.
    HoldId,
    /// An order: the purchase of a hold's positions.
    OrderId,
    /// One issued ticket, one admission.
    TicketId,
    /// A payment attempt with a provider.
    PaymentId,
    /// A refresh-token family (one login).
    SessionId,
}
