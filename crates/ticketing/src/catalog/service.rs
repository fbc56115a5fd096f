//! Catalog use cases: authorization, validation, one transaction per change
//! with its audit record and domain events.
//!
//! Authorization rule (invariant 8): a platform admin acts on any
//! organization; support may read any; everyone else needs a membership
//! with at least the required role. A caller outside the organization gets
//! `NotFound`, never `Forbidden`, so ids of other tenants reveal nothing.

use super::domain::{
    CatalogError, Event, EventFields, EventSpec, EventStatus, NewOrganization, Organization, PriceCap, Quota,
    ResalePolicy, ResalePolicyPatch, TicketType, TicketTypeFields, TicketTypeSpec, Transition, Venue, quota_size,
    required_text,
};
use super::store::{self, EventFilter};
use entrada_identity::membership::{self, OrgRole};
use entrada_primitives::ids::{EventId, OrganizationId, QuotaId, TicketTypeId, UserId};
use entrada_primitives::{Currency, Money, PlatformRole, Principal, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Db, DomainEvent, Tx, outbox};
use serde_json::json;
use time::{Duration, OffsetDateTime};

type Result<T> = std::result::Result<T, CatalogError>;

/// The catalog service. Cheap to clone (a pool handle and a clock).
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    clock: SharedClock,
}

/// A partial update of an event: `None` leaves a field as it is; for the
/// nullable `doors_open_at`, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct EventPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub venue: Option<Venue>,
    pub timezone: Option<String>,
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: Option<OffsetDateTime>,
    pub doors_open_at: Option<Option<OffsetDateTime>>,
    pub capacity: Option<i64>,
    pub currency: Option<Currency>,
    /// Changes the named policy fields only.
    pub resale: Option<ResalePolicyPatch>,
}

/// A new ticket type and the shared quotas it joins (the capacity quota is
/// joined automatically).
#[derive(Debug, Clone)]
pub struct NewTicketType {
    pub fields: TicketTypeFields,
    pub quota_ids: Vec<QuotaId>,
}

/// A partial update of a ticket type; `quota_ids` replaces the shared-quota
/// memberships when given.
#[derive(Debug, Clone, Default)]
pub struct TicketTypePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_minor: Option<i64>,
    pub currency: Option<Currency>,
    pub min_per_order: Option<i64>,
    pub max_per_order: Option<i64>,
    pub sale_starts_at: Option<Option<OffsetDateTime>>,
    pub sale_ends_at: Option<Option<OffsetDateTime>>,
    pub zones: Option<Vec<String>>,
    pub printable: Option<bool>,
    pub quota_ids: Option<Vec<QuotaId>>,
}

/// An event with its ticket types and quotas, as of `now`.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event: Event,
    pub status: EventStatus,
    pub ticket_types: Vec<TicketType>,
    pub quotas: Vec<Quota>,
    pub now: OffsetDateTime,
}

/// One page of events and the key to continue after the last one.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub now: OffsetDateTime,
}

/// What the demo seed created (or found).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DemoIds {
    pub organization_id: OrganizationId,
    pub event_id: EventId,
    /// General, Tribuna, VIP, in that order.
    pub ticket_type_ids: Vec<TicketTypeId>,
    /// The quota shared by Tribuna and VIP.
    pub shared_quota_id: QuotaId,
}

pub const DEMO_ORG_SLUG: &str = "entrada-demo";
pub const DEMO_EVENT_NAME: &str = "Noche de Estadio";

impl Catalog {
    pub fn new(db: Db, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.db.reader().acquire().await?)
    }

    // ------------------------------------------------------------ authorization

    /// Succeeds when `user` may act on `org` with at least `min`: admins
    /// always; support for read-only (`Viewer`) access; members by role.
    /// Non-members get `NotFound`; members with too low a role `Forbidden`.
    pub async fn authorize(&self, user: &Principal, org: OrganizationId, min: OrgRole) -> Result<()> {
        if user.role == PlatformRole::Admin || (user.role == PlatformRole::Support && min == OrgRole::Viewer) {
            return Ok(());
        }
        match membership::role_of(&self.db, user.user_id, org).await? {
            Some(r) if r >= min => Ok(()),
            Some(_) => Err(CatalogError::Forbidden),
            None => Err(CatalogError::NotFound),
        }
    }

    /// Like [`Self::authorize`] but a plain yes/no for visibility checks.
    async fn can_read(&self, user: Option<&Principal>, org: OrganizationId) -> Result<bool> {
        match user {
            None => Ok(false),
            Some(u) => match self.authorize(u, org, OrgRole::Viewer).await {
                Ok(()) => Ok(true),
                Err(CatalogError::NotFound | CatalogError::Forbidden) => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    // ------------------------------------------------------------ organizations

    /// Creates an organization whose owner is the caller.
    pub async fn create_organization(&self, user: &Principal, new: NewOrganization) -> Result<Organization> {
        self.create_organization_as(user.user_id, new).await
    }

    async fn create_organization_as(&self, owner: UserId, new: NewOrganization) -> Result<Organization> {
        let now = self.clock.now();
        let org = Organization {
            id: OrganizationId::new(),
            name: new.name().to_owned(),
            slug: new.slug().as_str().to_owned(),
            created_by: owner,
            created_at: now,
        };
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        if let Err(e) = store::insert_organization(&mut tx, &org).await {
            return Err(if entrada_storage::is_unique_violation(&e) { CatalogError::SlugTaken } else { e.into() });
        }
        membership::set(&mut tx, org.id, owner, OrgRole::Owner, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(owner),
            "organization.created",
            "organization",
            &org.id.to_db(),
            json!({ "name": org.name, "slug": org.slug }),
        )
        .await?;
        outbox::append(&mut tx, now_ms, &DomainEvent::OrganizationCreated { organization_id: org.id, owner }).await?;
        tx.commit().await?;
        Ok(org)
    }

    /// An organization, visible to its members (and platform staff).
    pub async fn organization(&self, user: &Principal, id: OrganizationId) -> Result<Organization> {
        self.authorize(user, id, OrgRole::Viewer).await.map_err(|_| CatalogError::NotFound)?;
        store::get_organization(&mut *self.reader().await?, id).await?.ok_or(CatalogError::NotFound)
    }

    // ------------------------------------------------------------------- events

    /// Loads an event by id, with no authorization: for other contexts (the
    /// sale) that apply their own rules. Use [`Event::status`] with the
    /// current time for the effective status.
    pub async fn load_event(&self, id: EventId) -> Result<Option<Event>> {
        Ok(store::get_event(&mut *self.reader().await?, id, "").await?)
    }

    /// The event's ticket types, each with every quota it draws from (the
    /// capacity quota included), with no authorization.
    pub async fn load_ticket_types(&self, event: EventId) -> Result<Vec<TicketType>> {
        Ok(store::ticket_types_of_event(&mut *self.reader().await?, event).await?)
    }

    /// The event's quotas with their current `used` and members.
    pub async fn load_quotas(&self, event: EventId) -> Result<Vec<Quota>> {
        Ok(store::quotas_of_event(&mut *self.reader().await?, event).await?)
    }

    /// Creates a draft event and its capacity quota.
    pub async fn create_event(&self, user: &Principal, org: OrganizationId, spec: EventSpec) -> Result<EventView> {
        self.authorize(user, org, OrgRole::Manager).await?;
        let id = self.create_event_as(user.user_id, org, spec).await?;
        self.view(id).await
    }

    async fn create_event_as(&self, actor: UserId, org: OrganizationId, spec: EventSpec) -> Result<EventId> {
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let id = EventId::new();
        let capacity_quota = QuotaId::new();
        let mut tx = self.db.begin().await?;
        store::insert_event(&mut tx, id, org, &spec, EventStatus::Draft, now).await?;
        store::insert_quota(&mut tx, capacity_quota, id, "Capacity", spec.fields().capacity, true, now).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(actor),
            "event.created",
            "event",
            &id.to_db(),
            json!({ "organization_id": org, "name": spec.fields().name, "capacity": spec.fields().capacity,
                    "capacity_quota_id": capacity_quota }),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Applies a partial update. Capacity resizes the capacity quota (never
    /// below what is sold or held); the currency is fixed once ticket types
    /// exist, because their prices are in it.
    pub async fn update_event(&self, user: &Principal, id: EventId, patch: EventPatch) -> Result<EventView> {
        // Authorize before the write transaction: membership is read on the
        // reader pool, and SQLite has a single writer.
        let before = self.load_event(id).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, before.organization_id, OrgRole::Manager).await?;
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let event = store::get_event(&mut tx, id, self.db.for_update()).await?.ok_or(CatalogError::NotFound)?;
        let status = event.status(now);
        if !status.is_editable() {
            return Err(CatalogError::EventClosed(status));
        }
        let old = event.details.clone();
        let mut f: EventFields = old.clone();
        if let Some(v) = patch.name {
            f.name = v;
        }
        if let Some(v) = patch.description {
            f.description = v;
        }
        if let Some(v) = patch.venue {
            f.venue = v;
        }
        if let Some(v) = patch.timezone {
            f.timezone = v;
        }
        if let Some(v) = patch.starts_at {
            f.starts_at = v;
        }
        if let Some(v) = patch.ends_at {
            f.ends_at = v;
        }
        if let Some(v) = patch.doors_open_at {
            f.doors_open_at = v;
        }
        if let Some(v) = patch.capacity {
            f.capacity = v;
        }
        if let Some(v) = patch.currency {
            f.currency = v;
        }
        if let Some(v) = patch.resale {
            f.resale = v.apply(&f.resale)?;
        }
        let spec = EventSpec::parse(f)?;
        let new = spec.fields();
        if new.currency != old.currency && store::count_ticket_types(&mut tx, id).await? > 0 {
            return Err(CatalogError::CurrencyLocked);
        }
        if new.capacity != old.capacity {
            let quotas = store::quotas_of_event(&mut tx, id).await?;
            let cap = quotas.iter().find(|q| q.is_capacity).ok_or(CatalogError::NotFound)?;
            if !store::resize_quota(&mut tx, cap.id, new.capacity).await? {
                return Err(CatalogError::CapacityBelowSold { requested: new.capacity, used: cap.used });
            }
        }
        store::update_event(&mut tx, id, &spec, now).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.user_id),
            "event.updated",
            "event",
            &id.to_db(),
            json!({ "changed": changed_fields(&old, new) }),
        )
        .await?;
        tx.commit().await?;
        self.view(id).await
    }

    /// Runs one lifecycle transition (see the lifecycle in `domain`).
    pub async fn transition(&self, user: &Principal, id: EventId, t: Transition) -> Result<EventView> {
        let before = self.load_event(id).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, before.organization_id, OrgRole::Manager).await?;
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let event = self.event_for_write_unchecked(&mut tx, id).await?;
        let from = event.status(now);
        let to = t.apply(from)?;
        if t == Transition::Publish && store::count_ticket_types(&mut tx, id).await? == 0 {
            return Err(CatalogError::NoTicketTypes);
        }
        if !store::set_status(&mut tx, id, event.stored_status, to, now).await? {
            // Someone else moved it between our read and write (PostgreSQL
            // without the lock would reach here; with it, this is defensive).
            return Err(CatalogError::InvalidTransition { from, action: t.as_str() });
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.user_id),
            t.audit_action(),
            "event",
            &id.to_db(),
            json!({ "from": from.as_str(), "to": to.as_str() }),
        )
        .await?;
        if t == Transition::Publish {
            outbox::append(
                &mut tx,
                now_ms,
                &DomainEvent::EventPublished { organization_id: event.organization_id, event_id: id },
            )
            .await?;
        }
        tx.commit().await?;
        self.view(id).await
    }

    async fn event_for_write_unchecked(&self, tx: &mut Tx, id: EventId) -> Result<Event> {
        store::get_event(tx, id, self.db.for_update()).await?.ok_or(CatalogError::NotFound)
    }

    /// The event page as `user` (or an anonymous caller) may see it: public
    /// once published; drafts only to members of the organization.
    pub async fn event_for(&self, user: Option<&Principal>, id: EventId) -> Result<EventView> {
        let view = self.view(id).await?;
        if view.status == EventStatus::Draft && !self.can_read(user, view.event.organization_id).await? {
            return Err(CatalogError::NotFound);
        }
        Ok(view)
    }

    /// The full view of an event, no authorization.
    pub async fn view(&self, id: EventId) -> Result<EventView> {
        let mut conn = self.reader().await?;
        let event = store::get_event(&mut conn, id, "").await?.ok_or(CatalogError::NotFound)?;
        let ticket_types = store::ticket_types_of_event(&mut conn, id).await?;
        let quotas = store::quotas_of_event(&mut conn, id).await?;
        let now = self.clock.now();
        Ok(EventView { status: event.status(now), event, ticket_types, quotas, now })
    }

    /// The public listing, or (with `filter.organization`) an organization's
    /// events for its members. Returns `limit + 1` rows at most so the
    /// caller can tell whether another page exists.
    pub async fn list_events(&self, user: Option<&Principal>, filter: EventFilter, limit: u32) -> Result<EventPage> {
        if let Some(org) = filter.organization {
            let u = user.ok_or(CatalogError::NotFound)?;
            self.authorize(u, org, OrgRole::Viewer).await.map_err(|_| CatalogError::NotFound)?;
        }
        let now = self.clock.now();
        let events = store::list_events(
            &mut *self.reader().await?,
            &filter,
            entrada_primitives::clock::to_ms(now),
            i64::from(limit) + 1,
        )
        .await?;
        Ok(EventPage { events, now })
    }

    // ------------------------------------------------------------- ticket types

    /// Adds a ticket type to an event; it joins the capacity quota and the
    /// named shared quotas of the same event.
    /// Returns the new type's id and the event as it now stands.
    pub async fn create_ticket_type(
        &self,
        user: &Principal,
        event: EventId,
        new: NewTicketType,
    ) -> Result<(TicketTypeId, EventView)> {
        let before = self.load_event(event).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, before.organization_id, OrgRole::Manager).await?;
        let id = self.create_ticket_type_as(user.user_id, event, new).await?;
        Ok((id, self.view(event).await?))
    }

    async fn create_ticket_type_as(
        &self,
        actor: UserId,
        event_id: EventId,
        new: NewTicketType,
    ) -> Result<TicketTypeId> {
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let event = self.event_for_write_unchecked(&mut tx, event_id).await?;
        let status = event.status(now);
        if !status.is_editable() {
            return Err(CatalogError::EventClosed(status));
        }
        let spec = TicketTypeSpec::parse(new.fields, event.details.currency)?;
        let quotas = store::quotas_of_event(&mut tx, event_id).await?;
        let shared = check_shared_quotas(&quotas, &new.quota_ids)?;
        let id = TicketTypeId::new();
        store::insert_ticket_type(&mut tx, id, event_id, &spec, now).await?;
        for q in quotas.iter().filter(|q| q.is_capacity).map(|q| q.id).chain(shared.iter().copied()) {
            store::add_member(&mut tx, q, id).await?;
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(actor),
            "ticket_type.created",
            "ticket_type",
            &id.to_db(),
            json!({ "event_id": event_id, "name": spec.fields().name, "price_minor": spec.fields().price.minor,
                    "currency": spec.fields().price.currency.as_str(), "quota_ids": shared }),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Changes a ticket type. Shared-quota membership can only change while
    /// the type was never held.
    pub async fn update_ticket_type(
        &self,
        user: &Principal,
        id: TicketTypeId,
        patch: TicketTypePatch,
    ) -> Result<EventView> {
        let tt = store::get_ticket_type(&mut *self.reader().await?, id).await?.ok_or(CatalogError::NotFound)?;
        let before = self.load_event(tt.event_id).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, before.organization_id, OrgRole::Manager).await?;
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let event = self.event_for_write_unchecked(&mut tx, tt.event_id).await?;
        let status = event.status(now);
        if !status.is_editable() {
            return Err(CatalogError::EventClosed(status));
        }
        let tt = store::get_ticket_type(&mut tx, id).await?.ok_or(CatalogError::NotFound)?;
        let mut f = tt.details.clone();
        if let Some(v) = patch.name {
            f.name = v;
        }
        if let Some(v) = patch.description {
            f.description = v;
        }
        if let Some(v) = patch.price_minor {
            f.price = Money::new(v, f.price.currency);
        }
        if let Some(v) = patch.currency {
            f.price = Money::new(f.price.minor, v);
        }
        if let Some(v) = patch.min_per_order {
            f.min_per_order = v;
        }
        if let Some(v) = patch.max_per_order {
            f.max_per_order = v;
        }
        if let Some(v) = patch.sale_starts_at {
            f.sale_starts_at = v;
        }
        if let Some(v) = patch.sale_ends_at {
            f.sale_ends_at = v;
        }
        if let Some(v) = patch.zones {
            f.zones = v;
        }
        if let Some(v) = patch.printable {
            f.printable = v;
        }
        let spec = TicketTypeSpec::parse(f, event.details.currency)?;
        let mut details = json!({ "event_id": tt.event_id });
        if let Some(ids) = &patch.quota_ids {
            let quotas = store::quotas_of_event(&mut tx, tt.event_id).await?;
            let shared = check_shared_quotas(&quotas, ids)?;
            let current: Vec<QuotaId> =
                quotas.iter().filter(|q| !q.is_capacity && q.ticket_type_ids.contains(&id)).map(|q| q.id).collect();
            let mut a = current.clone();
            let mut b = shared.clone();
            a.sort();
            b.sort();
            if a != b {
                if store::any_ever_held(&mut tx, &[id]).await? {
                    return Err(CatalogError::MembershipLocked);
                }
                store::clear_shared_memberships(&mut tx, id).await?;
                for q in &shared {
                    store::add_member(&mut tx, *q, id).await?;
                }
                details["quota_ids"] = json!(shared);
            }
        }
        store::update_ticket_type(&mut tx, id, &spec).await?;
        details["name"] = json!(spec.fields().name);
        details["price_minor"] = json!(spec.fields().price.minor);
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.user_id),
            "ticket_type.updated",
            "ticket_type",
            &id.to_db(),
            details,
        )
        .await?;
        tx.commit().await?;
        self.view(tt.event_id).await
    }

    // ------------------------------------------------------------------- quotas

    /// The organizer's view of an event's quotas.
    pub async fn quotas(&self, user: &Principal, event: EventId) -> Result<Vec<Quota>> {
        let e = self.load_event(event).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, e.organization_id, OrgRole::Viewer).await.map_err(|_| CatalogError::NotFound)?;
        self.load_quotas(event).await
    }

    /// Creates a quota shared by ticket types of the same event. Types that
    /// were already held cannot join: the new quota's `used` would not count
    /// their places.
    pub async fn create_quota(
        &self,
        user: &Principal,
        event: EventId,
        name: &str,
        size: i64,
        ticket_type_ids: &[TicketTypeId],
    ) -> Result<Quota> {
        let e = self.load_event(event).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, e.organization_id, OrgRole::Manager).await?;
        let id = self.create_quota_as(user.user_id, event, name, size, ticket_type_ids).await?;
        store::get_quota(&mut *self.reader().await?, id).await?.ok_or(CatalogError::NotFound)
    }

    async fn create_quota_as(
        &self,
        actor: UserId,
        event_id: EventId,
        name: &str,
        size: i64,
        ticket_type_ids: &[TicketTypeId],
    ) -> Result<QuotaId> {
        let name = required_text("name", name, 120)?;
        let size = quota_size(size)?;
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let event = self.event_for_write_unchecked(&mut tx, event_id).await?;
        let status = event.status(now);
        if !status.is_editable() {
            return Err(CatalogError::EventClosed(status));
        }
        let types = store::ticket_types_of_event(&mut tx, event_id).await?;
        let mut members: Vec<TicketTypeId> = Vec::new();
        for t in ticket_type_ids {
            if !types.iter().any(|x| x.id == *t) {
                return Err(CatalogError::invalid(
                    "ticket_type_ids",
                    format!("{t} is not a ticket type of this event"),
                ));
            }
            if !members.contains(t) {
                members.push(*t);
            }
        }
        if store::any_ever_held(&mut tx, &members).await? {
            return Err(CatalogError::MembershipLocked);
        }
        let id = QuotaId::new();
        store::insert_quota(&mut tx, id, event_id, &name, size, false, now).await?;
        for t in &members {
            store::add_member(&mut tx, id, *t).await?;
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(actor),
            "quota.created",
            "quota",
            &id.to_db(),
            json!({ "event_id": event_id, "name": name, "size": size, "ticket_type_ids": members }),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Renames or resizes a shared quota; never below what is used. The
    /// capacity quota follows the event's capacity and is changed there.
    pub async fn update_quota(
        &self,
        user: &Principal,
        id: QuotaId,
        name: Option<&str>,
        size: Option<i64>,
    ) -> Result<Quota> {
        let q = store::get_quota(&mut *self.reader().await?, id).await?.ok_or(CatalogError::NotFound)?;
        let e = self.load_event(q.event_id).await?.ok_or(CatalogError::NotFound)?;
        self.authorize(user, e.organization_id, OrgRole::Manager).await?;
        let name = name.map(|n| required_text("name", n, 120)).transpose()?;
        let size = size.map(quota_size).transpose()?;
        if q.is_capacity && size.is_some() {
            return Err(CatalogError::invalid(
                "size",
                "the capacity quota follows the event capacity; change the event",
            ));
        }
        let now = self.clock.now();
        let now_ms = entrada_primitives::clock::to_ms(now);
        let mut tx = self.db.begin().await?;
        let status = self.event_for_write_unchecked(&mut tx, q.event_id).await?.status(now);
        if !status.is_editable() {
            return Err(CatalogError::EventClosed(status));
        }
        if let Some(size) = size
            && !store::resize_quota(&mut tx, id, size).await?
        {
            let used = store::get_quota(&mut tx, id).await?.map(|q| q.used).unwrap_or(q.used);
            return Err(CatalogError::QuotaBelowUsed { requested: size, used });
        }
        if let Some(n) = &name {
            store::rename_quota(&mut tx, id, n).await?;
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.user_id),
            "quota.updated",
            "quota",
            &id.to_db(),
            json!({ "event_id": q.event_id, "name": name, "size": size, "previous_size": q.size }),
        )
        .await?;
        tx.commit().await?;
        store::get_quota(&mut *self.reader().await?, id).await?.ok_or(CatalogError::NotFound)
    }

    // --------------------------------------------------------------------- demo

    /// Creates the demo organization, an on-sale stadium event about 30 days
    /// after now with three ticket types and a shared quota, owned by
    /// `owner` (an existing user). Idempotent: a second call returns the ids
    /// of what the first created.
    pub async fn seed_demo(&self, owner: UserId) -> Result<DemoIds> {
        if let Some(ids) = self.find_demo().await? {
            return Ok(ids);
        }
        // The organization may exist without the event if an earlier seed
        // stopped half-way; reuse it rather than fail on the slug.
        let existing = store::organization_by_slug(&mut *self.reader().await?, DEMO_ORG_SLUG).await?;
        let org = match existing {
            Some(o) => o.id,
            None => {
                let new = NewOrganization::parse("Entrada Demo", Some(DEMO_ORG_SLUG))?;
                match self.create_organization_as(owner, new).await {
                    Ok(o) => o.id,
                    // Lost a race with a concurrent seed: use theirs.
                    Err(CatalogError::SlugTaken) => return self.find_demo().await?.ok_or(CatalogError::NotFound),
                    Err(e) => return Err(e),
                }
            }
        };
        let now = self.clock.now();
        let day = (now + Duration::days(30)).replace_time(time::macros::time!(19:00));
        let eur = Currency::parse("EUR").map_err(|e| CatalogError::invalid("currency", e.to_string()))?;
        let spec = EventSpec::parse(EventFields {
            name: DEMO_EVENT_NAME.into(),
            description: "Una noche de música en directo en el estadio.".into(),
            venue: Venue {
                name: "Estadio Metropolitano".into(),
                address: "Av. de Luis Aragonés, 4".into(),
                city: "Madrid".into(),
                country: "ES".into(),
            },
            timezone: "Europe/Madrid".into(),
            starts_at: day,
            ends_at: day + Duration::hours(4),
            doors_open_at: Some(day - Duration::hours(2)),
            capacity: 60_000,
            currency: eur,
            resale: ResalePolicy {
                price_cap: Some(PriceCap::Bps(11_000)),
                royalty_bps: 500,
                fee_bps: 500,
                freeze_minutes_before_doors: 60,
                ..ResalePolicy::default()
            },
        })?;
        let event = self.create_event_as(owner, org, spec).await?;
        let mut types = Vec::new();
        for (name, price, max, zones) in [
            ("General", 4500, 10, vec!["pista"]),
            ("Tribuna", 8900, 8, vec!["tribuna"]),
            ("VIP", 19900, 4, vec!["tribuna", "vip"]),
        ] {
            let fields = TicketTypeFields {
                name: name.into(),
                description: String::new(),
                price: Money::new(price, eur),
                min_per_order: 1,
                max_per_order: max,
                sale_starts_at: None,
                sale_ends_at: None,
                zones: zones.into_iter().map(str::to_owned).collect(),
                printable: true,
            };
            types.push(self.create_ticket_type_as(owner, event, NewTicketType { fields, quota_ids: vec![] }).await?);
        }
        let shared = self.create_quota_as(owner, event, "Tribuna y VIP", 20_000, &types[1..]).await?;
        // The owner acts as themself; the session id is only a label here.
        let as_owner = Principal {
            user_id: owner,
            role: PlatformRole::Fan,
            session_id: entrada_primitives::ids::SessionId::new(),
        };
        self.transition(&as_owner, event, Transition::Publish).await?;
        self.transition(&as_owner, event, Transition::OpenSales).await?;
        Ok(DemoIds { organization_id: org, event_id: event, ticket_type_ids: types, shared_quota_id: shared })
    }

    async fn find_demo(&self) -> Result<Option<DemoIds>> {
        let mut conn = self.reader().await?;
        let Some(org) = store::organization_by_slug(&mut conn, DEMO_ORG_SLUG).await? else { return Ok(None) };
        let filter = EventFilter { organization: Some(org.id), ..EventFilter::default() };
        let events = store::list_events(&mut conn, &filter, 0, 100).await?;
        let Some(event) = events.into_iter().find(|e| e.details.name == DEMO_EVENT_NAME) else { return Ok(None) };
        let types = store::ticket_types_of_event(&mut conn, event.id).await?;
        let quotas = store::quotas_of_event(&mut conn, event.id).await?;
        let Some(shared) = quotas.iter().find(|q| !q.is_capacity) else { return Ok(None) };
        Ok(Some(DemoIds {
            organization_id: org.id,
            event_id: event.id,
            ticket_type_ids: types.iter().map(|t| t.id).collect(),
            shared_quota_id: shared.id,
        }))
    }
}

/// Checks that `ids` name shared (non-capacity) quotas of the event; returns
/// them without duplicates.
fn check_shared_quotas(quotas: &[Quota], ids: &[QuotaId]) -> Result<Vec<QuotaId>> {
    let mut out = Vec::new();
    for id in ids {
        match quotas.iter().find(|q| q.id == *id) {
            Some(q) if !q.is_capacity => {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
            Some(_) => {
                return Err(CatalogError::invalid("quota_ids", "the capacity quota is joined automatically"));
            }
            None => return Err(CatalogError::invalid("quota_ids", format!("{id} is not a quota of this event"))),
        }
    }
    Ok(out)
}

/// The names of the fields a patch changed, for the audit record.
fn changed_fields(a: &EventFields, b: &EventFields) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut diff = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    diff(a.name != b.name, "name");
    diff(a.description != b.description, "description");
    diff(a.venue != b.venue, "venue");
    diff(a.timezone != b.timezone, "timezone");
    diff(a.starts_at != b.starts_at, "starts_at");
    diff(a.ends_at != b.ends_at, "ends_at");
    diff(a.doors_open_at != b.doors_open_at, "doors_open_at");
    diff(a.capacity != b.capacity, "capacity");
    diff(a.currency != b.currency, "currency");
    diff(a.resale != b.resale, "resale_policy");
    out
}
