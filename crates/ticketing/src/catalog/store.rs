//! Catalog SQL, written once for SQLite and PostgreSQL.
//!
//! Every function takes a plain connection (`&mut AnyConnection`) so the
//! service decides whether it runs inside a write transaction or on a reader.
//! `quotas.used` is never written here except through the guarded resize
//! statements, which refuse to go below it.

use super::domain::{
    Event, EventFields, EventSpec, EventStatus, Organization, PriceCap, Quota, ResalePolicy, TicketType,
    TicketTypeFields, TicketTypeSpec, Venue,
};
use entrada_primitives::clock::{from_ms, to_ms};
use entrada_primitives::ids::{EventId, OrganizationId, QuotaId, TicketTypeId, UserId};
use entrada_primitives::{Currency, Money};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, sqlx::Error>;

fn corrupt(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("corrupt {what}: {e}").into())
}

/// Selects a BOOLEAN column as 0/1: the `Any` driver cannot decode SQLite's
/// declared BOOLEAN type, but both backends agree on this integer form.
fn flag_col(col: &str) -> String {
    format!("CASE WHEN {col} THEN 1 ELSE 0 END AS {col}")
}

fn flag(r: &AnyRow, col: &str) -> Result<bool> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn ms_opt(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(to_ms)
}

// ---------------------------------------------------------------- organizations

pub async fn insert_organization(conn: &mut AnyConnection, o: &Organization) -> Result<()> {
    sqlx::query("INSERT INTO organizations (id, name, slug, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(o.id.to_db())
        .bind(&o.name)
        .bind(&o.slug)
        .bind(o.created_by.to_db())
        .bind(to_ms(o.created_at))
        .execute(conn)
        .await?;
    Ok(())
}

fn organization_from_row(r: &AnyRow) -> Result<Organization> {
    Ok(Organization {
        id: OrganizationId::from_db(&r.try_get::<String, _>("id")?).map_err(|e| corrupt("organization id", e))?,
        name: r.try_get("name")?,
        slug: r.try_get("slug")?,
        created_by: UserId::from_db(&r.try_get::<String, _>("created_by")?).map_err(|e| corrupt("user id", e))?,
        created_at: from_ms(r.try_get("created_at")?),
    })
}

pub async fn get_organization(conn: &mut AnyConnection, id: OrganizationId) -> Result<Option<Organization>> {
    let row = sqlx::query("SELECT id, name, slug, created_by, created_at FROM organizations WHERE id = $1")
        .bind(id.to_db())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(organization_from_row).transpose()
}

pub async fn organization_by_slug(conn: &mut AnyConnection, slug: &str) -> Result<Option<Organization>> {
    let row = sqlx::query("SELECT id, name, slug, created_by, created_at FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(organization_from_row).transpose()
}

// ----------------------------------------------------------------------- events

fn event_cols() -> String {
    format!(
        "id, organization_id, name, description, venue_name, venue_address, venue_city, \
         venue_country, timezone, starts_at, ends_at, doors_open_at, capacity, currency, status, \
         {}, {}, resale_price_cap_bps, resale_price_cap_minor, resale_royalty_bps, \
         resale_fee_bps, resale_max_per_ticket, resale_opens_at, resale_closes_at, resale_freeze_minutes, \
         {}, export_after, created_at, updated_at",
        flag_col("transfers_allowed"),
        flag_col("resale_allowed"),
        flag_col("export_allowed")
    )
}

fn event_from_row(r: &AnyRow) -> Result<Event> {
    let cap_bps: Option<i64> = r.try_get("resale_price_cap_bps")?;
    let cap_minor: Option<i64> = r.try_get("resale_price_cap_minor")?;
    let price_cap = match (cap_bps, cap_minor) {
        (Some(b), _) => Some(PriceCap::Bps(b)),
        (None, Some(m)) => Some(PriceCap::Minor(m)),
        (None, None) => None,
    };
    let status: String = r.try_get("status")?;
    Ok(Event {
        id: EventId::from_db(&r.try_get::<String, _>("id")?).map_err(|e| corrupt("event id", e))?,
        organization_id: OrganizationId::from_db(&r.try_get::<String, _>("organization_id")?)
            .map_err(|e| corrupt("organization id", e))?,
        details: EventFields {
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            venue: Venue {
                name: r.try_get("venue_name")?,
                address: r.try_get("venue_address")?,
                city: r.try_get("venue_city")?,
                country: r.try_get("venue_country")?,
            },
            timezone: r.try_get("timezone")?,
            starts_at: from_ms(r.try_get("starts_at")?),
            ends_at: from_ms(r.try_get("ends_at")?),
            doors_open_at: r.try_get::<Option<i64>, _>("doors_open_at")?.map(from_ms),
            capacity: r.try_get("capacity")?,
            currency: Currency::parse(&r.try_get::<String, _>("currency")?).map_err(|e| corrupt("currency", e))?,
            resale: ResalePolicy {
                transfers_allowed: flag(r, "transfers_allowed")?,
                resale_allowed: flag(r, "resale_allowed")?,
                price_cap,
                royalty_bps: r.try_get("resale_royalty_bps")?,
                fee_bps: r.try_get("resale_fee_bps")?,
                max_resales_per_ticket: r.try_get("resale_max_per_ticket")?,
                resale_opens_at: r.try_get::<Option<i64>, _>("resale_opens_at")?.map(from_ms),
                resale_closes_at: r.try_get::<Option<i64>, _>("resale_closes_at")?.map(from_ms),
                freeze_minutes_before_doors: r.try_get("resale_freeze_minutes")?,
                export_allowed: flag(r, "export_allowed")?,
                export_after: r.try_get::<Option<i64>, _>("export_after")?.map(from_ms),
            },
        },
        stored_status: EventStatus::parse(&status).ok_or_else(|| corrupt("event status", &status))?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn cap_parts(p: &ResalePolicy) -> (Option<i64>, Option<i64>) {
    match p.price_cap {
        Some(PriceCap::Bps(b)) => (Some(b), None),
        Some(PriceCap::Minor(m)) => (None, Some(m)),
        None => (None, None),
    }
}

pub async fn insert_event(
    conn: &mut AnyConnection,
    id: EventId,
    org: OrganizationId,
    spec: &EventSpec,
    status: EventStatus,
    now: OffsetDateTime,
) -> Result<()> {
    let f = spec.fields();
    let (cap_bps, cap_minor) = cap_parts(&f.resale);
    sqlx::query(
        "INSERT INTO events (id, organization_id, name, description, venue_name, venue_address, venue_city, \
         venue_country, timezone, starts_at, ends_at, doors_open_at, capacity, currency, status, \
         transfers_allowed, resale_allowed, resale_price_cap_bps, resale_price_cap_minor, resale_royalty_bps, \
         resale_fee_bps, resale_max_per_ticket, resale_opens_at, resale_closes_at, resale_freeze_minutes, \
         export_allowed, export_after, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
         $21, $22, $23, $24, $25, $26, $27, $28, $28)",
    )
    .bind(id.to_db())
    .bind(org.to_db())
    .bind(&f.name)
    .bind(&f.description)
    .bind(&f.venue.name)
    .bind(&f.venue.address)
    .bind(&f.venue.city)
    .bind(&f.venue.country)
    .bind(&f.timezone)
    .bind(to_ms(f.starts_at))
    .bind(to_ms(f.ends_at))
    .bind(ms_opt(f.doors_open_at))
    .bind(f.capacity)
    .bind(f.currency.as_str())
    .bind(status.as_str())
    .bind(f.resale.transfers_allowed)
    .bind(f.resale.resale_allowed)
    .bind(cap_bps)
    .bind(cap_minor)
    .bind(f.resale.royalty_bps)
    .bind(f.resale.fee_bps)
    .bind(f.resale.max_resales_per_ticket)
    .bind(ms_opt(f.resale.resale_opens_at))
    .bind(ms_opt(f.resale.resale_closes_at))
    .bind(f.resale.freeze_minutes_before_doors)
    .bind(f.resale.export_allowed)
    .bind(ms_opt(f.resale.export_after))
    .bind(to_ms(now))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_event(conn: &mut AnyConnection, id: EventId, spec: &EventSpec, now: OffsetDateTime) -> Result<()> {
    let f = spec.fields();
    let (cap_bps, cap_minor) = cap_parts(&f.resale);
    sqlx::query(
        "UPDATE events SET name = $2, description = $3, venue_name = $4, venue_address = $5, venue_city = $6, \
         venue_country = $7, timezone = $8, starts_at = $9, ends_at = $10, doors_open_at = $11, capacity = $12, \
         currency = $13, transfers_allowed = $14, resale_allowed = $15, resale_price_cap_bps = $16, \
         resale_price_cap_minor = $17, resale_royalty_bps = $18, resale_fee_bps = $19, resale_max_per_ticket = $20, \
         resale_opens_at = $21, resale_closes_at = $22, resale_freeze_minutes = $23, export_allowed = $24, \
         export_after = $25, updated_at = $26 WHERE id = $1",
    )
    .bind(id.to_db())
    .bind(&f.name)
    .bind(&f.description)
    .bind(&f.venue.name)
    .bind(&f.venue.address)
    .bind(&f.venue.city)
    .bind(&f.venue.country)
    .bind(&f.timezone)
    .bind(to_ms(f.starts_at))
    .bind(to_ms(f.ends_at))
    .bind(ms_opt(f.doors_open_at))
    .bind(f.capacity)
    .bind(f.currency.as_str())
    .bind(f.resale.transfers_allowed)
    .bind(f.resale.resale_allowed)
    .bind(cap_bps)
    .bind(cap_minor)
    .bind(f.resale.royalty_bps)
    .bind(f.resale.fee_bps)
    .bind(f.resale.max_resales_per_ticket)
    .bind(ms_opt(f.resale.resale_opens_at))
    .bind(ms_opt(f.resale.resale_closes_at))
    .bind(f.resale.freeze_minutes_before_doors)
    .bind(f.resale.export_allowed)
    .bind(ms_opt(f.resale.export_after))
    .bind(to_ms(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the stored status only if it is still `from`, so two concurrent
/// transitions cannot both succeed. Returns whether the row changed.
pub async fn set_status(
    conn: &mut AnyConnection,
    id: EventId,
    from: EventStatus,
    to: EventStatus,
    now: OffsetDateTime,
) -> Result<bool> {
    let r = sqlx::query("UPDATE events SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
        .bind(to.as_str())
        .bind(to_ms(now))
        .bind(id.to_db())
        .bind(from.as_str())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Loads an event; `lock` is `Db::for_update()` when called inside a write
/// transaction that will change it.
pub async fn get_event(conn: &mut AnyConnection, id: EventId, lock: &str) -> Result<Option<Event>> {
    let sql = format!("SELECT {} FROM events WHERE id = $1{lock}", event_cols());
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).fetch_optional(conn).await?;
    row.as_ref().map(event_from_row).transpose()
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this organization's events (drafts included); otherwise the
    /// public listing (published, on sale or sales closed, not yet ended).
    pub organization: Option<OrganizationId>,
    /// Case-insensitive substring of name, venue name or city.
    pub q: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Continue after this `(starts_at, id)`.
    pub after: Option<(i64, String)>,
}

/// Events ordered by `(starts_at, id)`, at most `limit` rows.
pub async fn list_events(conn: &mut AnyConnection, f: &EventFilter, now_ms: i64, limit: i64) -> Result<Vec<Event>> {
    let mut sql = format!("SELECT {} FROM events WHERE 1 = 1", event_cols());
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |sql: &mut String, clause: &str, a: Vec<Arg>| {
        let mut clause = clause.to_owned();
        for (i, v) in a.into_iter().enumerate() {
            args.push(v);
            clause = clause.replace(&format!("?{}", i + 1), &format!("${}", args.len()));
        }
        sql.push_str(&clause);
    };
    match f.organization {
        Some(org) => push(&mut sql, " AND organization_id = ?1", vec![Arg::Text(org.to_db())]),
        None => push(
            &mut sql,
            " AND status IN ('published', 'on_sale', 'sales_closed') AND ends_at > ?1",
            vec![Arg::Int(now_ms)],
        ),
    }
    if let Some(q) = &f.q {
        let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
        push(
            &mut sql,
            " AND (LOWER(name) LIKE ?1 ESCAPE '\\' OR LOWER(venue_name) LIKE ?1 ESCAPE '\\' \
             OR LOWER(venue_city) LIKE ?1 ESCAPE '\\')",
            vec![Arg::Text(pattern)],
        );
    }
    if let Some(from) = f.from {
        push(&mut sql, " AND starts_at >= ?1", vec![Arg::Int(to_ms(from))]);
    }
    if let Some(to) = f.to {
        push(&mut sql, " AND starts_at < ?1", vec![Arg::Int(to_ms(to))]);
    }
    if let Some((at, id)) = &f.after {
        push(
            &mut sql,
            " AND (starts_at > ?1 OR (starts_at = ?1 AND id > ?2))",
            vec![Arg::Int(*at), Arg::Text(id.clone())],
        );
    }
    push(&mut sql, " ORDER BY starts_at, id LIMIT ?1", vec![Arg::Int(limit)]);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        query = match a {
            Arg::Int(i) => query.bind(i),
            Arg::Text(s) => query.bind(s),
        };
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(event_from_row).collect()
}

enum Arg {
    Int(i64),
    Text(String),
}

/// Makes user text literal inside a LIKE pattern with `ESCAPE '\'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ----------------------------------------------------------------------- quotas

pub async fn insert_quota(
    conn: &mut AnyConnection,
    id: QuotaId,
    event: EventId,
    name: &str,
    size: i64,
    is_capacity: bool,
    now: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO quotas (id, event_id, name, size, used, is_capacity, created_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
    )
    .bind(id.to_db())
    .bind(event.to_db())
    .bind(name)
    .bind(size)
    .bind(is_capacity)
    .bind(to_ms(now))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn add_member(conn: &mut AnyConnection, quota: QuotaId, tt: TicketTypeId) -> Result<()> {
    sqlx::query(
        "INSERT INTO quota_ticket_types (quota_id, ticket_type_id) VALUES ($1, $2) ON CONFLICT (quota_id, ticket_type_id) DO NOTHING",
    )
    .bind(quota.to_db())
    .bind(tt.to_db())
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a ticket type from every non-capacity quota.
pub async fn clear_shared_memberships(conn: &mut AnyConnection, tt: TicketTypeId) -> Result<()> {
    sqlx::query(
        "DELETE FROM quota_ticket_types WHERE ticket_type_id = $1 \
         AND quota_id IN (SELECT id FROM quotas WHERE is_capacity = FALSE)",
    )
    .bind(tt.to_db())
    .execute(conn)
    .await?;
    Ok(())
}

/// Resizes a quota unless that would put it below `used`. Returns whether
/// it changed; the guard is in the statement, so a sale racing with the
/// resize cannot slip under it.
pub async fn resize_quota(conn: &mut AnyConnection, id: QuotaId, size: i64) -> Result<bool> {
    let r = sqlx::query("UPDATE quotas SET size = $1 WHERE id = $2 AND used <= $1")
        .bind(size)
        .bind(id.to_db())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn rename_quota(conn: &mut AnyConnection, id: QuotaId, name: &str) -> Result<()> {
    sqlx::query("UPDATE quotas SET name = $1 WHERE id = $2").bind(name).bind(id.to_db()).execute(conn).await?;
    Ok(())
}

const QUOTA_COLS: &str =
    "id, event_id, name, size, used, CASE WHEN is_capacity THEN 1 ELSE 0 END AS is_capacity, created_at";

fn quota_from_row(r: &AnyRow) -> Result<Quota> {
    Ok(Quota {
        id: QuotaId::from_db(&r.try_get::<String, _>("id")?).map_err(|e| corrupt("quota id", e))?,
        event_id: EventId::from_db(&r.try_get::<String, _>("event_id")?).map_err(|e| corrupt("event id", e))?,
        name: r.try_get("name")?,
        size: r.try_get("size")?,
        used: r.try_get("used")?,
        is_capacity: flag(r, "is_capacity")?,
        ticket_type_ids: Vec::new(),
        created_at: from_ms(r.try_get("created_at")?),
    })
}

/// All quotas of an event with their member ticket types, capacity first.
pub async fn quotas_of_event(conn: &mut AnyConnection, event: EventId) -> Result<Vec<Quota>> {
    let sql = format!("SELECT {QUOTA_COLS} FROM quotas WHERE event_id = $1 ORDER BY is_capacity DESC, created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event.to_db()).fetch_all(&mut *conn).await?;
    let mut quotas = rows.iter().map(quota_from_row).collect::<Result<Vec<_>>>()?;
    for (q, t) in memberships_of_event(conn, event).await? {
        if let Some(quota) = quotas.iter_mut().find(|x| x.id == q) {
            quota.ticket_type_ids.push(t);
        }
    }
    Ok(quotas)
}

pub async fn get_quota(conn: &mut AnyConnection, id: QuotaId) -> Result<Option<Quota>> {
    let sql = format!("SELECT {QUOTA_COLS} FROM quotas WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).fetch_optional(&mut *conn).await?;
    let Some(mut q) = row.as_ref().map(quota_from_row).transpose()? else { return Ok(None) };
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT ticket_type_id FROM quota_ticket_types WHERE quota_id = $1 ORDER BY ticket_type_id")
            .bind(id.to_db())
            .fetch_all(conn)
            .await?;
    for (t,) in rows {
        q.ticket_type_ids.push(TicketTypeId::from_db(&t).map_err(|e| corrupt("ticket type id", e))?);
    }
    Ok(Some(q))
}

async fn memberships_of_event(conn: &mut AnyConnection, event: EventId) -> Result<Vec<(QuotaId, TicketTypeId)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.quota_id, m.ticket_type_id FROM quota_ticket_types m JOIN quotas q ON q.id = m.quota_id \
         WHERE q.event_id = $1 ORDER BY q.is_capacity DESC, q.created_at, m.quota_id, m.ticket_type_id",
    )
    .bind(event.to_db())
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(q, t)| {
            Ok((
                QuotaId::from_db(&q).map_err(|e| corrupt("quota id", e))?,
                TicketTypeId::from_db(&t).map_err(|e| corrupt("ticket type id", e))?,
            ))
        })
        .collect()
}

// ----------------------------------------------------------------- ticket types

const TT_COLS: &str = "id, event_id, name, description, price_minor, currency, min_per_order, max_per_order, \
     sale_starts_at, sale_ends_at, zones, CASE WHEN printable THEN 1 ELSE 0 END AS printable, position, created_at";

fn ticket_type_from_row(r: &AnyRow) -> Result<TicketType> {
    let currency = Currency::parse(&r.try_get::<String, _>("currency")?).map_err(|e| corrupt("currency", e))?;
    let zones: String = r.try_get("zones")?;
    Ok(TicketType {
        id: TicketTypeId::from_db(&r.try_get::<String, _>("id")?).map_err(|e| corrupt("ticket type id", e))?,
        event_id: EventId::from_db(&r.try_get::<String, _>("event_id")?).map_err(|e| corrupt("event id", e))?,
        details: TicketTypeFields {
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            price: Money::new(r.try_get("price_minor")?, currency),
            min_per_order: r.try_get("min_per_order")?,
            max_per_order: r.try_get("max_per_order")?,
            sale_starts_at: r.try_get::<Option<i64>, _>("sale_starts_at")?.map(from_ms),
            sale_ends_at: r.try_get::<Option<i64>, _>("sale_ends_at")?.map(from_ms),
            zones: serde_json::from_str(&zones).map_err(|e| corrupt("zones", e))?,
            printable: flag(r, "printable")?,
        },
        position: r.try_get("position")?,
        quota_ids: Vec::new(),
        created_at: from_ms(r.try_get("created_at")?),
    })
}

/// The event's ticket types in display order, each with all its quota ids.
pub async fn ticket_types_of_event(conn: &mut AnyConnection, event: EventId) -> Result<Vec<TicketType>> {
    let sql = format!("SELECT {TT_COLS} FROM ticket_types WHERE event_id = $1 ORDER BY position, created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event.to_db()).fetch_all(&mut *conn).await?;
    let mut types = rows.iter().map(ticket_type_from_row).collect::<Result<Vec<_>>>()?;
    for (q, t) in memberships_of_event(conn, event).await? {
        if let Some(tt) = types.iter_mut().find(|x| x.id == t) {
            tt.quota_ids.push(q);
        }
    }
    Ok(types)
}

pub async fn get_ticket_type(conn: &mut AnyConnection, id: TicketTypeId) -> Result<Option<TicketType>> {
    let sql = format!("SELECT {TT_COLS} FROM ticket_types WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).fetch_optional(&mut *conn).await?;
    let Some(mut tt) = row.as_ref().map(ticket_type_from_row).transpose()? else { return Ok(None) };
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT m.quota_id FROM quota_ticket_types m JOIN quotas q ON q.id = m.quota_id \
         WHERE m.ticket_type_id = $1 ORDER BY q.is_capacity DESC, q.created_at, m.quota_id",
    )
    .bind(id.to_db())
    .fetch_all(conn)
    .await?;
    for (q,) in rows {
        tt.quota_ids.push(QuotaId::from_db(&q).map_err(|e| corrupt("quota id", e))?);
    }
    Ok(Some(tt))
}

pub async fn count_ticket_types(conn: &mut AnyConnection, event: EventId) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ticket_types WHERE event_id = $1")
        .bind(event.to_db())
        .fetch_one(conn)
        .await?;
    Ok(n)
}

pub async fn insert_ticket_type(
    conn: &mut AnyConnection,
    id: TicketTypeId,
    event: EventId,
    spec: &TicketTypeSpec,
    now: OffsetDateTime,
) -> Result<()> {
    let f = spec.fields();
    let zones = serde_json::to_string(&f.zones).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO ticket_types (id, event_id, name, description, price_minor, currency, min_per_order, \
         max_per_order, sale_starts_at, sale_ends_at, zones, printable, position, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         (SELECT COUNT(*) FROM ticket_types WHERE event_id = $2), $13)",
    )
    .bind(id.to_db())
    .bind(event.to_db())
    .bind(&f.name)
    .bind(&f.description)
    .bind(f.price.minor)
    .bind(f.price.currency.as_str())
    .bind(f.min_per_order)
    .bind(f.max_per_order)
    .bind(ms_opt(f.sale_starts_at))
    .bind(ms_opt(f.sale_ends_at))
    .bind(zones)
    .bind(f.printable)
    .bind(to_ms(now))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_ticket_type(conn: &mut AnyConnection, id: TicketTypeId, spec: &TicketTypeSpec) -> Result<()> {
    let f = spec.fields();
    let zones = serde_json::to_string(&f.zones).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE ticket_types SET name = $2, description = $3, price_minor = $4, currency = $5, min_per_order = $6, \
         max_per_order = $7, sale_starts_at = $8, sale_ends_at = $9, zones = $10, printable = $11 WHERE id = $1",
    )
    .bind(id.to_db())
    .bind(&f.name)
    .bind(&f.description)
    .bind(f.price.minor)
    .bind(f.price.currency.as_str())
    .bind(f.min_per_order)
    .bind(f.max_per_order)
    .bind(ms_opt(f.sale_starts_at))
    .bind(ms_opt(f.sale_ends_at))
    .bind(zones)
    .bind(f.printable)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether any of these ticket types was ever held (and so possibly sold).
/// Quota membership is frozen from then on: moving a type between quotas
/// would leave `used` counting places that no longer belong to the quota.
pub async fn any_ever_held(conn: &mut AnyConnection, types: &[TicketTypeId]) -> Result<bool> {
    for t in types {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM hold_items WHERE ticket_type_id = $1")
            .bind(t.to_db())
            .fetch_one(&mut *conn)
            .await?;
        if n > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}
