//! Reads that run where the caller needs them: on the database's readers
//! ([`crate::Db::read`]) or on an open transaction's connection.
//!
//! A store function that reads takes `&mut impl Fetch`, so the same code
//! serves a request (`&mut db.read()`) and a write transaction that must
//! see its own changes (`&mut tx`). On SQLite, `Db::read` runs the
//! statement on the caller's thread (`lite::Readers`) instead of handing
//! it to sqlx's worker thread; on PostgreSQL it is the pool.
//!
//! Rows come back as sqlx's `AnyRow`, typed the way the backend's sqlx
//! driver types them, so `FromRow` tuples and `Row::try_get` read them as
//! they read the driver's rows.

use crate::db::{Backend, Db};
use futures::future::BoxFuture;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Execute, FromRow};

/// A statement and its bound values, as `sqlx::query(…).bind(…)` builds it.
pub type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

/// Something that runs a query and returns its rows.
pub trait Fetch: Send {
    /// The backend the query runs on (for [`crate::Params`]).
    fn backend(&self) -> Backend;

    fn rows<'a>(&'a mut self, query: Query<'a>) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>>;
}

/// The database's readers; see [`Db::read`].
pub struct Read<'a> {
    pub(crate) db: &'a Db,
}

impl Fetch for Read<'_> {
    fn backend(&self) -> Backend {
        self.db.backend()
    }

    fn rows<'a>(&'a mut self, mut query: Query<'a>) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>> {
        match self.db.readers() {
            Some(readers) => Box::pin(async move {
                let args = query.take_arguments().map_err(sqlx::Error::Encode)?.unwrap_or_default();
                readers.fetch(query.sql().as_str(), &args.values.0)
            }),
            None => Box::pin(query.fetch_all(self.db.reader())),
        }
    }
}

impl Fetch for AnyConnection {
    fn backend(&self) -> Backend {
        Backend::of(self)
    }

    fn rows<'a>(&'a mut self, query: Query<'a>) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>> {
        Box::pin(query.fetch_all(self))
    }
}

/// Runs a query on a [`Fetch`]: `sqlx::query(…).bind(…).optional(&mut db.read())`.
pub trait Run<'q> {
    /// Every row, as sqlx's `AnyRow`.
    fn rows<'a, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>>
    where
        F: Fetch + ?Sized,
        'q: 'a;

    /// Every row, each read as `T`.
    fn all<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a;

    /// The first row, if any, read as `T`.
    fn optional<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Option<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a;

    /// The first row, read as `T`; `RowNotFound` when there is none.
    fn one<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<T, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a;
}

impl<'q> Run<'q> for Query<'q> {
    fn rows<'a, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>>
    where
        F: Fetch + ?Sized,
        'q: 'a,
    {
        on.rows(self)
    }

    fn all<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a,
    {
        let rows = on.rows(self);
        Box::pin(async move { rows.await?.iter().map(T::from_row).collect() })
    }

    fn optional<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<Option<T>, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a,
    {
        let rows = on.rows(self);
        Box::pin(async move { rows.await?.first().map(T::from_row).transpose() })
    }

    fn one<'a, T, F>(self, on: &'a mut F) -> BoxFuture<'a, Result<T, sqlx::Error>>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + 'a,
        F: Fetch + ?Sized,
        'q: 'a,
    {
        let rows = on.rows(self);
        Box::pin(async move { rows.await?.first().map(T::from_row).transpose()?.ok_or(sqlx::Error::RowNotFound) })
    }
}

/// Implements [`Fetch`] for a type that dereferences to a connection.
macro_rules! fetch_through_deref {
    ($($t:ty),*) => {$(
        impl Fetch for $t {
            fn backend(&self) -> Backend {
                (**self).backend()
            }

            fn rows<'a>(&'a mut self, query: Query<'a>) -> BoxFuture<'a, Result<Vec<AnyRow>, sqlx::Error>> {
                (**self).rows(query)
            }
        }
    )*};
}

fetch_through_deref!(crate::db::Tx, crate::db::WriteConn, sqlx::pool::PoolConnection<Any>);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Run;
    use crate::db::Db;
    use sqlx::Row;

    async fn setup() -> crate::testing::TestDb {
        let t = crate::testing::fresh().await;
        let mut w = t.db.writer().await.unwrap();
        sqlx::query(
            "CREATE TABLE read_probe (k BIGINT PRIMARY KEY, t TEXT NOT NULL, r DOUBLE PRECISION, \
             n TEXT, f BOOLEAN NOT NULL)",
        )
        .execute(&mut *w)
        .await
        .unwrap();
        for k in 1..=3_i64 {
            sqlx::query("INSERT INTO read_probe (k, t, r, n, f) VALUES ($1, $2, $3, NULL, $4)")
                .bind(k)
                .bind(format!("ticket ✓ {k}"))
                .bind(k as f64 / 4.0)
                .bind(k == 2)
                .execute(&mut *w)
                .await
                .unwrap();
        }
        drop(w);
        t
    }

    type Probe = (i64, String, Option<f64>, Option<String>);

    async fn through_pool(db: &Db, sql: &'static str, k: i64) -> Vec<Probe> {
        sqlx::query_as(sql).bind(k).fetch_all(db.reader()).await.unwrap()
    }

    /// `Db::read` answers what sqlx's own pool answers, value for value
    /// (integer, text with non-ASCII, real, null), for one row, many rows
    /// and none.
    #[tokio::test]
    async fn reads_answer_what_the_driver_answers() {
        let t = setup().await;
        let many = "SELECT k, t, r, n FROM read_probe WHERE k >= $1 ORDER BY k";
        let got: Vec<Probe> = sqlx::query(many).bind(1_i64).all(&mut t.db.read()).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got, through_pool(&t.db, many, 1).await);
        assert_eq!(got[1], (2, "ticket ✓ 2".to_owned(), Some(0.5), None));

        let one: Option<Probe> = sqlx::query("SELECT k, t, r, n FROM read_probe WHERE k = $1")
            .bind(3_i64)
            .optional(&mut t.db.read())
            .await
            .unwrap();
        assert_eq!(one, Some((3, "ticket ✓ 3".to_owned(), Some(0.75), None)));
        let none: Option<Probe> = sqlx::query("SELECT k, t, r, n FROM read_probe WHERE k = $1")
            .bind(9_i64)
            .optional(&mut t.db.read())
            .await
            .unwrap();
        assert_eq!(none, None);
        let missing =
            sqlx::query("SELECT k FROM read_probe WHERE k = $1").bind(9_i64).one::<(i64,), _>(&mut t.db.read()).await;
        assert!(matches!(missing, Err(sqlx::Error::RowNotFound)), "{missing:?}");

        // Rows read by column name, as `Row::try_get` on the driver's rows.
        let rows = sqlx::query("SELECT t AS label, k FROM read_probe WHERE k = $1")
            .bind(2_i64)
            .rows(&mut t.db.read())
            .await
            .unwrap();
        assert_eq!(rows[0].try_get::<String, _>("label").unwrap(), "ticket ✓ 2");
        assert_eq!(rows[0].try_get::<i64, _>("k").unwrap(), 2);
    }

    /// A read sees every write committed before it started, including a
    /// script's and a transaction's; a transaction reading through `Fetch`
    /// sees its own uncommitted rows while others do not.
    #[tokio::test]
    async fn reads_see_committed_writes_and_a_transaction_its_own() {
        let t = setup().await;
        let count = "SELECT COUNT(*) FROM read_probe";
        let mut script = t.db.script();
        script.push(sqlx::query("INSERT INTO read_probe (k, t, f) VALUES (10, 'script', FALSE)"));
        t.db.write(script).await.unwrap();
        let (n,): (i64,) = sqlx::query(count).one(&mut t.db.read()).await.unwrap();
        assert_eq!(n, 4);

        let mut tx = t.db.begin().await.unwrap();
        sqlx::query("INSERT INTO read_probe (k, t, f) VALUES (11, 'tx', FALSE)").execute(&mut *tx).await.unwrap();
        let (inside,): (i64,) = sqlx::query(count).one(&mut tx).await.unwrap();
        let (outside,): (i64,) = sqlx::query(count).one(&mut t.db.read()).await.unwrap();
        assert_eq!((inside, outside), (5, 4));
        tx.commit().await.unwrap();
        let (n,): (i64,) = sqlx::query(count).one(&mut t.db.read()).await.unwrap();
        assert_eq!(n, 5);
    }

    /// A bad statement is an error for its caller, not a broken reader: the
    /// next read on the same readers succeeds. A read after close fails.
    #[tokio::test]
    async fn a_failed_read_leaves_the_readers_usable_and_close_ends_them() {
        let t = setup().await;
        let bad = sqlx::query("SELECT nope FROM read_probe").rows(&mut t.db.read()).await;
        assert!(matches!(bad, Err(sqlx::Error::Database(_))), "{:?}", bad.err());
        let (n,): (i64,) = sqlx::query("SELECT COUNT(*) FROM read_probe").one(&mut t.db.read()).await.unwrap();
        assert_eq!(n, 3);
        t.db.close().await;
        let after = sqlx::query("SELECT COUNT(*) FROM read_probe").rows(&mut t.db.read()).await;
        assert!(after.is_err(), "a read after close must fail");
    }
}
