//! Check-in's SQL, written once for SQLite and PostgreSQL.

use crate::domain::{Doors, EntryPolicy, TicketFacts, parse_zones};
use entrada_primitives::ids::{EventId, OrganizationId, TicketId, UserId};
use entrada_storage::{Db, Fetch, Params, Run, Script, Tx};
use sqlx::Row;

type R<T> = Result<T, sqlx::Error>;

// ------------------------------------------------------------------ events

/// The facts of an event check-in needs.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub ends_at: i64,
    pub doors_open_at: Option<i64>,
    pub doors_close_at: Option<i64>,
}

impl EventRow {
    pub fn doors(&self) -> Doors {
        Doors { open_ms: self.doors_open_at, close_ms: self.doors_close_at.unwrap_or(self.ends_at) }
    }
}

pub async fn event(db: &Db, id: EventId) -> R<Option<EventRow>> {
    let row: Option<(String, i64, Option<i64>, Option<i64>)> = sqlx::query(
        "SELECT e.organization_id, e.ends_at, e.doors_open_at, s.doors_close_at FROM events e \
         LEFT JOIN checkin_settings s ON s.event_id = e.id WHERE e.id = $1",
    )
    .bind(id.to_db())
    .optional(&mut db.read())
    .await?;
    Ok(row.and_then(|(org, ends_at, doors_open_at, doors_close_at)| {
        Some(EventRow {
            id,
            organization_id: OrganizationId::from_db(&org).ok()?,
            ends_at,
            doors_open_at,
            doors_close_at,
        })
    }))
}

pub async fn set_doors_close(tx: &mut Tx, event: EventId, close: Option<i64>, now: i64) -> R<()> {
    sqlx::query(
        "INSERT INTO checkin_settings (event_id, doors_close_at, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO UPDATE SET doors_close_at = excluded.doors_close_at, updated_at = excluded.updated_at",
    )
    .bind(event.to_db())
    .bind(close)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn is_staff(db: &Db, event: EventId, user: UserId) -> R<bool> {
    let row: Option<(i64,)> = sqlx::query("SELECT 1 FROM event_staff WHERE event_id = $1 AND user_id = $2")
        .bind(event.to_db())
        .bind(user.to_db())
        .optional(&mut db.read())
        .await?;
    Ok(row.is_some())
}

// ------------------------------------------------------------------ keys

/// A stored issuing key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub private_key: String,
    pub public_key: String,
    pub current: bool,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub async fn keys(db: &Db, event: EventId) -> R<Vec<KeyRow>> {
    let rows: Vec<(String, String, String, i64, i64, Option<i64>)> = sqlx::query(
        "SELECT kid, private_key, public_key, CASE WHEN slot = 'current' THEN 1 ELSE 0 END, created_at, retired_at \
         FROM event_issuing_keys WHERE event_id = $1 ORDER BY created_at, kid",
    )
    .bind(event.to_db())
    .all(&mut db.read())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kid, private_key, public_key, current, created_at, retired_at)| KeyRow {
            kid,
            private_key,
            public_key,
            current: current == 1,
            created_at,
            retired_at,
        })
        .collect())
}

/// Inserts a key as the event's current one unless another process won the
/// race; true when this one became current.
pub async fn insert_first_key(tx: &mut Tx, event: EventId, k: &KeyRow) -> R<bool> {
    let res = sqlx::query(
        "INSERT INTO event_issuing_keys (kid, event_id, slot, private_key, public_key, created_at) \
         VALUES ($1, $2, 'current', $3, $4, $5) ON CONFLICT (event_id, slot) DO NOTHING",
    )
    .bind(&k.kid)
    .bind(event.to_db())
    .bind(&k.private_key)
    .bind(&k.public_key)
    .bind(k.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Demotes the current key and installs `k` as current.
pub async fn rotate_key(tx: &mut Tx, event: EventId, k: &KeyRow) -> R<()> {
    sqlx::query("UPDATE event_issuing_keys SET slot = NULL WHERE event_id = $1 AND slot = 'current'")
        .bind(event.to_db())
        .execute(&mut **tx)
        .await?;
    insert_first_key(tx, event, k).await?;
    Ok(())
}

/// Retires a non-current key; false when there is no such key (or it is current).
pub async fn retire_key(tx: &mut Tx, event: EventId, kid: &str, now: i64) -> R<bool> {
    let res = sqlx::query(
        "UPDATE event_issuing_keys SET retired_at = $3 WHERE event_id = $1 AND kid = $2 AND slot IS NULL \
         AND retired_at IS NULL",
    )
    .bind(event.to_db())
    .bind(kid)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// The event and public key a kid belongs to, whichever event that is.
pub async fn key_by_kid(db: &Db, kid: &str) -> R<Option<(String, String)>> {
    sqlx::query("SELECT event_id, public_key FROM event_issuing_keys WHERE kid = $1 AND retired_at IS NULL")
        .bind(kid)
        .optional(&mut db.read())
        .await
}

// ------------------------------------------------------------------ zones, gates, policies

/// (id, name, created_at)
pub async fn zones(db: &Db, event: EventId) -> R<Vec<(String, String, i64)>> {
    sqlx::query("SELECT id, name, created_at FROM zones WHERE event_id = $1 ORDER BY name")
        .bind(event.to_db())
        .all(&mut db.read())
        .await
}

/// (gate id, gate name, zone id, zone name)
pub async fn gates(db: &Db, event: EventId) -> R<Vec<(String, String, String, String)>> {
    sqlx::query(
        "SELECT g.id, g.name, z.id, z.name FROM gates g JOIN zones z ON z.id = g.zone_id \
         WHERE g.event_id = $1 ORDER BY g.name",
    )
    .bind(event.to_db())
    .all(&mut db.read())
    .await
}

/// (type id, name, zones JSON, printable, reentry, max_entries)
pub type TypeRow = (String, String, String, i64, i64, Option<i64>);

pub async fn ticket_types(db: &Db, event: EventId) -> R<Vec<TypeRow>> {
    sqlx::query(
        "SELECT t.id, t.name, t.zones, CASE WHEN t.printable THEN 1 ELSE 0 END, \
         CASE WHEN p.reentry THEN 1 ELSE 0 END, p.max_entries \
         FROM ticket_types t LEFT JOIN entry_policies p ON p.ticket_type_id = t.id \
         WHERE t.event_id = $1 ORDER BY t.position, t.id",
    )
    .bind(event.to_db())
    .all(&mut db.read())
    .await
}

/// The event a ticket type belongs to.
pub async fn ticket_type_event(db: &Db, id: &str) -> R<Option<EventId>> {
    let row: Option<(String,)> =
        sqlx::query("SELECT event_id FROM ticket_types WHERE id = $1").bind(id).optional(&mut db.read()).await?;
    Ok(row.and_then(|(e,)| EventId::from_db(&e).ok()))
}

pub async fn set_policy(tx: &mut Tx, ticket_type: &str, policy: EntryPolicy, now: i64) -> R<()> {
    let reentry = matches!(policy, EntryPolicy::Reentry { .. });
    sqlx::query(
        "INSERT INTO entry_policies (ticket_type_id, reentry, max_entries, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (ticket_type_id) DO UPDATE SET reentry = excluded.reentry, max_entries = excluded.max_entries, \
         updated_at = excluded.updated_at",
    )
    .bind(ticket_type)
    .bind(reentry)
    .bind(policy.max_entries())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ devices

/// A scanner device as its token resolves.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub event_id: String,
    pub name: String,
    pub revoked_at: Option<i64>,
    pub enrolled_at: Option<i64>,
    pub created_at: i64,
    pub gate_ids: Vec<String>,
}

type DeviceTuple = (String, String, String, Option<i64>, Option<i64>, i64);

async fn with_gates(db: &Db, t: DeviceTuple) -> R<DeviceRow> {
    let gates: Vec<(String,)> = sqlx::query("SELECT gate_id FROM device_gates WHERE device_id = $1 ORDER BY gate_id")
        .bind(&t.0)
        .all(&mut db.read())
        .await?;
    Ok(DeviceRow {
        id: t.0,
        event_id: t.1,
        name: t.2,
        revoked_at: t.3,
        enrolled_at: t.4,
        created_at: t.5,
        gate_ids: gates.into_iter().map(|(g,)| g).collect(),
    })
}

const DEVICE_COLS: &str = "id, event_id, name, revoked_at, enrolled_at, created_at";

/// The device a token digest names, with its gates, in one statement (it
/// runs on every scanner request).
pub async fn device_by_token(db: &Db, digest: &str) -> R<Option<DeviceRow>> {
    type Joined = (String, String, String, Option<i64>, Option<i64>, i64, Option<String>);
    let rows: Vec<Joined> = sqlx::query(
        "SELECT d.id, d.event_id, d.name, d.revoked_at, d.enrolled_at, d.created_at, g.gate_id \
         FROM scanner_devices d LEFT JOIN device_gates g ON g.device_id = d.id WHERE d.token_digest = $1 \
         ORDER BY g.gate_id",
    )
    .bind(digest)
    .all(&mut db.read())
    .await?;
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let mut gate_ids: Vec<String> = first.6.into_iter().collect();
    gate_ids.extend(rows.filter_map(|r| r.6));
    Ok(Some(DeviceRow {
        id: first.0,
        event_id: first.1,
        name: first.2,
        revoked_at: first.3,
        enrolled_at: first.4,
        created_at: first.5,
        gate_ids,
    }))
}

pub async fn devices(db: &Db, event: EventId) -> R<Vec<DeviceRow>> {
    let ts: Vec<DeviceTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DEVICE_COLS} FROM scanner_devices WHERE event_id = $1 ORDER BY created_at, id"
    )))
    .bind(event.to_db())
    .fetch_all(db.reader())
    .await?;
    let mut out = Vec::with_capacity(ts.len());
    for t in ts {
        out.push(with_gates(db, t).await?);
    }
    Ok(out)
}

pub async fn device(db: &Db, event: EventId, id: &str) -> R<Option<DeviceRow>> {
    let t: Option<DeviceTuple> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEVICE_COLS} FROM scanner_devices WHERE event_id = $1 AND id = $2"
    )))
    .bind(event.to_db())
    .bind(id)
    .optional(&mut db.read())
    .await?;
    match t {
        Some(t) => Ok(Some(with_gates(db, t).await?)),
        None => Ok(None),
    }
}

// ------------------------------------------------------------------ holders

/// A ticket as its holder sees it for credentials.
#[derive(Debug, Clone)]
pub struct HolderTicket {
    pub event_id: String,
    pub ticket_type_id: String,
    pub holder_id: String,
    pub status: String,
    pub order_status: String,
    pub generation: i64,
    pub zones: Vec<String>,
    pub printable: bool,
    pub ends_at: i64,
    pub doors_close_at: Option<i64>,
    /// The holder key registered for the current generation, base64url.
    pub holder_key: Option<String>,
}

pub async fn holder_ticket(db: &Db, id: TicketId) -> R<Option<HolderTicket>> {
    type Row = (String, String, String, String, String, i64, String, i64, i64, Option<i64>, Option<String>);
    let row: Option<Row> = sqlx::query(
        "SELECT t.event_id, t.ticket_type_id, t.holder_id, t.status, o.status, t.generation, tt.zones, \
         CASE WHEN tt.printable THEN 1 ELSE 0 END, e.ends_at, s.doors_close_at, h.public_key \
         FROM tickets t JOIN orders o ON o.id = t.order_id JOIN ticket_types tt ON tt.id = t.ticket_type_id \
         JOIN events e ON e.id = t.event_id LEFT JOIN checkin_settings s ON s.event_id = t.event_id \
         LEFT JOIN holder_keys h ON h.ticket_id = t.id AND h.generation = t.generation \
         WHERE t.id = $1",
    )
    .bind(id.to_db())
    .optional(&mut db.read())
    .await?;
    Ok(row.map(|r| HolderTicket {
        event_id: r.0,
        ticket_type_id: r.1,
        holder_id: r.2,
        status: r.3,
        order_status: r.4,
        generation: r.5,
        zones: parse_zones(&r.6),
        printable: r.7 == 1,
        ends_at: r.8,
        doors_close_at: r.9,
        holder_key: r.10,
    }))
}

pub async fn set_holder_key(tx: &mut Tx, ticket: TicketId, generation: i64, key: &str, now: i64) -> R<()> {
    sqlx::query(
        "INSERT INTO holder_keys (ticket_id, generation, public_key, registered_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (ticket_id) DO UPDATE SET generation = excluded.generation, public_key = excluded.public_key, \
         registered_at = excluded.registered_at",
    )
    .bind(ticket.to_db())
    .bind(generation)
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ scans

/// Loads the facts of up to a few hundred tickets in one statement: inside
/// the scan transaction, so a cancellation or generation bump committed
/// before it is seen, or on a reader for a plan whose writes are guarded
/// by the facts they were decided on ([`push_first_entry`]).
pub async fn ticket_facts(on: &mut impl Fetch, ids: &[String]) -> R<Vec<(String, TicketFacts)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT t.id, t.event_id, t.status, o.status, t.generation, tt.name, tt.zones, u.display_name, \
         CASE WHEN p.reentry THEN 1 ELSE 0 END, p.max_entries \
         FROM tickets t JOIN orders o ON o.id = t.order_id JOIN ticket_types tt ON tt.id = t.ticket_type_id \
         JOIN users u ON u.id = t.holder_id LEFT JOIN entry_policies p ON p.ticket_type_id = t.ticket_type_id \
         WHERE t.id IN ({})",
        Params::new(on.backend()).list(ids.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(id);
    }
    let rows = q.rows(on).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let reentry: i64 = r.try_get(8)?;
        let max: Option<i64> = r.try_get(9)?;
        let policy = if reentry == 1 {
            EntryPolicy::Reentry { max_entries: max.unwrap_or(1).max(1) }
        } else {
            EntryPolicy::Single
        };
        let zones: String = r.try_get(6)?;
        out.push((
            r.try_get(0)?,
            TicketFacts {
                event_id: r.try_get(1)?,
                status: r.try_get(2)?,
                order_status: r.try_get(3)?,
                generation: r.try_get(4)?,
                type_name: r.try_get(5)?,
                zones: parse_zones(&zones),
                holder_display_name: r.try_get(7)?,
                policy,
            },
        ));
    }
    Ok(out)
}

/// Stored verdicts of earlier uploads of these (device, nonce) pairs:
/// (device, nonce, verdict), in one statement whatever the devices.
pub async fn replayed(db: &Db, keys: &[(&str, &str)]) -> R<Vec<(String, String, String)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut devices: Vec<&str> = keys.iter().map(|k| k.0).collect();
    devices.sort_unstable();
    devices.dedup();
    let nonces: Vec<&str> = keys.iter().map(|k| k.1).collect();
    // Both lists use the (device_id, nonce) index; pairs that only
    // cross-match are dropped below.
    let mut p = Params::new(db.backend());
    let sql = format!(
        "SELECT device_id, nonce, verdict FROM scans WHERE device_id IN ({}) AND nonce IN ({})",
        p.list(devices.len()),
        p.list(nonces.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for d in &devices {
        q = q.bind(*d);
    }
    for n in &nonces {
        q = q.bind(*n);
    }
    let wanted: std::collections::HashSet<(&str, &str)> = keys.iter().copied().collect();
    let rows: Vec<(String, String, String)> = q.all(&mut db.read()).await?;
    Ok(rows.into_iter().filter(|(d, n, _)| wanted.contains(&(d.as_str(), n.as_str()))).collect())
}

/// The outcome of trying to enter.
pub enum Entry {
    Admitted { entries: i64 },
    Refused { first_used_at: i64, first_gate_id: String, entries: i64 },
}

/// First scan wins: the first entry creates the ticket's admission row;
/// later entries advance it only under the policy's guard. On PostgreSQL a
/// concurrent scan of the same ticket waits on the row and re-checks the
/// guard after the winner commits.
pub async fn enter(tx: &mut Tx, ticket: &str, event: &str, gate: &str, at: i64, max_entries: i64) -> R<Entry> {
    let first = sqlx::query(
        "INSERT INTO admissions (ticket_id, event_id, entries, inside, first_used_at, first_gate_id, last_at, \
         last_gate_id) VALUES ($1, $2, 1, TRUE, $3, $4, $3, $4) ON CONFLICT (ticket_id) DO NOTHING",
    )
    .bind(ticket)
    .bind(event)
    .bind(at)
    .bind(gate)
    .execute(&mut **tx)
    .await?;
    if first.rows_affected() == 1 {
        return Ok(Entry::Admitted { entries: 1 });
    }
    let again = sqlx::query(
        "UPDATE admissions SET entries = entries + 1, inside = TRUE, last_at = $2, last_gate_id = $3 \
         WHERE ticket_id = $1 AND entries < $4 AND inside = FALSE",
    )
    .bind(ticket)
    .bind(at)
    .bind(gate)
    .bind(max_entries)
    .execute(&mut **tx)
    .await?;
    let (first_used_at, first_gate_id, entries): (i64, String, i64) =
        sqlx::query_as("SELECT first_used_at, first_gate_id, entries FROM admissions WHERE ticket_id = $1")
            .bind(ticket)
            .fetch_one(&mut **tx)
            .await?;
    if again.rows_affected() == 1 {
        Ok(Entry::Admitted { entries })
    } else {
        Ok(Entry::Refused { first_used_at, first_gate_id, entries })
    }
}

/// First admissions of many tickets (ticket, gate, at) in one multi-row
/// insert, in the order given; the tickets it admitted. A ticket with an
/// admission row already is left out, for [`enter`] to decide.
pub async fn enter_first(tx: &mut Tx, event: &str, rows: &[(&str, &str, i64)]) -> R<std::collections::HashSet<String>> {
    let mut admitted = std::collections::HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(256) {
        let mut p = Params::on(tx);
        let values: Vec<String> = (0..chunk.len())
            .map(|_| {
                let (ticket, event, at, gate) = (p.one(), p.one(), p.one(), p.one());
                let (last_at, last_gate) = (p.one(), p.one());
                format!("({ticket}, {event}, 1, TRUE, {at}, {gate}, {last_at}, {last_gate})")
            })
            .collect();
        let sql = format!(
            "INSERT INTO admissions (ticket_id, event_id, entries, inside, first_used_at, first_gate_id, last_at, \
             last_gate_id) VALUES {} ON CONFLICT (ticket_id) DO NOTHING RETURNING ticket_id",
            values.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
        for (ticket, gate, at) in chunk {
            q = q.bind(*ticket).bind(event).bind(*at).bind(*gate).bind(*at).bind(*gate);
        }
        admitted.extend(q.fetch_all(&mut **tx).await?.into_iter().map(|(t,)| t));
    }
    Ok(admitted)
}

/// The admission rows of `tickets`: first use (time, gate) and entries, by ticket.
pub async fn admissions_of(
    on: &mut impl Fetch,
    tickets: &[&str],
) -> R<std::collections::HashMap<String, (i64, String, i64)>> {
    let mut out = std::collections::HashMap::with_capacity(tickets.len());
    if tickets.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT ticket_id, first_used_at, first_gate_id, entries FROM admissions WHERE ticket_id IN ({})",
        Params::new(on.backend()).list(tickets.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for t in tickets {
        q = q.bind(*t);
    }
    let rows: Vec<(String, i64, String, i64)> = q.all(on).await?;
    for (ticket, at, gate, entries) in rows {
        out.insert(ticket, (at, gate, entries));
    }
    Ok(out)
}

/// A ticket's first admission, starting a conditional part of `script` that
/// holds its scan row ([`push_scan`], pushed next): written only while the
/// ticket is still valid, of a paid order, at `generation`, and not admitted
/// yet, the facts the entry was decided on outside the writer. Returns the
/// statement's index; it changed no row when the part was skipped.
pub fn push_first_entry(script: &mut Script, ticket: &str, event: &str, gate: &str, at: i64, generation: i64) -> usize {
    script.push_when(
        sqlx::query(
            "INSERT INTO admissions (ticket_id, event_id, entries, inside, first_used_at, first_gate_id, last_at, \
             last_gate_id) SELECT t.id, $2, 1, TRUE, $3, $4, $3, $4 FROM tickets t JOIN orders o ON o.id = t.order_id \
             WHERE t.id = $1 AND t.status = 'valid' AND t.generation = $5 AND o.status = 'paid' \
             ON CONFLICT (ticket_id) DO NOTHING",
        )
        .bind(ticket)
        .bind(event)
        .bind(at)
        .bind(gate)
        .bind(generation),
        1,
    )
}

/// An exit scan; false when the ticket is not inside.
pub async fn leave(tx: &mut Tx, ticket: &str, gate: &str, at: i64) -> R<bool> {
    let res = sqlx::query(
        "UPDATE admissions SET inside = FALSE, last_at = $2, last_gate_id = $3 WHERE ticket_id = $1 AND inside = TRUE",
    )
    .bind(ticket)
    .bind(at)
    .bind(gate)
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// One scan row to record.
pub struct NewScan<'a> {
    pub device_id: &'a str,
    pub nonce: &'a str,
    pub event_id: &'a str,
    pub gate_id: &'a str,
    pub zone_id: Option<&'a str>,
    pub ticket_id: Option<&'a str>,
    pub direction: &'a str,
    pub ok: bool,
    pub reason: &'a str,
    pub offline: bool,
    pub scanned_at: i64,
    pub recorded_at: i64,
    pub verdict: &'a str,
}

/// Records scans in one multi-row insert; the id of each by (device,
/// nonce), or `None` when some (device, nonce) was recorded meanwhile by a
/// concurrent upload (the caller rolls back and replays). All scans are of
/// one event and instant.
pub async fn insert_scans(
    tx: &mut Tx,
    scans: &[NewScan<'_>],
) -> R<Option<std::collections::HashMap<(String, String), i64>>> {
    let mut ids = std::collections::HashMap::with_capacity(scans.len());
    if scans.is_empty() {
        return Ok(Some(ids));
    }
    // Up to 256 rows a statement, every value bound through `Params` (13 a row).
    for chunk in scans.chunks(256) {
        let mut p = Params::on(tx);
        let values: Vec<String> = (0..chunk.len()).map(|_| format!("({})", p.list(13))).collect();
        let sql = format!(
            "INSERT INTO scans (device_id, nonce, event_id, gate_id, zone_id, ticket_id, direction, ok, reason, \
             offline, scanned_at, recorded_at, verdict) VALUES {} ON CONFLICT (device_id, nonce) DO NOTHING \
             RETURNING device_id, nonce, id",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in chunk {
            q = bind_scan(q, s);
        }
        let rows: Vec<(String, String, i64)> = q.all(&mut **tx).await?;
        if rows.len() != chunk.len() {
            return Ok(None);
        }
        ids.extend(rows.into_iter().map(|(d, n, id)| ((d, n), id)));
    }
    Ok(Some(ids))
}

/// One scan row, as a statement of `script`. A (device, nonce) recorded
/// meanwhile by a concurrent upload fails the script with a unique violation.
pub fn push_scan(script: &mut Script, s: &NewScan<'_>) {
    script.push(bind_scan(
        sqlx::query(
            "INSERT INTO scans (device_id, nonce, event_id, gate_id, zone_id, ticket_id, direction, ok, reason, \
                 offline, scanned_at, recorded_at, verdict) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13)",
        ),
        s,
    ));
}

/// Binds a scan row's 13 values, in the column order of the inserts above.
fn bind_scan<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    s: &NewScan<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(s.device_id)
        .bind(s.nonce)
        .bind(s.event_id)
        .bind(s.gate_id)
        .bind(s.zone_id)
        .bind(s.ticket_id)
        .bind(s.direction)
        .bind(s.ok)
        .bind(s.reason)
        .bind(s.offline)
        .bind(s.scanned_at)
        .bind(s.recorded_at)
        .bind(s.verdict)
}

/// A recorded conflict.
#[derive(Debug, Clone)]
pub struct ConflictRow {
    pub id: i64,
    pub ticket_id: String,
    pub scan_id: i64,
    pub device_id: String,
    pub gate_id: String,
    pub scanned_at: i64,
    pub first_used_at: i64,
    pub first_gate_id: String,
    pub detected_at: i64,
}

pub async fn insert_conflict(tx: &mut Tx, event: &str, c: &ConflictRow) -> R<()> {
    sqlx::query(
        "INSERT INTO checkin_conflicts (event_id, ticket_id, scan_id, device_id, gate_id, scanned_at, first_used_at, \
         first_gate_id, detected_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event)
    .bind(&c.ticket_id)
    .bind(c.scan_id)
    .bind(&c.device_id)
    .bind(&c.gate_id)
    .bind(c.scanned_at)
    .bind(c.first_used_at)
    .bind(&c.first_gate_id)
    .bind(c.detected_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn conflicts(db: &Db, event: EventId) -> R<Vec<ConflictRow>> {
    type Row = (i64, String, i64, String, String, i64, i64, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, ticket_id, scan_id, device_id, gate_id, scanned_at, first_used_at, first_gate_id, detected_at \
         FROM checkin_conflicts WHERE event_id = $1 ORDER BY id",
    )
    .bind(event.to_db())
    .fetch_all(db.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ConflictRow {
            id: r.0,
            ticket_id: r.1,
            scan_id: r.2,
            device_id: r.3,
            gate_id: r.4,
            scanned_at: r.5,
            first_used_at: r.6,
            first_gate_id: r.7,
            detected_at: r.8,
        })
        .collect())
}

// ------------------------------------------------------------------ revocations

/// Brings the revocation view of an event up to date with the tickets
/// table: every ticket whose generation moved past 1 or that no longer
/// admits gets a row, and each change a log entry (the bundle's feed).
/// Computed from the tickets themselves, so no other context has to tell
/// check-in about a gift, resale or refund.
pub async fn sync_revocations(tx: &mut Tx, event: EventId, now: i64) -> R<()> {
    // (ticket, generation, no longer admits, known min generation, known cancelled)
    type Row = (String, i64, i64, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, t.generation, \
         CASE WHEN t.status <> 'valid' OR o.status <> 'paid' THEN 1 ELSE 0 END, \
         r.min_generation, CASE WHEN r.cancelled THEN 1 WHEN r.cancelled IS NULL THEN NULL ELSE 0 END \
         FROM tickets t JOIN orders o ON o.id = t.order_id LEFT JOIN revocations r ON r.ticket_id = t.id \
         WHERE t.event_id = $1 AND (t.generation > 1 OR t.status <> 'valid' OR o.status <> 'paid')",
    )
    .bind(event.to_db())
    .fetch_all(&mut **tx)
    .await?;
    for (ticket, generation, cancelled, known_gen, known_cancelled) in rows {
        if known_gen == Some(generation) && known_cancelled == Some(cancelled) {
            continue;
        }
        sqlx::query(
            "INSERT INTO revocations (ticket_id, event_id, min_generation, cancelled, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ticket_id) DO UPDATE SET \
             min_generation = excluded.min_generation, cancelled = excluded.cancelled, updated_at = excluded.updated_at",
        )
        .bind(&ticket)
        .bind(event.to_db())
        .bind(generation)
        .bind(cancelled == 1)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO revocation_log (event_id, ticket_id, min_generation, cancelled, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.to_db())
        .bind(&ticket)
        .bind(generation)
        .bind(cancelled == 1)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Revocation changes after `cursor` (ticket, min generation, cancelled),
/// the latest per ticket, and the new cursor.
pub async fn revocations_since(db: &Db, event: EventId, cursor: i64) -> R<(Vec<(String, i64, bool)>, i64)> {
    let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, ticket_id, min_generation, CASE WHEN cancelled THEN 1 ELSE 0 END FROM revocation_log \
         WHERE event_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(event.to_db())
    .bind(cursor)
    .fetch_all(db.reader())
    .await?;
    let next = rows.last().map(|r| r.0).unwrap_or(cursor);
    let mut latest: std::collections::BTreeMap<String, (i64, bool)> = Default::default();
    for (_, t, g, c) in rows {
        latest.insert(t, (g, c == 1));
    }
    Ok((latest.into_iter().map(|(t, (g, c))| (t, g, c)).collect(), next))
}

/// Ids of the tickets of an event that currently admit.
pub async fn valid_ticket_ids(db: &Db, event: EventId) -> R<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT t.id FROM tickets t JOIN orders o ON o.id = t.order_id \
         WHERE t.event_id = $1 AND t.status = 'valid' AND o.status = 'paid' ORDER BY t.id",
    )
    .bind(event.to_db())
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

// ------------------------------------------------------------------ stats

/// Admissions per (gate, minute) since `since`: (gate, minute start ms, count).
pub async fn entries_per_minute(db: &Db, event: EventId, since: i64) -> R<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT gate_id, (scanned_at / 60000) * 60000 AS minute, COUNT(*) FROM scans \
         WHERE event_id = $1 AND scanned_at >= $2 AND ok = TRUE AND direction = 'in' \
         GROUP BY gate_id, (scanned_at / 60000) * 60000 ORDER BY 2, 1",
    )
    .bind(event.to_db())
    .bind(since)
    .fetch_all(db.reader())
    .await
}

/// (inside now, tickets that entered at least once)
pub async fn attendance(db: &Db, event: EventId) -> R<(i64, i64)> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN inside THEN 1 ELSE 0 END), 0), COUNT(*) FROM admissions WHERE event_id = $1",
    )
    .bind(event.to_db())
    .fetch_one(db.reader())
    .await
}

pub async fn rejections(db: &Db, event: EventId) -> R<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT reason, COUNT(*) FROM scans WHERE event_id = $1 AND ok = FALSE GROUP BY reason ORDER BY reason",
    )
    .bind(event.to_db())
    .fetch_all(db.reader())
    .await
}

pub async fn conflict_count(db: &Db, event: EventId) -> R<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM checkin_conflicts WHERE event_id = $1")
        .bind(event.to_db())
        .fetch_one(db.reader())
        .await?;
    Ok(n)
}

/// (user id, display name) of the account with this email, ignoring case.
pub async fn user_by_email(db: &Db, email: &str) -> R<Option<(String, String)>> {
    sqlx::query("SELECT id, display_name FROM users WHERE lower(email) = lower($1)")
        .bind(email)
        .optional(&mut db.read())
        .await
}

/// (user id, email, display name, added at)
pub async fn staff(db: &Db, event: EventId) -> R<Vec<(String, String, String, i64)>> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.display_name, s.created_at FROM event_staff s JOIN users u ON u.id = s.user_id \
         WHERE s.event_id = $1 ORDER BY s.created_at, u.id",
    )
    .bind(event.to_db())
    .fetch_all(db.reader())
    .await
}
