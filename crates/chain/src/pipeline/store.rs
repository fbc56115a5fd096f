//! SQL of the chain pipeline (tables of migration `0007_chain`), written once for SQLite and
//! PostgreSQL.
//!
//! Two reads reach into other contexts' tables, read only: `tickets` (a ticket's serial, current
//! holder and status when its issue is first seen, so an event replayed late still mints to
//! the right holder, or not at all) and `events` (the facts a collection is created with), the
//! way check-in reads ticket rows. `admissions` is polled for attended marks so that scans
//! write nothing extra.

use entrada_primitives::ids::TicketId;
use entrada_storage::{Backend, Fetch, Params, Run, Script};
use sqlx::AnyConnection;
use std::collections::HashMap;

use super::domain::EventFacts;

type Conn = AnyConnection;
pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// A ticket as the issue event's consumer reads it.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    pub ticket_id: String,
    pub event_id: String,
    pub serial: i64,
    pub holder_id: String,
    pub valid: bool,
}

/// The tickets among `ids` that exist, in one read, keyed by ticket id.
pub async fn issued_tickets(conn: &mut impl Fetch, ids: &[TicketId]) -> Result<HashMap<String, IssuedTicket>> {
    let mut out = HashMap::with_capacity(ids.len());
    // A batch of events names a few hundred tickets at most; chunks keep each `IN` list short.
    for chunk in ids.chunks(500) {
        let mut p = Params::new(conn.backend());
        let sql = format!(
            "SELECT id, event_id, serial, holder_id, status FROM tickets WHERE id IN ({})",
            p.list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.to_db());
        }
        let rows: Vec<(String, String, i64, String, String)> = q.all(&mut *conn).await?;
        for (ticket_id, event_id, serial, holder_id, status) in rows {
            let t =
                IssuedTicket { ticket_id: ticket_id.clone(), event_id, serial, holder_id, valid: status == "valid" };
            out.insert(ticket_id, t);
        }
    }
    Ok(out)
}

/// Adds the event's collection row, unless it exists, to `script`.
pub fn push_collection_row(
    script: &mut Script,
    event_id: &str,
    network: &str,
    chain_id: u64,
    event_key: &str,
    now: i64,
) {
    script.push(
        sqlx::query(
            "INSERT INTO chain_collections (event_id, network, chain_id, event_key, state, available_at, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id.to_owned())
        .bind(network.to_owned())
        .bind(i64::try_from(chain_id).unwrap_or(i64::MAX))
        .bind(event_key.to_owned())
        .bind(now),
    );
}

/// Adds a ticket's token row to `script`; a second insert for the same ticket changes nothing.
pub fn push_token(script: &mut Script, t: &IssuedTicket, now: i64) {
    let state = if t.valid { "pending" } else { "burned" };
    script.push(
        sqlx::query(
            "INSERT INTO chain_tokens (ticket_id, event_id, token_id, holder_id, state, available_at, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $6) ON CONFLICT (ticket_id) DO NOTHING",
        )
        .bind(t.ticket_id.clone())
        .bind(t.event_id.clone())
        .bind(t.serial)
        .bind(t.holder_id.clone())
        .bind(state)
        .bind(now),
    );
}

pub async fn token_state(conn: &mut Conn, ticket: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT state FROM chain_tokens WHERE ticket_id = $1")
        .bind(ticket.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(s,)| s))
}

/// Records who should own the token now (a custodial holder, or an external address).
pub async fn set_intended_owner(
    conn: &mut Conn,
    ticket: &str,
    holder: Option<&str>,
    external: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE chain_tokens SET holder_id = $1, external_address = $2, updated_at = $3 WHERE ticket_id = $4")
        .bind(holder.map(str::to_owned))
        .bind(external.map(str::to_owned))
        .bind(now)
        .bind(ticket.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A ticket cancelled before its mint was sent: it is never minted.
pub async fn burn_unminted(conn: &mut Conn, ticket: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE chain_tokens SET state = 'burned', updated_at = $1 WHERE ticket_id = $2 AND state = 'pending'",
    )
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The insert of an operation; a second insert with the same `source` changes nothing.
#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
fn op_insert<'q>(
    ticket: &str,
    event: &str,
    kind: &str,
    to_user: Option<&str>,
    to_address: Option<&str>,
    source: &str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO chain_ops (ticket_id, event_id, kind, to_user, to_address, source, state, available_at, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7) ON CONFLICT (source) DO NOTHING",
    )
    .bind(ticket.to_owned())
    .bind(event.to_owned())
    .bind(kind.to_owned())
    .bind(to_user.map(str::to_owned))
    .bind(to_address.map(str::to_owned))
    .bind(source.to_owned())
    .bind(now)
}

/// Queues an operation; true when it was new.
#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
pub async fn insert_op(
    conn: &mut Conn,
    ticket: &str,
    event: &str,
    kind: &str,
    to_user: Option<&str>,
    to_address: Option<&str>,
    source: &str,
    now: i64,
) -> Result<bool> {
    let done = op_insert(ticket, event, kind, to_user, to_address, source, now).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Adds an attended mark for an admitted ticket's token to `script`: the
/// operation (once per ticket) and the token's flag.
pub fn push_attended(script: &mut Script, ticket: &str, event: &str, now: i64) {
    let source = format!("attend:{ticket}");
    script.push(op_insert(ticket, event, super::domain::OpKind::Attend.as_str(), None, None, &source, now));
    script.push(
        sqlx::query("UPDATE chain_tokens SET attended = TRUE, updated_at = $1 WHERE ticket_id = $2")
            .bind(now)
            .bind(ticket.to_owned()),
    );
}

// ---- collections ----

#[derive(Debug, Clone)]
pub struct CollectionRow {
    pub event_id: String,
    pub event_key: String,
    pub attempts: i64,
}

pub async fn due_collections(conn: &mut impl Fetch, now: i64) -> Result<Vec<CollectionRow>> {
    let rows: Vec<(String, String, i64)> = sqlx::query(
        "SELECT event_id, event_key, attempts FROM chain_collections WHERE state = 'pending' AND available_at <= $1 \
         ORDER BY created_at LIMIT 50",
    )
    .bind(now)
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, event_key, attempts)| CollectionRow { event_id, event_key, attempts })
        .collect())
}

pub async fn confirmed_collections(conn: &mut impl Fetch) -> Result<Vec<(String, String, String)>> {
    sqlx::query(
        "SELECT event_id, event_key, address FROM chain_collections WHERE state = 'confirmed' AND address IS NOT NULL \
         ORDER BY event_id",
    )
    .all(conn)
    .await
}

pub async fn event_facts(conn: &mut impl Fetch, event_id: &str) -> Result<Option<EventFacts>> {
    let row: Option<(String, i64, i64, i64)> = sqlx::query(
        "SELECT name, ends_at, resale_royalty_bps, CASE WHEN export_allowed THEN 1 ELSE 0 END FROM events WHERE id = $1",
    )
    .bind(event_id.to_owned())
    .optional(conn)
    .await?;
    Ok(row.map(|(name, ends_at_ms, royalty_bps, export)| EventFacts {
        name,
        ends_at_ms,
        royalty_bps,
        export_allowed: export == 1,
    }))
}

pub async fn confirm_collection(
    conn: &mut Conn,
    event_id: &str,
    address: &str,
    tx_hash: Option<&str>,
    block: Option<i64>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE chain_collections SET state = 'confirmed', address = $1, tx_hash = COALESCE($2, tx_hash), \
         block_number = COALESCE($3, block_number), last_error = NULL, updated_at = $4 \
         WHERE event_id = $5 AND state = 'pending'",
    )
    .bind(address.to_owned())
    .bind(tx_hash.map(str::to_owned))
    .bind(block)
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the transfer policy the collection now has on chain.
pub async fn set_collection_policy(conn: &mut Conn, event_id: &str, locked: bool, end_s: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_collections SET policy_locked = $1, policy_end = $2, attempts = 0, last_error = NULL, \
         updated_at = $3 WHERE event_id = $4",
    )
    .bind(locked)
    .bind(end_s)
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the royalty the collection now has on chain.
pub async fn set_collection_royalty(conn: &mut Conn, event_id: &str, bps: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_collections SET policy_royalty_bps = $1, attempts = 0, last_error = NULL, updated_at = $2 \
         WHERE event_id = $3",
    )
    .bind(bps)
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A collection whose policy on chain is not (or not known to be) what its event now asks
/// for: what the chain should have, and whether each part needs sending.
#[derive(Debug, Clone)]
pub struct PolicyDrift {
    pub event_id: String,
    pub address: String,
    /// Locked unless exports are allowed, and the event's end.
    pub locked: bool,
    pub end_s: i64,
    /// The event's resale royalty, 0..=10,000.
    pub royalty_bps: i64,
    pub transfer_differs: bool,
    pub royalty_differs: bool,
    pub attempts: i64,
}

/// Confirmed collections due whose recorded policy differs from their event's export setting,
/// end or resale royalty (or is not recorded).
pub async fn policy_drift(conn: &mut impl Fetch, now: i64) -> Result<Vec<PolicyDrift>> {
    type Row = (String, String, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query(
        "SELECT c.event_id, c.address, CASE WHEN e.export_allowed THEN 0 ELSE 1 END, e.ends_at / 1000, \
         e.resale_royalty_bps, \
         CASE WHEN c.policy_locked IS NULL OR c.policy_end IS NULL OR c.policy_locked = e.export_allowed \
              OR c.policy_end <> e.ends_at / 1000 THEN 1 ELSE 0 END, \
         CASE WHEN c.policy_royalty_bps IS NULL OR c.policy_royalty_bps <> e.resale_royalty_bps THEN 1 ELSE 0 END, \
         c.attempts \
         FROM chain_collections c JOIN events e ON e.id = c.event_id \
         WHERE c.state = 'confirmed' AND c.address IS NOT NULL AND c.available_at <= $1 \
         AND (c.policy_locked IS NULL OR c.policy_end IS NULL OR c.policy_locked = e.export_allowed \
              OR c.policy_end <> e.ends_at / 1000 \
              OR c.policy_royalty_bps IS NULL OR c.policy_royalty_bps <> e.resale_royalty_bps) \
         ORDER BY c.event_id LIMIT 50",
    )
    .bind(now)
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, address, locked, end_s, royalty_bps, transfer, royalty, attempts)| PolicyDrift {
            event_id,
            address,
            locked: locked == 1,
            end_s,
            royalty_bps: royalty_bps.clamp(0, 10_000),
            transfer_differs: transfer == 1,
            royalty_differs: royalty == 1,
            attempts,
        })
        .collect())
}

pub async fn collection_retry(conn: &mut Conn, event_id: &str, error: &str, available_at: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_collections SET attempts = attempts + 1, last_error = $1, available_at = $2, updated_at = $3 \
         WHERE event_id = $4",
    )
    .bind(truncate(error))
    .bind(available_at)
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The chain lost a collection it had (a reset development chain, a reorg): create it again
/// and mint its tokens again.
pub async fn collection_lost(conn: &mut Conn, event_id: &str, now: i64) -> Result<u64> {
    sqlx::query(
        "UPDATE chain_collections SET state = 'pending', tx_hash = NULL, block_number = NULL, \
         policy_locked = NULL, policy_end = NULL, policy_royalty_bps = NULL, last_error = 'missing on chain', \
         available_at = $1, \
         updated_at = $1 WHERE event_id = $2",
    )
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "UPDATE chain_tokens SET state = 'pending', tx_id = NULL, tx_hash = NULL, block_number = NULL, \
         owner_address = NULL, last_error = 'missing on chain', available_at = $1, updated_at = $1 \
         WHERE event_id = $2 AND state = 'confirmed'",
    )
    .bind(now)
    .bind(event_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

// ---- mints ----

/// Per event with a confirmed collection: pending tickets due now, and the oldest one's age.
pub async fn pending_by_event(conn: &mut impl Fetch, now: i64) -> Result<Vec<(String, String, i64, i64)>> {
    sqlx::query(
        "SELECT t.event_id, c.address, COUNT(*), MIN(t.created_at) FROM chain_tokens t \
         JOIN chain_collections c ON c.event_id = t.event_id AND c.state = 'confirmed' \
         WHERE t.state = 'pending' AND t.available_at <= $1 GROUP BY t.event_id, c.address ORDER BY MIN(t.created_at)",
    )
    .bind(now)
    .all(conn)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingToken {
    pub ticket_id: String,
    pub token_id: i64,
    pub holder_id: Option<String>,
    pub external_address: Option<String>,
    pub attempts: i64,
}

pub async fn due_tokens(conn: &mut impl Fetch, event_id: &str, now: i64, limit: i64) -> Result<Vec<PendingToken>> {
    type Row = (String, i64, Option<String>, Option<String>, i64);
    let rows: Vec<Row> = sqlx::query(
        "SELECT ticket_id, token_id, holder_id, external_address, attempts FROM chain_tokens \
         WHERE event_id = $1 AND state = 'pending' AND available_at <= $2 ORDER BY attempts, token_id LIMIT $3",
    )
    .bind(event_id.to_owned())
    .bind(now)
    .bind(limit)
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(ticket_id, token_id, holder_id, external_address, attempts)| PendingToken {
            ticket_id,
            token_id,
            holder_id,
            external_address,
            attempts,
        })
        .collect())
}

/// Writes a transaction's record before it is sent.
pub async fn open_tx(
    conn: &mut Conn,
    kind: &str,
    event_id: &str,
    instance: &str,
    lease_until: i64,
    items: i64,
    now: i64,
) -> Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO chain_transactions (kind, event_id, state, instance, lease_until, items, created_at, updated_at) \
         VALUES ($1, $2, 'sending', $3, $4, $5, $6, $6) RETURNING id",
    )
    .bind(kind.to_owned())
    .bind(event_id.to_owned())
    .bind(instance.to_owned())
    .bind(lease_until)
    .bind(items)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// The id the next chain transaction row takes, drawn before its insert so that the insert and
/// the rows that refer to it go in one script: PostgreSQL's sequence; on SQLite the
/// AUTOINCREMENT counter's next value (this process is SQLite's only writer, and the insert in
/// [`push_open_tx`] is a guard, so an id taken meanwhile stops the script instead of sharing it).
pub async fn next_tx_id(conn: &mut impl Fetch) -> Result<i64> {
    let sql = match conn.backend() {
        Backend::Sqlite => {
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'chain_transactions'), 0) + 1"
        }
        Backend::Postgres => "SELECT nextval(pg_get_serial_sequence('chain_transactions', 'id'))",
    };
    let (id,): (i64,) = sqlx::query(sql).one(conn).await?;
    Ok(id)
}

/// Adds the opening of chain transaction `id` (drawn by [`next_tx_id`], state `sending`) to
/// `script` as a guard: an id already taken writes nothing of the script.
pub fn push_open_tx(
    script: &mut Script,
    id: i64,
    kind: &str,
    event_id: &str,
    instance: &str,
    lease_until: i64,
    now: i64,
) -> usize {
    script.push_guard(
        sqlx::query(
            "INSERT INTO chain_transactions (id, kind, event_id, state, instance, lease_until, items, created_at, \
             updated_at) VALUES ($1, $2, $3, 'sending', $4, $5, 0, $6, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(kind.to_owned())
        .bind(event_id.to_owned())
        .bind(instance.to_owned())
        .bind(lease_until)
        .bind(now),
    )
}

/// Adds to `script`, after the claims of mint transaction `id`: its count of tokens, and the
/// row's removal when no claim held (every token moved since it was read).
pub fn push_close_claims(script: &mut Script, id: i64) {
    script.push(
        sqlx::query(
            "UPDATE chain_transactions SET items = \
             (SELECT COUNT(*) FROM chain_tokens WHERE tx_id = $1 AND state = 'submitted') WHERE id = $1",
        )
        .bind(id),
    );
    script.push(sqlx::query("DELETE FROM chain_transactions WHERE id = $1 AND items = 0").bind(id));
}

/// Adds the claim pending → submitted to `script`; it changes a row only if the ticket still
/// waits and still goes to the owner that was resolved for it (a gift or export in between
/// makes the claim fail; the next round mints to the new owner).
pub fn push_claim_token(script: &mut Script, t: &PendingToken, tx_id: i64, owner: &str, now: i64) -> usize {
    script.push(
        sqlx::query(
            "UPDATE chain_tokens SET state = 'submitted', tx_id = $1, owner_address = $2, updated_at = $3 \
             WHERE ticket_id = $4 AND state = 'pending' AND COALESCE(holder_id, '') = $5 \
             AND COALESCE(external_address, '') = $6",
        )
        .bind(tx_id)
        .bind(owner.to_owned())
        .bind(now)
        .bind(t.ticket_id.clone())
        .bind(t.holder_id.clone().unwrap_or_default())
        .bind(t.external_address.clone().unwrap_or_default()),
    )
}

pub async fn token_retry(conn: &mut Conn, ticket: &str, error: &str, available_at: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_tokens SET attempts = attempts + 1, last_error = $1, available_at = $2, updated_at = $3 \
         WHERE ticket_id = $4",
    )
    .bind(truncate(error))
    .bind(available_at)
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A transaction landed: record it and move what it carried forward.
pub async fn tx_confirmed(conn: &mut Conn, tx_id: i64, hash: &str, block: i64, gas: i64, now: i64) -> Result<()> {
    tx_confirmed_query(tx_id, hash, block, gas, now).execute(&mut *conn).await?;
    Ok(())
}

/// Adds [`tx_confirmed`] to `script`.
pub fn push_tx_confirmed(script: &mut Script, tx_id: i64, hash: &str, block: i64, gas: i64, now: i64) {
    script.push(tx_confirmed_query(tx_id, hash, block, gas, now));
}

fn tx_confirmed_query<'q>(
    tx_id: i64,
    hash: &str,
    block: i64,
    gas: i64,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "UPDATE chain_transactions SET state = 'confirmed', tx_hash = $1, block_number = $2, gas_used = $3, \
         updated_at = $4 WHERE id = $5",
    )
    .bind(hash.to_owned())
    .bind(block)
    .bind(gas)
    .bind(now)
    .bind(tx_id)
}

pub async fn tx_closed(conn: &mut Conn, tx_id: i64, state: &str, error: Option<&str>, now: i64) -> Result<()> {
    sqlx::query("UPDATE chain_transactions SET state = $1, error = COALESCE($2, error), updated_at = $3 WHERE id = $4")
        .bind(state.to_owned())
        .bind(error.map(truncate))
        .bind(now)
        .bind(tx_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Adds to `script` the confirmation of a mint transaction's submitted tokens; returns the
/// statement's index (the rows it changed are the tokens confirmed).
pub fn push_mint_confirmed(script: &mut Script, tx_id: i64, hash: &str, block: i64, now: i64) -> usize {
    script.push(
        sqlx::query(
            "UPDATE chain_tokens SET state = 'confirmed', tx_hash = $1, block_number = $2, last_error = NULL, \
             updated_at = $3 WHERE tx_id = $4 AND state = 'submitted'",
        )
        .bind(hash.to_owned())
        .bind(block)
        .bind(now)
        .bind(tx_id),
    )
}

/// The submitted tickets of a mint transaction: (ticket, token id, owner, attempts).
pub async fn submitted_of_tx(conn: &mut impl Fetch, tx_id: i64) -> Result<Vec<(String, i64, Option<String>, i64)>> {
    sqlx::query(
        "SELECT ticket_id, token_id, owner_address, attempts FROM chain_tokens WHERE tx_id = $1 AND state = 'submitted' \
         ORDER BY token_id",
    )
    .bind(tx_id)
    .all(conn)
    .await
}

/// Reading the chain found the token: it is minted, by this transaction or an earlier one
/// whose answer was lost.
pub async fn token_found(conn: &mut Conn, ticket: &str, owner: &str, tx_hash: Option<&str>, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_tokens SET state = 'confirmed', owner_address = $1, tx_hash = $2, last_error = NULL, \
         updated_at = $3 WHERE ticket_id = $4 AND state = 'submitted'",
    )
    .bind(owner.to_owned())
    .bind(tx_hash.map(str::to_owned))
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reading the chain did not find the token: it waits for a new batch. `failed` parks it.
pub async fn token_not_found(
    conn: &mut Conn,
    ticket: &str,
    count_attempt: bool,
    failed: bool,
    error: &str,
    available_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE chain_tokens SET state = $1, tx_id = NULL, attempts = attempts + $2, last_error = $3, \
         available_at = $4, updated_at = $5 WHERE ticket_id = $6 AND state = 'submitted'",
    )
    .bind(if failed { "failed" } else { "pending" })
    .bind(i64::from(count_attempt))
    .bind(truncate(error))
    .bind(available_at)
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A token found not minted whose ticket has been cancelled meanwhile (a burn is queued):
/// it is never minted, and the operations queued for it have nothing left to act on.
pub async fn burn_if_cancelled(conn: &mut Conn, ticket: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE chain_tokens SET state = 'burned', updated_at = $1 WHERE ticket_id = $2 AND state = 'pending' \
         AND EXISTS (SELECT 1 FROM chain_ops o WHERE o.ticket_id = $2 AND o.kind = 'burn' AND o.state = 'pending')",
    )
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query(
            "UPDATE chain_ops SET state = 'done', last_error = 'never minted', updated_at = $1 \
             WHERE ticket_id = $2 AND state = 'pending'",
        )
        .bind(now)
        .bind(ticket.to_owned())
        .execute(&mut *conn)
        .await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Sends left open: `unknown` ones, and `sending` ones whose lease ran out or whose process
/// is gone (`foreign_dead`: any other instance, when only one process can use the chain).
pub async fn open_txs(
    conn: &mut impl Fetch,
    instance: &str,
    now: i64,
    foreign_dead: bool,
) -> Result<Vec<(i64, String, String)>> {
    sqlx::query(
        "SELECT id, kind, event_id FROM chain_transactions WHERE state = 'unknown' \
         OR (state = 'sending' AND (lease_until <= $1 OR ($2 = 1 AND instance <> $3))) ORDER BY id LIMIT 100",
    )
    .bind(now)
    .bind(i64::from(foreign_dead))
    .bind(instance.to_owned())
    .all(conn)
    .await
}

// ---- operations ----

#[derive(Debug, Clone)]
pub struct OpRow {
    pub id: i64,
    pub ticket_id: String,
    pub event_id: String,
    pub kind: String,
    pub to_user: Option<String>,
    pub to_address: Option<String>,
    pub attempts: i64,
    pub token_id: i64,
    pub owner_address: Option<String>,
    pub collection: String,
}

const OP_COLUMNS: &str = "o.id, o.ticket_id, o.event_id, o.kind, o.to_user, o.to_address, o.attempts, t.token_id, \
     t.owner_address, c.address";

type OpTuple = (i64, String, String, String, Option<String>, Option<String>, i64, i64, Option<String>, String);

fn op_from(r: OpTuple) -> OpRow {
    OpRow {
        id: r.0,
        ticket_id: r.1,
        event_id: r.2,
        kind: r.3,
        to_user: r.4,
        to_address: r.5,
        attempts: r.6,
        token_id: r.7,
        owner_address: r.8,
        collection: r.9,
    }
}

/// Operations due now whose token is minted and which are first in line for their ticket.
pub async fn due_ops(conn: &mut impl Fetch, now: i64, limit: i64) -> Result<Vec<OpRow>> {
    let sql = format!(
        "SELECT {OP_COLUMNS} FROM chain_ops o JOIN chain_tokens t ON t.ticket_id = o.ticket_id \
         JOIN chain_collections c ON c.event_id = o.event_id \
         WHERE o.state = 'pending' AND o.available_at <= $1 AND t.state = 'confirmed' AND c.address IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM chain_ops p WHERE p.ticket_id = o.ticket_id AND p.id < o.id \
                         AND p.state IN ('pending', 'submitted')) \
         ORDER BY o.id LIMIT $2"
    );
    let rows: Vec<OpTuple> = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit).all(conn).await?;
    Ok(rows.into_iter().map(op_from).collect())
}

/// The operations still riding on a transaction: one transfer or burn, or a batch of attended marks.
pub async fn ops_by_tx(conn: &mut impl Fetch, tx_id: i64) -> Result<Vec<OpRow>> {
    let sql = format!(
        "SELECT {OP_COLUMNS} FROM chain_ops o JOIN chain_tokens t ON t.ticket_id = o.ticket_id \
         JOIN chain_collections c ON c.event_id = o.event_id WHERE o.tx_id = $1 AND o.state = 'submitted' \
         ORDER BY o.id"
    );
    let rows: Vec<OpTuple> = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tx_id).all(conn).await?;
    Ok(rows.into_iter().map(op_from).collect())
}

/// Claims many pending operations for one transaction in one statement; the ids claimed.
pub async fn claim_ops(conn: &mut Conn, ops: &[i64], tx_id: i64, now: i64) -> Result<Vec<i64>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = entrada_storage::Params::on(conn);
    let (tx, at) = (p.one(), p.one());
    let sql = format!(
        "UPDATE chain_ops SET state = 'submitted', tx_id = {tx}, updated_at = {at} \
         WHERE state = 'pending' AND id IN ({}) RETURNING id",
        p.list(ops.len())
    );
    let mut q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql)).bind(tx_id).bind(now);
    for id in ops {
        q = q.bind(*id);
    }
    Ok(q.fetch_all(&mut *conn).await?.into_iter().map(|(id,)| id).collect())
}

/// Adds to `script`: every operation a confirmed transaction carried is done (attended
/// marks: no token change).
pub fn push_ops_done_by_tx(script: &mut Script, tx_id: i64, tx_hash: &str, now: i64) {
    script.push(
        sqlx::query(
            "UPDATE chain_ops SET state = 'done', tx_hash = $1, last_error = NULL, updated_at = $2 \
             WHERE tx_id = $3 AND state = 'submitted'",
        )
        .bind(tx_hash.to_owned())
        .bind(now)
        .bind(tx_id),
    );
}

pub async fn claim_op(conn: &mut Conn, op: i64, tx_id: i64, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE chain_ops SET state = 'submitted', tx_id = $1, updated_at = $2 WHERE id = $3 AND state = 'pending'",
    )
    .bind(tx_id)
    .bind(now)
    .bind(op)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An operation took effect (or needed none): record it and its effect on the token.
pub async fn op_done(conn: &mut Conn, op: &OpRow, to: Option<&str>, tx_hash: Option<&str>, now: i64) -> Result<()> {
    sqlx::query("UPDATE chain_ops SET state = 'done', tx_hash = $1, last_error = NULL, updated_at = $2 WHERE id = $3")
        .bind(tx_hash.map(str::to_owned))
        .bind(now)
        .bind(op.id)
        .execute(&mut *conn)
        .await?;
    match op.kind.as_str() {
        "transfer" => {
            sqlx::query("UPDATE chain_tokens SET owner_address = $1, updated_at = $2 WHERE ticket_id = $3")
                .bind(to.map(str::to_owned))
                .bind(now)
                .bind(op.ticket_id.clone())
                .execute(&mut *conn)
                .await?;
        }
        "burn" => {
            sqlx::query(
                "UPDATE chain_tokens SET state = 'burned', tx_hash = COALESCE($1, tx_hash), updated_at = $2 \
                 WHERE ticket_id = $3",
            )
            .bind(tx_hash.map(str::to_owned))
            .bind(now)
            .bind(op.ticket_id.clone())
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// An operation goes back to the queue (`failed` parks it for an operator).
pub async fn op_retry(conn: &mut Conn, op: i64, failed: bool, error: &str, available_at: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE chain_ops SET state = $1, tx_id = NULL, attempts = attempts + 1, last_error = $2, available_at = $3, \
         updated_at = $4 WHERE id = $5",
    )
    .bind(if failed { "failed" } else { "pending" })
    .bind(truncate(error))
    .bind(available_at)
    .bind(now)
    .bind(op)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn set_owner_address(conn: &mut Conn, ticket: &str, owner: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE chain_tokens SET owner_address = $1, updated_at = $2 WHERE ticket_id = $3")
        .bind(owner.to_owned())
        .bind(now)
        .bind(ticket.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---- attended ----

/// Minted tokens of admitted tickets that have no attended mark queued yet.
pub async fn newly_admitted(conn: &mut impl Fetch, limit: i64) -> Result<Vec<(String, String)>> {
    sqlx::query(
        "SELECT t.ticket_id, t.event_id FROM chain_tokens t WHERE t.state = 'confirmed' AND t.attended = FALSE \
         AND EXISTS (SELECT 1 FROM admissions a WHERE a.ticket_id = t.ticket_id) ORDER BY t.ticket_id LIMIT $1",
    )
    .bind(limit)
    .all(conn)
    .await
}

// ---- reconciliation ----

#[derive(Debug, Clone)]
pub struct SettledToken {
    pub ticket_id: String,
    pub event_id: String,
    pub token_id: i64,
    pub state: String,
    pub holder_id: Option<String>,
    pub external_address: Option<String>,
    pub owner_address: Option<String>,
    pub collection: String,
    /// Operations still queued or in flight for this ticket.
    pub open_ops: i64,
}

/// Confirmed and burned tokens after `after` (ticket id order), a page at a time.
///
/// SQLite has no statistics here and would rather read every confirmed token
/// through the state index and sort them for each page (tens of thousands
/// at a stadium's doors, inside a gate's busiest minutes). `CROSS JOIN` keeps
/// the tokens outermost (SQLite takes it as the join order; PostgreSQL as a
/// plain inner join) and `state || ''` keeps the state index out, so the page
/// walks the primary key from the cursor and stops after `limit` rows.
pub async fn settled_tokens(conn: &mut impl Fetch, after: &str, limit: i64) -> Result<Vec<SettledToken>> {
    type Row = (String, String, i64, String, Option<String>, Option<String>, Option<String>, String, i64);
    let rows: Vec<Row> = sqlx::query(
        "SELECT t.ticket_id, t.event_id, t.token_id, t.state, t.holder_id, t.external_address, t.owner_address, \
         c.address, (SELECT COUNT(*) FROM chain_ops o WHERE o.ticket_id = t.ticket_id \
                     AND o.state IN ('pending', 'submitted')) \
         FROM chain_tokens t CROSS JOIN chain_collections c \
         WHERE c.event_id = t.event_id AND c.state = 'confirmed' AND t.ticket_id > $1 \
         AND t.state || '' IN ('confirmed', 'burned') ORDER BY t.ticket_id LIMIT $2",
    )
    .bind(after.to_owned())
    .bind(limit)
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SettledToken {
            ticket_id: r.0,
            event_id: r.1,
            token_id: r.2,
            state: r.3,
            holder_id: r.4,
            external_address: r.5,
            owner_address: r.6,
            collection: r.7,
            open_ops: r.8,
        })
        .collect())
}

/// A confirmed token the chain does not have: mint it again.
pub async fn token_missing(conn: &mut Conn, ticket: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE chain_tokens SET state = 'pending', tx_id = NULL, tx_hash = NULL, block_number = NULL, \
         owner_address = NULL, last_error = 'missing on chain', available_at = $1, updated_at = $1 \
         WHERE ticket_id = $2 AND state = 'confirmed'",
    )
    .bind(now)
    .bind(ticket.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn truncate(s: &str) -> String {
    s.chars().take(500).collect()
}

// ---- operators ----

/// A mint or an operation parked as `failed`: the chain refused it `max_attempts` times.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `mint`, `transfer`, `burn` or `attend`.
    pub kind: String,
    pub ticket_id: String,
    pub event_id: String,
    pub token_id: i64,
    pub attempts: i64,
    pub last_error: String,
    /// When it was parked (ms).
    pub since: i64,
}

/// The parked mints and operations, most recent first.
pub async fn failures(conn: &mut Conn, limit: i64) -> Result<Vec<Failure>> {
    let rows: Vec<(String, String, String, i64, i64, String, i64)> = sqlx::query_as(
        "SELECT 'mint', ticket_id, event_id, token_id, attempts, COALESCE(last_error, ''), updated_at \
         FROM chain_tokens WHERE state = 'failed' \
         UNION ALL \
         SELECT o.kind, o.ticket_id, o.event_id, t.token_id, o.attempts, COALESCE(o.last_error, ''), o.updated_at \
         FROM chain_ops o JOIN chain_tokens t ON t.ticket_id = o.ticket_id WHERE o.state = 'failed' \
         ORDER BY 7 DESC, 2 LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, ticket_id, event_id, token_id, attempts, last_error, since)| Failure {
            kind,
            ticket_id,
            event_id,
            token_id,
            attempts,
            last_error,
            since,
        })
        .collect())
}

/// Puts a ticket's parked mint and operations back in the queue with fresh attempts; how
/// many were parked.
pub async fn requeue_failed(conn: &mut Conn, ticket_id: &str, now: i64) -> Result<u64> {
    let tokens = sqlx::query(
        "UPDATE chain_tokens SET state = 'pending', attempts = 0, last_error = NULL, available_at = $1, \
         updated_at = $1 WHERE ticket_id = $2 AND state = 'failed'",
    )
    .bind(now)
    .bind(ticket_id.to_owned())
    .execute(&mut *conn)
    .await?;
    let ops = sqlx::query(
        "UPDATE chain_ops SET state = 'pending', attempts = 0, last_error = NULL, available_at = $1, \
         updated_at = $1 WHERE ticket_id = $2 AND state = 'failed'",
    )
    .bind(now)
    .bind(ticket_id.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(tokens.rows_affected() + ops.rows_affected())
}

/// Rows per state: (`tokens` or `ops`, state, count), for the metrics.
pub async fn state_counts(conn: &mut impl Fetch) -> Result<Vec<(String, String, i64)>> {
    sqlx::query(
        "SELECT 'tokens', state, COUNT(*) FROM chain_tokens GROUP BY state \
         UNION ALL SELECT 'ops', state, COUNT(*) FROM chain_ops GROUP BY state",
    )
    .all(conn)
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use entrada_storage::WriteError;

    async fn pending(db: &entrada_storage::Db, ticket: &str, token: i64, holder: &str) -> PendingToken {
        sqlx::query(
            "INSERT INTO chain_tokens (ticket_id, event_id, token_id, holder_id, state, available_at, created_at, \
             updated_at) VALUES ($1, 'evt', $2, $3, 'pending', 0, 0, 0)",
        )
        .bind(ticket.to_owned())
        .bind(token)
        .bind(holder.to_owned())
        .execute(&mut *db.writer().await.unwrap())
        .await
        .unwrap();
        PendingToken {
            ticket_id: ticket.to_owned(),
            token_id: token,
            holder_id: Some(holder.to_owned()),
            external_address: None,
            attempts: 0,
        }
    }

    async fn mint_row(db: &entrada_storage::Db, id: i64) -> Option<(String, i64)> {
        sqlx::query("SELECT state, items FROM chain_transactions WHERE id = $1")
            .bind(id)
            .optional(&mut db.read())
            .await
            .unwrap()
    }

    /// Opens mint `id` with a claim of each token in one script, as `send_mint` does.
    async fn open_mint(
        db: &entrada_storage::Db,
        id: i64,
        tokens: &[PendingToken],
    ) -> std::result::Result<Vec<u64>, WriteError> {
        let mut script = db.script();
        push_open_tx(&mut script, id, "mint_batch", "evt", "node-a", 1_000, 10);
        let claims: Vec<usize> = tokens.iter().map(|t| push_claim_token(&mut script, t, id, "0xabc", 10)).collect();
        push_close_claims(&mut script, id);
        let changed = db.write(script).await?;
        Ok(claims.iter().map(|at| changed[*at]).collect())
    }

    #[tokio::test]
    async fn a_mint_opens_with_its_claims_in_one_script() {
        let t = entrada_storage::testing::fresh().await;
        let db = &t.db;
        let a = pending(db, "t-a", 1, "u-1").await;
        let b = pending(db, "t-b", 2, "u-2").await;
        let mut moved = pending(db, "t-c", 3, "u-3").await;
        // Given to someone else after the round read it: its claim must not hold.
        moved.holder_id = Some("u-old".into());

        let first = next_tx_id(&mut db.read()).await.unwrap();
        assert_eq!(open_mint(db, first, &[a, b, moved.clone()]).await.unwrap(), vec![1, 1, 0]);
        assert_eq!(mint_row(db, first).await, Some(("sending".into(), 2)), "the row counts what was claimed");
        let (submitted,): (i64,) =
            sqlx::query("SELECT COUNT(*) FROM chain_tokens WHERE tx_id = $1 AND state = 'submitted'")
                .bind(first)
                .one(&mut db.read())
                .await
                .unwrap();
        assert_eq!(submitted, 2);

        // Nothing left to claim: no transaction row stays behind, and its id is not drawn again.
        let second = next_tx_id(&mut db.read()).await.unwrap();
        assert!(second > first);
        assert_eq!(open_mint(db, second, &[moved]).await.unwrap(), vec![0]);
        assert_eq!(mint_row(db, second).await, None);
        assert!(next_tx_id(&mut db.read()).await.unwrap() > second);
    }

    #[tokio::test]
    async fn an_id_taken_meanwhile_writes_nothing() {
        let t = entrada_storage::testing::fresh().await;
        let db = &t.db;
        let a = pending(db, "t-a", 1, "u-1").await;
        let b = pending(db, "t-b", 2, "u-2").await;
        let id = next_tx_id(&mut db.read()).await.unwrap();
        assert_eq!(open_mint(db, id, &[a]).await.unwrap(), vec![1]);

        // The same id again (another sender drew it first): the guard stops the whole script.
        assert!(matches!(open_mint(db, id, std::slice::from_ref(&b)).await, Err(WriteError::Guard(0))));
        assert_eq!(mint_row(db, id).await, Some(("sending".into(), 1)));
        let (state, tx): (String, Option<i64>) =
            sqlx::query("SELECT state, tx_id FROM chain_tokens WHERE ticket_id = 't-b'")
                .one(&mut db.read())
                .await
                .unwrap();
        assert_eq!((state.as_str(), tx), ("pending", None), "the claim was not kept");
    }
}
