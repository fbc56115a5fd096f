//! Organizations, events, ticket types and quotas.
