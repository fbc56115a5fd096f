//! The market's use cases: gift offers, resale listings, purchases, the
//! sweep (expiry and automatic withdrawal), and the public history.
//!
//! Every ownership change goes through [`store::move_ticket`] (holder and
//! generation named in the `WHERE`) in the transaction that also writes the
//! transfer row, the `ticket.holder_changed` event and the audit record.
//! Transactions never span a call to the payment provider: SQLite has one
//! writer, and a PostgreSQL row lock must not wait on a network round trip.

use crate::domain::{
    GIFT_TTL_MS, GiftStatus, MarketError, PURCHASE_HOLD_MS, Policy, Refusal, Split, purchase_reference,
};
use crate::store::{self, GiftRow, ListingRow, PurchaseRow, TicketRow, TransferRow};
use entrada_payments::domain::{BalancedPostings, Posting, organizer_account};
use entrada_payments::{NewPayment, Payments};
use entrada_primitives::ids::{EventId, PaymentId, TicketId, UserId};
use entrada_primitives::{Email, Money, Principal, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::events::DomainEvent;
use entrada_storage::{Db, Tx, outbox};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

type R<T> = Result<T, MarketError>;

/// Links and timings of the market.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// The public origin, for links in mails and the provider's return link.
    pub public_base_url: String,
    /// How long a gift offer stays open, ms.
    pub gift_ttl_ms: i64,
    /// How long a buyer's hold on a listing lasts, ms.
    pub purchase_hold_ms: i64,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            gift_ttl_ms: GIFT_TTL_MS,
            purchase_hold_ms: PURCHASE_HOLD_MS,
        }
    }
}

/// The market service. Cheap to clone.
#[derive(Clone)]
pub struct Market {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) clock: SharedClock,
    pub(crate) payments: Payments,
    pub(crate) cfg: MarketConfig,
}

/// The ledger account of what the platform owes a reseller.
pub fn seller_account(user: UserId) -> String {
    format!("seller:{user}")
}

/// The ledger account of the platform's resale fees.
pub const PLATFORM_FEES: &str = "platform:fees";

/// What the public history shows for one step of a ticket's life.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// `issued | minted | gift | resale | checked_in`.
    pub kind: &'static str,
    pub at: i64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub price: Option<Money>,
    pub cap_minor: Option<i64>,
    /// For `minted`: the token id, the mint transaction and the collection.
    pub token: Option<(i64, String, Option<String>)>,
}

/// A ticket's public history.
#[derive(Debug, Clone)]
pub struct History {
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub serial: i64,
    pub ticket_type: String,
    /// False once the ticket was cancelled or refunded.
    pub valid: bool,
    pub entries: Vec<HistoryEntry>,
}

/// What a holder may do with a ticket now, with the server's cap.
#[derive(Debug, Clone)]
pub struct ResaleTerms {
    pub ticket_id: TicketId,
    pub face: Money,
    pub cap_minor: Option<i64>,
    pub royalty_bps: i64,
    pub fee_bps: i64,
    /// `None` when a gift would be accepted now, else the refusal code.
    pub gift_refusal: Option<&'static str>,
    pub resale_refusal: Option<&'static str>,
    pub resales_so_far: i64,
}

/// Gift offers to and from a user.
#[derive(Debug, Clone)]
pub struct MyGifts {
    pub incoming: Vec<GiftRow>,
    pub outgoing: Vec<GiftRow>,
}

impl Market {
    pub fn new(db: Db, clock: SharedClock, payments: Payments, cfg: MarketConfig) -> Market {
        Market { inner: Arc::new(Inner { db, clock, payments, cfg }) }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn lock_t(&self) -> String {
        store::lock_of(self.inner.db.backend(), "t")
    }

    fn lock_plain(&self) -> &'static str {
        self.inner.db.for_update()
    }

    /// Loads the caller's ticket for a move: unknown and someone else's both
    /// answer `NotFound`, so ticket ids cannot be probed.
    async fn own_ticket(&self, tx: &mut Tx, who: UserId, id: TicketId) -> R<TicketRow> {
        let t = store::load_ticket(tx, id, &self.lock_t()).await?.ok_or(MarketError::NotFound)?;
        if t.holder_id != who {
            return Err(MarketError::NotFound);
        }
        if !t.movable() {
            return Err(MarketError::TicketNotTransferable);
        }
        if t.checked_in {
            return Err(MarketError::TicketCheckedIn);
        }
        if t.exported {
            return Err(MarketError::TicketExported);
        }
        Ok(t)
    }

    async fn event(&self, tx: &mut Tx, id: EventId) -> R<store::EventRow> {
        store::load_event(tx, id).await?.ok_or_else(|| MarketError::Corrupt(format!("ticket of unknown event {id}")))
    }

    // ---- gifts ----

    /// Offers the caller's ticket to `recipient`. A recipient without an
    /// account gets an invitation; either way the mail carries a claim token.
    pub async fn offer_gift(&self, who: &Principal, ticket: TicketId, recipient: &Email) -> R<GiftRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let mut tx = self.inner.db.begin().await?;
        let t = self.own_ticket(&mut tx, me, ticket).await?;
        let ev = self.event(&mut tx, t.event_id).await?;
        ev.policy.check_gift(now).map_err(MarketError::Policy)?;
        let (my_email, my_name) = store::user(&mut tx, me).await?.ok_or(MarketError::NotFound)?;
        if my_email.eq_ignore_ascii_case(recipient.as_str()) {
            return Err(MarketError::SelfGift);
        }
        if store::open_listing_of_ticket(&mut tx, t.id).await?.is_some() {
            return Err(MarketError::TicketListed);
        }
        let account = store::user_by_email(&mut tx, recipient.as_str()).await?;
        let token = entrada_primitives::token::random_token();
        let gift = GiftRow {
            id: Uuid::now_v7(),
            ticket_id: t.id,
            event_id: t.event_id,
            sender_id: me,
            recipient_email: recipient.as_str().to_owned(),
            recipient_id: account.as_ref().map(|a| a.0),
            claim_digest: entrada_primitives::token::digest(&token),
            generation: t.generation,
            status: GiftStatus::Pending.as_str().to_owned(),
            expires_at: now + self.inner.cfg.gift_ttl_ms,
            created_at: now,
            closed_at: None,
        };
        if !store::insert_gift(&mut tx, &gift).await? {
            return Err(MarketError::GiftPending);
        }
        outbox::append(
            &mut tx,
            now,
            &DomainEvent::GiftOffered {
                gift_id: gift.id.to_string(),
                ticket_id: t.id,
                event_name: ev.name.clone(),
                sender_name: my_name,
                recipient_email: gift.recipient_email.clone(),
                has_account: account.is_some(),
                claim_token: token,
                expires_at_ms: gift.expires_at,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            now,
            &Actor::User(me),
            "gift.offered",
            "gift",
            &gift.id.to_string(),
            json!({ "ticket_id": t.id, "generation": t.generation, "recipient_has_account": account.is_some() }),
        )
        .await?;
        tx.commit().await?;
        Ok(gift)
    }

    /// Is this gift addressed to the caller (by account or by address)?
    async fn addressed_to(&self, tx: &mut Tx, g: &GiftRow, who: UserId) -> R<bool> {
        if g.recipient_id == Some(who) {
            return Ok(true);
        }
        let email = store::user(tx, who).await?.map(|u| u.0).unwrap_or_default();
        Ok(email.eq_ignore_ascii_case(&g.recipient_email))
    }

    /// The recipient takes the ticket. An offer made to an existing account
    /// is accepted by that account; an offer made to an address without an
    /// account (an invitation) is accepted by whoever signed up with that
    /// address and presents the claim token from the mail, which proves they
    /// read that mailbox.
    pub async fn accept_gift(&self, who: &Principal, id: Uuid, claim_token: Option<&str>) -> R<GiftRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let mut tx = self.inner.db.begin().await?;
        // Lock order, everywhere: ticket, then listing or gift, then purchase.
        // So the ticket is locked before the gift is, through an unlocked peek.
        let peek = store::load_gift(&mut tx, id, "").await?.ok_or(MarketError::NotFound)?;
        let t = store::load_ticket(&mut tx, peek.ticket_id, &self.lock_t()).await?.ok_or(MarketError::NotFound)?;
        let g = store::load_gift(&mut tx, id, self.lock_plain()).await?.ok_or(MarketError::NotFound)?;
        if !self.addressed_to(&mut tx, &g, me).await? {
            return Err(MarketError::NotFound);
        }
        let token_ok = claim_token.is_some_and(|t| entrada_primitives::token::digest(t) == g.claim_digest);
        if g.recipient_id != Some(me) && !token_ok {
            return Err(MarketError::ClaimTokenInvalid);
        }
        if g.status != "pending" {
            return Err(MarketError::GiftNotPending);
        }
        if g.expires_at <= now {
            store::close_gift(&mut tx, g.id, GiftStatus::Expired.as_str(), None, now).await?;
            audit::record(&mut tx, now, &Actor::System, "gift.expired", "gift", &g.id.to_string(), json!({})).await?;
            tx.commit().await?;
            return Err(MarketError::GiftExpired);
        }
        if t.exported {
            // The export voids every offer (see `on_exported`); one the
            // consumer has not reached yet is voided here.
            store::close_gift(&mut tx, g.id, "void", None, now).await?;
            audit::record(
                &mut tx,
                now,
                &Actor::System,
                "gift.void",
                "gift",
                &g.id.to_string(),
                json!({ "reason": "ticket_exported" }),
            )
            .await?;
            tx.commit().await?;
            return Err(MarketError::TicketExported);
        }
        let ev = self.event(&mut tx, t.event_id).await?;
        ev.policy.check_gift(now).map_err(MarketError::Policy)?;
        if !t.movable() {
            return Err(MarketError::TicketNotTransferable);
        }
        if t.checked_in {
            return Err(MarketError::TicketCheckedIn);
        }
        if store::open_listing_of_ticket(&mut tx, t.id).await?.is_some() {
            return Err(MarketError::TicketListed);
        }
        // The sender must still hold the ticket at the offered generation;
        // otherwise the offer is void (the ticket moved on another way).
        let moved = if t.holder_id == g.sender_id && t.generation == g.generation {
            store::move_ticket(&mut tx, t.id, g.sender_id, g.generation, me).await?
        } else {
            None
        };
        let Some(generation) = moved else {
            store::close_gift(&mut tx, g.id, "void", None, now).await?;
            audit::record(&mut tx, now, &Actor::System, "gift.void", "gift", &g.id.to_string(), json!({})).await?;
            tx.commit().await?;
            return Err(MarketError::GiftNotPending);
        };
        store::close_gift(&mut tx, g.id, GiftStatus::Accepted.as_str(), Some(me), now).await?;
        store::insert_transfer(&mut tx, &t, "gift", g.sender_id, me, generation, None, now).await?;
        outbox::append(
            &mut tx,
            now,
            &DomainEvent::TicketHolderChanged {
                ticket_id: t.id,
                event_id: t.event_id,
                from: g.sender_id,
                to: me,
                reason: "gift".into(),
                generation,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            now,
            &Actor::User(me),
            "gift.accepted",
            "gift",
            &g.id.to_string(),
            json!({ "ticket_id": t.id, "from": g.sender_id, "to": me, "generation": generation }),
        )
        .await?;
        let g = store::load_gift(&mut tx, id, "").await?.ok_or(MarketError::NotFound)?;
        tx.commit().await?;
        Ok(g)
    }

    /// The recipient says no; the ticket stays with the sender.
    pub async fn decline_gift(&self, who: &Principal, id: Uuid) -> R<GiftRow> {
        self.close_gift_as(who.user_id, id, GiftStatus::Declined).await
    }

    /// The sender withdraws a pending offer.
    pub async fn cancel_gift(&self, who: &Principal, id: Uuid) -> R<GiftRow> {
        self.close_gift_as(who.user_id, id, GiftStatus::Cancelled).await
    }

    async fn close_gift_as(&self, me: UserId, id: Uuid, to: GiftStatus) -> R<GiftRow> {
        let now = self.now_ms();
        let mut tx = self.inner.db.begin().await?;
        let g = store::load_gift(&mut tx, id, self.lock_plain()).await?.ok_or(MarketError::NotFound)?;
        let allowed = match to {
            GiftStatus::Cancelled => g.sender_id == me,
            _ => self.addressed_to(&mut tx, &g, me).await?,
        };
        if !allowed {
            return Err(MarketError::NotFound);
        }
        if g.status != "pending" {
            return Err(MarketError::GiftNotPending);
        }
        let (status, action) = if g.expires_at <= now {
            (GiftStatus::Expired, "gift.expired")
        } else {
            (to, if to == GiftStatus::Cancelled { "gift.cancelled" } else { "gift.declined" })
        };
        store::close_gift(&mut tx, g.id, status.as_str(), None, now).await?;
        audit::record(&mut tx, now, &Actor::User(me), action, "gift", &g.id.to_string(), json!({})).await?;
        let g = store::load_gift(&mut tx, id, "").await?.ok_or(MarketError::NotFound)?;
        tx.commit().await?;
        if status == GiftStatus::Expired {
            return Err(MarketError::GiftExpired);
        }
        Ok(g)
    }

    /// A gift the caller sent or may accept.
    pub async fn get_gift(&self, who: &Principal, id: Uuid) -> R<GiftRow> {
        let mut tx = self.inner.db.begin().await?;
        let g = store::load_gift(&mut tx, id, "").await?.ok_or(MarketError::NotFound)?;
        let visible = g.sender_id == who.user_id || self.addressed_to(&mut tx, &g, who.user_id).await?;
        tx.rollback().await?;
        if !visible {
            return Err(MarketError::NotFound);
        }
        Ok(g)
    }

    /// Pending offers to the caller (by account or address) and the caller's offers.
    pub async fn my_gifts(&self, who: &Principal) -> R<MyGifts> {
        let mut c = self.inner.db.reader().acquire().await?;
        let email = store::user(&mut c, who.user_id).await?.map(|u| u.0).unwrap_or_default();
        let (incoming, outgoing) = store::gifts_of(&mut c, who.user_id, &email).await?;
        Ok(MyGifts { incoming, outgoing })
    }

    // ---- listings ----

    fn check_price(ev: &store::EventRow, face_minor: i64, price: Money) -> R<Option<i64>> {
        if price.currency != ev.currency {
            return Err(MarketError::CurrencyMismatch { expected: ev.currency });
        }
        if price.minor <= 0 {
            return Err(MarketError::invalid("price.amount_minor", "must be greater than zero"));
        }
        let cap = ev.policy.cap(face_minor);
        if let Some(c) = cap
            && price.minor > c
        {
            return Err(MarketError::PriceAboveCap { cap_minor: c, currency: ev.currency });
        }
        Ok(cap)
    }

    /// What the holder may do with a ticket now, and the cap for it.
    pub async fn resale_terms(&self, who: &Principal, ticket: TicketId) -> R<ResaleTerms> {
        let now = self.now_ms();
        let mut c = self.inner.db.reader().acquire().await?;
        let t = store::load_ticket(&mut c, ticket, "").await?.ok_or(MarketError::NotFound)?;
        if t.holder_id != who.user_id {
            return Err(MarketError::NotFound);
        }
        let ev = store::load_event(&mut c, t.event_id).await?.ok_or(MarketError::NotFound)?;
        let resales = store::resale_count(&mut c, t.id).await?;
        let state = if !t.movable() {
            Some("ticket_not_transferable")
        } else if t.checked_in {
            Some("ticket_checked_in")
        } else if t.exported {
            Some("ticket_exported")
        } else {
            None
        };
        Ok(ResaleTerms {
            ticket_id: t.id,
            face: t.face,
            cap_minor: ev.policy.cap(t.face.minor),
            royalty_bps: ev.policy.royalty_bps,
            fee_bps: ev.policy.fee_bps,
            gift_refusal: state.or(ev.policy.check_gift(now).err().map(Refusal::code)),
            resale_refusal: state.or(ev.policy.check_resale(now, resales).err().map(Refusal::code)),
            resales_so_far: resales,
        })
    }

    /// Lists the caller's ticket at `price`, within the cap.
    pub async fn create_listing(&self, who: &Principal, ticket: TicketId, price: Money) -> R<ListingRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let mut tx = self.inner.db.begin().await?;
        let t = self.own_ticket(&mut tx, me, ticket).await?;
        let ev = self.event(&mut tx, t.event_id).await?;
        let resales = store::resale_count(&mut tx, t.id).await?;
        ev.policy.check_resale(now, resales).map_err(MarketError::Policy)?;
        let cap = Self::check_price(&ev, t.face.minor, price)?;
        if store::pending_gift_of_ticket(&mut tx, t.id).await? {
            return Err(MarketError::GiftPending);
        }
        let id = Uuid::now_v7();
        if !store::insert_listing(&mut tx, id, &t, me, price, cap, now).await? {
            return Err(MarketError::TicketListed);
        }
        audit::record(
            &mut tx,
            now,
            &Actor::User(me),
            "listing.created",
            "listing",
            &id.to_string(),
            json!({ "ticket_id": t.id, "price_minor": price.minor, "currency": price.currency.as_str(),
                    "cap_minor": cap, "generation": t.generation }),
        )
        .await?;
        let l = store::load_listing(&mut tx, self.inner.db.backend(), id, false).await?.ok_or(MarketError::NotFound)?;
        tx.commit().await?;
        Ok(l)
    }

    async fn own_listing(&self, tx: &mut Tx, me: UserId, id: Uuid) -> R<ListingRow> {
        let l = store::load_listing(tx, self.inner.db.backend(), id, true).await?.ok_or(MarketError::NotFound)?;
        if l.seller_id != me {
            return Err(MarketError::NotFound);
        }
        Ok(l)
    }

    /// Changes the price of the caller's active listing, within the cap.
    pub async fn reprice(&self, who: &Principal, id: Uuid, price: Money) -> R<ListingRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let mut tx = self.inner.db.begin().await?;
        let l = self.own_listing(&mut tx, me, id).await?;
        if l.status != "active" {
            return Err(MarketError::ListingNotActive);
        }
        let ev = self.event(&mut tx, l.event_id).await?;
        let resales = store::resale_count(&mut tx, l.ticket_id).await?;
        ev.policy.check_resale(now, resales).map_err(MarketError::Policy)?;
        let cap = Self::check_price(&ev, l.face_minor, price)?;
        if !store::reprice(&mut tx, l.id, price.minor, cap, now).await? {
            return Err(MarketError::ListingNotActive);
        }
        audit::record(
            &mut tx,
            now,
            &Actor::User(me),
            "listing.repriced",
            "listing",
            &l.id.to_string(),
            json!({ "from_minor": l.price.minor, "to_minor": price.minor, "cap_minor": cap }),
        )
        .await?;
        let l = store::load_listing(&mut tx, self.inner.db.backend(), id, false).await?.ok_or(MarketError::NotFound)?;
        tx.commit().await?;
        Ok(l)
    }

    /// Takes the caller's listing down (not while a buyer's hold is on it).
    pub async fn withdraw(&self, who: &Principal, id: Uuid) -> R<ListingRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let mut tx = self.inner.db.begin().await?;
        let l = self.own_listing(&mut tx, me, id).await?;
        if !store::withdraw(&mut tx, l.id, "seller", now).await? {
            return Err(MarketError::ListingNotActive);
        }
        audit::record(&mut tx, now, &Actor::User(me), "listing.withdrawn", "listing", &l.id.to_string(), json!({}))
            .await?;
        let l = store::load_listing(&mut tx, self.inner.db.backend(), id, false).await?.ok_or(MarketError::NotFound)?;
        tx.commit().await?;
        Ok(l)
    }

    /// One listing, public (no seller shown).
    pub async fn get_listing(&self, id: Uuid) -> R<ListingRow> {
        let mut c = self.inner.db.reader().acquire().await?;
        store::load_listing(&mut c, self.inner.db.backend(), id, false).await?.ok_or(MarketError::NotFound)
    }

    /// Listings a buyer can take now for an event, cheapest first.
    pub async fn event_listings(&self, event: EventId) -> R<Vec<ListingRow>> {
        let mut c = self.inner.db.reader().acquire().await?;
        store::load_event(&mut c, event).await?.ok_or(MarketError::NotFound)?;
        store::listings_of_event(&mut c, event, self.now_ms()).await
    }

    pub async fn my_listings(&self, who: &Principal) -> R<Vec<ListingRow>> {
        let mut c = self.inner.db.reader().acquire().await?;
        store::listings_of_seller(&mut c, who.user_id).await
    }

    // ---- purchases ----

    /// Holds a listing for the caller and opens the payment. Exactly one of
    /// any number of concurrent buyers gets the hold ([`store::hold_listing`]);
    /// the others get `ListingUnavailable`. The price is the listing's, read
    /// here; nothing the buyer sends is a price.
    pub async fn purchase(&self, who: &Principal, listing: Uuid) -> R<PurchaseRow> {
        let now = self.now_ms();
        let me = who.user_id;
        let backend = self.inner.db.backend();
        let mut tx = self.inner.db.begin().await?;
        // Ticket first, then listing: the order of `create_listing` (and of
        // gifts and exports), so a listing created while this one is bought
        // waits instead of deadlocking on PostgreSQL.
        let ticket = store::ticket_of_listing(&mut tx, listing).await?.ok_or(MarketError::NotFound)?;
        let t = store::load_ticket(&mut tx, ticket, &self.lock_t()).await?.ok_or(MarketError::NotFound)?;
        let l = store::load_listing(&mut tx, backend, listing, true).await?.ok_or(MarketError::NotFound)?;
        if l.seller_id == me {
            return Err(MarketError::OwnListing);
        }
        if !l.available(now) {
            return Err(MarketError::ListingUnavailable);
        }
        let ev = self.event(&mut tx, l.event_id).await?;
        // Checks at purchase time, beside the sweep: a listing the sweep has
        // not reached yet is taken down here instead of sold.
        let stale = t.holder_id != l.seller_id || t.generation != l.generation || !t.movable() || t.checked_in;
        let refusal = ev.policy.check_resale(now, store::resale_count(&mut tx, t.id).await?).err();
        if stale || t.exported || refusal.is_some() {
            let reason = match refusal {
                Some(r) => r.withdraw_reason(),
                None if t.exported => "ticket_exported",
                None => "ticket_changed",
            };
            if store::withdraw(&mut tx, l.id, reason, now).await? {
                audit::record(
                    &mut tx,
                    now,
                    &Actor::System,
                    "listing.withdrawn",
                    "listing",
                    &l.id.to_string(),
                    json!({ "reason": reason }),
                )
                .await?;
            }
            tx.commit().await?;
            return Err(match refusal {
                Some(r) => MarketError::Policy(r),
                None if t.exported => MarketError::TicketExported,
                None => MarketError::ListingUnavailable,
            });
        }
        let id = Uuid::now_v7();
        let until = now + self.inner.cfg.purchase_hold_ms;
        if !store::hold_listing(&mut tx, l.id, id, until, now).await? {
            return Err(MarketError::ListingUnavailable);
        }
        if let Some(prev) = l.purchase_id {
            // The previous buyer's hold ran out; their purchase ends here.
            store::close_purchase(&mut tx, prev, "pending", "expired", None, now).await?;
        }
        let split: Split = ev.policy.split(l.price);
        let p = PurchaseRow {
            id,
            listing_id: l.id,
            ticket_id: l.ticket_id,
            event_id: l.event_id,
            organization_id: ev.organization_id,
            buyer_id: me,
            seller_id: l.seller_id,
            price_minor: split.price,
            seller_minor: split.seller,
            royalty_minor: split.royalty,
            fee_minor: split.fee,
            currency: split.currency,
            status: "pending".into(),
            payment_id: None,
            checkout_url: None,
            last_payment_error: None,
            expires_at: until,
            created_at: now,
            completed_at: None,
        };
        store::insert_purchase(&mut tx, &p).await?;
        audit::record(
            &mut tx,
            now,
            &Actor::User(me),
            "resale_purchase.created",
            "resale_purchase",
            &id.to_string(),
            json!({ "listing_id": l.id, "ticket_id": l.ticket_id, "price_minor": p.price_minor,
                    "currency": p.currency.as_str() }),
        )
        .await?;
        tx.commit().await?;

        let base = self.inner.cfg.public_base_url.trim_end_matches('/');
        let req = NewPayment {
            reference: purchase_reference(id),
            organization_id: ev.organization_id,
            amount: l.price,
            description: format!("Resale ticket #{} · {}", t.serial, ev.name),
            return_url: format!("{base}/resale/purchases/{id}"),
        };
        match self.inner.payments.create_payment(req).await {
            Ok(c) => {
                let mut tx = self.inner.db.begin().await?;
                store::set_purchase_checkout(&mut tx, id, c.payment_id.0, &c.checkout_url).await?;
                let p = store::load_purchase(&mut tx, id, "").await?.ok_or(MarketError::NotFound)?;
                tx.commit().await?;
                Ok(p)
            }
            Err(problem) => {
                // No checkout, so nobody can pay: give the listing back now
                // rather than leave it held until the hold expires.
                let now = self.now_ms();
                let mut tx = self.inner.db.begin().await?;
                if store::close_purchase(&mut tx, id, "pending", "cancelled", None, now).await? {
                    store::release_hold(&mut tx, l.id, id, now).await?;
                    audit::record(
                        &mut tx,
                        now,
                        &Actor::System,
                        "resale_purchase.cancelled",
                        "resale_purchase",
                        &id.to_string(),
                        json!({ "reason": "payment_not_started" }),
                    )
                    .await?;
                }
                tx.commit().await?;
                Err(MarketError::Payment(problem))
            }
        }
    }

    /// One of the caller's purchases.
    pub async fn get_purchase(&self, who: &Principal, id: Uuid) -> R<PurchaseRow> {
        let mut c = self.inner.db.reader().acquire().await?;
        let p = store::load_purchase(&mut c, id, "").await?.ok_or(MarketError::NotFound)?;
        if p.buyer_id != who.user_id {
            return Err(MarketError::NotFound);
        }
        Ok(p)
    }

    pub async fn my_purchases(&self, who: &Principal) -> R<Vec<PurchaseRow>> {
        let mut c = self.inner.db.reader().acquire().await?;
        store::purchases_of_buyer(&mut c, who.user_id).await
    }

    /// Settles a captured resale payment inside the dispatcher's transaction
    /// (`now` is the event's time). Either the whole sale happens — holder,
    /// generation, listing, purchase, transfer row, ledger, payout, event,
    /// audit — or the money is sent back through a refund request.
    pub(crate) async fn settle_payment(
        &self,
        tx: &mut Tx,
        now: i64,
        payment: PaymentId,
        purchase_id: Uuid,
        amount_minor: i64,
        currency: &str,
    ) -> R<()> {
        let Some(peek) = store::load_purchase(tx, purchase_id, "").await? else {
            tracing::warn!(%purchase_id, %payment, "payment for an unknown resale purchase; ignored");
            return Ok(());
        };
        // Lock order: ticket, listing, purchase (as `purchase` does).
        let backend = self.inner.db.backend();
        let t = store::load_ticket(tx, peek.ticket_id, &self.lock_t()).await?.ok_or(MarketError::NotFound)?;
        let l = store::load_listing(tx, backend, peek.listing_id, true).await?.ok_or(MarketError::NotFound)?;
        let p = store::load_purchase(tx, purchase_id, self.lock_plain()).await?.ok_or(MarketError::NotFound)?;
        let same_payment = p.payment_id.is_none_or(|x| x == payment.0);
        match p.status.as_str() {
            "completed" | "refunded" => {
                if !same_payment {
                    tracing::warn!(purchase = %p.id, %payment, "second payment for a closed resale purchase; refunding");
                    self.refund(tx, now, &p, payment, "duplicate_payment").await?;
                }
                return Ok(());
            }
            "cancelled" => {
                // Money for a purchase whose checkout was never handed out
                // (a crash between the provider call and our record).
                store::close_purchase(tx, p.id, "cancelled", "refunded", Some(payment.0), now).await?;
                self.refund(tx, now, &p, payment, "purchase_cancelled").await?;
                return Ok(());
            }
            _ => {}
        }
        let from = p.status.clone();
        let amount_ok = amount_minor == p.price_minor && currency == p.currency.as_str();
        let ours = l.status == "held" && l.purchase_id == Some(p.id);
        // A payment after the hold expired still wins if nobody else took the
        // listing meanwhile (it is active, or held by an expired hold).
        let listing_ok = ours || l.available(now) && l.status != "sold";
        let ticket_ok = t.holder_id == p.seller_id && t.generation == l.generation && t.movable() && !t.checked_in;
        let refusal = if !amount_ok {
            Some("amount_mismatch")
        } else if !listing_ok {
            Some("listing_sold_to_another_buyer")
        } else if t.exported {
            Some("ticket_exported")
        } else if !ticket_ok {
            Some("ticket_changed")
        } else {
            None
        };
        let moved = match refusal {
            None => store::move_ticket(tx, t.id, p.seller_id, l.generation, p.buyer_id).await?,
            Some(_) => None,
        };
        let Some(generation) = moved else {
            let reason = refusal.unwrap_or("ticket_changed");
            if store::close_purchase(tx, p.id, &from, "refunded", Some(payment.0), now).await? {
                if ours {
                    store::release_hold(tx, l.id, p.id, now).await?;
                }
                self.refund(tx, now, &p, payment, reason).await?;
            }
            return Ok(());
        };
        if !store::close_purchase(tx, p.id, &from, "completed", Some(payment.0), now).await? {
            return Err(MarketError::Corrupt(format!("purchase {} changed under its lock", p.id)));
        }
        store::mark_sold(tx, l.id, p.id, now).await?;
        store::insert_transfer(
            tx,
            &t,
            "resale",
            p.seller_id,
            p.buyer_id,
            generation,
            Some((p.price_minor, l.cap_minor, p.currency)),
            now,
        )
        .await?;
        // The capture already credited the organizer with the whole price;
        // this moves the seller's proceeds and the platform fee out of it,
        // leaving the royalty with the organizer.
        let cur = p.currency;
        let lines: Vec<Posting> = [
            (organizer_account(p.organization_id), p.seller_minor + p.fee_minor),
            (seller_account(p.seller_id), -p.seller_minor),
            (PLATFORM_FEES.to_owned(), -p.fee_minor),
        ]
        .into_iter()
        .filter(|(_, a)| *a != 0)
        .map(|(account, amount_minor)| Posting { account, amount_minor, currency: cur })
        .collect();
        if !lines.is_empty() {
            let postings = BalancedPostings::new(lines).map_err(|e| MarketError::Corrupt(e.to_string()))?;
            entrada_payments::store::post_ledger(tx, "resale_settlement", payment, &postings, now)
                .await
                .map_err(|e| MarketError::Corrupt(e.to_string()))?;
        }
        store::insert_payout(tx, &p, now).await?;
        outbox::append(
            tx,
            now,
            &DomainEvent::TicketHolderChanged {
                ticket_id: t.id,
                event_id: t.event_id,
                from: p.seller_id,
                to: p.buyer_id,
                reason: "resale".into(),
                generation,
            },
        )
        .await?;
        audit::record(
            tx,
            now,
            &Actor::System,
            "resale_purchase.completed",
            "resale_purchase",
            &p.id.to_string(),
            json!({ "payment_id": payment, "ticket_id": t.id, "generation": generation,
                    "price_minor": p.price_minor, "seller_minor": p.seller_minor,
                    "royalty_minor": p.royalty_minor, "fee_minor": p.fee_minor, "currency": cur.as_str() }),
        )
        .await?;
        Ok(())
    }

    /// A payment attempt failed: noted on the purchase; the hold stays until
    /// it expires, so the buyer can try another card.
    pub(crate) async fn payment_failed(&self, tx: &mut Tx, now: i64, purchase: Uuid, reason: &str) -> R<()> {
        if store::set_purchase_error(tx, purchase, reason).await? {
            audit::record(
                tx,
                now,
                &Actor::System,
                "resale_purchase.payment_failed",
                "resale_purchase",
                &purchase.to_string(),
                json!({ "reason": reason }),
            )
            .await?;
        }
        Ok(())
    }

    /// Asks payments for the money back, through the same event the sale uses.
    async fn refund(&self, tx: &mut Tx, now: i64, p: &PurchaseRow, payment: PaymentId, reason: &str) -> R<()> {
        outbox::append(tx, now, &DomainEvent::RefundRequested { payment_id: payment, reason: reason.to_owned() })
            .await?;
        audit::record(
            tx,
            now,
            &Actor::System,
            "resale_purchase.refund_requested",
            "resale_purchase",
            &p.id.to_string(),
            json!({ "payment_id": payment, "reason": reason }),
        )
        .await?;
        Ok(())
    }

    // ---- tickets leaving the market ----

    /// Withdraws the ticket's open listing and voids its pending gift offer,
    /// inside the caller's transaction (ticket already locked). A listing
    /// held by a buyer still paying stays held: its payment is refunded at
    /// settlement, which refuses a ticket that can no longer move.
    async fn close_open_offers(&self, tx: &mut Tx, now: i64, ticket: TicketId, reason: &str) -> R<()> {
        if let Some(l) = store::open_listing_of_ticket(tx, ticket).await?
            && store::withdraw(tx, l.id, reason, now).await?
        {
            audit::record(
                tx,
                now,
                &Actor::System,
                "listing.withdrawn",
                "listing",
                &l.id.to_string(),
                json!({ "reason": reason }),
            )
            .await?;
        }
        if let Some(g) = store::pending_gift_id(tx, ticket).await?
            && store::close_gift(tx, g, "void", None, now).await?
        {
            audit::record(tx, now, &Actor::System, "gift.void", "gift", &g.to_string(), json!({ "reason": reason }))
                .await?;
        }
        Ok(())
    }

    /// `ticket.exported`: the token now lives in the holder's own wallet, so
    /// the ticket leaves the market for good. Idempotent: a replay finds
    /// nothing open.
    pub(crate) async fn on_exported(&self, tx: &mut Tx, now: i64, ticket: TicketId) -> R<()> {
        if store::load_ticket(tx, ticket, &self.lock_t()).await?.is_none() {
            return Ok(());
        }
        self.close_open_offers(tx, now, ticket, "ticket_exported").await
    }

    /// `tickets.cancelled` (an organizer refund, usually of the first
    /// buyer's order). A holder who bought a cancelled ticket on the resale
    /// market gets that payment back: the purchase becomes `refunded`, a
    /// refund of its payment is requested through payments, and the
    /// seller's proceeds are taken back while their payout is still `due`
    /// (payout `reversed`, plus the exact reverse of the settlement's ledger
    /// transaction). Idempotent: the purchase moves `completed → refunded`
    /// once, and the reversal's ledger transaction is unique per payment.
    pub(crate) async fn on_cancelled(&self, tx: &mut Tx, now: i64, tickets: &[TicketId]) -> R<()> {
        for &id in tickets {
            let Some(t) = store::load_ticket(tx, id, &self.lock_t()).await? else { continue };
            self.close_open_offers(tx, now, t.id, "ticket_changed").await?;
            let Some(pid) = store::purchase_of_holder(tx, t.id, t.holder_id).await? else { continue };
            let Some(p) = store::load_purchase(tx, pid, self.lock_plain()).await? else { continue };
            let Some(payment) = p.payment_id.map(PaymentId) else {
                return Err(MarketError::Corrupt(format!("completed purchase {} has no payment", p.id)));
            };
            if !store::close_purchase(tx, p.id, "completed", "refunded", None, now).await? {
                continue;
            }
            self.refund(tx, now, &p, payment, "ticket_cancelled").await?;
            let payout = store::payout_of(tx, p.id).await?;
            let reversed = store::reverse_payout(tx, p.id).await?;
            if reversed {
                // The exact reverse of the settlement: the seller's proceeds
                // and the platform fee go back to the organizer's account,
                // which the payment refund then debits by the whole price.
                let lines: Vec<Posting> = [
                    (organizer_account(p.organization_id), -(p.seller_minor + p.fee_minor)),
                    (seller_account(p.seller_id), p.seller_minor),
                    (PLATFORM_FEES.to_owned(), p.fee_minor),
                ]
                .into_iter()
                .filter(|(_, a)| *a != 0)
                .map(|(account, amount_minor)| Posting { account, amount_minor, currency: p.currency })
                .collect();
                if !lines.is_empty() {
                    let postings = BalancedPostings::new(lines).map_err(|e| MarketError::Corrupt(e.to_string()))?;
                    entrada_payments::store::post_ledger(tx, "resale_settlement_reversal", payment, &postings, now)
                        .await
                        .map_err(|e| MarketError::Corrupt(e.to_string()))?;
                }
            }
            let payout_status = match (&payout, reversed) {
                (_, true) => "reversed",
                (Some((_, status)), false) => status.as_str(),
                (None, false) => "none",
            };
            if !reversed {
                tracing::warn!(purchase = %p.id, payout_status, "resale refunded after its payout left the due state; \
                    the seller's proceeds are not taken back");
            }
            audit::record(
                tx,
                now,
                &Actor::System,
                "resale_purchase.refunded",
                "resale_purchase",
                &p.id.to_string(),
                json!({ "reason": "ticket_cancelled", "payment_id": payment, "ticket_id": t.id,
                        "price_minor": p.price_minor, "currency": p.currency.as_str(),
                        "payout": payout_status, "seller_minor_reversed": if reversed { p.seller_minor } else { 0 } }),
            )
            .await?;
        }
        Ok(())
    }

    // ---- sweep ----

    /// Expires gift offers and purchase holds that ran out, and withdraws
    /// listings the policy no longer allows (window closed, freeze started,
    /// resale disabled, event over) or whose ticket changed. Returns how many
    /// rows it changed. Deterministic: tests call it through `App::settle`.
    pub async fn sweep(&self) -> R<usize> {
        let now = self.now_ms();
        let mut changed = 0;
        let mut c = self.inner.db.reader().acquire().await?;
        let gifts = store::due_gifts(&mut c, now, 500).await?;
        let purchases = store::due_purchases(&mut c, now, 500).await?;
        let listings = store::sweepable_listings(&mut c, now, 500).await?;
        drop(c);
        if gifts.is_empty() && purchases.is_empty() && listings.is_empty() {
            return Ok(0);
        }
        let mut tx = self.inner.db.begin().await?;
        for id in gifts {
            if store::close_gift(&mut tx, id, GiftStatus::Expired.as_str(), None, now).await? {
                audit::record(&mut tx, now, &Actor::System, "gift.expired", "gift", &id.to_string(), json!({})).await?;
                changed += 1;
            }
        }
        for (purchase, listing) in purchases {
            // Listing before purchase, the order `purchase` locks them in.
            store::load_listing(&mut tx, self.inner.db.backend(), listing, true).await?;
            if store::close_purchase(&mut tx, purchase, "pending", "expired", None, now).await? {
                store::release_hold(&mut tx, listing, purchase, now).await?;
                audit::record(
                    &mut tx,
                    now,
                    &Actor::System,
                    "resale_purchase.expired",
                    "resale_purchase",
                    &purchase.to_string(),
                    json!({ "listing_id": listing }),
                )
                .await?;
                changed += 1;
            }
        }
        let mut events: BTreeMap<EventId, Option<Policy>> = BTreeMap::new();
        for l in listings {
            if let std::collections::btree_map::Entry::Vacant(slot) = events.entry(l.event_id) {
                slot.insert(store::load_event(&mut tx, l.event_id).await?.map(|e| e.policy));
            }
            let policy = events.get(&l.event_id).cloned().flatten();
            let t = store::load_ticket(&mut tx, l.ticket_id, "").await?;
            let stale = t.is_none_or(|t| {
                t.holder_id != l.seller_id || t.generation != l.generation || !t.movable() || t.checked_in
            });
            // The per-ticket resale limit is checked when listing and buying;
            // it cannot change while a listing is open.
            let reason = match policy.map(|p| p.check_resale(now, 0)) {
                Some(Err(r)) => Some(r.withdraw_reason()),
                None => Some("event_closed"),
                Some(Ok(())) if stale => Some("ticket_changed"),
                Some(Ok(())) => None,
            };
            if let Some(reason) = reason
                && store::withdraw(&mut tx, l.id, reason, now).await?
            {
                audit::record(
                    &mut tx,
                    now,
                    &Actor::System,
                    "listing.withdrawn",
                    "listing",
                    &l.id.to_string(),
                    json!({ "reason": reason }),
                )
                .await?;
                changed += 1;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The background loop: sweeps every `every` until `shutdown`.
    pub async fn run_sweeper(self, every: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "market sweep failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    // ---- provenance ----

    /// A ticket's public history, by event and serial.
    pub async fn history_by_serial(&self, event: EventId, serial: i64) -> R<History> {
        let mut c = self.inner.db.reader().acquire().await?;
        let id = store::ticket_by_serial(&mut c, event, serial).await?.ok_or(MarketError::NotFound)?;
        drop(c);
        self.history(id).await
    }

    /// A ticket's public history. Holders appear as `holder 1`, `holder 2`,
    /// … in order of appearance on this ticket only, so the history shows
    /// how often and at what price a ticket moved without saying to whom,
    /// and labels cannot be linked across tickets.
    pub async fn history(&self, ticket: TicketId) -> R<History> {
        let mut c = self.inner.db.reader().acquire().await?;
        let t = store::load_ticket(&mut c, ticket, "").await?.ok_or(MarketError::NotFound)?;
        let transfers: Vec<TransferRow> = store::transfers(&mut c, t.id).await?;
        let entered = store::first_entry(&mut c, t.id).await?;
        let mut labels: Vec<UserId> = Vec::new();
        let mut label = |u: UserId| -> String {
            let n = match labels.iter().position(|x| *x == u) {
                Some(i) => i + 1,
                None => {
                    labels.push(u);
                    labels.len()
                }
            };
            format!("holder {n}")
        };
        let first = transfers.first().map_or(t.holder_id, |x| x.from);
        let mut entries = vec![HistoryEntry {
            kind: "issued",
            at: t.issued_at,
            from: None,
            to: Some(label(first)),
            price: Some(t.face),
            cap_minor: None,
            token: None,
        }];
        if let Some((token_id, tx_hash, at, contract)) = store::minted(&mut c, t.id).await? {
            entries.push(HistoryEntry {
                kind: "minted",
                at,
                from: None,
                to: None,
                price: None,
                cap_minor: None,
                token: Some((token_id, tx_hash, contract)),
            });
        }
        for x in &transfers {
            entries.push(HistoryEntry {
                kind: if x.kind == "resale" { "resale" } else { "gift" },
                at: x.at,
                from: Some(label(x.from)),
                to: Some(label(x.to)),
                price: x.price,
                cap_minor: x.cap_minor,
                token: None,
            });
        }
        if let Some(at) = entered {
            entries.push(HistoryEntry {
                kind: "checked_in",
                at,
                from: None,
                to: None,
                price: None,
                cap_minor: None,
                token: None,
            });
        }
        // In time order; a mint delayed by a chain outage may come after a gift.
        entries[1..].sort_by_key(|e| e.at);
        Ok(History {
            ticket_id: t.id,
            event_id: t.event_id,
            serial: t.serial,
            ticket_type: t.ticket_type.clone(),
            valid: t.movable(),
            entries,
        })
    }
}
