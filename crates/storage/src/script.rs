//! Several writes in one round trip.
//!
//! On SQLite every statement is a round trip to the driver's worker thread
//! (a channel send, a thread wake-up, a reply), and the single writer waits
//! through each of them. A use case that writes a handful of rows (the row,
//! its children, the audit entry, the outbox event and its queue rows) spends
//! most of its time on those hand-offs, not in SQLite. A [`Script`] collects
//! such statements and sends them together: one round trip on SQLite, where
//! the driver runs a multi-statement text and reports each statement's
//! changes; one statement at a time on PostgreSQL, whose wire protocol
//! prepares one statement per message.
//!
//! Statements keep their own `$1, $2, …` placeholders; the script renumbers
//! them. Only statements that return no rows belong in a script (no
//! `RETURNING`, no `SELECT`).

use crate::db::Backend;
use futures::TryStreamExt;
use sqlx::any::AnyArguments;
use sqlx::{Any, AnyConnection, Either, Execute};

/// Statements to run together, in order, inside the caller's transaction.
pub struct Script {
    backend: Backend,
    statements: Vec<(String, AnyArguments)>,
    /// Statements that must change a row for the script to be kept ([`crate::Db::write`]).
    guards: Vec<usize>,
    /// Parts that are skipped when their first statement changes no row:
    /// (first, last) statement indexes ([`Script::push_when`]).
    parts: Vec<(usize, usize)>,
    /// The first error met while taking a statement's arguments; reported by `run`.
    broken: Option<sqlx::Error>,
}

/// A script taken apart: its statements, its guards and parts, and an error met while building it.
pub(crate) type Parts = (Vec<(String, AnyArguments)>, Checks, Option<sqlx::Error>);

/// What a script's guards and parts make of the rows a statement changed.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    pub(crate) guards: Vec<usize>,
    pub(crate) parts: Vec<(usize, usize)>,
}

/// Where a script goes after a statement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// On to the next statement.
    Next,
    /// The guard at this index changed no row: the script is abandoned.
    Stop(usize),
    /// A part's first statement changed no row: on at this index, with the
    /// part's other statements not run.
    Skip(usize),
}

impl Checks {
    pub(crate) fn after(&self, i: usize, changed: u64) -> Then {
        if changed > 0 {
            return Then::Next;
        }
        if self.guards.contains(&i) {
            return Then::Stop(i);
        }
        match self.parts.iter().find(|(first, _)| *first == i) {
            Some((_, last)) => Then::Skip(last + 1),
            None => Then::Next,
        }
    }
}

impl Script {
    pub fn new(backend: Backend) -> Self {
        Self { backend, statements: Vec::new(), guards: Vec::new(), parts: Vec::new(), broken: None }
    }

    /// For a script run on `conn` (a transaction or a write connection).
    pub fn on(conn: &AnyConnection) -> Self {
        Self::new(Backend::of(conn))
    }

    /// Adds a statement; returns its index in [`Script::run`]'s answer.
    pub fn push<'q>(&mut self, mut query: sqlx::query::Query<'q, Any, AnyArguments>) -> usize {
        let args = match query.take_arguments() {
            Ok(args) => args.unwrap_or_default(),
            Err(e) => {
                self.broken.get_or_insert(sqlx::Error::Encode(e));
                AnyArguments::default()
            }
        };
        self.statements.push((query.sql().as_str().to_owned(), args));
        self.statements.len() - 1
    }

    /// Adds a guard: a statement that must change at least one row. Under
    /// [`crate::Db::write`] a guard that changes none abandons the whole
    /// script, which then writes nothing and names the guard.
    pub fn push_guard<'q>(&mut self, query: sqlx::query::Query<'q, Any, AnyArguments>) -> usize {
        let at = self.push(query);
        self.guards.push(at);
        at
    }

    /// Starts a part of the script that is written only when `query`
    /// changes a row: under [`crate::Db::write`], when it changes none, it
    /// and the `then` statements pushed right after it are skipped (each
    /// reports 0 rows changed) and the script goes on. A plan of many
    /// independent changes (the scans of an upload) keeps every change
    /// whose condition still holds, and the caller decides again only the
    /// ones whose part was skipped. [`Script::run`] refuses a script with parts.
    pub fn push_when<'q>(&mut self, query: sqlx::query::Query<'q, Any, AnyArguments>, then: usize) -> usize {
        let at = self.push(query);
        self.parts.push((at, at + then));
        at
    }

    /// Makes statement `at` (an index [`Script::push`] returned) a guard.
    pub fn guard(&mut self, at: usize) {
        if !self.guards.contains(&at) {
            self.guards.push(at);
        }
    }

    /// The indexes of the guard statements.
    pub fn guards(&self) -> &[usize] {
        &self.guards
    }

    pub(crate) fn into_parts(self) -> Parts {
        let mut broken = self.broken;
        if self.parts.iter().any(|(_, last)| *last >= self.statements.len()) {
            broken.get_or_insert(sqlx::Error::Protocol("a part of the script ends after its last statement".into()));
        }
        (self.statements, Checks { guards: self.guards, parts: self.parts }, broken)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn len(&self) -> usize {
        self.statements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every statement in order and returns the rows each one changed.
    /// Stops at the first failing statement; the caller's transaction then
    /// holds the earlier ones' effects and must be rolled back.
    pub async fn run(self, conn: &mut AnyConnection) -> Result<Vec<u64>, sqlx::Error> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if !self.parts.is_empty() {
            return Err(sqlx::Error::Protocol("a script with conditional parts runs only through Db::write".into()));
        }
        match self.backend {
            Backend::Postgres => {
                let mut changed = Vec::with_capacity(self.statements.len());
                for (sql, args) in self.statements {
                    let done = sqlx::query_with(sqlx::AssertSqlSafe(sql), args).execute(&mut *conn).await?;
                    changed.push(done.rows_affected());
                }
                Ok(changed)
            }
            Backend::Sqlite => {
                let n = self.statements.len();
                let mut text = String::new();
                let mut all = AnyArguments::default();
                for (sql, args) in self.statements {
                    renumber(&sql, all.values.0.len(), &mut text);
                    text.push_str(";\n");
                    all.values.0.extend(args.values.0);
                }

                // The driver runs a text of several statements as one
                // prepared "virtual statement", binding `$n` against the
                // whole argument list, and yields one result per statement.
                // sqlx marks this deprecated in favour of `raw_sql`, which
                // takes no arguments; the version is pinned and
                // `tests::a_script_runs_in_order_and_reports_each_statement` fails if it changes.
                #[allow(deprecated)]
                let results: Vec<_> =
                    sqlx::query_with(sqlx::AssertSqlSafe(text), all).fetch_many(&mut *conn).try_collect().await?;
                let changed: Vec<u64> = results
                    .into_iter()
                    .filter_map(|r| match r {
                        Either::Left(done) => Some(done.rows_affected()),
                        Either::Right(_) => None,
                    })
                    .collect();
                if changed.len() != n {
                    return Err(sqlx::Error::Protocol(format!(
                        "a script of {n} statements reported {} results",
                        changed.len()
                    )));
                }
                Ok(changed)
            }
        }
    }
}

/// Appends `sql` to `out` with every `$k` placeholder shifted by `offset`.
/// Placeholders inside quoted literals and identifiers are left alone.
pub(crate) fn renumber(sql: &str, offset: usize, out: &mut String) {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let k: usize = sql[start..end].parse().unwrap_or(0);
                out.push('$');
                out.push_str(&(k + offset).to_string());
                i = end;
                continue;
            }
            None => {}
        }
        // Copy one character (whole, so multi-byte text stays intact).
        let len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + len]);
        i += len;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_shift_outside_literals_only() {
        let mut out = String::new();
        renumber("UPDATE t SET a = $2, b = '$1 café' WHERE id = $1 AND c = $10", 3, &mut out);
        assert_eq!(out, "UPDATE t SET a = $5, b = '$1 café' WHERE id = $4 AND c = $13");
    }

    /// The statements run in order, see each other's effects, bind their
    /// own values (repeated and out-of-order placeholders included) and
    /// report their own changes; a failing statement fails the script.
    #[tokio::test]
    async fn a_script_runs_in_order_and_reports_each_statement() {
        let t = crate::testing::fresh().await;
        let mut tx = t.db.begin().await.unwrap();
        sqlx::query("CREATE TABLE script_probe (k BIGINT PRIMARY KEY, v TEXT NOT NULL, n BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut s = Script::on(&tx);
        for k in 0..3_i64 {
            s.push(
                sqlx::query("INSERT INTO script_probe (k, v, n) VALUES ($1, $2, $1 * 10)")
                    .bind(k)
                    .bind(format!("v{k}")),
            );
        }
        s.push(sqlx::query("UPDATE script_probe SET n = n + $2 WHERE k >= $1").bind(1_i64).bind(5_i64));
        s.push(sqlx::query("UPDATE script_probe SET v = $1 WHERE k = $2").bind("never").bind(99_i64));
        s.push(sqlx::query("DELETE FROM script_probe WHERE v = $1").bind("v0"));
        assert_eq!(s.len(), 6);
        assert_eq!(s.run(&mut tx).await.unwrap(), vec![1, 1, 1, 2, 0, 1]);
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT k, v, n FROM script_probe ORDER BY k").fetch_all(&mut *tx).await.unwrap();
        assert_eq!(rows, vec![(1, "v1".into(), 15), (2, "v2".into(), 25)]);

        let mut s = Script::on(&tx);
        s.push(sqlx::query("UPDATE script_probe SET n = 0 WHERE k = $1").bind(1_i64));
        s.push(sqlx::query("INSERT INTO script_probe (k, v, n) VALUES ($1, $2, 0)").bind(2_i64).bind("dup"));
        s.push(sqlx::query("UPDATE script_probe SET n = 0 WHERE k = $1").bind(2_i64));
        let err = s.run(&mut tx).await.unwrap_err();
        assert!(crate::is_unique_violation(&err), "{err}");
        tx.rollback().await.unwrap();
    }

    /// A script written with `Db::write` keeps all of it or, when a
    /// statement fails or a guard changes nothing, none of it; a `Tx`
    /// dropped without commit is rolled back before the next write; the
    /// writer is free and outside any transaction afterwards.
    #[tokio::test]
    async fn written_scripts_commit_all_or_nothing() {
        let t = crate::testing::fresh().await;
        let db = &t.db;
        sqlx::query("CREATE TABLE frame_probe (k BIGINT PRIMARY KEY)")
            .execute(&mut *db.writer().await.unwrap())
            .await
            .unwrap();
        let count = || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM frame_probe").fetch_one(db.reader()).await.unwrap();
            n
        };
        let insert = |k: i64| sqlx::query("INSERT INTO frame_probe (k) VALUES ($1)").bind(k);

        let mut s = db.script();
        s.push(insert(1));
        s.push(insert(2));
        assert_eq!(db.write(s).await.unwrap(), vec![1, 1]);
        assert_eq!(count().await, 2);

        let mut s = db.script();
        s.push(insert(3));
        s.push(insert(1));
        assert!(db.write(s).await.is_err(), "a duplicate key fails the script");
        assert_eq!(count().await, 2, "nothing of the failed script is kept");

        let mut s = db.script();
        s.push(insert(4));
        s.push_guard(sqlx::query("DELETE FROM frame_probe WHERE k = $1").bind(99_i64));
        assert!(matches!(db.write(s).await, Err(crate::WriteError::Guard(1))));
        assert_eq!(count().await, 2, "nothing of a script stopped by its guard is kept");

        let mut tx = db.begin().await.unwrap();
        insert(5).execute(&mut *tx).await.unwrap();
        drop(tx);
        let mut s = db.script();
        s.push(insert(6));
        db.write(s).await.unwrap();
        let keys: Vec<(i64,)> =
            sqlx::query_as("SELECT k FROM frame_probe ORDER BY k").fetch_all(db.reader()).await.unwrap();
        assert_eq!(keys, vec![(1,), (2,), (6,)], "a dropped transaction is rolled back before the next one starts");
    }

    /// A part whose first statement changes no row is skipped and the rest
    /// of the script is written; a part ending past the script, or a script
    /// with parts run inside a transaction, is refused.
    #[tokio::test]
    async fn a_part_is_skipped_when_its_first_statement_changes_nothing() {
        let t = crate::testing::fresh().await;
        let db = &t.db;
        sqlx::query("CREATE TABLE part_probe (k BIGINT PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut *db.writer().await.unwrap())
            .await
            .unwrap();
        let claim = |k: i64| {
            sqlx::query("INSERT INTO part_probe (k, v) VALUES ($1, 'claimed') ON CONFLICT (k) DO NOTHING").bind(k)
        };
        let mark = |k: i64, v: &'static str| sqlx::query("UPDATE part_probe SET v = $2 WHERE k = $1").bind(k).bind(v);
        let mut s = db.script();
        s.push(claim(1));
        db.write(s).await.unwrap();

        let mut s = db.script();
        assert_eq!(s.push_when(claim(1), 2), 0);
        s.push(mark(1, "taken twice"));
        s.push(mark(1, "taken thrice"));
        s.push_when(claim(2), 1);
        s.push(mark(2, "second"));
        s.push_when(claim(1), 0);
        s.push(mark(3, "none"));
        s.push(claim(4));
        assert_eq!(db.write(s).await.unwrap(), vec![0, 0, 0, 1, 1, 0, 0, 1]);
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT k, v FROM part_probe ORDER BY k").fetch_all(db.reader()).await.unwrap();
        assert_eq!(rows, vec![(1, "claimed".into()), (2, "second".into()), (4, "claimed".into())]);

        let mut s = db.script();
        s.push_when(claim(5), 1);
        assert!(db.write(s).await.is_err(), "a part past the end");
        let mut tx = db.begin().await.unwrap();
        let mut s = Script::on(&tx);
        s.push_when(claim(6), 0);
        assert!(s.run(&mut tx).await.is_err(), "parts need Db::write");
        tx.rollback().await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM part_probe").fetch_one(db.reader()).await.unwrap();
        assert_eq!(n, 3);
    }
}
