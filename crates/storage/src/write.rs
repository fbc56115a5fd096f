//! Writes that need no reads inside their transaction, combined.
//!
//! [`Db::write`] runs a [`Script`] as a transaction of its own: all of it or
//! nothing, with guards (statements that must change a row) checked before
//! anything is kept.
//!
//! On SQLite the single writer runs transactions one after another, and
//! what it waits on is round trips to the driver's worker thread, not
//! SQLite. So writes that arrive while the writer is busy are combined: a
//! task takes every waiting script, runs them in one transaction and one
//! round trip, each script inside its own savepoint, and answers each
//! caller after the commit (group commit). A guard is
//! followed by an assertion that fails when the guard changed nothing; a
//! script that fails (a guard, a constraint) stops the round trip there:
//! it is rolled back to its savepoint and told why, and the scripts after
//! it go on in the next round trip. No caller hears "written" before the
//! commit that holds its rows.
//!
//! On PostgreSQL each script is its own transaction on a pooled connection:
//! the server runs transactions side by side, and combining would only make
//! them wait for each other.

use crate::db::{Db, Held, WriteConn, Writer};
use crate::script::{Script, renumber};
use futures::StreamExt;
use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Either, Executor};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Why [`Db::write`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The guard at this statement index changed no row.
    #[error("guard {0} changed no row")]
    Guard(usize),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// For callers whose scripts have no guards, or who treat a stopped guard as
/// a storage failure.
impl From<WriteError> for sqlx::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Db(e) => e,
            WriteError::Guard(at) => sqlx::Error::Protocol(format!("write stopped by its guard at statement {at}")),
        }
    }
}

type Answer = Result<Vec<u64>, WriteError>;

/// A script waiting for the writer.
pub(crate) struct Job {
    statements: Vec<(String, AnyArguments)>,
    guards: Vec<usize>,
    reply: oneshot::Sender<Answer>,
}

impl Job {
    /// How many values the script binds.
    fn values(&self) -> usize {
        self.statements.iter().map(|(_, a)| a.values.0.len()).sum()
    }
}

/// Where scripts wait for SQLite's writer: the queue of the task that
/// combines them ([`combine`]).
#[derive(Clone)]
pub(crate) struct Waiting(mpsc::UnboundedSender<Job>);

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

/// Scripts in one combined round trip, at most: bounds the round trip's
/// length, and so the wait of the scripts that arrive during it.
const GROUP: usize = 64;

/// Bound values in one combined round trip, at most, so that large scripts
/// arriving together (an order of many tickets each) do not make one long
/// round trip that everyone behind it waits for. A larger script runs alone.
const GROUP_VALUES: usize = 16_000;

impl Waiting {
    /// Starts the task that runs waiting scripts on `writer`, in groups.
    pub(crate) fn start(writer: Arc<Mutex<Option<AnyConnection>>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(combine(rx, writer));
        Self(tx)
    }
}

/// The combining task: takes every script waiting (up to [`GROUP`]), takes
/// the writer (shared with `Db::begin` and `Db::writer`), runs them as one
/// group, and starts over. Callers wait only for their own answer, never
/// for the writer, so no queue of callers forms on the writer's lock.
async fn combine(mut rx: mpsc::UnboundedReceiver<Job>, writer: Arc<Mutex<Option<AnyConnection>>>) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut values = first.values();
        let mut jobs = vec![first];
        let guard = writer.clone().lock_owned().await;
        while jobs.len() < GROUP {
            let Ok(job) = rx.try_recv() else { break };
            if values + job.values() > GROUP_VALUES {
                carried = Some(job);
                break;
            }
            values += job.values();
            jobs.push(job);
        }
        if guard.is_none() {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::Db(sqlx::Error::PoolClosed)));
            }
            continue;
        }
        run_group(WriteConn(Held::Sqlite(guard)), jobs).await;
    }
}

/// The temporary table behind guard assertions, created on SQLite's writer
/// connection: inserting a zero fails its check and stops the round trip.
pub(crate) const GUARD_TABLE: &str =
    "CREATE TEMP TABLE IF NOT EXISTS script_guard (id INTEGER PRIMARY KEY, ok INTEGER NOT NULL CHECK (ok > 0))";
const ASSERT_GUARD: &str = "INSERT OR REPLACE INTO temp.script_guard (id, ok) VALUES (1, changes())";

impl Db {
    /// Runs `script` as a transaction of its own and commits it, unless a
    /// guard changes no row or a statement fails: then nothing of it is
    /// kept. Returns the rows each statement changed. On SQLite, scripts
    /// that wait for the writer together are committed together.
    pub async fn write(&self, script: Script) -> Result<Vec<u64>, WriteError> {
        let (statements, guards, broken) = script.into_parts();
        if let Some(e) = broken {
            return Err(e.into());
        }
        let Writer::Sqlite(_, waiting) = &self.write else {
            return self.write_alone(statements, &guards).await;
        };
        let (reply, answer) = oneshot::channel();
        waiting.0.send(Job { statements, guards, reply }).map_err(|_| WriteError::Db(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| WriteError::Db(sqlx::Error::WorkerCrashed))?
    }

    async fn write_alone(&self, statements: Vec<(String, AnyArguments)>, guards: &[usize]) -> Answer {
        let mut tx = self.begin().await?;
        let mut changed = Vec::with_capacity(statements.len());
        for (sql, args) in statements {
            changed.push(sqlx::query_with(sqlx::AssertSqlSafe(sql), args).execute(&mut *tx).await?.rows_affected());
        }
        if let Some(g) = guards.iter().find(|g| changed.get(**g) == Some(&0)) {
            tx.rollback().await?;
            return Err(WriteError::Guard(*g));
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// What a statement of a combined round trip is.
#[derive(Clone, Copy)]
enum Part {
    /// `BEGIN`, `COMMIT`, a savepoint or its release, a rollback to it.
    Frame,
    /// One of the job's statements.
    Statement,
    /// The assertion after guard statement `i` of the job.
    Assert(usize),
}

/// Runs `jobs` in one transaction, in as few round trips as their failures
/// allow, and answers each.
async fn run_group(mut conn: WriteConn, jobs: Vec<Job>) {
    let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let mut changed: Vec<Vec<u64>> = vec![Vec::new(); jobs.len()];
    let mut next = 0;
    // Each round trip: (the rollback of the script that failed last,)
    // every script from `next` on, and the commit.
    let mut opening = "BEGIN";
    loop {
        let mut text = String::new();
        let mut args = AnyArguments::default();
        let mut parts: Vec<(usize, Part)> = Vec::new();
        for frame in opening.split(';').filter(|f| !f.trim().is_empty()) {
            text.push_str(frame);
            text.push_str(";\n");
            parts.push((usize::MAX, Part::Frame));
        }
        for (k, job) in jobs.iter().enumerate().skip(next) {
            let Some(job) = job.as_ref() else { continue };
            text.push_str("SAVEPOINT script;\n");
            parts.push((k, Part::Frame));
            for (i, (sql, a)) in job.statements.iter().enumerate() {
                renumber(sql, args.values.0.len(), &mut text);
                text.push_str(";\n");
                // Cloned: a failure before this script sends it again.
                args.values.0.extend(a.values.0.iter().cloned());
                parts.push((k, Part::Statement));
                if job.guards.contains(&i) {
                    text.push_str(ASSERT_GUARD);
                    text.push_str(";\n");
                    parts.push((k, Part::Assert(i)));
                }
            }
            text.push_str("RELEASE script;\n");
            parts.push((k, Part::Frame));
        }
        text.push_str("COMMIT;\n");
        parts.push((usize::MAX, Part::Frame));

        let (done, failure) = run_text(&mut conn, text, args).await;
        for (at, rows) in done.iter().enumerate() {
            if let Some(&(k, Part::Statement)) = parts.get(at) {
                changed[k].push(*rows);
            }
        }
        let Some(e) = failure else {
            for (k, job) in jobs.into_iter().enumerate() {
                if let Some(job) = job {
                    let _ = job.reply.send(Ok(std::mem::take(&mut changed[k])));
                }
            }
            return;
        };
        match parts.get(done.len()) {
            Some(&(k, part)) if k != usize::MAX => {
                // One script failed: undo it alone, tell its caller why,
                // and carry on with the ones after it.
                let why = match part {
                    Part::Assert(i) => WriteError::Guard(i),
                    _ => WriteError::Db(e),
                };
                if let Some(job) = jobs[k].take() {
                    let _ = job.reply.send(Err(why));
                }
                next = k + 1;
                opening = "ROLLBACK TO script; RELEASE script";
            }
            _ => {
                // BEGIN or COMMIT failed: nothing of this group is kept.
                let _ = conn.execute("ROLLBACK").await;
                let message = e.to_string();
                for job in jobs.into_iter().flatten() {
                    let _ = job.reply.send(Err(WriteError::Db(sqlx::Error::Protocol(message.clone()))));
                }
                return;
            }
        }
    }
}

/// Runs a multi-statement text; returns the changes of every statement that
/// completed, and the error that stopped the rest.
async fn run_text(conn: &mut AnyConnection, text: String, args: AnyArguments) -> (Vec<u64>, Option<sqlx::Error>) {
    let mut done = Vec::new();
    // Not kept in the driver's statement cache: a group's text is rarely
    // seen twice, and the cache holds the hot paths' own statements.
    #[allow(deprecated)]
    let mut results = sqlx::query_with(sqlx::AssertSqlSafe(text), args).persistent(false).fetch_many(conn);
    while let Some(r) = results.next().await {
        match r {
            Ok(Either::Left(d)) => done.push(d.rows_affected()),
            Ok(Either::Right(_)) => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn setup() -> crate::testing::TestDb {
        let t = crate::testing::fresh().await;
        let mut s = t.db.script();
        s.push(sqlx::query("CREATE TABLE stock (id BIGINT PRIMARY KEY, used BIGINT NOT NULL, size BIGINT NOT NULL)"));
        s.push(sqlx::query("CREATE TABLE sold (k BIGINT PRIMARY KEY)"));
        s.push(sqlx::query("CREATE TABLE sale_log (k BIGINT NOT NULL)"));
        s.push(sqlx::query("INSERT INTO stock (id, used, size) VALUES (1, 0, 50)"));
        t.db.write(s).await.unwrap();
        t
    }

    fn sale(db: &Db, k: i64) -> Script {
        let mut s = db.script();
        s.push(sqlx::query("INSERT INTO sale_log (k) VALUES ($1)").bind(k));
        s.push_guard(sqlx::query("UPDATE stock SET used = used + 1 WHERE id = 1 AND used + 1 <= size"));
        s.push(sqlx::query("INSERT INTO sold (k) VALUES ($1)").bind(k));
        s
    }

    async fn count(db: &Db, sql: &'static str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.reader()).await.unwrap();
        n
    }

    /// 200 buyers race for 50 units: exactly 50 writes are kept, the others
    /// are told which guard stopped them and leave nothing behind, not even
    /// the statements before the guard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guarded_writes_racing_keep_exactly_what_fits() {
        let t = setup().await;
        let tasks: Vec<_> = (0..200)
            .map(|k| {
                let db = t.db.clone();
                tokio::spawn(async move { db.write(sale(&db, k)).await })
            })
            .collect();
        let (mut kept, mut guarded) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(changed) => {
                    assert_eq!(changed, vec![1, 1, 1]);
                    kept += 1;
                }
                Err(WriteError::Guard(1)) => guarded += 1,
                Err(e) => panic!("unexpected failure: {e}"),
            }
        }
        assert_eq!((kept, guarded), (50, 150));
        assert_eq!(count(&t.db, "SELECT used FROM stock WHERE id = 1").await, 50);
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM sold").await, 50);
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM sale_log").await, 50);
    }

    /// Large scripts arriving together all succeed: three of 12,000 values
    /// each, more than one combined round trip takes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_scripts_arriving_together_all_succeed() {
        let t = setup().await;
        let tasks: Vec<_> = (0..3_i64)
            .map(|part| {
                let db = t.db.clone();
                tokio::spawn(async move {
                    let rows: Vec<String> = (1..=12_000).map(|i| format!("(${i})")).collect();
                    let sql = format!("INSERT INTO sale_log (k) VALUES {}", rows.join(", "));
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for i in 0..12_000_i64 {
                        q = q.bind(part * 12_000 + i);
                    }
                    let mut s = db.script();
                    s.push(q);
                    db.write(s).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM sale_log").await, 36_000);
    }

    /// A script that breaks a constraint fails alone: the writes combined
    /// with it are kept, its own earlier statements are not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_script_fails_alone() {
        let t = setup().await;
        let keys: Vec<i64> = (0..30).chain([7]).collect();
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let db = t.db.clone();
                tokio::spawn(async move { db.write(sale(&db, k)).await })
            })
            .collect();
        let mut failures = Vec::new();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                failures.push(e);
            }
        }
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(matches!(&failures[0], WriteError::Db(e) if crate::is_unique_violation(e)), "{failures:?}");
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM sold").await, 30);
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM sale_log").await, 30);
        assert_eq!(count(&t.db, "SELECT used FROM stock WHERE id = 1").await, 30);
    }
}
