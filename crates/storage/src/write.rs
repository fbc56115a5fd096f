//! Writes that need no reads inside their transaction, combined.
//!
//! [`Db::write`] runs a [`Script`] as a transaction of its own: all of it or
//! nothing, with guards (statements that must change a row) checked before
//! anything is kept.
//!
//! On SQLite the single writer runs transactions one after another. So
//! writes that arrive while the writer is busy are combined: the script
//! thread ([`crate::lite`]) takes every waiting script and runs them in
//! one transaction on a connection of its own, with its statements
//! prepared once and cached. A script that fails (a guard that changed no
//! row, a constraint) writes nothing and is told why; the others go on.
//! Every caller is answered after the commit (group commit): no caller
//! hears "written" before the commit that holds its rows. A caller holding
//! an open `Tx` must not wait for `Db::write` (the thread would wait for
//! the writer lock the caller holds).
//!
//! On PostgreSQL each script is its own transaction on a pooled connection:
//! the server runs transactions side by side, and combining would only make
//! them wait for each other.

use crate::db::{Db, Writer};
use crate::script::{Checks, Script, Then};
use sqlx::any::AnyArguments;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

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

pub(crate) type Answer = Result<Vec<u64>, WriteError>;

/// A script waiting for the writer.
pub(crate) struct Job {
    pub(crate) statements: Vec<(String, AnyArguments)>,
    pub(crate) checks: Checks,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// What the script thread hears.
pub(crate) enum Msg {
    Job(Job),
    Close,
}

impl Job {
    /// How many values the script binds.
    pub(crate) fn values(&self) -> usize {
        self.statements.iter().map(|(_, a)| a.values.0.len()).sum()
    }
}

/// Where scripts wait for SQLite's writer: the queue of the script thread
/// that combines and runs them ([`crate::lite`]).
#[derive(Clone)]
pub(crate) struct Waiting {
    pub(crate) queue: std_mpsc::Sender<Msg>,
    /// Set by [`Db::close`]: a script that finds it set, or whose answer
    /// never comes after it was set, hears `PoolClosed`.
    pub(crate) closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

impl Waiting {
    /// Stops the script thread; scripts sent after this fail with
    /// `PoolClosed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.queue.send(Msg::Close);
    }

    fn closed(&self) -> WriteError {
        WriteError::Db(if self.closed.load(Ordering::SeqCst) {
            sqlx::Error::PoolClosed
        } else {
            sqlx::Error::WorkerCrashed
        })
    }
}

impl Db {
    /// Runs `script` as a transaction of its own and commits it, unless a
    /// guard changes no row or a statement fails: then nothing of it is
    /// kept. Returns the rows each statement changed. On SQLite, scripts
    /// that wait for the writer together are committed together.
    pub async fn write(&self, script: Script) -> Result<Vec<u64>, WriteError> {
        let (statements, checks, broken) = script.into_parts();
        if let Some(e) = broken {
            return Err(e.into());
        }
        let Writer::Sqlite(_, waiting) = &self.write else {
            return self.write_alone(statements, &checks).await;
        };
        let (reply, answer) = oneshot::channel();
        if waiting.closed.load(Ordering::SeqCst) {
            return Err(WriteError::Db(sqlx::Error::PoolClosed));
        }
        waiting.queue.send(Msg::Job(Job { statements, checks, reply })).map_err(|_| waiting.closed())?;
        answer.await.map_err(|_| waiting.closed())?
    }

    async fn write_alone(&self, statements: Vec<(String, AnyArguments)>, checks: &Checks) -> Answer {
        let mut tx = self.begin().await?;
        let n = statements.len();
        let mut changed = Vec::with_capacity(n);
        let mut statements = statements.into_iter().enumerate();
        while let Some((i, (sql, args))) = statements.next() {
            let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args).execute(&mut *tx).await?.rows_affected();
            changed.push(rows);
            match checks.after(i, rows) {
                Then::Next => {}
                Then::Stop(at) => {
                    tx.rollback().await?;
                    return Err(WriteError::Guard(at));
                }
                Then::Skip(to) => {
                    changed.resize(to.min(n), 0);
                    for _ in i + 1..to {
                        statements.next();
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(changed)
    }
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

    /// The same sale with its guard first: a script stopped there has
    /// changed nothing.
    fn sale_guard_first(db: &Db, k: i64) -> Script {
        let mut s = db.script();
        s.push_guard(sqlx::query("UPDATE stock SET used = used + 1 WHERE id = 1 AND used + 1 <= size"));
        s.push(sqlx::query("INSERT INTO sale_log (k) VALUES ($1)").bind(k));
        s.push(sqlx::query("INSERT INTO sold (k) VALUES ($1)").bind(k));
        s
    }

    /// 200 buyers race for 50 units: exactly 50 writes are kept, the others
    /// are told which guard stopped them and leave nothing behind, not even
    /// the statements before the guard. Half the buyers' scripts have the
    /// guard first, half after a write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guarded_writes_racing_keep_exactly_what_fits() {
        let t = setup().await;
        let tasks: Vec<_> = (0..200)
            .map(|k| {
                let db = t.db.clone();
                tokio::spawn(async move {
                    if k % 2 == 0 {
                        db.write(sale(&db, k)).await
                    } else {
                        match db.write(sale_guard_first(&db, k)).await {
                            Err(WriteError::Guard(0)) => Err(WriteError::Guard(1)),
                            other => other,
                        }
                    }
                })
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

    /// Values of every kind land where their placeholders say, whether the
    /// text names them out of order (`$2` before `$1`) or takes them by
    /// position (`Params`, bare `?` on SQLite).
    #[tokio::test]
    async fn values_of_every_kind_bind_where_their_placeholders_say() {
        let t = crate::testing::fresh().await;
        let mut s = t.db.script();
        s.push(sqlx::query(
            "CREATE TABLE kinds (k BIGINT PRIMARY KEY, flag BOOLEAN, small BIGINT, mid BIGINT, real DOUBLE PRECISION, \
             label TEXT, note TEXT)",
        ));
        t.db.write(s).await.unwrap();

        let mut s = t.db.script();
        s.push(
            sqlx::query(
                "INSERT INTO kinds (label, k, flag, small, mid, real, note) VALUES ($6, $1, $2, $3, $4, $5, $7)",
            )
            .bind(1_i64)
            .bind(true)
            .bind(7_i16)
            .bind(70_000_i32)
            .bind(2.5_f64)
            .bind("first")
            .bind(None::<String>),
        );
        let mut p = crate::Params::new(t.db.backend());
        let sql = format!("INSERT INTO kinds (k, flag, small, mid, real, label, note) VALUES ({})", p.list(7));
        s.push(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(2_i64)
                .bind(false)
                .bind(-3_i16)
                .bind(-9_i32)
                .bind(-0.25_f64)
                .bind("second")
                .bind("a note"),
        );
        assert_eq!(t.db.write(s).await.unwrap(), vec![1, 1]);

        type Row = (i64, i64, i64, i64, f64, String, Option<String>);
        let sql = "SELECT k, CASE WHEN flag THEN 1 ELSE 0 END, small, mid, real, label, note FROM kinds ORDER BY k";
        let rows: Vec<Row> = sqlx::query_as(sql).fetch_all(t.db.reader()).await.unwrap();
        assert_eq!(
            rows,
            vec![
                (1, 1, 7, 70_000, 2.5, "first".to_owned(), None),
                (2, 0, -3, -9, -0.25, "second".to_owned(), Some("a note".to_owned())),
            ]
        );
    }

    /// After the database is closed a write fails at once; it neither hangs
    /// nor writes.
    #[tokio::test]
    async fn a_write_after_close_fails() {
        let t = setup().await;
        t.db.close().await;
        let err = t.db.write(sale(&t.db, 1)).await.unwrap_err();
        assert!(matches!(err, WriteError::Db(sqlx::Error::PoolClosed)), "{err:?}");
    }
}
