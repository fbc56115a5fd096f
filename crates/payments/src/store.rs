//! SQL for payments, webhook receipts, refund requests and the ledger.
//! Written once for SQLite and PostgreSQL.

use crate::domain::{BalancedPostings, PaymentStatus, PaymentsError};
use entrada_primitives::ids::{OrganizationId, PaymentId};
use entrada_primitives::{Currency, Money};
use entrada_storage::{Fetch, Run, Script, Tx};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

/// A stored payment.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: PaymentId,
    pub reference: String,
    pub organization_id: OrganizationId,
    pub amount: Money,
    pub description: String,
    pub return_url: String,
    pub provider: String,
    pub provider_ref: Option<String>,
    pub capture_ref: Option<String>,
    pub checkout_url: Option<String>,
    pub status: PaymentStatus,
    pub refund_ref: Option<String>,
    pub refund_reason: Option<String>,
}

const COLUMNS: &str = "id, reference, organization_id, amount_minor, currency, description, return_url, provider, \
     provider_ref, capture_ref, checkout_url, status, refund_ref, refund_reason";

fn corrupt(what: &str) -> PaymentsError {
    PaymentsError::Corrupt(format!("payments.{what}"))
}

fn decode(r: &AnyRow) -> Result<PaymentRow, PaymentsError> {
    let id: String = r.try_get("id")?;
    let org: String = r.try_get("organization_id")?;
    let currency: String = r.try_get("currency")?;
    let status: String = r.try_get("status")?;
    Ok(PaymentRow {
        id: PaymentId::from_db(&id).map_err(|_| corrupt("id"))?,
        reference: r.try_get("reference")?,
        organization_id: OrganizationId::from_db(&org).map_err(|_| corrupt("organization_id"))?,
        amount: Money::new(r.try_get("amount_minor")?, Currency::parse(&currency).map_err(|_| corrupt("currency"))?),
        description: r.try_get("description")?,
        return_url: r.try_get("return_url")?,
        provider: r.try_get("provider")?,
        provider_ref: r.try_get("provider_ref")?,
        capture_ref: r.try_get("capture_ref")?,
        checkout_url: r.try_get("checkout_url")?,
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        refund_ref: r.try_get("refund_ref")?,
        refund_reason: r.try_get("refund_reason")?,
    })
}

/// Adds a new `created` payment to `script`, as a guard: unless one exists
/// for the reference, when it changes no row.
pub fn push_insert_payment(
    script: &mut Script,
    id: PaymentId,
    req: &crate::domain::NewPayment,
    provider: &str,
    now: i64,
) -> usize {
    script.push_guard(
        sqlx::query(
            "INSERT INTO payments (id, reference, organization_id, amount_minor, currency, description, return_url, \
             provider, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'created', $9, $9) \
             ON CONFLICT (reference) DO NOTHING",
        )
        .bind(id.to_db())
        .bind(req.reference.trim().to_owned())
        .bind(req.organization_id.to_db())
        .bind(req.amount.minor)
        .bind(req.amount.currency.as_str())
        .bind(req.description.trim().to_owned())
        .bind(req.return_url.clone())
        .bind(provider.to_owned())
        .bind(now),
    )
}

pub async fn by_reference(e: &mut impl Fetch, reference: &str) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE reference = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(reference.trim()).rows(e).await?.into_iter().next();
    row.as_ref().map(decode).transpose()
}

/// Reads a payment; `lock` is `Db::for_update()` inside a write transaction.
pub async fn by_id(e: &mut impl Fetch, id: PaymentId, lock: &str) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).rows(e).await?.into_iter().next();
    row.as_ref().map(decode).transpose()
}

/// Finds the payment a provider event is about: by our id when the provider
/// echoes it, else by the provider's checkout or capture object.
pub async fn by_provider_ref(
    conn: &mut impl Fetch,
    provider: &str,
    reference: &str,
) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE provider = $1 AND (provider_ref = $2 OR capture_ref = $2) \
         ORDER BY created_at LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(provider).bind(reference).rows(conn).await?.into_iter().next();
    row.as_ref().map(decode).transpose()
}

/// Adds the provider's checkout to `script`.
pub fn push_set_checkout(
    script: &mut Script,
    id: PaymentId,
    provider_ref: &str,
    capture_ref: Option<&str>,
    checkout_url: &str,
    now: i64,
) {
    script.push(
        sqlx::query(
            "UPDATE payments SET provider_ref = $1, capture_ref = COALESCE(capture_ref, $2), checkout_url = $3, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(provider_ref.to_owned())
        .bind(capture_ref.map(str::to_owned))
        .bind(checkout_url.to_owned())
        .bind(now)
        .bind(id.to_db()),
    );
}

/// Adds the move of a payment from `from` to `to` to `script`, as a guard
/// conditional on `from`, so a racing writer cannot be overwritten: it
/// changes no row when the payment had moved.
#[allow(clippy::too_many_arguments)]
pub fn push_transition(
    script: &mut Script,
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    failure_reason: Option<&str>,
    capture_ref: Option<&str>,
    refund_ref: Option<&str>,
    now: i64,
) -> usize {
    script.push_guard(
        sqlx::query(
            "UPDATE payments SET status = $1, failure_reason = COALESCE($2, failure_reason), \
             capture_ref = COALESCE(capture_ref, $3), refund_ref = COALESCE($4, refund_ref), updated_at = $5 \
             WHERE id = $6 AND status = $7",
        )
        .bind(to.as_str())
        .bind(failure_reason.map(str::to_owned))
        .bind(capture_ref.map(str::to_owned))
        .bind(refund_ref.map(str::to_owned))
        .bind(now)
        .bind(id.to_db())
        .bind(from.as_str()),
    )
}

/// Adds the capture object, learnt without a state change (a Stripe
/// `checkout.session.completed` replayed after `payment_intent.succeeded`).
pub fn push_capture_ref(script: &mut Script, id: PaymentId, capture_ref: &str) {
    script.push(
        sqlx::query("UPDATE payments SET capture_ref = COALESCE(capture_ref, $1) WHERE id = $2")
            .bind(capture_ref.to_owned())
            .bind(id.to_db()),
    );
}

/// Adds the record of a provider event id to `script`, as a guard: it
/// changes no row when the id was recorded before, and the delivery, a
/// replay, must change nothing.
pub fn push_receipt(
    script: &mut Script,
    provider: &str,
    event_id: &str,
    event_type: &str,
    payment_id: Option<PaymentId>,
    now: i64,
) -> usize {
    script.push_guard(
        sqlx::query(
            "INSERT INTO webhook_receipts (provider, event_id, event_type, payment_id, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(provider.to_owned())
        .bind(event_id.to_owned())
        .bind(event_type.to_owned())
        .bind(payment_id.map(|p| p.to_db()))
        .bind(now),
    )
}

/// Adds a balanced ledger transaction of `kind` for a payment to `script`,
/// once: a second posting of the same kind for the same payment is refused
/// by the unique key, and its entries, which name the new transaction, are
/// then skipped too. Returns the index of the transaction's statement,
/// which changes one row when it posted.
pub fn push_ledger(
    script: &mut Script,
    kind: &str,
    payment_id: PaymentId,
    postings: &BalancedPostings,
    now: i64,
) -> usize {
    let txn_id = uuid::Uuid::now_v7().to_string();
    let at = script.push(
        sqlx::query(
            "INSERT INTO ledger_transactions (id, kind, payment_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (payment_id, kind) DO NOTHING",
        )
        .bind(txn_id.clone())
        .bind(kind.to_owned())
        .bind(payment_id.to_db())
        .bind(now),
    );
    for p in postings.postings() {
        script.push(
            sqlx::query(
                "INSERT INTO ledger_entries (transaction_id, account, amount_minor, currency) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM ledger_transactions WHERE id = $1)",
            )
            .bind(txn_id.clone())
            .bind(p.account.clone())
            .bind(p.amount_minor)
            .bind(p.currency.as_str()),
        );
    }
    at
}

/// Posts a balanced ledger transaction of `kind` for a payment, once (see
/// [`push_ledger`]). Returns whether it posted.
pub async fn post_ledger(
    tx: &mut Tx,
    kind: &str,
    payment_id: PaymentId,
    postings: &BalancedPostings,
    now: i64,
) -> Result<bool, PaymentsError> {
    let mut script = Script::on(tx);
    let at = push_ledger(&mut script, kind, payment_id, postings, now);
    let changed = script.run(tx).await?;
    Ok(changed[at] == 1)
}

/// The signed balance of an account (debit positive).
pub async fn balance<'c, E: Executor<'c, Database = Any>>(
    e: E,
    account: &str,
    currency: Currency,
) -> Result<i64, PaymentsError> {
    // The cast keeps PostgreSQL's SUM(BIGINT) (a NUMERIC) decodable as i64.
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries WHERE account = $1 AND currency = $2",
    )
    .bind(account)
    .bind(currency.as_str())
    .fetch_one(e)
    .await?;
    Ok(sum)
}

/// Queues a refund request unless one is already queued or the payment is
/// refunded. Returns whether this call queued it. A request dropped earlier
/// (nothing was captured then) can be queued again.
pub async fn request_refund(tx: &mut Tx, id: PaymentId, reason: &str, now: i64) -> Result<bool, PaymentsError> {
    let res = sqlx::query(
        "UPDATE payments SET refund_requested_at = $1, refund_next_at = $1, refund_attempts = 0, \
         refund_reason = $2, updated_at = $1 \
         WHERE id = $3 AND refund_next_at IS NULL AND status <> 'refunded'",
    )
    .bind(now)
    .bind(reason)
    .bind(id.to_db())
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Payments whose requested refund is due.
pub async fn due_refunds<'c, E: Executor<'c, Database = Any>>(
    e: E,
    now: i64,
    limit: i64,
) -> Result<Vec<(PaymentId, String)>, PaymentsError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, refund_reason FROM payments WHERE refund_next_at IS NOT NULL AND refund_next_at <= $1 \
         ORDER BY refund_next_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.into_iter()
        .map(|(id, reason)| Ok((PaymentId::from_db(&id).map_err(|_| corrupt("id"))?, reason.unwrap_or_default())))
        .collect()
}

/// Takes a refund request off the queue (done, or nothing to refund).
pub async fn clear_refund_request(tx: &mut Tx, id: PaymentId) -> Result<(), PaymentsError> {
    sqlx::query("UPDATE payments SET refund_next_at = NULL WHERE id = $1").bind(id.to_db()).execute(&mut **tx).await?;
    Ok(())
}

/// Backs a failed refund attempt off: 1 s doubling, capped at 10 minutes.
pub async fn refund_retry_later(db: &entrada_storage::Db, id: PaymentId, now: i64) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments SET refund_attempts = refund_attempts + 1, \
         refund_next_at = $1 + (CASE WHEN refund_attempts >= 10 THEN 600000 ELSE 1000 * (CAST(1 AS BIGINT) << CAST(refund_attempts AS INTEGER)) END) \
         WHERE id = $2 AND refund_next_at IS NOT NULL",
    )
    .bind(now)
    .bind(id.to_db())
    .execute(&mut *db.writer().await?)
    .await?;
    Ok(())
}
