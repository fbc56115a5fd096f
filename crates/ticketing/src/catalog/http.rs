//! The catalog's HTTP surface: wire types, handlers and the one mapping from
//! [`CatalogError`] to problem+json.

use super::domain::{
    CatalogError, Event, EventFields, EventSpec, NewOrganization, Organization, PriceCap, Quota, ResalePolicy,
    ResalePolicyPatch, TicketType, TicketTypeFields, Transition, Venue,
};
use super::service::{Catalog, EventPatch, EventView, NewTicketType, TicketTypePatch};
use super::store::EventFilter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use entrada_primitives::clock::{parse_rfc3339, rfc3339};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path, Query};
use entrada_primitives::ids::{EventId, OrganizationId, QuotaId, TicketTypeId};
use entrada_primitives::page::{Page, PageParams};
use entrada_primitives::{AuthUser, Currency, MaybeAuthUser, Money, Problem};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::future::Future;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// All catalog endpoints, state applied.
pub fn router(catalog: Catalog) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_organization))
        .routes(routes!(get_organization))
        .routes(routes!(create_event, list_organization_events))
        .routes(routes!(list_events))
        .routes(routes!(get_event, update_event))
        .routes(routes!(publish_event))
        .routes(routes!(open_sales))
        .routes(routes!(close_sales))
        .routes(routes!(cancel_event))
        .routes(routes!(create_ticket_type))
        .routes(routes!(update_ticket_type))
        .routes(routes!(create_quota, list_quotas))
        .routes(routes!(update_quota))
        .with_state(catalog)
}

/// The one place catalog errors become HTTP problems.
pub fn problem(e: CatalogError) -> Problem {
    match e {
        CatalogError::NotFound => Problem::not_found("not_found", "no such resource"),
        CatalogError::Forbidden => Problem::forbidden("forbidden", e.to_string()),
        CatalogError::Validation { field, message } => Problem::invalid_field(field, message),
        CatalogError::SlugTaken => Problem::conflict("slug_taken", "another organization already uses this slug"),
        CatalogError::InvalidTransition { from, .. } => {
            Problem::conflict("invalid_transition", e.to_string()).with("event_status", from.as_str())
        }
        CatalogError::NoTicketTypes => Problem::unprocessable("no_ticket_types", e.to_string()),
        CatalogError::CapacityBelowSold { used, .. } => {
            Problem::conflict("capacity_below_sold", e.to_string()).with("used", used)
        }
        CatalogError::QuotaBelowUsed { used, .. } => {
            Problem::conflict("quota_below_used", e.to_string()).with("used", used)
        }
        CatalogError::CurrencyLocked => Problem::conflict("currency_locked", e.to_string()),
        CatalogError::EventClosed(s) => {
            Problem::conflict("event_closed", e.to_string()).with("event_status", s.as_str())
        }
        CatalogError::MembershipLocked => Problem::conflict("quota_membership_locked", e.to_string()),
        CatalogError::Storage(err) => Problem::internal(err),
    }
}

// ------------------------------------------------------------------ wire types

/// Deserializes a present field (even `null`) as `Some(value)`, so a patch
/// can tell "absent" (keep) from `null` (clear).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn time_field(field: &'static str, s: &str) -> Result<OffsetDateTime, Problem> {
    parse_rfc3339(s)
        .ok_or_else(|| Problem::invalid_field(field, "must be an RFC 3339 time such as 2030-06-01T20:00:00Z"))
}

fn opt_time(field: &'static str, s: &Option<String>) -> Result<Option<OffsetDateTime>, Problem> {
    s.as_deref().map(|s| time_field(field, s)).transpose()
}

fn patch_time(field: &'static str, s: &Option<Option<String>>) -> Result<Option<Option<OffsetDateTime>>, Problem> {
    s.as_ref().map(|inner| opt_time(field, inner)).transpose()
}

fn currency_field(field: &'static str, s: &str) -> Result<Currency, Problem> {
    Currency::parse(s).map_err(|_| Problem::invalid_field(field, "must be a three-letter ISO 4217 code such as EUR"))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub name: String,
    /// Derived from the name when absent.
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationOut {
    pub id: OrganizationId,
    pub name: String,
    pub slug: String,
    pub created_at: String,
}

impl From<Organization> for OrganizationOut {
    fn from(o: Organization) -> Self {
        Self { id: o.id, name: o.name, slug: o.slug, created_at: rfc3339(o.created_at) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VenueIo {
    pub name: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub city: String,
    /// ISO 3166-1 alpha-2, such as `ES`.
    #[serde(default)]
    pub country: String,
}

impl From<VenueIo> for Venue {
    fn from(v: VenueIo) -> Self {
        Venue { name: v.name, address: v.address, city: v.city, country: v.country }
    }
}

impl From<&Venue> for VenueIo {
    fn from(v: &Venue) -> Self {
        VenueIo { name: v.name.clone(), address: v.address.clone(), city: v.city.clone(), country: v.country.clone() }
    }
}

/// Resale rules; every field optional. On create, absent fields take the
/// defaults (transfers and resale allowed, cap at face value, no royalty or
/// fee, no export); on update, absent fields are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResalePolicyIn {
    pub transfers_allowed: Option<bool>,
    pub resale_allowed: Option<bool>,
    /// Cap as basis points of face value (11000 = 110 %), 1..=100000.
    pub price_cap_bps: Option<i64>,
    /// Cap as an absolute amount in minor units of the event currency.
    pub price_cap_minor: Option<i64>,
    /// 0..=10000.
    pub royalty_bps: Option<i64>,
    /// 0..=10000; royalty + fee ≤ 10000.
    pub fee_bps: Option<i64>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub max_resales_per_ticket: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub resale_opens_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub resale_closes_at: Option<Option<String>>,
    pub freeze_minutes_before_doors: Option<i64>,
    pub export_allowed: Option<bool>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub export_after: Option<Option<String>>,
}

impl ResalePolicyIn {
    fn to_patch(&self) -> Result<ResalePolicyPatch, Problem> {
        Ok(ResalePolicyPatch {
            transfers_allowed: self.transfers_allowed,
            resale_allowed: self.resale_allowed,
            price_cap_bps: self.price_cap_bps,
            price_cap_minor: self.price_cap_minor,
            royalty_bps: self.royalty_bps,
            fee_bps: self.fee_bps,
            max_resales_per_ticket: self.max_resales_per_ticket,
            resale_opens_at: patch_time("resale_policy.resale_opens_at", &self.resale_opens_at)?,
            resale_closes_at: patch_time("resale_policy.resale_closes_at", &self.resale_closes_at)?,
            freeze_minutes_before_doors: self.freeze_minutes_before_doors,
            export_allowed: self.export_allowed,
            export_after: patch_time("resale_policy.export_after", &self.export_after)?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResalePolicyOut {
    pub transfers_allowed: bool,
    pub resale_allowed: bool,
    pub price_cap_bps: Option<i64>,
    pub price_cap_minor: Option<i64>,
    pub royalty_bps: i64,
    pub fee_bps: i64,
    pub max_resales_per_ticket: Option<i64>,
    pub resale_opens_at: Option<String>,
    pub resale_closes_at: Option<String>,
    pub freeze_minutes_before_doors: i64,
    pub export_allowed: bool,
    pub export_after: Option<String>,
}

impl From<&ResalePolicy> for ResalePolicyOut {
    fn from(p: &ResalePolicy) -> Self {
        let (price_cap_bps, price_cap_minor) = match p.price_cap {
            Some(PriceCap::Bps(b)) => (Some(b), None),
            Some(PriceCap::Minor(m)) => (None, Some(m)),
            None => (None, None),
        };
        Self {
            transfers_allowed: p.transfers_allowed,
            resale_allowed: p.resale_allowed,
            price_cap_bps,
            price_cap_minor,
            royalty_bps: p.royalty_bps,
            fee_bps: p.fee_bps,
            max_resales_per_ticket: p.max_resales_per_ticket,
            resale_opens_at: p.resale_opens_at.map(rfc3339),
            resale_closes_at: p.resale_closes_at.map(rfc3339),
            freeze_minutes_before_doors: p.freeze_minutes_before_doors,
            export_allowed: p.export_allowed,
            export_after: p.export_after.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub venue: VenueIo,
    /// IANA name such as `Europe/Madrid` or `UTC`.
    pub timezone: String,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339, after `starts_at`.
    pub ends_at: String,
    /// RFC 3339, not after `starts_at`.
    #[serde(default)]
    pub doors_open_at: Option<String>,
    /// 1..=1000000.
    pub capacity: i64,
    /// ISO 4217.
    pub currency: String,
    #[serde(default)]
    pub resale_policy: Option<ResalePolicyIn>,
}

impl CreateEvent {
    fn to_spec(&self) -> Result<EventSpec, Problem> {
        let resale = match &self.resale_policy {
            Some(p) => p.to_patch()?.apply(&ResalePolicy::default()).map_err(problem)?,
            None => ResalePolicy::default(),
        };
        EventSpec::parse(EventFields {
            name: self.name.clone(),
            description: self.description.clone(),
            venue: self.venue.clone().into(),
            timezone: self.timezone.clone(),
            starts_at: time_field("starts_at", &self.starts_at)?,
            ends_at: time_field("ends_at", &self.ends_at)?,
            doors_open_at: opt_time("doors_open_at", &self.doors_open_at)?,
            capacity: self.capacity,
            currency: currency_field("currency", &self.currency)?,
            resale,
        })
        .map_err(problem)
    }
}

/// A partial update: absent fields are kept; `doors_open_at: null` clears.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEvent {
    pub name: Option<String>,
    pub description: Option<String>,
    pub venue: Option<VenueIo>,
    pub timezone: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub doors_open_at: Option<Option<String>>,
    pub capacity: Option<i64>,
    pub currency: Option<String>,
    pub resale_policy: Option<ResalePolicyIn>,
}

impl UpdateEvent {
    fn to_patch(&self) -> Result<EventPatch, Problem> {
        Ok(EventPatch {
            name: self.name.clone(),
            description: self.description.clone(),
            venue: self.venue.clone().map(Venue::from),
            timezone: self.timezone.clone(),
            starts_at: self.starts_at.as_deref().map(|s| time_field("starts_at", s)).transpose()?,
            ends_at: self.ends_at.as_deref().map(|s| time_field("ends_at", s)).transpose()?,
            doors_open_at: patch_time("doors_open_at", &self.doors_open_at)?,
            capacity: self.capacity,
            currency: self.currency.as_deref().map(|c| currency_field("currency", c)).transpose()?,
            resale: self.resale_policy.as_ref().map(ResalePolicyIn::to_patch).transpose()?,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceIn {
    /// Minor units, ≥ 0.
    pub amount_minor: i64,
    /// Must be the event currency.
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MoneyOut {
    pub amount_minor: i64,
    pub currency: String,
}

impl From<Money> for MoneyOut {
    fn from(m: Money) -> Self {
        Self { amount_minor: m.minor, currency: m.currency.as_str().to_owned() }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicketType {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub price: PriceIn,
    /// ≥ 1 (default 1).
    #[serde(default = "one")]
    pub min_per_order: i64,
    /// min_per_order..=100 (default 10).
    #[serde(default = "ten")]
    pub max_per_order: i64,
    #[serde(default)]
    pub sale_starts_at: Option<String>,
    #[serde(default)]
    pub sale_ends_at: Option<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub printable: bool,
    /// Shared (non-capacity) quotas of the same event to join.
    #[serde(default)]
    pub quota_ids: Vec<QuotaId>,
}

fn one() -> i64 {
    1
}
fn ten() -> i64 {
    10
}

impl CreateTicketType {
    fn to_new(&self) -> Result<NewTicketType, Problem> {
        Ok(NewTicketType {
            fields: TicketTypeFields {
                name: self.name.clone(),
                description: self.description.clone(),
                price: Money::new(self.price.amount_minor, currency_field("price.currency", &self.price.currency)?),
                min_per_order: self.min_per_order,
                max_per_order: self.max_per_order,
                sale_starts_at: opt_time("sale_starts_at", &self.sale_starts_at)?,
                sale_ends_at: opt_time("sale_ends_at", &self.sale_ends_at)?,
                zones: self.zones.clone(),
                printable: self.printable,
            },
            quota_ids: self.quota_ids.clone(),
        })
    }
}

/// A partial update: absent fields are kept; `null` clears a sale window end.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTicketType {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<PriceIn>,
    pub min_per_order: Option<i64>,
    pub max_per_order: Option<i64>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub sale_starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub sale_ends_at: Option<Option<String>>,
    pub zones: Option<Vec<String>>,
    pub printable: Option<bool>,
    /// Replaces the shared-quota memberships.
    pub quota_ids: Option<Vec<QuotaId>>,
}

impl UpdateTicketType {
    fn to_patch(&self) -> Result<TicketTypePatch, Problem> {
        Ok(TicketTypePatch {
            name: self.name.clone(),
            description: self.description.clone(),
            price_minor: self.price.as_ref().map(|p| p.amount_minor),
            currency: self.price.as_ref().map(|p| currency_field("price.currency", &p.currency)).transpose()?,
            min_per_order: self.min_per_order,
            max_per_order: self.max_per_order,
            sale_starts_at: patch_time("sale_starts_at", &self.sale_starts_at)?,
            sale_ends_at: patch_time("sale_ends_at", &self.sale_ends_at)?,
            zones: self.zones.clone(),
            printable: self.printable,
            quota_ids: self.quota_ids.clone(),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketTypeOut {
    pub id: TicketTypeId,
    pub event_id: EventId,
    pub name: String,
    pub description: String,
    pub price: MoneyOut,
    pub min_per_order: i64,
    pub max_per_order: i64,
    pub sale_starts_at: Option<String>,
    pub sale_ends_at: Option<String>,
    pub zones: Vec<String>,
    pub printable: bool,
    /// Every quota this type draws from, the capacity quota first.
    pub quota_ids: Vec<QuotaId>,
    /// Places left: the minimum over its quotas of size − used.
    pub available: i64,
    /// The event is on sale and the type's sale window is open now.
    pub on_sale_now: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub description: String,
    pub venue: VenueIo,
    pub timezone: String,
    pub starts_at: String,
    pub ends_at: String,
    pub doors_open_at: Option<String>,
    pub capacity: i64,
    pub currency: String,
    /// Effective status: draft, published, on_sale, sales_closed, ended or
    /// cancelled.
    pub status: String,
    pub resale_policy: ResalePolicyOut,
    pub ticket_types: Vec<TicketTypeOut>,
    pub created_at: String,
    pub updated_at: String,
}

fn ticket_type_out(t: &TicketType, v: &EventView) -> TicketTypeOut {
    let d = &t.details;
    TicketTypeOut {
        id: t.id,
        event_id: t.event_id,
        name: d.name.clone(),
        description: d.description.clone(),
        price: d.price.into(),
        min_per_order: d.min_per_order,
        max_per_order: d.max_per_order,
        sale_starts_at: d.sale_starts_at.map(rfc3339),
        sale_ends_at: d.sale_ends_at.map(rfc3339),
        zones: d.zones.clone(),
        printable: d.printable,
        quota_ids: t.quota_ids.clone(),
        available: t.available(&v.quotas),
        on_sale_now: t.on_sale_now(v.status, v.now),
    }
}

impl From<&EventView> for EventOut {
    fn from(v: &EventView) -> Self {
        let e = &v.event;
        let d = &e.details;
        Self {
            id: e.id,
            organization_id: e.organization_id,
            name: d.name.clone(),
            description: d.description.clone(),
            venue: (&d.venue).into(),
            timezone: d.timezone.clone(),
            starts_at: rfc3339(d.starts_at),
            ends_at: rfc3339(d.ends_at),
            doors_open_at: d.doors_open_at.map(rfc3339),
            capacity: d.capacity,
            currency: d.currency.as_str().to_owned(),
            status: v.status.as_str().to_owned(),
            resale_policy: (&d.resale).into(),
            ticket_types: v.ticket_types.iter().map(|t| ticket_type_out(t, v)).collect(),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

/// An event in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub venue: VenueIo,
    pub timezone: String,
    pub starts_at: String,
    pub ends_at: String,
    pub currency: String,
    pub status: String,
}

fn summary(e: &Event, now: OffsetDateTime) -> EventSummary {
    let d = &e.details;
    EventSummary {
        id: e.id,
        organization_id: e.organization_id,
        name: d.name.clone(),
        venue: (&d.venue).into(),
        timezone: d.timezone.clone(),
        starts_at: rfc3339(d.starts_at),
        ends_at: rfc3339(d.ends_at),
        currency: d.currency.as_str().to_owned(),
        status: e.status(now).as_str().to_owned(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuota {
    pub name: String,
    /// 0..=1000000.
    pub size: i64,
    #[serde(default)]
    pub ticket_type_ids: Vec<TicketTypeId>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateQuota {
    pub name: Option<String>,
    /// Never below `used`.
    pub size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaOut {
    pub id: QuotaId,
    pub event_id: EventId,
    pub name: String,
    pub size: i64,
    /// Sold, pending and held places.
    pub used: i64,
    pub available: i64,
    /// The event's capacity quota, which every ticket type joins.
    pub is_capacity: bool,
    pub ticket_type_ids: Vec<TicketTypeId>,
}

impl From<&Quota> for QuotaOut {
    fn from(q: &Quota) -> Self {
        Self {
            id: q.id,
            event_id: q.event_id,
            name: q.name.clone(),
            size: q.size,
            used: q.used,
            available: q.available(),
            is_capacity: q.is_capacity,
            ticket_type_ids: q.ticket_type_ids.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaList {
    pub items: Vec<QuotaOut>,
}

/// Listing filters and the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Case-insensitive text in the name, venue or city.
    pub q: Option<String>,
    /// Only events starting at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Only events starting before this RFC 3339 time.
    pub to: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// -------------------------------------------------------------------- handlers

/// Runs a creating call under the request's `Idempotency-Key`.
async fn idempotent<T, F, Fut>(
    c: &Catalog,
    user: &AuthUser,
    route: &str,
    key: MaybeIdempotencyKey,
    body: &T,
    f: F,
) -> Result<Response, Problem>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Value, Problem>>,
{
    let bytes = serde_json::to_vec(body).map_err(Problem::internal)?;
    let scope = format!("{}:{route}", user.0.user_id);
    let out = entrada_storage::idempotency::run(c.db(), c.now_ms(), &scope, key.0.as_ref(), &bytes, || async {
        Ok((StatusCode::CREATED, f().await?))
    })
    .await?;
    Ok((out.status, Json(out.body)).into_response())
}

fn to_value<T: Serialize>(v: T) -> Result<Value, Problem> {
    serde_json::to_value(v).map_err(Problem::internal)
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "catalog",
    request_body = CreateOrganization,
    responses((status = 201, body = OrganizationOut), (status = 409, description = "slug_taken"),
              (status = 422, description = "validation_failed")))]
async fn create_organization(
    State(c): State<Catalog>,
    user: AuthUser,
    key: MaybeIdempotencyKey,
    Json(req): Json<CreateOrganization>,
) -> Result<Response, Problem> {
    idempotent(&c, &user, "POST /api/v1/organizations", key, &req, || async {
        let new = NewOrganization::parse(&req.name, req.slug.as_deref()).map_err(problem)?;
        let org = c.create_organization(&user.0, new).await.map_err(problem)?;
        to_value(OrganizationOut::from(org))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/organizations/{id}", tag = "catalog",
    params(("id" = OrganizationId, Path)),
    responses((status = 200, body = OrganizationOut), (status = 404, description = "not_found")))]
async fn get_organization(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<OrganizationId>,
) -> Result<Json<OrganizationOut>, Problem> {
    Ok(Json(c.organization(&user.0, id).await.map_err(problem)?.into()))
}

#[utoipa::path(post, path = "/api/v1/organizations/{org_id}/events", tag = "catalog",
    params(("org_id" = OrganizationId, Path)), request_body = CreateEvent,
    responses((status = 201, body = EventOut), (status = 404, description = "not_found"),
              (status = 422, description = "validation_failed")))]
async fn create_event(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(org): Path<OrganizationId>,
    key: MaybeIdempotencyKey,
    Json(req): Json<CreateEvent>,
) -> Result<Response, Problem> {
    let route = format!("POST /api/v1/organizations/{org}/events");
    idempotent(&c, &user, &route, key, &req, || async {
        let spec = req.to_spec()?;
        let view = c.create_event(&user.0, org, spec).await.map_err(problem)?;
        to_value(EventOut::from(&view))
    })
    .await
}

fn filter_from(p: &ListParams) -> Result<(EventFilter, u32), Problem> {
    let page = PageParams { limit: p.limit, cursor: p.cursor.clone() }.parse()?;
    let after = match page.after {
        None => None,
        Some(k) => {
            let bad = || Problem::invalid_field("cursor", "not a cursor this API issued");
            let (at, id) = k.split_once(':').ok_or_else(bad)?;
            Some((at.parse::<i64>().map_err(|_| bad())?, id.to_owned()))
        }
    };
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
    if q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(Problem::invalid_field("q", "must be at most 100 characters"));
    }
    let filter =
        EventFilter { organization: None, q, from: opt_time("from", &p.from)?, to: opt_time("to", &p.to)?, after };
    Ok((filter, page.limit))
}

fn page_of(events: Vec<Event>, now: OffsetDateTime, limit: u32) -> Page<EventSummary> {
    let keyed: Vec<(String, EventSummary)> = events
        .iter()
        .map(|e| {
            (format!("{}:{}", entrada_primitives::clock::to_ms(e.details.starts_at), e.id.to_db()), summary(e, now))
        })
        .collect();
    let page = Page::from_rows(keyed, limit, |(k, _)| k.clone());
    Page { items: page.items.into_iter().map(|(_, s)| s).collect(), next_cursor: page.next_cursor }
}

#[utoipa::path(get, path = "/api/v1/organizations/{org_id}/events", tag = "catalog",
    params(("org_id" = OrganizationId, Path), ListParams),
    responses((status = 200, body = Page<EventSummary>), (status = 404, description = "not_found")))]
async fn list_organization_events(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(org): Path<OrganizationId>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<EventSummary>>, Problem> {
    let (mut filter, limit) = filter_from(&p)?;
    filter.organization = Some(org);
    let page = c.list_events(Some(&user.0), filter, limit).await.map_err(problem)?;
    Ok(Json(page_of(page.events, page.now, limit)))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "catalog", params(ListParams),
    responses((status = 200, body = Page<EventSummary>), (status = 422, description = "validation_failed")))]
async fn list_events(
    State(c): State<Catalog>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<EventSummary>>, Problem> {
    let (filter, limit) = filter_from(&p)?;
    let page = c.list_events(None, filter, limit).await.map_err(problem)?;
    Ok(Json(page_of(page.events, page.now, limit)))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = EventOut), (status = 404, description = "not_found")))]
async fn get_event(
    State(c): State<Catalog>,
    user: MaybeAuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<EventOut>, Problem> {
    let view = c.event_for(user.0.as_ref(), id).await.map_err(problem)?;
    Ok(Json((&view).into()))
}

#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "catalog", params(("id" = EventId, Path)),
    request_body = UpdateEvent,
    responses((status = 200, body = EventOut), (status = 404, description = "not_found"),
              (status = 409, description = "capacity_below_sold, currency_locked, event_closed"),
              (status = 422, description = "validation_failed")))]
async fn update_event(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
    Json(req): Json<UpdateEvent>,
) -> Result<Json<EventOut>, Problem> {
    let patch = req.to_patch()?;
    let view = c.update_event(&user.0, id, patch).await.map_err(problem)?;
    Ok(Json((&view).into()))
}

async fn transition(c: Catalog, user: AuthUser, id: EventId, t: Transition) -> Result<Json<EventOut>, Problem> {
    let view = c.transition(&user.0, id, t).await.map_err(problem)?;
    Ok(Json((&view).into()))
}

#[utoipa::path(post, path = "/api/v1/events/{id}/publish", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = EventOut), (status = 409, description = "invalid_transition"),
              (status = 422, description = "no_ticket_types")))]
async fn publish_event(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<EventOut>, Problem> {
    transition(c, user, id, Transition::Publish).await
}

#[utoipa::path(post, path = "/api/v1/events/{id}/open-sales", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = EventOut), (status = 409, description = "invalid_transition")))]
async fn open_sales(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<EventOut>, Problem> {
    transition(c, user, id, Transition::OpenSales).await
}

#[utoipa::path(post, path = "/api/v1/events/{id}/close-sales", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = EventOut), (status = 409, description = "invalid_transition")))]
async fn close_sales(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<EventOut>, Problem> {
    transition(c, user, id, Transition::CloseSales).await
}

#[utoipa::path(post, path = "/api/v1/events/{id}/cancel", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = EventOut), (status = 409, description = "invalid_transition")))]
async fn cancel_event(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<EventOut>, Problem> {
    transition(c, user, id, Transition::Cancel).await
}

#[utoipa::path(post, path = "/api/v1/events/{id}/ticket-types", tag = "catalog", params(("id" = EventId, Path)),
    request_body = CreateTicketType,
    responses((status = 201, body = TicketTypeOut, description = "the created ticket type"), (status = 404, description = "not_found"),
              (status = 409, description = "event_closed"), (status = 422, description = "validation_failed")))]
async fn create_ticket_type(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
    key: MaybeIdempotencyKey,
    Json(req): Json<CreateTicketType>,
) -> Result<Response, Problem> {
    let route = format!("POST /api/v1/events/{id}/ticket-types");
    idempotent(&c, &user, &route, key, &req, || async {
        let new = req.to_new()?;
        let (tt_id, view) = c.create_ticket_type(&user.0, id, new).await.map_err(problem)?;
        let tt = view
            .ticket_types
            .iter()
            .find(|t| t.id == tt_id)
            .ok_or_else(|| Problem::internal("created ticket type missing from its event"))?;
        to_value(ticket_type_out(tt, &view))
    })
    .await
}

#[utoipa::path(patch, path = "/api/v1/ticket-types/{id}", tag = "catalog", params(("id" = TicketTypeId, Path)),
    request_body = UpdateTicketType,
    responses((status = 200, body = EventOut), (status = 404, description = "not_found"),
              (status = 409, description = "event_closed, quota_membership_locked"),
              (status = 422, description = "validation_failed")))]
async fn update_ticket_type(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<TicketTypeId>,
    Json(req): Json<UpdateTicketType>,
) -> Result<Json<EventOut>, Problem> {
    let patch = req.to_patch()?;
    let view = c.update_ticket_type(&user.0, id, patch).await.map_err(problem)?;
    Ok(Json((&view).into()))
}

#[utoipa::path(post, path = "/api/v1/events/{id}/quotas", tag = "catalog", params(("id" = EventId, Path)),
    request_body = CreateQuota,
    responses((status = 201, body = QuotaOut), (status = 404, description = "not_found"),
              (status = 409, description = "event_closed, quota_membership_locked"),
              (status = 422, description = "validation_failed")))]
async fn create_quota(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
    key: MaybeIdempotencyKey,
    Json(req): Json<CreateQuota>,
) -> Result<Response, Problem> {
    let route = format!("POST /api/v1/events/{id}/quotas");
    idempotent(&c, &user, &route, key, &req, || async {
        let q = c.create_quota(&user.0, id, &req.name, req.size, &req.ticket_type_ids).await.map_err(problem)?;
        to_value(QuotaOut::from(&q))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/events/{id}/quotas", tag = "catalog", params(("id" = EventId, Path)),
    responses((status = 200, body = QuotaList), (status = 404, description = "not_found")))]
async fn list_quotas(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<QuotaList>, Problem> {
    let quotas = c.quotas(&user.0, id).await.map_err(problem)?;
    Ok(Json(QuotaList { items: quotas.iter().map(QuotaOut::from).collect() }))
}

#[utoipa::path(patch, path = "/api/v1/quotas/{id}", tag = "catalog", params(("id" = QuotaId, Path)),
    request_body = UpdateQuota,
    responses((status = 200, body = QuotaOut), (status = 404, description = "not_found"),
              (status = 409, description = "quota_below_used, event_closed"),
              (status = 422, description = "validation_failed")))]
async fn update_quota(
    State(c): State<Catalog>,
    user: AuthUser,
    Path(id): Path<QuotaId>,
    Json(req): Json<UpdateQuota>,
) -> Result<Json<QuotaOut>, Problem> {
    let q = c.update_quota(&user.0, id, req.name.as_deref(), req.size).await.map_err(problem)?;
    Ok(Json((&q).into()))
}
