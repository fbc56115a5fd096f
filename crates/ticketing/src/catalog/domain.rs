//! Catalog types, the event lifecycle and input validation. No I/O.
//!
//! # Event lifecycle
//!
//! ```text
//!            publish            open-sales           close-sales
//!   draft ───────────▶ published ──────────▶ on_sale ───────────▶ sales_closed
//!     │                    │                    │                      │
//!     └──── cancel ────────┴────── cancel ──────┴──────── cancel ──────┴──▶ cancelled
//!
//!   any status except cancelled ──(now ≥ ends_at)──▶ ended   (derived, never stored)
//! ```
//!
//! * `publish` needs at least one ticket type (`no_ticket_types` otherwise):
//!   a public page with nothing to buy is a mistake, not a state.
//! * `ended` is computed from the clock on every read instead of being
//!   written by a background job, so there is no window in which an event
//!   past its end still looks sellable. The stored column keeps the last
//!   explicit status; [`EventStatus::effective`] folds the clock in.
//! * `cancelled` and `ended` are terminal: nothing leaves them and the event
//!   can no longer be edited.
//! * Any other move is refused with `invalid_transition`.

use entrada_primitives::ids::{EventId, OrganizationId, QuotaId, TicketTypeId, UserId};
use entrada_primitives::{Currency, Money};
use time::OffsetDateTime;

/// Largest event capacity accepted; also the upper bound for a quota size.
pub const MAX_CAPACITY: i64 = 1_000_000;
/// Largest `max_per_order` a ticket type may have.
pub const MAX_PER_ORDER: i64 = 100;
/// 100 % in basis points.
pub const FULL_BPS: i64 = 10_000;
/// A resale cap above ten times face value is a typo, not a policy.
pub const MAX_PRICE_CAP_BPS: i64 = 100_000;
/// A resale freeze longer than a week before doors is a typo.
pub const MAX_FREEZE_MINUTES: i64 = 7 * 24 * 60;

/// Everything the catalog can refuse. Mapped to problem+json in one place
/// (`catalog::http`).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Unknown, or belongs to an organization the caller is not part of:
    /// the two are indistinguishable on purpose.
    #[error("not found")]
    NotFound,
    /// The caller is a member, but their role is too low for the action.
    #[error("your role in this organization does not allow this")]
    Forbidden,
    #[error("{field}: {message}")]
    Validation { field: &'static str, message: String },
    #[error("the slug is taken")]
    SlugTaken,
    #[error("cannot {action} an event that is {from}")]
    InvalidTransition { from: EventStatus, action: &'static str },
    #[error("an event needs at least one ticket type before it is published")]
    NoTicketTypes,
    #[error("capacity {requested} is below the {used} places already sold or held")]
    CapacityBelowSold { requested: i64, used: i64 },
    #[error("size {requested} is below the {used} places already sold or held")]
    QuotaBelowUsed { requested: i64, used: i64 },
    #[error("the currency cannot change once ticket types exist")]
    CurrencyLocked,
    #[error("the event is {0} and can no longer be changed")]
    EventClosed(EventStatus),
    #[error("quota membership cannot change once a ticket type has been sold or held")]
    MembershipLocked,
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl CatalogError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation { field, message: message.into() }
    }
}

/// The stored and effective status of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    Draft,
    Published,
    OnSale,
    SalesClosed,
    Ended,
    Cancelled,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::OnSale => "on_sale",
            Self::SalesClosed => "sales_closed",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Self::Draft,
            "published" => Self::Published,
            "on_sale" => Self::OnSale,
            "sales_closed" => Self::SalesClosed,
            "ended" => Self::Ended,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The status a caller sees: the stored one, unless the event is over.
    pub fn effective(self, ends_at: OffsetDateTime, now: OffsetDateTime) -> Self {
        if self != Self::Cancelled && now >= ends_at { Self::Ended } else { self }
    }

    /// Whether fans can see the event (listing and public page).
    pub fn is_public(self) -> bool {
        !matches!(self, Self::Draft)
    }

    /// Whether the organizer may still edit the event and its ticket types.
    pub fn is_editable(self) -> bool {
        !matches!(self, Self::Ended | Self::Cancelled)
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An explicit lifecycle move requested by an organizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Publish,
    OpenSales,
    CloseSales,
    Cancel,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::OpenSales => "open sales for",
            Self::CloseSales => "close sales for",
            Self::Cancel => "cancel",
        }
    }

    /// The audit action code of this move.
    pub fn audit_action(self) -> &'static str {
        match self {
            Self::Publish => "event.published",
            Self::OpenSales => "event.sales_opened",
            Self::CloseSales => "event.sales_closed",
            Self::Cancel => "event.cancelled",
        }
    }

    /// The status after the move, from the *effective* status `from`.
    pub fn apply(self, from: EventStatus) -> Result<EventStatus, CatalogError> {
        use EventStatus::*;
        match (self, from) {
            (Self::Publish, Draft) => Ok(Published),
            (Self::OpenSales, Published) => Ok(OnSale),
            (Self::CloseSales, OnSale) => Ok(SalesClosed),
            (Self::Cancel, Draft | Published | OnSale | SalesClosed) => Ok(Cancelled),
            _ => Err(CatalogError::InvalidTransition { from, action: self.as_str() }),
        }
    }
}

/// A URL-safe organization handle: 3 to 63 of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Self, CatalogError> {
        let ok = (3..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CatalogError::invalid(
                "slug",
                "must be 3 to 63 lower-case letters, digits or hyphens, not starting or ending with a hyphen",
            ))
        }
    }

    /// Derives a slug from a display name (`"Noche Buena!"` → `noche-buena`);
    /// names with too few usable letters get a padded slug.
    pub fn from_name(name: &str) -> Self {
        let mut out = String::new();
        for c in name.chars() {
            let c = fold_ascii(c);
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let mut out: String = out.trim_end_matches('-').chars().take(63).collect();
        while out.ends_with('-') {
            out.pop();
        }
        while out.len() < 3 {
            out.push_str(if out.is_empty() { "org" } else { "-x" });
        }
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Folds the common Latin accented letters to ASCII for slugs.
fn fold_ascii(c: char) -> char {
    match c {
        'á' | 'à' | 'ä' | 'â' | 'ã' | 'Á' | 'À' | 'Ä' | 'Â' | 'Ã' => 'a',
        'é' | 'è' | 'ë' | 'ê' | 'É' | 'È' | 'Ë' | 'Ê' => 'e',
        'í' | 'ì' | 'ï' | 'î' | 'Í' | 'Ì' | 'Ï' | 'Î' => 'i',
        'ó' | 'ò' | 'ö' | 'ô' | 'õ' | 'Ó' | 'Ò' | 'Ö' | 'Ô' | 'Õ' => 'o',
        'ú' | 'ù' | 'ü' | 'û' | 'Ú' | 'Ù' | 'Ü' | 'Û' => 'u',
        'ñ' | 'Ñ' => 'n',
        'ç' | 'Ç' => 'c',
        other => other,
    }
}

/// An IANA time zone name, checked by shape only (`UTC`, `Europe/Madrid`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+3`). No zone database is
/// compiled in: the zone is only used to show local times, and a typo is
/// caught by the shape check far more often than a well-formed unknown name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timezone(String);

impl Timezone {
    pub fn parse(s: &str) -> Result<Self, CatalogError> {
        let bad = || CatalogError::invalid("timezone", "must be an IANA time zone name such as Europe/Madrid or UTC");
        if s == "UTC" || s == "GMT" {
            return Ok(Self(s.to_owned()));
        }
        if s.len() > 64 {
            return Err(bad());
        }
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        for p in &parts {
            let mut chars = p.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_uppercase());
            let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'));
            if !first_ok || !rest_ok {
                return Err(bad());
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a required, trimmed text field of at most `max` characters.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, CatalogError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(CatalogError::invalid(field, "must not be empty"));
    }
    optional_text(field, v, max)
}

/// Checks an optional (possibly empty) text field of at most `max` characters.
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<String, CatalogError> {
    let v = value.trim();
    if v.chars().count() > max {
        return Err(CatalogError::invalid(field, format!("must be at most {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CatalogError::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

/// An organization (tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub slug: String,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
}

/// A validated new organization.
#[derive(Debug, Clone)]
pub struct NewOrganization {
    name: String,
    slug: Slug,
}

impl NewOrganization {
    pub fn parse(name: &str, slug: Option<&str>) -> Result<Self, CatalogError> {
        let name = required_text("name", name, 120)?;
        let slug = match slug {
            Some(s) => Slug::parse(s)?,
            None => Slug::from_name(&name),
        };
        Ok(Self { name, slug })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn slug(&self) -> &Slug {
        &self.slug
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venue {
    pub name: String,
    pub address: String,
    pub city: String,
    /// ISO 3166-1 alpha-2 when given (`ES`), else empty.
    pub country: String,
}

/// How a resale price is capped: relative to face value or absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceCap {
    /// At most this share of face value, in basis points (11 000 = 110 %).
    Bps(i64),
    /// At most this many minor units of the event currency.
    Minor(i64),
}

/// The organizer's resale rules. Stored with the event now and enforced by
/// the market later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResalePolicy {
    pub transfers_allowed: bool,
    pub resale_allowed: bool,
    pub price_cap: Option<PriceCap>,
    /// Share of each resale paid to the organizer, basis points.
    pub royalty_bps: i64,
    /// Platform fee on each resale, basis points.
    pub fee_bps: i64,
    pub max_resales_per_ticket: Option<i64>,
    pub resale_opens_at: Option<OffsetDateTime>,
    pub resale_closes_at: Option<OffsetDateTime>,
    /// Resale and transfers stop this many minutes before doors open, so the
    /// gate never sees a holder change in the last minutes.
    pub freeze_minutes_before_doors: i64,
    pub export_allowed: bool,
    pub export_after: Option<OffsetDateTime>,
}

impl Default for ResalePolicy {
    /// Transfers and capped-at-face resale allowed, no royalties or fees, no
    /// export: the conservative choice an organizer would expect.
    fn default() -> Self {
        Self {
            transfers_allowed: true,
            resale_allowed: true,
            price_cap: Some(PriceCap::Bps(FULL_BPS)),
            royalty_bps: 0,
            fee_bps: 0,
            max_resales_per_ticket: None,
            resale_opens_at: None,
            resale_closes_at: None,
            freeze_minutes_before_doors: 0,
            export_allowed: false,
            export_after: None,
        }
    }
}

impl ResalePolicy {
    fn check(&self) -> Result<(), CatalogError> {
        match self.price_cap {
            Some(PriceCap::Bps(b)) if !(1..=MAX_PRICE_CAP_BPS).contains(&b) => {
                return Err(CatalogError::invalid(
                    "resale_policy.price_cap_bps",
                    format!("must be between 1 and {MAX_PRICE_CAP_BPS}"),
                ));
            }
            Some(PriceCap::Minor(m)) if m < 0 => {
                return Err(CatalogError::invalid("resale_policy.price_cap_minor", "must not be negative"));
            }
            _ => {}
        }
        if !(0..=FULL_BPS).contains(&self.royalty_bps) {
            return Err(CatalogError::invalid("resale_policy.royalty_bps", "must be between 0 and 10000"));
        }
        if !(0..=FULL_BPS).contains(&self.fee_bps) {
            return Err(CatalogError::invalid("resale_policy.fee_bps", "must be between 0 and 10000"));
        }
        if self.royalty_bps + self.fee_bps > FULL_BPS {
            return Err(CatalogError::invalid("resale_policy.fee_bps", "royalty and fee together exceed 100 %"));
        }
        if let Some(n) = self.max_resales_per_ticket
            && !(0..=1000).contains(&n)
        {
            return Err(CatalogError::invalid("resale_policy.max_resales_per_ticket", "must be between 0 and 1000"));
        }
        if let (Some(o), Some(c)) = (self.resale_opens_at, self.resale_closes_at)
            && c <= o
        {
            return Err(CatalogError::invalid("resale_policy.resale_closes_at", "must be after resale_opens_at"));
        }
        if !(0..=MAX_FREEZE_MINUTES).contains(&self.freeze_minutes_before_doors) {
            return Err(CatalogError::invalid(
                "resale_policy.freeze_minutes_before_doors",
                format!("must be between 0 and {MAX_FREEZE_MINUTES}"),
            ));
        }
        Ok(())
    }
}

/// A change to a resale policy: `None` keeps a field. For the nullable
/// fields `Some(None)` clears them. Giving `price_cap_bps` or
/// `price_cap_minor` replaces the cap (not both at once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResalePolicyPatch {
    pub transfers_allowed: Option<bool>,
    pub resale_allowed: Option<bool>,
    pub price_cap_bps: Option<i64>,
    pub price_cap_minor: Option<i64>,
    pub royalty_bps: Option<i64>,
    pub fee_bps: Option<i64>,
    pub max_resales_per_ticket: Option<Option<i64>>,
    pub resale_opens_at: Option<Option<OffsetDateTime>>,
    pub resale_closes_at: Option<Option<OffsetDateTime>>,
    pub freeze_minutes_before_doors: Option<i64>,
    pub export_allowed: Option<bool>,
    pub export_after: Option<Option<OffsetDateTime>>,
}

impl ResalePolicyPatch {
    /// The policy after the change; ranges are checked with the event.
    pub fn apply(&self, base: &ResalePolicy) -> Result<ResalePolicy, CatalogError> {
        let mut p = base.clone();
        match (self.price_cap_bps, self.price_cap_minor) {
            (Some(_), Some(_)) => {
                return Err(CatalogError::invalid(
                    "resale_policy.price_cap_minor",
                    "give price_cap_bps or price_cap_minor, not both",
                ));
            }
            (Some(b), None) => p.price_cap = Some(PriceCap::Bps(b)),
            (None, Some(m)) => p.price_cap = Some(PriceCap::Minor(m)),
            (None, None) => {}
        }
        if let Some(v) = self.transfers_allowed {
            p.transfers_allowed = v;
        }
        if let Some(v) = self.resale_allowed {
            p.resale_allowed = v;
        }
        if let Some(v) = self.royalty_bps {
            p.royalty_bps = v;
        }
        if let Some(v) = self.fee_bps {
            p.fee_bps = v;
        }
        if let Some(v) = self.max_resales_per_ticket {
            p.max_resales_per_ticket = v;
        }
        if let Some(v) = self.resale_opens_at {
            p.resale_opens_at = v;
        }
        if let Some(v) = self.resale_closes_at {
            p.resale_closes_at = v;
        }
        if let Some(v) = self.freeze_minutes_before_doors {
            p.freeze_minutes_before_doors = v;
        }
        if let Some(v) = self.export_allowed {
            p.export_allowed = v;
        }
        if let Some(v) = self.export_after {
            p.export_after = v;
        }
        Ok(p)
    }
}

/// The editable facts of an event, as typed by the organizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    pub name: String,
    pub description: String,
    pub venue: Venue,
    pub timezone: String,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub doors_open_at: Option<OffsetDateTime>,
    pub capacity: i64,
    pub currency: Currency,
    pub resale: ResalePolicy,
}

/// Event fields that passed validation; the only input the store accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec(EventFields);

impl EventSpec {
    pub fn parse(mut f: EventFields) -> Result<Self, CatalogError> {
        f.name = required_text("name", &f.name, 200)?;
        f.description = optional_text("description", &f.description, 10_000)?;
        f.venue.name = required_text("venue.name", &f.venue.name, 200)?;
        f.venue.address = optional_text("venue.address", &f.venue.address, 300)?;
        f.venue.city = optional_text("venue.city", &f.venue.city, 120)?;
        f.venue.country = f.venue.country.trim().to_owned();
        let country_ok = f.venue.country.is_empty()
            || (f.venue.country.len() == 2 && f.venue.country.bytes().all(|b| b.is_ascii_uppercase()));
        if !country_ok {
            return Err(CatalogError::invalid("venue.country", "must be an ISO 3166-1 alpha-2 code such as ES"));
        }
        f.timezone = Timezone::parse(&f.timezone)?.0;
        if f.ends_at <= f.starts_at {
            return Err(CatalogError::invalid("ends_at", "must be after starts_at"));
        }
        if let Some(d) = f.doors_open_at
            && d > f.starts_at
        {
            return Err(CatalogError::invalid("doors_open_at", "must not be after starts_at"));
        }
        if !(1..=MAX_CAPACITY).contains(&f.capacity) {
            return Err(CatalogError::invalid("capacity", format!("must be between 1 and {MAX_CAPACITY}")));
        }
        f.resale.check()?;
        Ok(Self(f))
    }

    pub fn fields(&self) -> &EventFields {
        &self.0
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub details: EventFields,
    /// The last explicit status; use [`Event::status`] for what callers see.
    pub stored_status: EventStatus,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Event {
    /// The effective status at `now` (folds in `ended`).
    pub fn status(&self, now: OffsetDateTime) -> EventStatus {
        self.stored_status.effective(self.details.ends_at, now)
    }
}

/// The editable facts of a ticket type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTypeFields {
    pub name: String,
    pub description: String,
    pub price: Money,
    pub min_per_order: i64,
    pub max_per_order: i64,
    pub sale_starts_at: Option<OffsetDateTime>,
    pub sale_ends_at: Option<OffsetDateTime>,
    /// Zones this type admits to, used by check-in.
    pub zones: Vec<String>,
    pub printable: bool,
}

/// Ticket type fields that passed validation against their event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTypeSpec(TicketTypeFields);

impl TicketTypeSpec {
    pub fn parse(mut f: TicketTypeFields, event_currency: Currency) -> Result<Self, CatalogError> {
        f.name = required_text("name", &f.name, 120)?;
        f.description = optional_text("description", &f.description, 2_000)?;
        if f.price.minor < 0 {
            return Err(CatalogError::invalid("price.amount_minor", "must not be negative"));
        }
        if f.price.currency != event_currency {
            return Err(CatalogError::invalid(
                "price.currency",
                format!("must be the event currency {event_currency}"),
            ));
        }
        if f.min_per_order < 1 {
            return Err(CatalogError::invalid("min_per_order", "must be at least 1"));
        }
        if f.max_per_order < f.min_per_order || f.max_per_order > MAX_PER_ORDER {
            return Err(CatalogError::invalid(
                "max_per_order",
                format!("must be between min_per_order and {MAX_PER_ORDER}"),
            ));
        }
        if let (Some(s), Some(e)) = (f.sale_starts_at, f.sale_ends_at)
            && e <= s
        {
            return Err(CatalogError::invalid("sale_ends_at", "must be after sale_starts_at"));
        }
        if f.zones.len() > 50 {
            return Err(CatalogError::invalid("zones", "at most 50 zones"));
        }
        let mut zones = Vec::with_capacity(f.zones.len());
        for z in &f.zones {
            let z = required_text("zones", z, 60)?;
            if !zones.contains(&z) {
                zones.push(z);
            }
        }
        f.zones = zones;
        Ok(Self(f))
    }

    pub fn fields(&self) -> &TicketTypeFields {
        &self.0
    }
}

/// A stored ticket type with the quotas it draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketType {
    pub id: TicketTypeId,
    pub event_id: EventId,
    pub details: TicketTypeFields,
    /// Display order within the event.
    pub position: i64,
    /// Every quota this type consumes, the capacity quota included.
    pub quota_ids: Vec<QuotaId>,
    pub created_at: OffsetDateTime,
}

impl TicketType {
    /// Whether a fan could buy this type at `now`, given the event's
    /// effective status; availability is reported separately.
    pub fn on_sale_now(&self, event_status: EventStatus, now: OffsetDateTime) -> bool {
        event_status == EventStatus::OnSale
            && self.details.sale_starts_at.is_none_or(|s| s <= now)
            && self.details.sale_ends_at.is_none_or(|e| now < e)
    }

    /// Places left: the minimum over its quotas of `size − used` (never
    /// negative). A type in no quota (impossible once created) has none.
    pub fn available(&self, quotas: &[Quota]) -> i64 {
        self.quota_ids
            .iter()
            .filter_map(|q| quotas.iter().find(|x| x.id == *q))
            .map(Quota::available)
            .min()
            .unwrap_or(0)
    }
}

/// A pool of places shared by ticket types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub id: QuotaId,
    pub event_id: EventId,
    pub name: String,
    pub size: i64,
    /// Sold + pending + held places; only the sale's guarded update moves it.
    pub used: i64,
    /// The event's capacity quota, which every ticket type joins.
    pub is_capacity: bool,
    pub ticket_type_ids: Vec<TicketTypeId>,
    pub created_at: OffsetDateTime,
}

impl Quota {
    pub fn available(&self) -> i64 {
        (self.size - self.used).max(0)
    }
}

/// Checks a quota size (`0..=MAX_CAPACITY`).
pub fn quota_size(size: i64) -> Result<i64, CatalogError> {
    if (0..=MAX_CAPACITY).contains(&size) {
        Ok(size)
    } else {
        Err(CatalogError::invalid("size", format!("must be between 0 and {MAX_CAPACITY}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn fields() -> EventFields {
        EventFields {
            name: "Concert".into(),
            description: String::new(),
            venue: Venue { name: "Hall".into(), address: String::new(), city: "Madrid".into(), country: "ES".into() },
            timezone: "Europe/Madrid".into(),
            starts_at: datetime!(2030-06-01 20:00 UTC),
            ends_at: datetime!(2030-06-01 23:00 UTC),
            doors_open_at: Some(datetime!(2030-06-01 19:00 UTC)),
            capacity: 100,
            currency: Currency::parse("EUR").unwrap(),
            resale: ResalePolicy::default(),
        }
    }

    #[test]
    fn lifecycle_allows_only_the_documented_moves() {
        use EventStatus::*;
        use Transition::*;
        assert_eq!(Publish.apply(Draft).unwrap(), Published);
        assert_eq!(OpenSales.apply(Published).unwrap(), OnSale);
        assert_eq!(CloseSales.apply(OnSale).unwrap(), SalesClosed);
        for s in [Draft, Published, OnSale, SalesClosed] {
            assert_eq!(Cancel.apply(s).unwrap(), Cancelled);
        }
        for (t, s) in [
            (Publish, Published),
            (OpenSales, Draft),
            (CloseSales, Published),
            (Cancel, Ended),
            (Cancel, Cancelled),
            (OpenSales, Ended),
        ] {
            assert!(matches!(t.apply(s), Err(CatalogError::InvalidTransition { .. })), "{t:?} from {s}");
        }
    }

    #[test]
    fn ended_is_derived_from_the_clock_except_for_cancelled_events() {
        let end = datetime!(2030-06-01 23:00 UTC);
        assert_eq!(EventStatus::OnSale.effective(end, end), EventStatus::Ended);
        assert_eq!(EventStatus::OnSale.effective(end, datetime!(2030-06-01 22:59 UTC)), EventStatus::OnSale);
        assert_eq!(EventStatus::Cancelled.effective(end, end), EventStatus::Cancelled);
    }

    #[test]
    fn timezone_is_checked_by_shape() {
        for ok in ["UTC", "Europe/Madrid", "America/Argentina/Buenos_Aires", "Etc/GMT+3"] {
            assert!(Timezone::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "utc", "Madrid", "europe/madrid", "Europe/", "Europe/Madrid/X/Y", "Europe/Ma drid"] {
            assert!(Timezone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs_are_derived_and_checked() {
        assert_eq!(Slug::from_name("Noche de Estadio ¡Ya!").as_str(), "noche-de-estadio-ya");
        assert_eq!(Slug::from_name("Peña").as_str(), "pena");
        assert_eq!(Slug::from_name("!!").as_str(), "org");
        assert!(Slug::parse("ok-slug-1").is_ok());
        for bad in ["ab", "-abc", "abc-", "ABC", "a b c"] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_validation_names_the_field() {
        let field_of = |f: EventFields| match EventSpec::parse(f) {
            Err(CatalogError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert!(EventSpec::parse(fields()).is_ok());
        assert_eq!(field_of(EventFields { name: " ".into(), ..fields() }), "name");
        assert_eq!(field_of(EventFields { ends_at: fields().starts_at, ..fields() }), "ends_at");
        assert_eq!(
            field_of(EventFields { doors_open_at: Some(datetime!(2030-06-01 20:01 UTC)), ..fields() }),
            "doors_open_at"
        );
        assert_eq!(field_of(EventFields { capacity: 0, ..fields() }), "capacity");
        assert_eq!(field_of(EventFields { capacity: MAX_CAPACITY + 1, ..fields() }), "capacity");
        assert_eq!(field_of(EventFields { timezone: "Madrid".into(), ..fields() }), "timezone");
        let resale = ResalePolicy { royalty_bps: 10_001, ..ResalePolicy::default() };
        assert_eq!(field_of(EventFields { resale, ..fields() }), "resale_policy.royalty_bps");
        let resale = ResalePolicy { royalty_bps: 6000, fee_bps: 5000, ..ResalePolicy::default() };
        assert_eq!(field_of(EventFields { resale, ..fields() }), "resale_policy.fee_bps");
    }

    #[test]
    fn availability_is_the_tightest_quota() {
        let q = |size, used| Quota {
            id: QuotaId::new(),
            event_id: EventId::new(),
            name: "q".into(),
            size,
            used,
            is_capacity: false,
            ticket_type_ids: vec![],
            created_at: datetime!(2030-01-01 00:00 UTC),
        };
        let quotas = vec![q(100, 10), q(20, 5), q(50, 60)];
        let tt = |ids: Vec<QuotaId>| TicketType {
            id: TicketTypeId::new(),
            event_id: EventId::new(),
            details: TicketTypeFields {
                name: "GA".into(),
                description: String::new(),
                price: Money::new(100, Currency::parse("EUR").unwrap()),
                min_per_order: 1,
                max_per_order: 10,
                sale_starts_at: Some(datetime!(2030-01-01 10:00 UTC)),
                sale_ends_at: None,
                zones: vec![],
                printable: false,
            },
            position: 0,
            quota_ids: ids,
            created_at: datetime!(2030-01-01 00:00 UTC),
        };
        assert_eq!(tt(vec![quotas[0].id, quotas[1].id]).available(&quotas), 15);
        assert_eq!(tt(vec![quotas[0].id, quotas[2].id]).available(&quotas), 0);
        let t = tt(vec![quotas[0].id]);
        assert!(!t.on_sale_now(EventStatus::OnSale, datetime!(2030-01-01 09:59 UTC)));
        assert!(t.on_sale_now(EventStatus::OnSale, datetime!(2030-01-01 10:00 UTC)));
        assert!(!t.on_sale_now(EventStatus::Published, datetime!(2030-01-01 10:00 UTC)));
    }
}
