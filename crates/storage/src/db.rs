//! The database handle, chosen once from the URL (`sqlite:` or `postgres:`).
//!
//! SQLite runs in WAL mode with one writer at a time and a small pool of
//! readers. One writer, not many: SQLite serialises writers anyway, and with
//! several write connections a deferred transaction that reads then writes
//! fails with SQLITE_BUSY under load instead of queueing. Two connections
//! write, never together: sqlx's writer for transactions, and the script
//! thread's for [`Db::write`] (`lite.rs`), each only while holding the
//! writer lock. PostgreSQL uses one
//! pool for both; its row locks and conditional updates do the guarding.
//!
//! The SQLite writer is one connection behind a fair mutex, not a pool of
//! one: a pool pings every connection it takes back, so each transaction
//! would pay one more round trip to SQLite's worker thread (and a task
//! hand-off) while every other writer waits.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::script::Script;
use crate::write::Waiting;

/// How long a caller waits for the writer before giving up.
const WRITER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend `conn` talks to.
    pub fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name() == "PostgreSQL" { Backend::Postgres } else { Backend::Sqlite }
    }
}

#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    /// Connections for PostgreSQL, or readers for SQLite.
    pub max_connections: u32,
}

#[derive(Clone, Debug)]
pub struct Db {
    backend: Backend,
    pub(crate) write: Writer,
    read: AnyPool,
    /// SQLite's readers for [`Db::read`], used on the caller's thread.
    readers: Option<Arc<crate::lite::Readers>>,
    /// SQLite's WAL checkpoints, beside the writer rather than in its commits.
    checkpoints: Option<Arc<crate::lite::Checkpoints>>,
}

#[derive(Clone, Debug)]
pub(crate) enum Writer {
    /// SQLite's single writer (`None` once closed), and the scripts waiting
    /// for it to run them together ([`Db::write`]).
    Sqlite(Arc<Mutex<Option<AnyConnection>>>, Waiting),
    Pool(AnyPool),
}

/// A connection that may write: SQLite's writer (held exclusively until
/// dropped) or a PostgreSQL pool connection. Statements on it autocommit.
#[derive(Debug)]
pub struct WriteConn(pub(crate) Held);

#[derive(Debug)]
pub(crate) enum Held {
    Sqlite(OwnedMutexGuard<Option<AnyConnection>>),
    Pool(PoolConnection<Any>),
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            // `Db::writer` hands out a guard only while the connection is there.
            Held::Sqlite(g) => g.as_ref().unwrap_or_else(|| unreachable!("writer taken while closed")),
            Held::Pool(c) => c,
        }
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Held::Sqlite(g) => g.as_mut().unwrap_or_else(|| unreachable!("writer taken while closed")),
            Held::Pool(c) => c,
        }
    }
}

/// A write transaction. Dereferences to its connection (`&mut **tx` is an
/// executor); ends with [`Tx::commit`] or [`Tx::rollback`], and a `Tx`
/// dropped without either is rolled back before the connection serves
/// anyone else.
#[derive(Debug)]
pub struct Tx {
    conn: Option<WriteConn>,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.finish("COMMIT").await
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.finish("ROLLBACK").await
    }

    async fn finish(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.take().ok_or(sqlx::Error::WorkerCrashed)?;
        match conn.execute(sql).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A failed COMMIT leaves the transaction open on SQLite.
                if sql == "COMMIT" {
                    let _ = conn.execute("ROLLBACK").await;
                }
                Err(e)
            }
        }
    }
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_deref().unwrap_or_else(|| unreachable!("a finished transaction is consumed"))
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_deref_mut().unwrap_or_else(|| unreachable!("a finished transaction is consumed"))
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // The connection stays held (the SQLite writer locked) until the
            // rollback has run, so nobody else can see the open transaction.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = conn.execute("ROLLBACK").await {
                        tracing::warn!(error = %e, "rolling back an abandoned transaction failed");
                    }
                });
            }
        }
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    pub async fn connect(cfg: &DbConfig) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        if let Some(path) = cfg.url.strip_prefix("sqlite://").or_else(|| cfg.url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or(path);
            // Two connections write to the file (sqlx's writer and the script
            // thread's), and each would get its own in-memory database.
            if file.is_empty() || file == ":memory:" || cfg.url.contains("mode=memory") {
                return Err(sqlx::Error::Configuration(
                    "an in-memory SQLite database is not supported: give a database file".into(),
                ));
            }
            if let Some(dir) = Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            let url = if cfg.url.contains("mode=") {
                cfg.url.clone()
            } else if cfg.url.contains('?') {
                format!("{}&mode=rwc", cfg.url)
            } else {
                format!("{}?mode=rwc", cfg.url)
            };
            let opts = AnyConnectOptions::from_str(&url)?;
            let mut writer = opts.connect().await?;
            writer.execute(SQLITE_PRAGMAS).await?;
            let writer = Arc::new(Mutex::new(Some(writer)));
            let write = Writer::Sqlite(writer.clone(), crate::lite::spawn(Path::new(file), writer)?);
            let read = AnyPoolOptions::new()
                .max_connections(cfg.max_connections.clamp(1, 16))
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(sqlite_pragmas)
                .connect_with(opts)
                .await?;
            let readers = Some(Arc::new(crate::lite::Readers::new(Path::new(file))));
            let checkpoints = Some(Arc::new(crate::lite::Checkpoints::spawn(Path::new(file))?));
            Ok(Self { backend: Backend::Sqlite, write, read, readers, checkpoints })
        } else if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(cfg.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(30))
                .connect(&cfg.url)
                .await?;
            Ok(Self {
                backend: Backend::Postgres,
                write: Writer::Pool(pool.clone()),
                read: pool,
                readers: None,
                checkpoints: None,
            })
        } else {
            Err(sqlx::Error::Configuration("database url must start with sqlite: or postgres://".into()))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut conn = self.writer().await?;
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&mut *conn).await,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&mut *conn).await,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut conn = self.writer().await?;
        conn.execute("BEGIN").await?;
        Ok(Tx { conn: Some(conn) })
    }

    /// A script for this database's backend.
    pub fn script(&self) -> Script {
        Script::new(self.backend)
    }

    /// The connection for writes outside a transaction (each statement
    /// autocommits). On SQLite it is the one writer: hold it briefly.
    pub async fn writer(&self) -> Result<WriteConn, sqlx::Error> {
        match &self.write {
            Writer::Sqlite(m, _) => {
                let guard = tokio::time::timeout(WRITER_TIMEOUT, m.clone().lock_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?;
                if guard.is_none() {
                    return Err(sqlx::Error::PoolClosed);
                }
                Ok(WriteConn(Held::Sqlite(guard)))
            }
            Writer::Pool(p) => Ok(WriteConn(Held::Pool(p.acquire().await?))),
        }
    }

    /// The pool for reads that need no transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Short reads outside a transaction (`Run::optional`, `all`, `one` or
    /// `rows` on `&mut db.read()`). On SQLite they run on the calling
    /// thread with no hand-off to a driver thread, so they are for indexed
    /// lookups of a few rows; a long scan belongs on [`Db::reader`].
    pub fn read(&self) -> crate::read::Read<'_> {
        crate::read::Read { db: self }
    }

    pub(crate) fn readers(&self) -> Option<&crate::lite::Readers> {
        self.readers.as_deref()
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, where the single writer
    /// already serialises every write transaction.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.read).await.map(|_| ())
    }

    pub async fn close(&self) {
        match &self.write {
            Writer::Sqlite(m, waiting) => {
                waiting.close();
                if let Some(conn) = m.lock().await.take() {
                    let _ = sqlx::Connection::close(conn).await;
                }
            }
            Writer::Pool(p) => p.close().await,
        }
        if let Some(r) = &self.readers {
            r.close();
        }
        if let Some(c) = &self.checkpoints {
            c.close();
        }
        self.read.close().await;
    }
}

/// Placeholders for a statement assembled at run time (multi-row inserts, `IN` lists), one per bound
/// value, in the order the values are bound: `$1, $2, …` on PostgreSQL, `?` on SQLite.
///
/// SQLite finds a numbered parameter's value by searching the statement's list of parameter names, so
/// binding n numbered parameters costs O(n²): a few hundred cost more than running the statement.
/// Anonymous `?` parameters are bound by position. A statement built with `Params` must take every
/// value through it (no hand-written `$1` beside them), and bind the values in the order the
/// placeholders appear in the text.
#[derive(Debug)]
pub struct Params {
    numbered: bool,
    next: usize,
}

impl Params {
    pub fn new(backend: Backend) -> Self {
        Self { numbered: backend == Backend::Postgres, next: 1 }
    }

    /// For a statement run on `conn` (a transaction or a pooled connection).
    pub fn on(conn: &sqlx::AnyConnection) -> Self {
        Self::new(Backend::of(conn))
    }

    /// The next placeholder.
    pub fn one(&mut self) -> String {
        if self.numbered {
            self.next += 1;
            format!("${}", self.next - 1)
        } else {
            "?".to_owned()
        }
    }

    /// `n` placeholders separated by commas, for an `IN (…)` list or one row of `VALUES (…)`.
    pub fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.one()).collect::<Vec<_>>().join(", ")
    }
}

/// WAL lets readers run beside the writer; `synchronous = NORMAL` is durable
/// across process crashes (not across power loss before a checkpoint), the
/// usual trade for WAL; foreign keys are off by default in SQLite. The WAL is
/// checkpointed beside the writer (`lite::Checkpoints`); a writing
/// connection checkpoints in its own commit only past 20,000 pages (80 MB),
/// as a bound on the WAL should that thread fall behind.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 20000;";

fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(SQLITE_PRAGMAS).await?;
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// The two backends' migrations are twins: the PostgreSQL file is the
    /// SQLite file with only the auto-increment key spelled differently. A
    /// change made to one backend alone fails here before it fails in
    /// production.
    #[test]
    fn migrations_are_twins() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut names: Vec<_> = std::fs::read_dir(root.join("sqlite"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut pg: Vec<_> = std::fs::read_dir(root.join("postgres"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pg.sort();
        assert_eq!(names, pg, "the same migration files on both backends");
        for n in names {
            let lite = std::fs::read_to_string(root.join("sqlite").join(&n)).unwrap();
            let post = std::fs::read_to_string(root.join("postgres").join(&n)).unwrap();
            let expected = lite.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY");
            assert_eq!(expected, post, "{n}: the PostgreSQL twin differs beyond the key type");
        }
    }

    /// An in-memory SQLite URL is refused with a clear error instead of
    /// splitting the writes over two separate in-memory databases.
    #[tokio::test]
    async fn an_in_memory_sqlite_url_is_refused() {
        for url in ["sqlite::memory:", "sqlite://:memory:", "sqlite://x.db?mode=memory"] {
            let err = super::Db::connect(&super::DbConfig { url: url.into(), max_connections: 2 }).await.unwrap_err();
            assert!(
                matches!(&err, sqlx::Error::Configuration(m) if m.to_string().contains("in-memory")),
                "{url}: {err}"
            );
        }
    }

    /// Many values through `Params` land where they were meant to, on the backend under test: a
    /// 1,000-row insert (2,000 values) and a 700-value `IN` list.
    #[tokio::test]
    async fn params_bind_many_values_in_order() {
        use super::Params;
        let t = crate::testing::fresh().await;
        let mut tx = t.db.begin().await.unwrap();
        sqlx::query("CREATE TABLE params_probe (k BIGINT NOT NULL, v TEXT NOT NULL)").execute(&mut *tx).await.unwrap();
        let mut p = Params::on(&tx);
        let rows: Vec<String> = (0..1_000).map(|_| format!("({})", p.list(2))).collect();
        let sql = format!("INSERT INTO params_probe (k, v) VALUES {}", rows.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in 0..1_000_i64 {
            q = q.bind(k).bind(format!("v{}", k * 3));
        }
        assert_eq!(q.execute(&mut *tx).await.unwrap().rows_affected(), 1_000);

        let wanted: Vec<i64> = (0..1_000).filter(|k| k % 10 < 7).collect();
        let mut p = Params::on(&tx);
        let sql = format!("SELECT k, v FROM params_probe WHERE k IN ({}) ORDER BY k", p.list(wanted.len()));
        let mut q = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql));
        for k in &wanted {
            q = q.bind(*k);
        }
        let got = q.fetch_all(&mut *tx).await.unwrap();
        assert_eq!(got.len(), 700);
        assert!(got.iter().zip(&wanted).all(|((k, v), w)| k == w && *v == format!("v{}", w * 3)), "values in order");
        tx.rollback().await.unwrap();
    }
}
