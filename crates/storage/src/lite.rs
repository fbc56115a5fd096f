//! The thread that runs [`crate::Db::write`]'s combined scripts on SQLite.
//!
//! sqlx's SQLite driver runs each statement on its worker thread and sends
//! each result back through a channel: a thread hand-off per statement, and
//! the writer lock is held through every one of them. Combined scripts run
//! instead on a connection of their own, on a thread of their own, with
//! their statements prepared once and cached: one hand-off per group, and
//! guards checked between statements without leaving SQLite's thread.
//!
//! The thread writes only while it holds the writer lock that sqlx's writer
//! connection is behind too, so the database still has one writer at a
//! time (the architecture invariant of this crate). A caller that holds the
//! lock (an open `Tx`) must not wait for `Db::write`: the thread would wait
//! for the lock.

use crate::script::Then;
use crate::write::{Answer, Job, Msg, Waiting, WriteError};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx_core::any::{AnyColumn, AnyTypeInfo, AnyTypeInfoKind, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use tokio::sync::Mutex;

/// Statements kept prepared: every distinct script statement of the hot
/// paths, with room to spare.
const CACHED_STATEMENTS: usize = 512;

/// Scripts in one group, at most: bounds the group's length, and so the
/// wait of the scripts that arrive during it.
const GROUP: usize = 64;

/// Bound values in one group, at most, so that large scripts arriving
/// together (an order of many tickets each) do not make one long group
/// that everyone behind it waits for. A larger script runs alone.
const GROUP_VALUES: usize = 16_000;

/// Sets up a connection of ours: the pragmas every connection shares, a
/// statement cache, and the query planner's stability guarantee. Without
/// it SQLite plans some statements for their bound values (a `LIMIT $n`,
/// a range with statistics) and then prepares them again on every run
/// with new values, defeating the cache; every statement of ours is
/// written to be planned once.
fn prepare(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(crate::db::SQLITE_PRAGMAS)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(())
}

/// Opens the script connection on the database file at `path` and starts
/// its thread, which runs scripts while holding `writer`'s lock (shared
/// with `Db::begin` and `Db::writer`). The thread ends on `Msg::Close` or
/// when every sender is gone.
pub(crate) fn spawn(path: &Path, writer: Arc<Mutex<Option<AnyConnection>>>) -> Result<Waiting, sqlx::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    prepare(&conn).map_err(db_error)?;
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::Builder::new()
        .name("sqlite-scripts".into())
        .spawn(move || combine(&conn, &rx, &writer))
        .map_err(sqlx::Error::Io)?;
    Ok(Waiting { queue: tx, closed: Default::default() })
}

/// Takes every script waiting (up to [`GROUP`]), takes the writer lock,
/// runs them as one group, and starts over. Callers wait only for their
/// own answer, never for the lock, so no queue of callers forms on it; and
/// no async task is scheduled while the lock is held.
fn combine(conn: &Connection, rx: &mpsc::Receiver<Msg>, writer: &Mutex<Option<AnyConnection>>) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Close) | Err(_) => return,
            },
        };
        let mut values = first.values();
        let mut jobs = vec![first];
        let guard = writer.blocking_lock();
        let mut closing = false;
        while jobs.len() < GROUP {
            let Ok(msg) = rx.try_recv() else { break };
            let Msg::Job(job) = msg else {
                closing = true;
                break;
            };
            if values + job.values() > GROUP_VALUES {
                carried = Some(job);
                break;
            }
            values += job.values();
            jobs.push(job);
        }
        if guard.is_none() {
            closing = true;
        } else {
            run_group(conn, std::mem::take(&mut jobs));
        }
        drop(guard);
        if closing {
            for job in jobs.into_iter().chain(carried.take()) {
                let _ = job.reply.send(Err(WriteError::Db(sqlx::Error::PoolClosed)));
            }
            return;
        }
    }
}

/// Runs `jobs` in one transaction and answers each caller after the
/// commit. A script that fails (a guard, a constraint) writes nothing and
/// is told why; the others go on.
///
/// Scripts run without savepoints at first: a savepoint journals again
/// every page the script touches that the group touched before it, which
/// costs more than the script. A failing script that changed no row before
/// its failure (a guard first in its script, the usual case) needs no undo.
/// One that did is undone with the whole transaction: the group starts
/// over without it, each script now in its own savepoint, so a group
/// starts over at most once.
fn run_group(conn: &Connection, jobs: Vec<Job>) {
    let mut answers: Vec<Option<Answer>> = jobs.iter().map(|_| None).collect();
    let mut careful = false;
    let lost = 'attempt: loop {
        if let Err(e) = frame(conn, "BEGIN IMMEDIATE") {
            break 'attempt Some(e);
        }
        for (job, answer) in jobs.iter().zip(answers.iter_mut()) {
            if matches!(answer, Some(Err(_))) {
                continue;
            }
            match run_job(conn, job, careful) {
                Ok(Outcome::Done(changed)) => *answer = Some(Ok(changed)),
                Ok(Outcome::Failed { why, dirty: false }) => *answer = Some(Err(why)),
                Ok(Outcome::Failed { why, dirty: true }) => {
                    *answer = Some(Err(why));
                    if let Err(e) = frame(conn, "ROLLBACK") {
                        break 'attempt Some(e);
                    }
                    for a in answers.iter_mut() {
                        if matches!(a, Some(Ok(_))) {
                            *a = None;
                        }
                    }
                    careful = true;
                    continue 'attempt;
                }
                Err(e) => break 'attempt Some(e),
            }
        }
        match frame(conn, "COMMIT") {
            Ok(()) => break 'attempt None,
            Err(e) => break 'attempt Some(e),
        }
    };
    if let Some(e) = lost {
        // Nothing of the group is kept: every caller not already told why
        // its own script failed hears that the group failed.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let message = e.to_string();
        for (job, answer) in jobs.into_iter().zip(answers) {
            let _ = job.reply.send(match answer {
                Some(Err(why)) => Err(why),
                _ => Err(group_failed(&message)),
            });
        }
        return;
    }
    for (job, answer) in jobs.into_iter().zip(answers) {
        let _ = job.reply.send(answer.unwrap_or_else(|| Err(group_failed("script not run"))));
    }
}

/// What became of one script.
enum Outcome {
    Done(Vec<u64>),
    /// It wrote nothing of its own; `dirty` when rows it changed before
    /// failing are still in the transaction (only without a savepoint).
    Failed {
        why: WriteError,
        dirty: bool,
    },
}

/// One script, inside its own savepoint when `careful`. `Err` means the
/// transaction itself is lost (SQLite rolled it back, or the savepoint
/// could not be undone), so the whole group fails.
fn run_job(conn: &Connection, job: &Job, careful: bool) -> Result<Outcome, rusqlite::Error> {
    if careful {
        frame(conn, "SAVEPOINT script")?;
    }
    let n = job.statements.len();
    let mut changed = Vec::with_capacity(n);
    let mut failure = None;
    let mut i = 0;
    while let Some((sql, args)) = job.statements.get(i) {
        match execute(conn, sql, &args.values.0) {
            Ok(rows) => {
                changed.push(rows);
                match job.checks.after(i, rows) {
                    Then::Next => i += 1,
                    Then::Stop(at) => {
                        failure = Some(WriteError::Guard(at));
                        break;
                    }
                    Then::Skip(to) => {
                        changed.resize(to.min(n), 0);
                        i = to;
                    }
                }
            }
            Err(e) => {
                failure = Some(WriteError::Db(db_error(e)));
                break;
            }
        }
    }
    let Some(why) = failure else {
        if careful {
            frame(conn, "RELEASE script")?;
        }
        return Ok(Outcome::Done(changed));
    };
    if conn.is_autocommit() {
        // SQLite ended the transaction on this error (a full disk, an I/O
        // error): the scripts before this one are gone too.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some(format!("transaction rolled back: {why}")),
        ));
    }
    if careful {
        frame(conn, "ROLLBACK TO script")?;
        frame(conn, "RELEASE script")?;
        return Ok(Outcome::Failed { why, dirty: false });
    }
    // A failed statement undoes its own changes; the ones before it stay.
    Ok(Outcome::Failed { why, dirty: changed.iter().any(|n| *n > 0) })
}

fn frame(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.raw_execute().map(|_| ())
}

/// Runs one statement that returns no rows; returns the rows it changed.
fn execute(conn: &Connection, sql: &str, values: &[AnyValueKind]) -> Result<u64, rusqlite::Error> {
    let mut st = conn.prepare_cached(sql)?;
    bind(&mut st, values)?;
    st.raw_execute().map(|n| n as u64)
}

/// Binds `values` to `st`'s parameters, found the way sqlx's SQLite driver
/// finds them: `$n` (or `?n`) names the n-th value, and a bare `?` takes
/// the next one.
fn bind(st: &mut rusqlite::Statement<'_>, values: &[AnyValueKind]) -> Result<(), rusqlite::Error> {
    let mut next = 0;
    for p in 1..=st.parameter_count() {
        let n = match st.parameter_name(p) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
            None => {
                next += 1;
                next
            }
        };
        let value =
            values.get(n.wrapping_sub(1)).ok_or_else(|| rusqlite::Error::InvalidParameterCount(n, values.len()))?;
        st.raw_bind_parameter(p, sql_value(value))?;
    }
    Ok(())
}

/// A value as sqlx's SQLite driver would bind it.
fn sql_value(v: &AnyValueKind) -> ToSqlOutput<'_> {
    match v {
        AnyValueKind::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
        AnyValueKind::SmallInt(i) => ToSqlOutput::Owned(Value::Integer(i64::from(*i))),
        AnyValueKind::Integer(i) => ToSqlOutput::Owned(Value::Integer(i64::from(*i))),
        AnyValueKind::BigInt(i) => ToSqlOutput::Owned(Value::Integer(*i)),
        AnyValueKind::Real(r) => ToSqlOutput::Owned(Value::Real(f64::from(*r))),
        AnyValueKind::Double(d) => ToSqlOutput::Owned(Value::Real(*d)),
        AnyValueKind::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        AnyValueKind::TextSlice(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        AnyValueKind::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        _ => ToSqlOutput::Owned(Value::Null),
    }
}

/// Reader connections for [`crate::Db::read`], used on the caller's own
/// thread.
///
/// sqlx's driver runs every read on the connection's worker thread and
/// sends each row back through a channel: a thread hand-off and a wake-up
/// of the waiting task per query, which cost more than SQLite's own work
/// for the point reads of the hot paths (an event, a hold, a payment). A
/// read here takes an idle connection, runs its statement (prepared once,
/// then cached) and puts the connection back; with WAL it never waits for
/// the writer. It blocks its thread for as long as SQLite works, so it is
/// for short reads: an indexed lookup, a few rows.
pub(crate) struct Readers {
    path: PathBuf,
    idle: std::sync::Mutex<Option<Vec<Reader>>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("path", &self.path).finish_non_exhaustive()
    }
}

struct Reader {
    conn: Connection,
    /// Each statement's column names, as rows of that statement share them.
    columns: HashMap<String, Arc<Columns>>,
}

struct Columns {
    by_name: Arc<sqlx_core::HashMap<UStr, usize>>,
    list: Vec<AnyColumn>,
}

/// Idle reader connections kept, at most: the threads that read at once
/// (the runtime's workers, a blocking task or two).
const IDLE_READERS: usize = 8;

impl Readers {
    pub(crate) fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), idle: std::sync::Mutex::new(Some(Vec::new())) }
    }

    /// Runs `sql` with `values` and returns its rows as sqlx's SQLite
    /// driver would have (`AnyRow`, typed by value: integer, real, text,
    /// blob or null), so that `FromRow` decodes them the same way.
    pub(crate) fn fetch(&self, sql: &str, values: &[AnyValueKind]) -> Result<Vec<AnyRow>, sqlx::Error> {
        let idle = match self.idle.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            None => return Err(sqlx::Error::PoolClosed),
            Some(idle) => idle.pop(),
        };
        let mut reader = match idle {
            Some(reader) => reader,
            None => self.open().map_err(db_error)?,
        };
        let rows = reader.fetch(sql, values);
        if let Some(idle) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && idle.len() < IDLE_READERS
        {
            idle.push(reader);
        }
        rows
    }

    fn open(&self) -> Result<Reader, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        prepare(&conn)?;
        conn.execute_batch("PRAGMA query_only = ON")?;
        Ok(Reader { conn, columns: HashMap::new() })
    }

    /// Closes the idle connections; later reads fail with `PoolClosed`.
    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Reader {
    fn fetch(&mut self, sql: &str, values: &[AnyValueKind]) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_error)?;
        bind(&mut st, values).map_err(db_error)?;
        let columns = match self.columns.get(sql) {
            Some(c) => c.clone(),
            None => {
                let names: Vec<UStr> = st.column_names().into_iter().map(UStr::new).collect();
                let mut by_name = sqlx_core::HashMap::with_capacity_and_hasher(names.len(), Default::default());
                for (i, n) in names.iter().enumerate() {
                    by_name.insert(n.clone(), i);
                }
                let list = names
                    .into_iter()
                    .enumerate()
                    .map(|(ordinal, name)| AnyColumn {
                        ordinal,
                        name,
                        type_info: AnyTypeInfo { kind: AnyTypeInfoKind::Null },
                    })
                    .collect();
                let c = Arc::new(Columns { by_name: Arc::new(by_name), list });
                // Statements built at run time (`IN` lists of any length)
                // are many; the names are kept for as many as are prepared.
                if self.columns.len() >= CACHED_STATEMENTS {
                    self.columns.clear();
                }
                self.columns.insert(sql.to_owned(), c.clone());
                c
            }
        };
        let n = columns.list.len();
        let mut out = Vec::new();
        let mut rows = st.raw_query();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                let kind = match row.get_ref(i).map_err(db_error)? {
                    ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
                    ValueRef::Integer(v) => AnyValueKind::BigInt(v),
                    ValueRef::Real(v) => AnyValueKind::Double(v),
                    ValueRef::Text(t) => AnyValueKind::Text(Arc::new(
                        String::from_utf8(t.to_vec()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    )),
                    ValueRef::Blob(b) => AnyValueKind::Blob(Arc::new(b.to_vec())),
                };
                values.push(AnyValue { kind });
            }
            out.push(AnyRow { column_names: columns.by_name.clone(), columns: columns.list.clone(), values });
        }
        Ok(out)
    }
}

/// Moves the WAL's committed pages into the database file on a thread and
/// connection of its own, every [`CHECKPOINT_EVERY`].
///
/// Left to SQLite, the commit that grows the WAL past its threshold copies
/// the pages itself, holding the writer lock for milliseconds while every
/// other writer (a scan waiting for "ok") waits: the latency tail. A
/// passive checkpoint here copies them beside the writer instead, never
/// waiting for it. The writing connections keep a far higher threshold
/// (`SQLITE_PRAGMAS`) only as a bound, should this thread fall behind.
pub(crate) struct Checkpoints {
    stop: std::sync::Mutex<Option<mpsc::Sender<()>>>,
}

/// How often the WAL is checkpointed. Under a steady writer the WAL is
/// rarely restarted (the writer restarts it only when it begins while every
/// frame is already copied), so it grows until a commit crosses the
/// writing connections' bound and checkpoints inside the commit, with the
/// writer lock held, whatever the last run here left to copy. Every 20 ms
/// leaves little (every 100 ms left about 3,000 frames, 8 to 11 ms of a
/// commit that every scan waiting for "ok" waited through) and lets the
/// writer find the WAL fully copied, and restart it, more often.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

impl Checkpoints {
    /// Starts the thread; it ends on [`Checkpoints::close`] or when this is dropped.
    pub(crate) fn spawn(path: &Path) -> Result<Self, sqlx::Error> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(db_error)?;
        prepare(&conn).map_err(db_error)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoints".into())
            .spawn(move || {
                // Nothing is ever sent: the sender's drop is the signal to stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
                    }
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Self { stop: std::sync::Mutex::new(Some(stop)) })
    }

    pub(crate) fn close(&self) {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").finish_non_exhaustive()
    }
}

fn group_failed(message: &str) -> WriteError {
    WriteError::Db(sqlx::Error::Protocol(format!("combined write rolled back: {message}")))
}

/// A SQLite error in sqlx's shape, so that callers' checks (a unique
/// violation becomes a 409) read it as they read the driver's.
fn db_error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => sqlx::Error::Database(Box::new(LiteError {
            extended: code.extended_code,
            message: message.unwrap_or_else(|| code.to_string()),
        })),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

#[derive(Debug)]
struct LiteError {
    extended: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.extended, self.message)
    }
}

impl std::error::Error for LiteError {}

impl sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.extended.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.extended {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The build's SQLite is the one `.cargo/config.toml` asks for: a page
    /// cache per connection, no allocation statistics, and connections that
    /// plan each statement once.
    #[test]
    fn sqlite_is_built_and_set_up_for_many_connections() {
        let conn = Connection::open_in_memory().unwrap();
        prepare(&conn).unwrap();
        let mut st = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG).unwrap());
    }
}
