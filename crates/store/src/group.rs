//! Group commit: the durable writes of concurrent issuances share one transaction and one
//! commit (on SQLite one fsync; the batch runs on the writer thread, `sqlite_sync`; on
//! PostgreSQL through sqlx, a round trip per statement). A writer queues its job and starts a
//! flush in its own task; a flush (on SQLite under the write lock) runs every job queued so far
//! in one transaction (a savepoint each, so one job's refusal, such as a duplicate successor
//! claim, leaves the others alone), commits once, and answers each job; a flush that finds the
//! queue empty (an earlier one took its job) does nothing. The writer only awaits its answer:
//! cancelling it cancels no one's batch, its own job included. No answer is sent before the
//! commit that holds it, so an answered issuance survives a crash as before.
use crate::audit::AuditEvent;
use crate::issuance::{complete_in, request_with_intent_in, CertificateIntent, NewRequest};
use crate::{Result, Store, StoreError};
use autoenroll_core::model::RequestKind;
use autoenroll_core::UnixTime;
use sqlx::Acquire;

/// `insert_request_with_intent`, owned.
pub(crate) struct IntentJob {
    pub(crate) device_id: i64,
    pub(crate) requester: String,
    pub(crate) template: String,
    pub(crate) kind: RequestKind,
    pub(crate) csr_der: Vec<u8>,
    pub(crate) previous_serial: Option<String>,
    /// The intent's own: `insert_request_with_intent` takes request and intent apart, and
    /// a job keeps what each said.
    pub(crate) intent_device_id: i64,
    pub(crate) intent_template: String,
    pub(crate) intent_previous_serial: Option<String>,
    pub(crate) serial: String,
    pub(crate) template_major: u32,
    pub(crate) template_minor: u32,
    pub(crate) subject: String,
    pub(crate) not_before: UnixTime,
    pub(crate) not_after: UnixTime,
    pub(crate) renew_after: UnixTime,
    pub(crate) scep: Option<(String, String)>,
    pub(crate) now: UnixTime,
}

impl IntentJob {
    pub(crate) fn of(
        r: &NewRequest<'_>,
        c: &CertificateIntent<'_>,
        scep: Option<(&str, &str)>,
        now: UnixTime,
    ) -> IntentJob {
        IntentJob {
            device_id: r.device_id,
            requester: r.requester.to_string(),
            template: r.template.to_string(),
            kind: r.kind,
            csr_der: r.csr_der.to_vec(),
            previous_serial: r.previous_serial.map(str::to_string),
            intent_device_id: c.device_id,
            intent_template: c.template.to_string(),
            intent_previous_serial: c.previous_serial.map(str::to_string),
            serial: c.serial.to_string(),
            template_major: c.template_major,
            template_minor: c.template_minor,
            subject: c.subject.to_string(),
            not_before: c.not_before,
            not_after: c.not_after,
            renew_after: c.renew_after,
            scep: scep.map(|(t, k)| (t.to_string(), k.to_string())),
            now,
        }
    }
}

/// `complete_certificate`, owned.
pub(crate) struct CompleteJob {
    pub serial: String,
    pub request_id: i64,
    pub thumbprint: String,
    pub der: Vec<u8>,
    pub now: UnixTime,
    pub audit: Option<AuditEvent>,
}

pub(crate) enum Job {
    Intent(IntentJob),
    Complete(CompleteJob),
}

pub(crate) enum Done {
    Intent(i64),
    Complete(bool),
}

type Reply = tokio::sync::oneshot::Sender<Result<Done>>;

/// Jobs waiting for the next holder of the write lock.
#[derive(Default)]
pub(crate) struct Queue(std::sync::Mutex<Vec<(Job, Reply)>>);

async fn run<'c>(tx: &mut sqlx::Transaction<'c, sqlx::Any>, job: &Job) -> Result<Done> {
    match job {
        Job::Intent(j) => {
            let r = NewRequest {
                device_id: j.device_id,
                requester: &j.requester,
                template: &j.template,
                kind: j.kind,
                status: autoenroll_core::model::RequestStatus::Signing,
                csr_der: &j.csr_der,
                previous_serial: j.previous_serial.as_deref(),
            };
            let c = CertificateIntent {
                serial: &j.serial,
                request_id: 0,
                device_id: j.intent_device_id,
                template: &j.intent_template,
                template_major: j.template_major,
                template_minor: j.template_minor,
                subject: &j.subject,
                not_before: j.not_before,
                not_after: j.not_after,
                previous_serial: j.intent_previous_serial.as_deref(),
                renew_after: j.renew_after,
            };
            let scep = j.scep.as_ref().map(|(t, k)| (t.as_str(), k.as_str()));
            request_with_intent_in(tx, &r, &c, scep, j.now).await.map(Done::Intent)
        }
        Job::Complete(j) => complete_in(tx, &j.serial, j.request_id, &j.thumbprint, &j.der, j.now, j.audit.as_ref())
            .await
            .map(Done::Complete),
    }
}

impl Store {
    /// `insert_request_with_intent` in the next group commit: the request id once committed.
    pub(crate) async fn grouped_intent(&self, job: IntentJob) -> Result<i64> {
        match self.grouped(Job::Intent(job)).await? {
            Done::Intent(id) => Ok(id),
            Done::Complete(_) => Err(StoreError::Batch("an intent answered as a completion".into())),
        }
    }

    /// `complete_certificate` in the next group commit: whether it went live, once committed.
    pub(crate) async fn grouped_complete(&self, job: CompleteJob) -> Result<bool> {
        match self.grouped(Job::Complete(job)).await? {
            Done::Complete(live) => Ok(live),
            Done::Intent(_) => Err(StoreError::Batch("a completion answered as an intent".into())),
        }
    }

    /// Runs `job` in the next group commit and returns its result once committed.
    async fn grouped(&self, job: Job) -> Result<Done> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.0.lock().unwrap_or_else(|p| p.into_inner()).push((job, reply));
        let store = self.clone();
        tokio::spawn(async move { store.flush().await });
        answer.await.map_err(|_| StoreError::Batch("the write batch holding this write was dropped".into()))?
    }

    /// Commits every queued job, if any: on SQLite under the write lock (one writer at a time;
    /// jobs queued meanwhile make the next batch); on PostgreSQL batches commit concurrently,
    /// each with what was queued when it started.
    async fn flush(&self) {
        let _writer = match self.backend {
            crate::Backend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            crate::Backend::Postgres => None,
        };
        let batch = std::mem::take(&mut *self.queue.0.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            self.commit_batch(batch).await;
        }
    }

    async fn commit_batch(&self, batch: Vec<(Job, Reply)>) {
        LARGEST_BATCH.fetch_max(batch.len(), std::sync::atomic::Ordering::Relaxed);
        let Some(sqlite) = &self.sqlite else { return self.commit_batch_sqlx(batch).await };
        let (jobs, replies): (Vec<Job>, Vec<Reply>) = batch.into_iter().unzip();
        match sqlite.writer.commit(jobs).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                // `e` says why nothing committed (a `Batch` error already).
                let cause = match e {
                    StoreError::Batch(cause) => cause,
                    other => other.to_string(),
                };
                fail(replies, &cause);
            }
        }
    }

    async fn commit_batch_sqlx(&self, batch: Vec<(Job, Reply)>) {
        let mut results = Vec::with_capacity(batch.len());
        let mut first_error: Option<String> = None;
        let mut conn = match self.pool.acquire().await {
            Ok(c) => c,
            Err(e) => return fail(batch.into_iter().map(|(_, r)| r), &e.to_string()),
        };
        let committed: Result<()> = async {
            let mut tx = conn.begin().await?;
            for (job, _) in &batch {
                let mut savepoint = tx.begin().await?;
                match run(&mut savepoint, job).await {
                    Ok(done) => {
                        savepoint.commit().await?;
                        results.push(Ok(done));
                    }
                    Err(e) => {
                        first_error.get_or_insert_with(|| e.to_string());
                        savepoint.rollback().await?;
                        results.push(Err(e));
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        match committed {
            Ok(()) => {
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                // Nothing of the batch is committed; the connection is not reused.
                conn.close_on_drop();
                let cause = match first_error {
                    Some(job) => format!("{job} (then: {e})"),
                    None => e.to_string(),
                };
                fail(batch.into_iter().map(|(_, r)| r), &cause);
            }
        }
    }
}

/// The most jobs one commit has carried in this process (a figure for tests and benchmarks).
pub static LARGEST_BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Every job of a batch that did not commit hears why.
fn fail(replies: impl IntoIterator<Item = Reply>, cause: &str) {
    for reply in replies {
        let _ = reply.send(Err(StoreError::Batch(cause.to_string())));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Writes queued while the lock is held go out in one commit, a refused one alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(&dir.path().join("t.db"))).await.unwrap();
        let dev = store.touch_device("d", UnixTime(1)).await.unwrap();
        let held = store.write_lock.clone().lock_owned().await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                // The last two claim the same serial: one of them is refused.
                let serial = format!("s{}", i.min(8));
                let r = NewRequest {
                    device_id: dev.id,
                    requester: "t",
                    template: "A",
                    kind: RequestKind::Enroll,
                    status: autoenroll_core::model::RequestStatus::Signing,
                    csr_der: b"csr",
                    previous_serial: None,
                };
                let c = CertificateIntent {
                    serial: &serial,
                    request_id: 0,
                    device_id: dev.id,
                    template: "A",
                    template_major: 1,
                    template_minor: 0,
                    subject: "CN=d",
                    not_before: UnixTime(1),
                    not_after: UnixTime(1000),
                    previous_serial: None,
                    renew_after: UnixTime(900),
                };
                store.insert_request_with_intent(&r, &c, None, UnixTime(1)).await
            }));
        }
        while store.queue.0.lock().unwrap().len() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(held);
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 9, "nine serials, one refused twin");
        assert!(LARGEST_BATCH.load(std::sync::atomic::Ordering::Relaxed) >= 10, "one commit carried all ten");
    }
}
