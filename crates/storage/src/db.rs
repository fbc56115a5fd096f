//! The database handle, chosen once from the URL (`sqlite:` or `postgres:`).
//!
//! SQLite runs in WAL mode with a single writer connection and a small pool of
//! readers. One writer, not many: SQLite serialises writers anyway, and with
//! several write connections a deferred transaction that reads then writes
//! fails with SQLITE_BUSY under load instead of queueing. PostgreSQL uses one
//! pool for both; its row locks and conditional updates do the guarding.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub type Tx = sqlx::Transaction<'static, Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
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
    write: AnyPool,
    read: AnyPool,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    pub async fn connect(cfg: &DbConfig) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        if let Some(path) = cfg.url.strip_prefix("sqlite://").or_else(|| cfg.url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or(path);
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
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(sqlite_pragmas)
                .connect_with(opts.clone())
                .await?;
            let read = AnyPoolOptions::new()
                .max_connections(cfg.max_connections.clamp(1, 16))
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(sqlite_pragmas)
                .connect_with(opts)
                .await?;
            Ok(Self { backend: Backend::Sqlite, write, read })
        } else if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(cfg.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(30))
                .connect(&cfg.url)
                .await?;
            Ok(Self { backend: Backend::Postgres, write: pool.clone(), read: pool })
        } else {
            Err(sqlx::Error::Configuration("database url must start with sqlite: or postgres://".into()))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.write).await,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.write).await,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.write.begin().await
    }

    /// The pool for reads that need no transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for single-statement writes.
    pub fn writer(&self) -> &AnyPool {
        &self.write
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
        self.write.close().await;
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
        Self::new(if conn.backend_name() == "PostgreSQL" { Backend::Postgres } else { Backend::Sqlite })
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
/// usual trade for WAL; foreign keys are off by default in SQLite.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .await?;
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
