//! Organizations, events, ticket types and quotas.
//!
//! `domain` holds the types, the event lifecycle and validation; `service`
//! the use cases ([`Catalog`]); `store` the SQL; `http` the router. The sale
//! reads events and ticket types through [`Catalog::load_event`] and
//! [`Catalog::load_ticket_types`] and authorizes organizer actions with
//! [`Catalog::authorize`].

pub mod domain;
pub mod http;
pub mod service;
pub mod store;

pub use domain::{CatalogError, Event, EventStatus, Quota, TicketType};
pub use http::router;
pub use service::{Catalog, DemoIds};
