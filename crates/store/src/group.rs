//! Group commit for SQLite: the durable writes of concurrent issuances share one transaction and
//! one fsync. A writer queues its job, then waits for the write lock; whoever gets the lock runs
//! every job queued so far in one transaction (a savepoint each, so one job's refusal, such as a
//! duplicate successor claim, leaves the others alone), commits once, and answers each job. A
//! writer whose job an earlier holder ran finds its answer waiting and leaves at once. No answer
//! is sent before the commit that holds it, so an answered issuance survives a crash as before.
use crate::audit::AuditEvent;
use crate::issuance::{complete_in, request_with_intent_in, CertificateIntent, NewRequest};
use crate::{Result, Store, StoreError};
use autoenroll_core::model::RequestKind;
use autoenroll_core::UnixTime;
use sqlx::Acquire;

/// `insert_request_with_intent`, owned.
pub(crate) struct IntentJob {
    device_id: i64,
    requester: String,
    template: String,
    kind: RequestKind,
    csr_der: Vec<u8>,
    previous_serial: Option<String>,
    serial: String,
    template_major: u32,
    template_minor: u32,
    subject: String,
    not_before: UnixTime,
    not_after: UnixTime,
    renew_after: UnixTime,
    scep: Option<(String, String)>,
    now: UnixTime,
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
                device_id: j.device_id,
                template: &j.template,
                template_major: j.template_major,
                template_minor: j.template_minor,
                subject: &j.subject,
                not_before: j.not_before,
                not_after: j.not_after,
                previous_serial: j.previous_serial.as_deref(),
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
    /// Runs `job` in the next group commit (SQLite) and returns its result once committed.
    pub(crate) async fn grouped(&self, job: Job) -> Result<Done> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.queue.0.lock().unwrap_or_else(|p| p.into_inner()).push((job, reply));
        let writer = self.writer().await;
        if let Ok(done) = answer.try_recv() {
            return done;
        }
        let batch = std::mem::take(&mut *self.queue.0.lock().unwrap_or_else(|p| p.into_inner()));
        self.commit_batch(batch).await;
        drop(writer);
        answer.await.map_err(|_| StoreError::Io("the write batch holding this write was abandoned".into()))?
    }

    async fn commit_batch(&self, batch: Vec<(Job, Reply)>) {
        let mut results = Vec::with_capacity(batch.len());
        let committed: Result<()> = async {
            let mut tx = self.pool.begin().await?;
            for (job, _) in &batch {
                let mut savepoint = tx.begin().await?;
                match run(&mut savepoint, job).await {
                    Ok(done) => {
                        savepoint.commit().await?;
                        results.push(Ok(done));
                    }
                    Err(e) => {
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
                // Nothing of the batch is on disk: every job hears so.
                let message = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Io(format!("write batch not committed: {message}"))));
                }
            }
        }
    }
}
