//! The wallet's SQL, written once for SQLite and PostgreSQL.

use crate::keys::{Rewrapped, Sealed};
use entrada_storage::{Db, Run, Script, Tx};

type R<T> = Result<T, sqlx::Error>;

// ------------------------------------------------------------------ custodial keys

/// A stored custodial key: its address and the sealed private key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub user_id: String,
    pub address: String,
    pub sealed: Sealed,
}

type KeyTuple = (String, String, String, String, String, String, String);

fn key_row((user_id, address, key_nonce, key_ciphertext, master_key_id, dek_nonce, dek_wrapped): KeyTuple) -> KeyRow {
    KeyRow { user_id, address, sealed: Sealed { key_nonce, key_ciphertext, master_key_id, dek_nonce, dek_wrapped } }
}

const KEY_COLUMNS: &str = "user_id, address, key_nonce, key_ciphertext, master_key_id, dek_nonce, dek_wrapped";

pub async fn address_of(db: &Db, user: &str) -> R<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query("SELECT address FROM wallet_keys WHERE user_id = $1").bind(user).optional(&mut db.read()).await?;
    Ok(row.map(|r| r.0))
}

pub async fn key_of(db: &Db, user: &str) -> R<Option<KeyRow>> {
    let row: Option<KeyTuple> =
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM wallet_keys WHERE user_id = $1")))
            .bind(user)
            .optional(&mut db.read())
            .await?;
    Ok(row.map(key_row))
}

/// Adds the insert of a user's first key to `script`, starting a part of
/// `then` statements that are skipped when the user already has one (a
/// concurrent first use won: the caller re-reads and uses that one).
pub fn push_insert_key(script: &mut Script, user: &str, address: &str, sealed: &Sealed, now: i64, then: usize) {
    script.push_when(
        sqlx::query(
            "INSERT INTO wallet_keys (user_id, address, key_nonce, key_ciphertext, master_key_id, dek_nonce, \
             dek_wrapped, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(user.to_owned())
        .bind(address.to_owned())
        .bind(sealed.key_nonce.clone())
        .bind(sealed.key_ciphertext.clone())
        .bind(sealed.master_key_id.clone())
        .bind(sealed.dek_nonce.clone())
        .bind(sealed.dek_wrapped.clone())
        .bind(now),
        then,
    );
}

/// Up to `limit` keys not wrapped by `active`, after `after` (user id order),
/// so a re-wrap walks the table once even when some rows fail.
pub async fn keys_not_under(db: &Db, active: &str, after: &str, limit: i64) -> R<Vec<KeyRow>> {
    let rows: Vec<KeyTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM wallet_keys WHERE master_key_id <> $1 AND user_id > $2 \
         ORDER BY user_id LIMIT $3"
    )))
    .bind(active)
    .bind(after)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(key_row).collect())
}

/// Replaces a row's wrapped data key, only if it is still wrapped the way it
/// was read (a concurrent re-wrap makes this a no-op, never a lost update).
pub async fn set_wrapping(tx: &mut Tx, user: &str, from: &Sealed, to: &Rewrapped, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE wallet_keys SET master_key_id = $1, dek_nonce = $2, dek_wrapped = $3, rewrapped_at = $4 \
         WHERE user_id = $5 AND master_key_id = $6 AND dek_wrapped = $7",
    )
    .bind(&to.master_key_id)
    .bind(&to.dek_nonce)
    .bind(&to.dek_wrapped)
    .bind(now)
    .bind(user)
    .bind(&from.master_key_id)
    .bind(&from.dek_wrapped)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many keys each master key wraps.
pub async fn keys_per_master(db: &Db) -> R<Vec<(String, i64)>> {
    sqlx::query_as("SELECT master_key_id, COUNT(*) FROM wallet_keys GROUP BY master_key_id ORDER BY master_key_id")
        .fetch_all(db.reader())
        .await
}

// ------------------------------------------------------------------ links

pub async fn insert_nonce(
    tx: &mut Tx,
    nonce: &str,
    user: &str,
    message: &str,
    issued_at: i64,
    expires_at: i64,
) -> R<()> {
    sqlx::query(
        "INSERT INTO wallet_link_nonces (nonce, user_id, message, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(nonce)
    .bind(user)
    .bind(message)
    .bind(issued_at)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets this user's nonces that expired more than a day ago (the audit
/// log keeps what was linked), and counts the ones still open.
pub async fn open_nonces(db: &Db, user: &str, now: i64) -> R<i64> {
    sqlx::query("DELETE FROM wallet_link_nonces WHERE user_id = $1 AND expires_at < $2")
        .bind(user)
        .bind(now - 24 * 3600 * 1000)
        .execute(&mut *db.writer().await?)
        .await?;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM wallet_link_nonces WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(user)
    .bind(now)
    .fetch_one(&mut *db.writer().await?)
    .await?;
    Ok(n)
}

/// Marks the nonce used if it is this user's, unused and unexpired: the one
/// conditional update that makes a nonce single-use across processes.
pub async fn consume_nonce(tx: &mut Tx, nonce: &str, user: &str, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE wallet_link_nonces SET used_at = $1 WHERE nonce = $2 AND user_id = $3 AND used_at IS NULL \
         AND expires_at > $1",
    )
    .bind(now)
    .bind(nonce)
    .bind(user)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// (owner, expires_at, used_at) of a nonce, to say why it was refused.
pub async fn nonce_state(tx: &mut Tx, nonce: &str) -> R<Option<(String, i64, Option<i64>)>> {
    sqlx::query_as("SELECT user_id, expires_at, used_at FROM wallet_link_nonces WHERE nonce = $1")
        .bind(nonce)
        .fetch_optional(&mut **tx)
        .await
}

/// A linked address as stored.
#[derive(Debug, Clone)]
pub struct LinkRow {
    pub id: String,
    pub user_id: String,
    pub address: String,
    pub chain_id: i64,
    pub linked_at: i64,
}

type LinkTuple = (String, String, String, i64, i64);

fn link_row((id, user_id, address, chain_id, linked_at): LinkTuple) -> LinkRow {
    LinkRow { id, user_id, address, chain_id, linked_at }
}

/// Inserts a link; false when the address is already linked (to anyone).
pub async fn insert_link(tx: &mut Tx, row: &LinkRow) -> R<bool> {
    let done = sqlx::query(
        "INSERT INTO wallet_links (id, user_id, address, chain_id, linked_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&row.id)
    .bind(&row.user_id)
    .bind(&row.address)
    .bind(row.chain_id)
    .bind(row.linked_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn link_by_address(tx: &mut Tx, address: &str) -> R<Option<LinkRow>> {
    let row: Option<LinkTuple> =
        sqlx::query_as("SELECT id, user_id, address, chain_id, linked_at FROM wallet_links WHERE address = $1")
            .bind(address)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(link_row))
}

pub async fn links_of(db: &Db, user: &str) -> R<Vec<LinkRow>> {
    let rows: Vec<LinkTuple> = sqlx::query_as(
        "SELECT id, user_id, address, chain_id, linked_at FROM wallet_links WHERE user_id = $1 ORDER BY linked_at, id",
    )
    .bind(user)
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(link_row).collect())
}

pub async fn delete_link(tx: &mut Tx, user: &str, address: &str) -> R<bool> {
    let done = sqlx::query("DELETE FROM wallet_links WHERE user_id = $1 AND address = $2")
        .bind(user)
        .bind(address)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ------------------------------------------------------------------ export

/// The facts an export decision needs, read inside its transaction.
#[derive(Debug, Clone)]
pub struct ExportFacts {
    pub event_id: String,
    pub holder_id: String,
    pub status: String,
    pub generation: i64,
    pub export_allowed: bool,
    pub export_after: Option<i64>,
    pub exported_to: Option<String>,
}

type ExportTuple = (String, String, String, i64, i64, Option<i64>, Option<String>);

pub async fn export_facts(tx: &mut Tx, db: &Db, ticket: &str) -> R<Option<ExportFacts>> {
    // The lock (PostgreSQL) is on the ticket row: the holder and generation
    // checked here cannot change before the guarded update below.
    let sql = format!(
        "SELECT t.event_id, t.holder_id, t.status, t.generation, \
         CASE WHEN e.export_allowed THEN 1 ELSE 0 END, e.export_after, x.to_address \
         FROM tickets t JOIN events e ON e.id = t.event_id LEFT JOIN ticket_exports x ON x.ticket_id = t.id \
         WHERE t.id = $1{}",
        match db.backend() {
            entrada_storage::Backend::Postgres => " FOR UPDATE OF t",
            entrada_storage::Backend::Sqlite => "",
        }
    );
    let row: Option<ExportTuple> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ticket).fetch_optional(&mut **tx).await?;
    Ok(row.map(|(event_id, holder_id, status, generation, allowed, export_after, exported_to)| ExportFacts {
        event_id,
        holder_id,
        status,
        generation,
        export_allowed: allowed != 0,
        export_after,
        exported_to,
    }))
}

/// Bumps the holder generation if nothing moved since `facts` were read;
/// returns the new generation.
pub async fn bump_generation(tx: &mut Tx, ticket: &str, holder: &str, generation: i64) -> R<Option<i64>> {
    let done = sqlx::query(
        "UPDATE tickets SET generation = generation + 1 WHERE id = $1 AND holder_id = $2 AND generation = $3 \
         AND status = 'valid'",
    )
    .bind(ticket)
    .bind(holder)
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    Ok((done.rows_affected() == 1).then_some(generation + 1))
}

pub struct ExportRow<'a> {
    pub id: &'a str,
    pub ticket_id: &'a str,
    pub event_id: &'a str,
    pub user_id: &'a str,
    pub to_address: &'a str,
    pub generation: i64,
    pub created_at: i64,
}

/// False when the ticket was already exported (the unique key on the ticket).
pub async fn insert_export(tx: &mut Tx, row: &ExportRow<'_>) -> R<bool> {
    let done = sqlx::query(
        "INSERT INTO ticket_exports (id, ticket_id, event_id, user_id, to_address, generation, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(row.id)
    .bind(row.ticket_id)
    .bind(row.event_id)
    .bind(row.user_id)
    .bind(row.to_address)
    .bind(row.generation)
    .bind(row.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ------------------------------------------------------------------ metadata

/// The public facts of an event's collection.
#[derive(Debug, Clone)]
pub struct EventFacts {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub venue_name: String,
    pub venue_city: String,
    pub venue_country: String,
    pub starts_at: i64,
    pub status: String,
    pub royalty_bps: i64,
}

type EventTuple = (String, String, String, String, String, String, String, i64, String, i64);

pub async fn event(db: &Db, event: &str) -> R<Option<EventFacts>> {
    let row: Option<EventTuple> = sqlx::query_as(
        "SELECT id, organization_id, name, description, venue_name, venue_city, venue_country, starts_at, status, \
         resale_royalty_bps FROM events WHERE id = $1",
    )
    .bind(event)
    .fetch_optional(db.reader())
    .await?;
    Ok(row.map(
        |(
            id,
            organization_id,
            name,
            description,
            venue_name,
            venue_city,
            venue_country,
            starts_at,
            status,
            royalty_bps,
        )| {
            EventFacts {
                id,
                organization_id,
                name,
                description,
                venue_name,
                venue_city,
                venue_country,
                starts_at,
                status,
                royalty_bps,
            }
        },
    ))
}

pub async fn ticket_type_name(db: &Db, event: &str, ticket_type: &str) -> R<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT name FROM ticket_types WHERE id = $1 AND event_id = $2")
        .bind(ticket_type)
        .bind(event)
        .fetch_optional(db.reader())
        .await?;
    Ok(row.map(|r| r.0))
}

/// The public facts of one token: the ticket with that serial in the event.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    pub serial: i64,
    pub ticket_type_id: String,
    pub ticket_type_name: String,
    pub status: String,
    pub attended: bool,
}

pub async fn token(db: &Db, event: &str, serial: i64) -> R<Option<TokenFacts>> {
    let row: Option<(i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT t.serial, t.ticket_type_id, tt.name, t.status, \
         CASE WHEN a.ticket_id IS NULL THEN 0 ELSE 1 END \
         FROM tickets t JOIN ticket_types tt ON tt.id = t.ticket_type_id \
         LEFT JOIN admissions a ON a.ticket_id = t.id WHERE t.event_id = $1 AND t.serial = $2",
    )
    .bind(event)
    .bind(serial)
    .fetch_optional(db.reader())
    .await?;
    Ok(row.map(|(serial, ticket_type_id, ticket_type_name, status, attended)| TokenFacts {
        serial,
        ticket_type_id,
        ticket_type_name,
        status,
        attended: attended != 0,
    }))
}

// ------------------------------------------------------------------ images

/// An uploaded image's bytes (base64 in the row) and its identity.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub content_type: String,
    pub data: String,
    pub sha256: String,
}

pub async fn image(db: &Db, event: &str, ticket_type: &str) -> R<Option<ImageRow>> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT content_type, data, sha256 FROM collectible_images WHERE ticket_type_id = $1 AND event_id = $2",
    )
    .bind(ticket_type)
    .bind(event)
    .fetch_optional(db.reader())
    .await?;
    Ok(row.map(|(content_type, data, sha256)| ImageRow { content_type, data, sha256 }))
}

/// The digest of a ticket type's image, for metadata (no bytes).
pub async fn image_digest(db: &Db, ticket_type: &str) -> R<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT sha256 FROM collectible_images WHERE ticket_type_id = $1")
        .bind(ticket_type)
        .fetch_optional(db.reader())
        .await?;
    Ok(row.map(|r| r.0))
}

pub struct NewImage<'a> {
    pub ticket_type_id: &'a str,
    pub event_id: &'a str,
    pub content_type: &'a str,
    pub data: &'a str,
    pub sha256: &'a str,
    pub size: i64,
    pub uploaded_by: &'a str,
    pub uploaded_at: i64,
}

pub async fn put_image(tx: &mut Tx, img: &NewImage<'_>) -> R<()> {
    sqlx::query(
        "INSERT INTO collectible_images (ticket_type_id, event_id, content_type, data, sha256, size, uploaded_by, \
         uploaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ticket_type_id) DO UPDATE SET \
         content_type = excluded.content_type, data = excluded.data, sha256 = excluded.sha256, size = excluded.size, \
         uploaded_by = excluded.uploaded_by, uploaded_at = excluded.uploaded_at",
    )
    .bind(img.ticket_type_id)
    .bind(img.event_id)
    .bind(img.content_type)
    .bind(img.data)
    .bind(img.sha256)
    .bind(img.size)
    .bind(img.uploaded_by)
    .bind(img.uploaded_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn delete_image(tx: &mut Tx, event: &str, ticket_type: &str) -> R<bool> {
    let done = sqlx::query("DELETE FROM collectible_images WHERE ticket_type_id = $1 AND event_id = $2")
        .bind(ticket_type)
        .bind(event)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ------------------------------------------------------------------ assets

/// One of a holder's tickets with its token, as the wallet shows it. The
/// token columns come from the chain pipeline's tables (read only; absent
/// until the pipeline has seen the ticket).
#[derive(Debug, Clone)]
pub struct AssetRow {
    pub ticket_id: String,
    pub event_id: String,
    pub event_name: String,
    pub starts_at: i64,
    pub venue_name: String,
    pub ticket_type_id: String,
    pub ticket_type_name: String,
    pub serial: i64,
    pub generation: i64,
    pub network: Option<String>,
    pub chain_id: Option<i64>,
    pub contract: Option<String>,
    pub token_state: Option<String>,
    pub owner_address: Option<String>,
    pub tx_hash: Option<String>,
    pub attended: bool,
    pub exported_to: Option<String>,
}

/// The holder's valid tickets, soonest event first, at most `limit`.
pub async fn assets(db: &Db, user: &str, limit: i64) -> R<Vec<AssetRow>> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT t.id, t.event_id, e.name AS event_name, e.starts_at, e.venue_name, t.ticket_type_id, \
         tt.name AS tt_name, t.serial, t.generation, cc.network, cc.chain_id, cc.address, ct.state, \
         ct.owner_address, ct.tx_hash, CASE WHEN ct.attended THEN 1 ELSE 0 END AS attended, x.to_address \
         FROM tickets t JOIN events e ON e.id = t.event_id JOIN ticket_types tt ON tt.id = t.ticket_type_id \
         LEFT JOIN chain_tokens ct ON ct.ticket_id = t.id LEFT JOIN chain_collections cc ON cc.event_id = t.event_id \
         LEFT JOIN ticket_exports x ON x.ticket_id = t.id \
         WHERE t.holder_id = $1 AND t.status = 'valid' ORDER BY e.starts_at, t.serial LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AssetRow {
                ticket_id: r.try_get(0)?,
                event_id: r.try_get(1)?,
                event_name: r.try_get(2)?,
                starts_at: r.try_get(3)?,
                venue_name: r.try_get(4)?,
                ticket_type_id: r.try_get(5)?,
                ticket_type_name: r.try_get(6)?,
                serial: r.try_get(7)?,
                generation: r.try_get(8)?,
                network: r.try_get(9)?,
                chain_id: r.try_get(10)?,
                contract: r.try_get(11)?,
                token_state: r.try_get(12)?,
                owner_address: r.try_get(13)?,
                tx_hash: r.try_get(14)?,
                attended: r.try_get::<Option<i64>, _>(15)?.unwrap_or(0) != 0,
                exported_to: r.try_get(16)?,
            })
        })
        .collect()
}
