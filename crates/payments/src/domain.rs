//! Payment types, the payment state machine, provider events, test cards and
//! ledger postings. No I/O.

use entrada_primitives::ids::{OrganizationId, PaymentId};
use entrada_primitives::{Currency, Money};

/// What ticketing asks for when an order is placed.
#[derive(Debug, Clone)]
pub struct NewPayment {
    /// Opaque payer-side reference, e.g. `order:<uuid>`. Unique: asking
    /// twice for the same reference returns the first payment.
    pub reference: String,
    /// Whose sale this is (the ledger credits this organization).
    pub organization_id: OrganizationId,
    /// The amount the server computed; never a client value.
    pub amount: Money,
    pub description: String,
    /// Where the provider's checkout sends the buyer back to.
    pub return_url: String,
}

impl NewPayment {
    /// Checks what a provider would refuse later, so the caller gets a 422
    /// naming the field instead of a provider error.
    pub fn validate(&self) -> Result<(), PaymentsError> {
        let reference = self.reference.trim();
        if reference.is_empty() || reference.len() > 200 {
            return Err(PaymentsError::Invalid("reference", "must be 1 to 200 characters"));
        }
        if self.amount.minor <= 0 {
            return Err(PaymentsError::Invalid("amount", "must be greater than zero"));
        }
        if self.description.trim().is_empty() || self.description.len() > 500 {
            return Err(PaymentsError::Invalid("description", "must be 1 to 500 characters"));
        }
        if !(self.return_url.starts_with("http://") || self.return_url.starts_with("https://")) {
            return Err(PaymentsError::Invalid("return_url", "must be an http(s) URL"));
        }
        Ok(())
    }
}

/// A payment ready for the buyer.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub payment_id: PaymentId,
    /// The hosted page the buyer pays on.
    pub checkout_url: String,
}

/// Where a payment stands. Ordered by progress: a transition only ever moves
/// to a later state, which is what makes duplicate and out-of-order webhooks
/// harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentStatus {
    Created,
    Pending,
    Failed,
    Succeeded,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => Self::Created,
            "pending" => Self::Pending,
            "failed" => Self::Failed,
            "succeeded" => Self::Succeeded,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }

    /// The state after `outcome`, or `None` when the outcome changes nothing
    /// (a duplicate, or a late event that would move the payment backwards).
    ///
    /// `failed -> succeeded` is allowed: with Stripe a buyer may retry with
    /// another card after a decline, and once the provider holds the money
    /// it must be recorded (and, if the order is gone, refunded) rather than
    /// ignored.
    pub fn apply(self, outcome: &Outcome) -> Option<PaymentStatus> {
        use PaymentStatus::*;
        match (self, outcome) {
            (Created, Outcome::Pending) => Some(Pending),
            (Created | Pending, Outcome::Failed { .. }) => Some(Failed),
            (Created | Pending | Failed, Outcome::Succeeded) => Some(Succeeded),
            (Succeeded, Outcome::Refunded { .. }) => Some(Refunded),
            _ => None,
        }
    }
}

/// What a provider says happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted but not settled yet (a slow payment method).
    Pending,
    /// The money is captured.
    Succeeded,
    /// The attempt failed; `reason` is the provider's code (`card_declined`).
    Failed { reason: String },
    /// The money went back to the buyer in full.
    Refunded { refund_ref: Option<String> },
    /// An event we subscribe to but do not act on; recorded and acknowledged.
    Ignored,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Refunded { .. } => "refunded",
            Self::Ignored => "ignored",
        }
    }
}

/// A verified, parsed provider webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id: the de-duplication key.
    pub event_id: String,
    /// The provider's event type, for the receipt and the logs.
    pub event_type: String,
    /// Our payment id when the provider echoes it (metadata).
    pub payment_id: Option<PaymentId>,
    /// The provider's checkout object id, when the event names it.
    pub provider_ref: Option<String>,
    /// The provider object refunds are issued against, when the event names it.
    pub capture_ref: Option<String>,
    /// The amount the provider reports, when it reports one.
    pub amount: Option<Money>,
    pub outcome: Outcome,
}

/// Why an incoming webhook was refused. Signature first: nothing in an
/// unverified body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook signature is missing or does not verify")]
    InvalidSignature,
    #[error("the webhook timestamp is too far from now")]
    StaleWebhook,
    #[error("the webhook payload is malformed")]
    MalformedWebhook,
}

impl WebhookError {
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidSignature => "invalid_signature",
            Self::StaleWebhook => "stale_webhook",
            Self::MalformedWebhook => "malformed_webhook",
        }
    }
}

/// How far a webhook's timestamp may be from our clock, either way.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// A failed call to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered 5xx/429; retry later.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx); `code` is its error code.
    #[error("payment provider refused the request: {code}")]
    Rejected { code: String },
}

/// The context's errors, mapped to problem+json in one place (`http.rs`).
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("no such payment")]
    NotFound,
    #[error("the payment cannot be paid in its current state")]
    NotPayable,
    #[error("the payment has not been captured, so it cannot be refunded")]
    NotRefundable,
    #[error("{0}: {1}")]
    Invalid(&'static str, &'static str),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("corrupted row: {0}")]
    Corrupt(String),
}

/// The sandbox's test cards, after Stripe's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// `4242424242424242`: succeeds at once.
    Succeeds,
    /// `4000000000000002`: declined, `card_declined`.
    Declined,
    /// `4000000000009995`: declined, `insufficient_funds`.
    InsufficientFunds,
    /// `4000000000000077`: pending, succeeds at the next settlement run.
    PendingThenSucceeds,
}

impl TestCard {
    /// Accepts the number with spaces or dashes, as buyers type it.
    pub fn parse(input: &str) -> Option<Self> {
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        match digits.as_str() {
            "4242424242424242" => Some(Self::Succeeds),
            "4000000000000002" => Some(Self::Declined),
            "4000000000009995" => Some(Self::InsufficientFunds),
            "4000000000000077" => Some(Self::PendingThenSucceeds),
            _ => None,
        }
    }

    pub fn last4(self) -> &'static str {
        match self {
            Self::Succeeds => "4242",
            Self::Declined => "0002",
            Self::InsufficientFunds => "9995",
            Self::PendingThenSucceeds => "0077",
        }
    }

    pub fn decline_code(self) -> Option<&'static str> {
        match self {
            Self::Declined => Some("card_declined"),
            Self::InsufficientFunds => Some("insufficient_funds"),
            _ => None,
        }
    }
}

/// One ledger line: debit positive, credit negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: String,
    pub amount_minor: i64,
    pub currency: Currency,
}

/// A ledger transaction that has been checked to balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedPostings(Vec<Posting>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ledger postings do not balance per currency")]
pub struct Unbalanced;

impl BalancedPostings {
    /// Accepts the postings only when they sum to zero in every currency.
    pub fn new(postings: Vec<Posting>) -> Result<Self, Unbalanced> {
        let mut sums: Vec<(Currency, i128)> = Vec::new();
        for p in &postings {
            match sums.iter_mut().find(|(c, _)| *c == p.currency) {
                Some((_, s)) => *s += i128::from(p.amount_minor),
                None => sums.push((p.currency, i128::from(p.amount_minor))),
            }
        }
        if postings.is_empty() || sums.iter().any(|(_, s)| *s != 0) {
            return Err(Unbalanced);
        }
        Ok(Self(postings))
    }

    pub fn postings(&self) -> &[Posting] {
        &self.0
    }
}

/// The ledger account holding money at a provider.
pub fn provider_account(provider: &str) -> String {
    format!("provider:{provider}")
}

/// The ledger account of what the platform owes an organizer.
pub fn organizer_account(org: OrganizationId) -> String {
    format!("organizer:{org}")
}

/// A capture: the provider holds the money (debit), the organizer is owed it
/// (credit).
pub fn capture_postings(provider: &str, org: OrganizationId, amount: Money) -> Result<BalancedPostings, Unbalanced> {
    BalancedPostings::new(vec![
        Posting { account: provider_account(provider), amount_minor: amount.minor, currency: amount.currency },
        Posting { account: organizer_account(org), amount_minor: -amount.minor, currency: amount.currency },
    ])
}

/// A full refund: the exact reverse of the capture.
pub fn refund_postings(provider: &str, org: OrganizationId, amount: Money) -> Result<BalancedPostings, Unbalanced> {
    BalancedPostings::new(vec![
        Posting { account: organizer_account(org), amount_minor: amount.minor, currency: amount.currency },
        Posting { account: provider_account(provider), amount_minor: -amount.minor, currency: amount.currency },
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    #[test]
    fn status_moves_only_forward() {
        use PaymentStatus::*;
        let failed = Outcome::Failed { reason: "card_declined".into() };
        let refunded = Outcome::Refunded { refund_ref: None };
        assert_eq!(Created.apply(&Outcome::Pending), Some(Pending));
        assert_eq!(Pending.apply(&Outcome::Succeeded), Some(Succeeded));
        assert_eq!(Succeeded.apply(&refunded), Some(Refunded));
        assert_eq!(Pending.apply(&failed), Some(Failed));
        // late or repeated events change nothing
        assert_eq!(Succeeded.apply(&failed), None);
        assert_eq!(Succeeded.apply(&Outcome::Succeeded), None);
        assert_eq!(Succeeded.apply(&Outcome::Pending), None);
        assert_eq!(Refunded.apply(&Outcome::Succeeded), None);
        assert_eq!(Refunded.apply(&refunded), None);
        assert_eq!(Created.apply(&refunded), None);
        assert_eq!(Failed.apply(&Outcome::Pending), None);
        assert_eq!(Created.apply(&Outcome::Ignored), None);
        for s in [Created, Pending, Failed, Succeeded, Refunded] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn test_cards_parse_with_spacing_and_reject_others() {
        assert_eq!(TestCard::parse("4242 4242 4242 4242"), Some(TestCard::Succeeds));
        assert_eq!(TestCard::parse("4000-0000-0000-9995"), Some(TestCard::InsufficientFunds));
        assert_eq!(TestCard::parse("4000000000000077"), Some(TestCard::PendingThenSucceeds));
        assert_eq!(TestCard::parse("4111111111111111"), None);
        assert_eq!(TestCard::parse("abc"), None);
        assert_eq!(TestCard::Declined.decline_code(), Some("card_declined"));
    }

    #[test]
    fn postings_must_balance_per_currency() {
        let org = OrganizationId::new();
        let c = capture_postings("sandbox", org, eur(2500)).unwrap();
        assert_eq!(c.postings().iter().map(|p| p.amount_minor).sum::<i64>(), 0);
        let r = refund_postings("sandbox", org, eur(2500)).unwrap();
        assert_eq!(r.postings()[0].account, format!("organizer:{org}"));
        let usd = Currency::parse("USD").unwrap();
        let mixed = vec![
            Posting { account: "a".into(), amount_minor: 100, currency: eur(0).currency },
            Posting { account: "b".into(), amount_minor: -100, currency: usd },
        ];
        assert_eq!(BalancedPostings::new(mixed), Err(Unbalanced));
        assert_eq!(BalancedPostings::new(vec![]), Err(Unbalanced));
    }

    #[test]
    fn new_payment_validation_names_the_field() {
        let ok = NewPayment {
            reference: "order:1".into(),
            organization_id: OrganizationId::new(),
            amount: eur(100),
            description: "2 tickets".into(),
            return_url: "https://example.org/back".into(),
        };
        assert!(ok.validate().is_ok());
        let zero = NewPayment { amount: eur(0), ..ok.clone() };
        assert!(matches!(zero.validate(), Err(PaymentsError::Invalid("amount", _))));
        let bad_url = NewPayment { return_url: "javascript:alert(1)".into(), ..ok };
        assert!(matches!(bad_url.validate(), Err(PaymentsError::Invalid("return_url", _))));
    }
}
