//! SQLite without a thread hop per statement, for the issuance path. Through sqlx every SQLite
//! statement is handed to a worker thread and its answer woken back, and on two cores those
//! context switches were the largest single cost of an issuance (profile in
//! docs/benchmarks.md). Here, with rusqlite (synchronous):
//! - group commit: one thread owning one connection runs a whole batch (a transaction, a
//!   savepoint per job, one commit) on one hand-off from the async side and one back;
//! - the reads an enrollment makes (client certificate, device and groups, owner account,
//!   renewal load, template version) run inline on the calling task, on a pooled read-only
//!   connection: an indexed read under WAL takes microseconds and never waits for a writer.
//!
//! The statements are the ones sqlx runs for PostgreSQL (shared constants, `$N` bound by
//! name); everything else stays on sqlx.
use crate::audit::INSERT_AUDIT_SQL;
use crate::group::{Done, IntentJob, Job};
use crate::issuance::{
    COMPLETE_SQL, INSERT_INTENT_SQL, INSERT_REQUEST_SQL, INSERT_SUCCESSOR_SQL, REQUEST_ISSUED_SQL, RETIRE_PREVIOUS_SQL,
};
use crate::scep::INSERT_SCEP_TRANSACTION_SQL;
use crate::{duplicate, Result, StoreError};

use autoenroll_core::model::{CertState, RequestStatus};
use rusqlite::{Connection, ToSql};

type Batch = (Vec<Job>, tokio::sync::oneshot::Sender<Result<Vec<Result<Done>>>>);

/// The writer thread and the read connections of one database file.
pub(crate) struct Sqlite {
    pub(crate) writer: Writer,
    pub(crate) readers: Readers,
}

impl Sqlite {
    pub(crate) fn open(path: &str) -> Result<Sqlite> {
        Ok(Sqlite {
            writer: Writer::start(path)?,
            readers: Readers { path: path.to_string(), idle: Default::default() },
        })
    }
}

/// Statements this process ran through rusqlite (SQLite only; sqlx reports its own as tracing
/// events), and batches handed to the writer thread: figures for `bench issue`.
pub static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static WRITER_HANDOFFS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// BEGIN, SAVEPOINT, RELEASE and COMMIT run by the writer thread (not in `STATEMENTS`).
pub static CONTROL_STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn counted() {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The writer's connection: the file must exist (the pool made and migrated it), and writes
/// are durable as the pool's are (every answered write survives power loss).
fn open_writer(path: &str) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Idle read connections kept (more are opened while more readers run at once).
const READERS_KEPT: usize = 4;

/// Read-only connections, used inline by the calling task.
pub(crate) struct Readers {
    path: String,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A WAL reader waits only in rare recovery; it must not hold a runtime thread long.
        conn.busy_timeout(std::time::Duration::from_millis(100))?;
        Ok(conn)
    }

    /// Every row of `sql` with `$1..$N` bound to `params`, mapped by `row`.
    pub(crate) fn all<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let result = rows(&conn, sql, params, &mut row);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READERS_KEPT {
            idle.push(conn);
        }
        result
    }

    /// The first row, if any.
    pub(crate) fn one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.all(sql, params, row)?.into_iter().next())
    }
}

/// Binds `params[i]` to the parameter named `$i+1` (the sqlx spelling these statements share).
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[&dyn ToSql]) -> Result<()> {
    if stmt.parameter_count() != params.len() {
        let (wanted, given) = (stmt.parameter_count(), params.len());
        return Err(StoreError::Batch(format!("a statement takes {wanted} parameters, {given} given")));
    }
    for (i, p) in params.iter().enumerate() {
        let name = format!("${}", i + 1);
        let at = stmt
            .parameter_index(&name)?
            .ok_or_else(|| StoreError::Batch(format!("a statement has no parameter {name}")))?;
        stmt.raw_bind_parameter(at, p)?;
    }
    Ok(())
}

/// The writer thread's mailbox; the thread ends when the last store handle is dropped.
pub(crate) struct Writer {
    batches: std::sync::Mutex<std::sync::mpsc::Sender<Batch>>,
}

/// Name of the writer thread (benchmarks count its CPU as the server's).
pub const WRITER_THREAD: &str = "sqlite-writer";

impl Writer {
    /// Opens the database file at `path` (already migrated) for the writer thread.
    pub(crate) fn start(path: &str) -> Result<Writer> {
        let mut conn = open_writer(path)?;
        let path = path.to_string();
        let (tx, rx) = std::sync::mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || {
                for (jobs, reply) in rx {
                    let _ = reply.send(commit(&conn, &jobs));
                    // A connection still inside a transaction (its ROLLBACK failed) would hold
                    // the write lock for good: it is replaced.
                    if !conn.is_autocommit() {
                        match open_writer(&path) {
                            Ok(fresh) => conn = fresh,
                            Err(e) => tracing::error!(%e, "could not reopen the SQLite writer connection"),
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("starting the SQLite writer thread: {e}")))?;
        Ok(Writer { batches: std::sync::Mutex::new(tx) })
    }

    /// Runs `jobs` in one transaction; each job's own result, or why none committed.
    pub(crate) async fn commit(&self, jobs: Vec<Job>) -> Result<Vec<Result<Done>>> {
        WRITER_HANDOFFS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.batches.lock().unwrap_or_else(|p| p.into_inner()).send((jobs, reply));
        sent.map_err(|_| StoreError::Batch("the SQLite writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Batch("the SQLite writer thread dropped the batch".into()))?
    }
}

/// One transaction: a savepoint per job (a refused job, such as a duplicate successor claim,
/// leaves the others alone), then one commit. Nothing is committed if anything else fails.
fn commit(conn: &Connection, jobs: &[Job]) -> Result<Vec<Result<Done>>> {
    let mut results = Vec::with_capacity(jobs.len());
    let mut first_error: Option<String> = None;
    let outcome = (|| -> Result<()> {
        control(conn, "BEGIN IMMEDIATE")?;
        for job in jobs {
            control(conn, "SAVEPOINT job")?;
            match run(conn, job) {
                Ok(done) => {
                    control(conn, "RELEASE job")?;
                    results.push(Ok(done));
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                    control(conn, "ROLLBACK TO job; RELEASE job")?;
                    results.push(Err(e));
                }
            }
        }
        control(conn, "COMMIT")?;
        Ok(())
    })();
    match outcome {
        Ok(()) => Ok(results),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(StoreError::Batch(match first_error {
                Some(job) => format!("{job} (then: {e})"),
                None => e.to_string(),
            }))
        }
    }
}

/// A transaction-control statement, counted.
fn control(conn: &Connection, sql: &str) -> Result<()> {
    CONTROL_STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(conn.execute_batch(sql)?)
}

/// Every row of `sql` with `$1..$N` bound by name to `params`, mapped by `row` (counted).
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    counted();
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

/// The first row of `sql`, if any (an INSERT or UPDATE runs fully on its first step).
fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    Ok(rows(conn, sql, params, row)?.into_iter().next())
}

fn execute(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<()> {
    query(conn, sql, params, |_| Ok(())).map(|_| ())
}

fn run(conn: &Connection, job: &Job) -> Result<Done> {
    match job {
        Job::Intent(j) => intent(conn, j).map(Done::Intent),
        Job::Complete(j) => {
            let completed = query(
                conn,
                COMPLETE_SQL,
                &[&j.serial, &j.thumbprint, &j.der, &CertState::Issued.as_str(), &CertState::Signing.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )?;
            let Some((state, previous)) = completed else { return Ok(Done::Complete(false)) };
            if state != CertState::Issued.as_str() {
                return Ok(Done::Complete(false));
            }
            if let Some(e) = &j.audit {
                execute(
                    conn,
                    INSERT_AUDIT_SQL,
                    &[&e.at.0, &e.actor, &e.action, &e.subject, &e.outcome.as_str(), &e.detail],
                )?;
            }
            if let Some(previous) = previous {
                execute(
                    conn,
                    RETIRE_PREVIOUS_SQL,
                    &[&previous, &CertState::Renewed.as_str(), &CertState::Issued.as_str()],
                )?;
            }
            execute(conn, REQUEST_ISSUED_SQL, &[&j.request_id, &RequestStatus::Issued.as_str(), &j.now.0])?;
            Ok(Done::Complete(true))
        }
    }
}

/// The request (already naming its serial, signing) and the certificate's intent.
fn intent(conn: &Connection, j: &IntentJob) -> Result<i64> {
    let request_id = query(
        conn,
        INSERT_REQUEST_SQL,
        &[
            &j.device_id,
            &j.requester,
            &j.template,
            &j.kind.as_str(),
            &RequestStatus::Signing.as_str(),
            &j.csr_der,
            &j.now.0,
            &j.previous_serial,
            &j.serial,
        ],
        |r| r.get::<_, i64>(0),
    )?
    .ok_or_else(|| StoreError::Batch("INSERT ... RETURNING id returned no row".into()))?;
    if let Some(previous) = &j.intent_previous_serial {
        // One certificate has one successor: this primary key is the claim (across replicas).
        execute(conn, INSERT_SUCCESSOR_SQL, &[previous, &j.serial])
            .map_err(duplicate(|| format!("a successor of {previous}")))?;
    }
    execute(
        conn,
        INSERT_INTENT_SQL,
        &[
            &j.serial,
            &request_id,
            &j.intent_device_id,
            &j.intent_template,
            &i64::from(j.template_major),
            &i64::from(j.template_minor),
            &j.subject,
            &j.not_before.0,
            &j.not_after.0,
            &CertState::Signing.as_str(),
            &j.now.0,
            &j.intent_previous_serial,
            &j.renew_after.0,
        ],
    )?;
    if let Some((transaction, key)) = &j.scep {
        execute(conn, INSERT_SCEP_TRANSACTION_SQL, &[transaction, key, &request_id, &j.now.0])
            .map_err(duplicate(|| format!("SCEP transaction {transaction}")))?;
    }
    Ok(request_id)
}
