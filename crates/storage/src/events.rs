//! The closed set of domain events and who consumes each.
//!
//! Producers write an event with [`crate::outbox::append`] in the same
//! transaction as the change it reports. Events carry ids and the few facts a
//! consumer needs to act without reading another context's tables (a mail
//! needs the address and the amounts). Adding a consumer means adding its
//! name to [`DomainEvent::subscribers`]; producers do not change.
//!
//! The JSON form (`{"type": "order.paid", ...}`) is the stored payload and,
//! later, the message body on a NATS JetStream subject of the same name.

use entrada_primitives::ids::{EventId, OrderId, OrganizationId, PaymentId, TicketId, UserId};
use serde::{Deserialize, Serialize};

/// Consumer names (also their outbox-queue keys).
pub mod consumers {
    /// Ticketing reacts to payment outcomes: marks orders paid, issues tickets.
    pub const TICKETING_PAYMENTS: &str = "ticketing.payments";
    /// Notify sends the transactional mails.
    pub const NOTIFY_MAIL: &str = "notify.mail";
    /// Payments refunds what ticketing could not honour.
    pub const PAYMENTS_REFUNDS: &str = "payments.refunds";
    /// The chain pipeline mints, moves and burns tokens to follow the tickets.
    pub const CHAIN_TOKENS: &str = "chain.tokens";
    /// The market settles resale purchases from their payment outcomes, and
    /// takes exported and cancelled tickets off the market (the name stays:
    /// it is the queue key of rows already stored).
    pub const MARKET_PAYMENTS: &str = "market.payments";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    #[serde(rename = "user.registered")]
    UserRegistered { user_id: UserId, email: String },

    /// Carries the one-time token: the mail is the only place it is written
    /// in clear, and the outbox row is pruned once delivered.
    #[serde(rename = "user.email_verification_requested")]
    EmailVerificationRequested { user_id: UserId, email: String, token: String },

    #[serde(rename = "user.password_reset_requested")]
    PasswordResetRequested { user_id: UserId, email: String, token: String },

    #[serde(rename = "organization.created")]
    OrganizationCreated { organization_id: OrganizationId, owner: UserId },

    #[serde(rename = "event.published")]
    EventPublished { organization_id: OrganizationId, event_id: EventId },

    #[serde(rename = "order.placed")]
    OrderPlaced { order_id: OrderId, event_id: EventId, buyer: UserId, total_minor: i64, currency: String },

    /// The provider confirmed the money. `reference` is the payer-side object
    /// (`order:<uuid>`), so payments knows nothing of orders.
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded { payment_id: PaymentId, reference: String, amount_minor: i64, currency: String },

    #[serde(rename = "payment.failed")]
    PaymentFailed { payment_id: PaymentId, reference: String, reason: String },

    #[serde(rename = "payment.refunded")]
    PaymentRefunded { payment_id: PaymentId, reference: String, amount_minor: i64, currency: String },

    #[serde(rename = "order.paid")]
    OrderPaid {
        order_id: OrderId,
        event_id: EventId,
        buyer: UserId,
        buyer_email: String,
        event_name: String,
        total_minor: i64,
        currency: String,
        tickets: Vec<TicketId>,
    },

    /// Tickets exist and admit; the chain pipeline mints them from here.
    #[serde(rename = "tickets.issued")]
    TicketsIssued { order_id: OrderId, event_id: EventId, holder: UserId, tickets: Vec<TicketId> },

    #[serde(rename = "order.expired")]
    OrderExpired { order_id: OrderId },

    /// Ticketing asks payments to give money back (a payment that arrived
    /// for an order that could no longer be honoured).
    #[serde(rename = "payment.refund_requested")]
    RefundRequested { payment_id: PaymentId, reason: String },

    #[serde(rename = "order.refunded")]
    OrderRefunded { order_id: OrderId, buyer_email: String, event_name: String, amount_minor: i64, currency: String },

    /// Tickets stopped existing for entry (refund, event cancellation); the
    /// chain pipeline burns their tokens.
    #[serde(rename = "tickets.cancelled")]
    TicketsCancelled { event_id: EventId, tickets: Vec<TicketId>, reason: String },

    /// A ticket changed hands inside Entrada (`reason`: `gift` or `resale`).
    /// `generation` is the new holder generation; the chain pipeline moves the
    /// token from the old holder's custodial address to the new one's.
    #[serde(rename = "ticket.holder_changed")]
    TicketHolderChanged {
        ticket_id: TicketId,
        event_id: EventId,
        from: UserId,
        to: UserId,
        reason: String,
        generation: i64,
    },

    /// A holder offered a ticket to `recipient_email`. Carries the one-time
    /// claim token for the recipient's mail (an invitation when
    /// `has_account` is false); the outbox row is pruned once delivered.
    #[serde(rename = "gift.offered")]
    GiftOffered {
        gift_id: String,
        ticket_id: TicketId,
        event_name: String,
        sender_name: String,
        recipient_email: String,
        has_account: bool,
        claim_token: String,
        expires_at_ms: i64,
    },

    /// The holder took the token out to a linked external wallet
    /// (`to_address`, 0x-hex); the chain pipeline transfers it there.
    #[serde(rename = "ticket.exported")]
    TicketExported { ticket_id: TicketId, event_id: EventId, holder: UserId, to_address: String, generation: i64 },
}

impl DomainEvent {
    /// The dotted name, as stored in `outbox.event_type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UserRegistered { .. } => "user.registered",
            Self::EmailVerificationRequested { .. } => "user.email_verification_requested",
            Self::PasswordResetRequested { .. } => "user.password_reset_requested",
            Self::OrganizationCreated { .. } => "organization.created",
            Self::EventPublished { .. } => "event.published",
            Self::OrderPlaced { .. } => "order.placed",
            Self::PaymentSucceeded { .. } => "payment.succeeded",
            Self::PaymentFailed { .. } => "payment.failed",
            Self::PaymentRefunded { .. } => "payment.refunded",
            Self::OrderPaid { .. } => "order.paid",
            Self::TicketsIssued { .. } => "tickets.issued",
            Self::OrderExpired { .. } => "order.expired",
            Self::RefundRequested { .. } => "payment.refund_requested",
            Self::OrderRefunded { .. } => "order.refunded",
            Self::TicketsCancelled { .. } => "tickets.cancelled",
            Self::TicketHolderChanged { .. } => "ticket.holder_changed",
            Self::TicketExported { .. } => "ticket.exported",
            Self::GiftOffered { .. } => "gift.offered",
        }
    }

    /// Which consumers receive this event. The one place subscriptions live.
    pub fn subscribers(&self) -> &'static [&'static str] {
        use consumers::*;
        match self {
            Self::PaymentSucceeded { .. } | Self::PaymentFailed { .. } => &[TICKETING_PAYMENTS, MARKET_PAYMENTS],
            Self::EmailVerificationRequested { .. }
            | Self::PasswordResetRequested { .. }
            | Self::OrderPaid { .. }
            | Self::OrderRefunded { .. }
            | Self::GiftOffered { .. } => &[NOTIFY_MAIL],
            Self::RefundRequested { .. } => &[PAYMENTS_REFUNDS],
            Self::TicketsIssued { .. } | Self::TicketHolderChanged { .. } => &[CHAIN_TOKENS],
            // The market withdraws what is open on the ticket, and refunds a resale buyer of a cancelled ticket.
            Self::TicketsCancelled { .. } | Self::TicketExported { .. } => &[CHAIN_TOKENS, MARKET_PAYMENTS],
            _ => &[],
        }
    }
}
