//! The market's rules, without I/O: the organizer's resale policy as the
//! market enforces it, the price cap, the split of a resale price into
//! seller proceeds, royalty and fee, the state names and the errors.

use entrada_primitives::{Currency, Money};

/// Basis points in one whole.
pub const FULL_BPS: i64 = 10_000;

/// How long a gift offer stays open.
pub const GIFT_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// How long a buyer's hold on a listing lasts while they pay.
pub const PURCHASE_HOLD_MS: i64 = 10 * 60_000;

/// The resale policy as stored on the event (columns `transfers_allowed`,
/// `resale_*`), plus the event facts the rules are measured against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub transfers_allowed: bool,
    pub resale_allowed: bool,
    /// Cap as basis points of face value.
    pub cap_bps: Option<i64>,
    /// Cap as an absolute amount, minor units of the event currency.
    pub cap_minor: Option<i64>,
    pub royalty_bps: i64,
    pub fee_bps: i64,
    pub max_resales: Option<i64>,
    pub opens_at: Option<i64>,
    pub closes_at: Option<i64>,
    pub freeze_minutes: i64,
    /// Event facts: when doors open (or the start when unset), when it
    /// ends, whether it was cancelled.
    pub doors_at: i64,
    pub ends_at: i64,
    pub cancelled: bool,
}

/// Why a move is refused by the policy or the ticket's state. Each has a
/// stable problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TransfersNotAllowed,
    ResaleNotAllowed,
    WindowNotOpen,
    WindowClosed,
    Frozen,
    TransfersFrozen,
    ResaleLimitReached,
    EventClosed,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::TransfersNotAllowed => "transfers_not_allowed",
            Self::ResaleNotAllowed => "resale_not_allowed",
            Self::WindowNotOpen => "resale_window_not_open",
            Self::WindowClosed => "resale_window_closed",
            Self::Frozen => "resale_frozen",
            Self::TransfersFrozen => "transfers_frozen",
            Self::ResaleLimitReached => "resale_limit_reached",
            Self::EventClosed => "event_closed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::TransfersNotAllowed => "the organizer does not allow tickets of this event to change hands",
            Self::ResaleNotAllowed => "the organizer does not allow resale for this event",
            Self::WindowNotOpen => "the resale window of this event has not opened yet",
            Self::WindowClosed => "the resale window of this event has closed",
            Self::Frozen => "resale is frozen this close to doors opening",
            Self::TransfersFrozen => "tickets cannot change hands this close to doors opening",
            Self::ResaleLimitReached => "this ticket has been resold as often as the organizer allows",
            Self::EventClosed => "the event is over or cancelled",
        }
    }

    /// The `withdraw_reason` a listing gets when the sweep takes it down.
    pub fn withdraw_reason(self) -> &'static str {
        match self {
            Self::WindowClosed | Self::WindowNotOpen => "window_closed",
            Self::Frozen | Self::TransfersFrozen => "freeze",
            Self::ResaleNotAllowed | Self::TransfersNotAllowed | Self::ResaleLimitReached => "resale_disabled",
            Self::EventClosed => "event_closed",
        }
    }
}

impl Policy {
    /// When the freeze before doors starts (unix ms).
    pub fn freeze_starts_at(&self) -> i64 {
        self.doors_at.saturating_sub(self.freeze_minutes.saturating_mul(60_000))
    }

    /// May a ticket be given away now? Gifts need transfers allowed, an
    /// event that is neither cancelled nor over, and no freeze: the freeze
    /// before doors keeps the gate from seeing any holder change in the last
    /// minutes (the catalog's promise for the field). The resale window is a
    /// resale rule and does not apply to gifts.
    pub fn check_gift(&self, now: i64) -> Result<(), Refusal> {
        if self.cancelled || now >= self.ends_at {
            return Err(Refusal::EventClosed);
        }
        if !self.transfers_allowed {
            return Err(Refusal::TransfersNotAllowed);
        }
        if self.freeze_minutes > 0 && now >= self.freeze_starts_at() {
            return Err(Refusal::TransfersFrozen);
        }
        Ok(())
    }

    /// May a ticket resold `resales_so_far` times be listed or bought now?
    pub fn check_resale(&self, now: i64, resales_so_far: i64) -> Result<(), Refusal> {
        if self.cancelled || now >= self.ends_at {
            return Err(Refusal::EventClosed);
        }
        if !self.transfers_allowed {
            return Err(Refusal::TransfersNotAllowed);
        }
        if !self.resale_allowed {
            return Err(Refusal::ResaleNotAllowed);
        }
        if self.opens_at.is_some_and(|o| now < o) {
            return Err(Refusal::WindowNotOpen);
        }
        if self.closes_at.is_some_and(|c| now >= c) {
            return Err(Refusal::WindowClosed);
        }
        if now >= self.freeze_starts_at() {
            return Err(Refusal::Frozen);
        }
        if self.max_resales.is_some_and(|m| resales_so_far >= m) {
            return Err(Refusal::ResaleLimitReached);
        }
        Ok(())
    }

    /// The highest price allowed for a ticket of face value `face_minor`, or
    /// `None` when the organizer set no cap. With both a relative and an
    /// absolute cap, the lower wins. The relative cap rounds down, so the cap
    /// never exceeds the stated share.
    pub fn cap(&self, face_minor: i64) -> Option<i64> {
        let relative = self.cap_bps.map(|b| {
            let wide = i128::from(face_minor) * i128::from(b) / i128::from(FULL_BPS);
            i64::try_from(wide).unwrap_or(i64::MAX)
        });
        match (relative, self.cap_minor) {
            (Some(r), Some(a)) => Some(r.min(a)),
            (r, a) => r.or(a),
        }
    }

    /// Splits a resale price. See [`Split::of`].
    pub fn split(&self, price: Money) -> Split {
        Split::of(price, self.royalty_bps, self.fee_bps)
    }
}

/// A resale price divided among the parties, in minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub price: i64,
    pub seller: i64,
    pub royalty: i64,
    pub fee: i64,
    pub currency: Currency,
}

impl Split {
    /// Royalty and fee are each `price × bps / 10 000` rounded down (towards
    /// zero; prices are positive); the seller gets the remainder. Rounding
    /// down the two shares and giving the remainder to the seller makes the
    /// sum exact by construction and never charges the seller more than the
    /// stated rates. Assumes `royalty_bps + fee_bps ≤ 10 000` (the catalog
    /// refuses more).
    pub fn of(price: Money, royalty_bps: i64, fee_bps: i64) -> Split {
        let share = |bps: i64| -> i64 {
            let wide = i128::from(price.minor) * i128::from(bps.clamp(0, FULL_BPS)) / i128::from(FULL_BPS);
            i64::try_from(wide).unwrap_or(0)
        };
        let royalty = share(royalty_bps);
        let fee = share(fee_bps);
        Split { price: price.minor, seller: price.minor - royalty - fee, royalty, fee, currency: price.currency }
    }
}

/// A gift offer's state. Only `pending` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiftStatus {
    Pending,
    Accepted,
    Declined,
    Cancelled,
    Expired,
}

impl GiftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

/// The context's errors, mapped to problem+json in one place (`http.rs`).
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// Unknown, or not the caller's: both look the same from outside.
    #[error("no such resource")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("refused by the resale policy: {}", .0.code())]
    Policy(Refusal),
    #[error("price above the cap")]
    PriceAboveCap { cap_minor: i64, currency: Currency },
    #[error("the price must be in the event currency")]
    CurrencyMismatch { expected: Currency },
    #[error("the ticket was cancelled or refunded")]
    TicketNotTransferable,
    #[error("the ticket was already used for entry")]
    TicketCheckedIn,
    #[error("the ticket's token was exported to an external wallet")]
    TicketExported,
    #[error("the ticket is listed for resale")]
    TicketListed,
    #[error("the ticket has a pending gift offer")]
    GiftPending,
    #[error("the gift is no longer pending")]
    GiftNotPending,
    #[error("the gift offer expired")]
    GiftExpired,
    #[error("the claim token is missing or wrong")]
    ClaimTokenInvalid,
    #[error("you cannot give a ticket to yourself")]
    SelfGift,
    #[error("the listing is no longer available")]
    ListingUnavailable,
    #[error("the listing cannot be changed in its state")]
    ListingNotActive,
    #[error("you cannot buy your own listing")]
    OwnListing,
    #[error(transparent)]
    Payment(entrada_primitives::Problem),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("corrupted row: {0}")]
    Corrupt(String),
}

impl MarketError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }
}

/// The payment reference of a resale purchase.
pub fn purchase_reference(id: uuid::Uuid) -> String {
    format!("resale:{id}")
}

/// The purchase id in a `resale:<uuid>` reference; `None` for any other
/// payer-side object (orders are ticketing's).
pub fn parse_purchase_reference(reference: &str) -> Option<uuid::Uuid> {
    reference.strip_prefix("resale:").and_then(|s| uuid::Uuid::parse_str(s).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    fn policy() -> Policy {
        Policy {
            transfers_allowed: true,
            resale_allowed: true,
            cap_bps: Some(11_000),
            cap_minor: None,
            royalty_bps: 500,
            fee_bps: 250,
            max_resales: Some(2),
            opens_at: Some(1_000),
            closes_at: Some(50_000_000),
            freeze_minutes: 60,
            doors_at: 100_000_000,
            ends_at: 200_000_000,
            cancelled: false,
        }
    }

    #[test]
    fn the_split_is_exact_for_every_price_and_rate() {
        for price in [1, 2, 3, 99, 100, 101, 2_499, 2_750, 1_000_001] {
            for (r, f) in [(0, 0), (500, 250), (333, 333), (10_000, 0), (5_000, 5_000), (1, 9_999)] {
                let s = Split::of(eur(price), r, f);
                assert_eq!(s.seller + s.royalty + s.fee, price, "{price} {r} {f}");
                assert!(s.seller >= 0 && s.royalty >= 0 && s.fee >= 0);
                assert!(s.royalty * FULL_BPS <= price * r, "royalty rounds down");
            }
        }
        let s = Split::of(eur(2_750), 500, 250);
        assert_eq!((s.seller, s.royalty, s.fee), (2_545, 137, 68));
    }

    #[test]
    fn the_cap_takes_the_lower_of_relative_and_absolute() {
        let mut p = policy();
        assert_eq!(p.cap(2_500), Some(2_750));
        assert_eq!(p.cap(2_501), Some(2_751), "110 % of 2501 = 2751.1 rounds down");
        p.cap_minor = Some(2_600);
        assert_eq!(p.cap(2_500), Some(2_600));
        p.cap_bps = None;
        assert_eq!(p.cap(2_500), Some(2_600));
        p.cap_minor = None;
        assert_eq!(p.cap(2_500), None);
    }

    #[test]
    fn every_rule_has_its_refusal() {
        let p = policy();
        assert_eq!(p.check_resale(500, 0), Err(Refusal::WindowNotOpen));
        assert_eq!(p.check_resale(2_000, 0), Ok(()));
        assert_eq!(p.check_resale(2_000, 2), Err(Refusal::ResaleLimitReached));
        assert_eq!(p.check_resale(50_000_000, 0), Err(Refusal::WindowClosed));
        let open_ended = Policy { closes_at: None, ..p.clone() };
        assert_eq!(open_ended.check_resale(100_000_000 - 3_600_000, 0), Err(Refusal::Frozen));
        assert_eq!(open_ended.check_resale(100_000_000 - 3_600_001, 0), Ok(()));
        assert_eq!(
            Policy { resale_allowed: false, ..p.clone() }.check_resale(2_000, 0),
            Err(Refusal::ResaleNotAllowed)
        );
        let no_transfers = Policy { transfers_allowed: false, ..p.clone() };
        assert_eq!(no_transfers.check_gift(2_000), Err(Refusal::TransfersNotAllowed));
        assert_eq!(no_transfers.check_resale(2_000, 0), Err(Refusal::TransfersNotAllowed));
        assert_eq!(p.check_gift(200_000_000), Err(Refusal::EventClosed));
        assert_eq!(Policy { cancelled: true, ..p.clone() }.check_resale(2_000, 0), Err(Refusal::EventClosed));
        // gifts ignore the resale window, not the freeze
        assert_eq!(p.check_gift(60_000_000), Ok(()));
        assert_eq!(p.check_gift(100_000_000 - 3_600_000), Err(Refusal::TransfersFrozen));
        let no_freeze = Policy { freeze_minutes: 0, ..p.clone() };
        assert_eq!(no_freeze.check_gift(150_000_000), Ok(()), "after doors, without a freeze");
    }

    #[test]
    fn only_resale_references_are_ours() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(parse_purchase_reference(&purchase_reference(id)), Some(id));
        assert_eq!(parse_purchase_reference(&format!("order:{id}")), None);
        assert_eq!(parse_purchase_reference("resale:nope"), None);
    }
}
