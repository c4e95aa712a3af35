//! Requests and the certificates issued for them. An issuance is two commits: the request and
//! the certificate intent (state `signing`) before signing, the certificate and its audit event
//! after (nothing signed is ever missing from the store). Completing a renewal marks the old
//! certificate `renewed` in the same transaction.
use crate::audit::{insert_audit, AuditEvent};
use crate::{duplicate, parse, to_u32, Result, Store, StoreError};
use autoenroll_core::model::{CertState, RequestKind, RequestStatus, RevocationReason};
use autoenroll_core::UnixTime;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, FromRow};

/// Which certificates are stuck (`$1` now, `$2` the overdue seconds, or -1 for the default:
/// a day, or a tenth of the lifetime when shorter), for `certificates c`; shared by the stuck
/// report and the fleet's count of stuck devices.
macro_rules! stuck_where {
    () => {
        "c.state = 'issued' AND c.not_after > $1 - 2592000 AND c.renew_after < $1 - CASE WHEN $2 >= 0 THEN $2 \
         WHEN (c.not_after - c.not_before) / 10 < 86400 THEN (c.not_after - c.not_before) / 10 ELSE 86400 END"
    };
}
pub(crate) use stuck_where;

pub struct NewRequest<'a> {
    pub device_id: i64,
    pub requester: &'a str,
    pub template: &'a str,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub csr_der: &'a [u8],
    /// For renewals: the certificate being replaced.
    pub previous_serial: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub device_id: i64,
    pub device: String,
    pub requester: String,
    pub template: String,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub csr_der: Vec<u8>,
    pub serial: Option<String>,
    /// Why it was denied, or who approved it.
    pub detail: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub previous_serial: Option<String>,
}

#[derive(FromRow)]
struct RequestRow {
    id: i64,
    device_id: i64,
    device: String,
    requester: String,
    template: String,
    kind: String,
    status: String,
    csr_der: Vec<u8>,
    serial: Option<String>,
    detail: String,
    created_at: i64,
    updated_at: i64,
    previous_serial: Option<String>,
}

impl TryFrom<RequestRow> for Request {
    type Error = StoreError;
    fn try_from(r: RequestRow) -> Result<Request> {
        let key = r.id.to_string();
        Ok(Request {
            kind: parse("request kind", &key, &r.kind)?,
            status: parse("request status", &key, &r.status)?,
            id: r.id,
            device_id: r.device_id,
            device: r.device,
            requester: r.requester,
            template: r.template,
            csr_der: r.csr_der,
            serial: r.serial,
            detail: r.detail,
            created_at: UnixTime(r.created_at),
            updated_at: UnixTime(r.updated_at),
            previous_serial: r.previous_serial,
        })
    }
}

/// A certificate about to be signed, as the RA decided it.
#[derive(Clone, Copy)]
pub struct CertificateIntent<'a> {
    pub serial: &'a str,
    pub request_id: i64,
    pub device_id: i64,
    pub template: &'a str,
    pub template_major: u32,
    pub template_minor: u32,
    pub subject: &'a str,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub previous_serial: Option<&'a str>,
    /// The server's renewal time (its load-spread slot in the renewal window).
    pub renew_after: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub serial: String,
    pub request_id: i64,
    pub device_id: i64,
    pub device: String,
    pub template: String,
    pub template_major: u32,
    pub template_minor: u32,
    pub subject: String,
    pub thumbprint: Option<String>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub state: CertState,
    pub der: Option<Vec<u8>>,
    pub created_at: UnixTime,
    /// The certificate this one renewed.
    pub previous_serial: Option<String>,
    pub revoked_at: Option<UnixTime>,
    pub revocation_reason: Option<RevocationReason>,
    /// When the server considers it due for renewal.
    pub renew_after: Option<UnixTime>,
    /// When it was first used to authenticate or renew (its predecessor is revoked then).
    pub first_used_at: Option<UnixTime>,
}

row_struct! {
    struct CertificateRow {
        serial: String,
        request_id: i64,
        device_id: i64,
        device: String,
        template: String,
        template_major: i64,
        template_minor: i64,
        subject: String,
        thumbprint: Option<String>,
        not_before: i64,
        not_after: i64,
        state: String,
        der: Option<Vec<u8>>,
        created_at: i64,
        previous_serial: Option<String>,
        revoked_at: Option<i64>,
        revocation_reason: Option<String>,
        renew_after: Option<i64>,
        first_used_at: Option<i64>,
    }
}

impl TryFrom<CertificateRow> for Certificate {
    type Error = StoreError;
    fn try_from(r: CertificateRow) -> Result<Certificate> {
        let key = r.serial.as_str();
        Ok(Certificate {
            template_major: to_u32("template major version", key, r.template_major)?,
            template_minor: to_u32("template minor version", key, r.template_minor)?,
            state: parse("certificate state", key, &r.state)?,
            revocation_reason: r
                .revocation_reason
                .as_deref()
                .map(|x| parse("revocation reason", key, x))
                .transpose()?,
            serial: r.serial,
            request_id: r.request_id,
            device_id: r.device_id,
            device: r.device,
            template: r.template,
            subject: r.subject,
            thumbprint: r.thumbprint,
            not_before: UnixTime(r.not_before),
            not_after: UnixTime(r.not_after),
            der: r.der,
            created_at: UnixTime(r.created_at),
            previous_serial: r.previous_serial,
            revoked_at: r.revoked_at.map(UnixTime),
            renew_after: r.renew_after.map(UnixTime),
            first_used_at: r.first_used_at.map(UnixTime),
        })
    }
}

/// A certificate as the renewal scan sees it (no DER: the scan decides, it does not serve).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DueCertificate {
    pub serial: String,
    pub device_id: i64,
    pub template: String,
    pub template_major: i64,
    pub thumbprint: Option<String>,
    pub not_after: i64,
    pub renew_after: i64,
}

/// Which certificates `certificates_matching` returns; empty / None fields match everything.
#[derive(Debug, Clone, Default)]
pub struct CertificateFilter {
    pub expiring_before: Option<UnixTime>,
    /// Only certificates still valid after this (with `expiring_before`: "expiring within",
    /// not "expired already").
    pub expiring_after: Option<UnixTime>,
    pub template: Option<String>,
    pub template_major: Option<u32>,
    pub state: Option<CertState>,
    /// Exact device names; empty = every device. Matched by plain substring replacement, not
    /// LIKE: `_` and `%` are wildcards there (and SQLite's LIKE ignores case), so `pc_1` would
    /// match `pcx1`.
    pub devices: Vec<String>,
    pub issued_before: Option<UnixTime>,
    pub limit: i64,
}

impl CertificateFilter {
    /// Binds `$1`..`$7` of a filtered query; absent fields bind values that match everything
    /// (so the SQL stays one literal for both backends).
    fn bind<'q>(&'q self, q: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments> {
        q.bind(self.expiring_before.map_or(i64::MAX, |t| t.0))
            .bind(self.template.as_deref().unwrap_or_default())
            .bind(self.template_major.map_or(-1, i64::from))
            .bind(self.state.map_or("", CertState::as_str))
            .bind(self.devices.join(","))
            .bind(self.issued_before.map_or(i64::MAX, |t| t.0))
            .bind(self.expiring_after.map_or(i64::MIN, |t| t.0))
    }
}

/// A certificate whose renewal is overdue, with the device's latest refusal if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub device: String,
    pub device_blocked: bool,
    pub serial: String,
    pub template: String,
    pub renew_after: UnixTime,
    pub not_after: UnixTime,
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixTime>,
}

#[derive(FromRow)]
struct StuckRow {
    device: String,
    blocked: i64,
    serial: String,
    template: String,
    renew_after: i64,
    not_after: i64,
    last_error: Option<String>,
    last_error_at: Option<i64>,
}

// Literal SQL only (sqlx refuses built strings): the column list is a macro for `concat!`.
macro_rules! certificate_select {
    () => {
        "SELECT c.serial, c.request_id, c.device_id, d.name AS device, c.template, c.template_major, \
         c.template_minor, c.subject, c.thumbprint, c.not_before, c.not_after, c.state, c.der, c.created_at, \
         c.previous_serial, c.revoked_at, c.revocation_reason, c.renew_after, c.first_used_at \
         FROM certificates c JOIN devices d ON d.id = c.device_id "
    };
}

// The statements of an issuance's two durable writes, shared by sqlx (PostgreSQL, and SQLite
// outside group commit) and the SQLite writer thread (`sqlite_sync`), which binds `$N` by name.
pub(crate) const INSERT_REQUEST_SQL: &str =
    "INSERT INTO requests (device_id, requester, template, kind, status, csr_der, serial, detail, created_at, \
     updated_at, previous_serial) VALUES ($1,$2,$3,$4,$5,$6,$9,'',$7,$7,$8) RETURNING id";
pub(crate) const INSERT_SUCCESSOR_SQL: &str = "INSERT INTO successors (previous_serial, serial) VALUES ($1, $2)";
pub(crate) const INSERT_INTENT_SQL: &str =
    "INSERT INTO certificates (serial, request_id, device_id, template, template_major, template_minor, \
     subject, thumbprint, not_before, not_after, state, der, created_at, previous_serial, renew_after) \
     VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,$8,$9,$10,NULL,$11,$12,$13)";
/// The DER is kept whatever happened to the intent; it goes live only from `signing` (the one
/// way to `issued`), and the state it ends in says which. A second call for the same serial
/// (its DER is there already) changes nothing and is not live.
pub(crate) const COMPLETE_SQL: &str = "UPDATE certificates SET thumbprint = $2, der = $3, \
     state = CASE WHEN state = $5 THEN $4 ELSE state END WHERE serial = $1 AND der IS NULL \
     RETURNING state, previous_serial";
pub(crate) const RETIRE_PREVIOUS_SQL: &str = "UPDATE certificates SET state = $2 WHERE state = $3 AND serial = $1";
pub(crate) const REQUEST_ISSUED_SQL: &str = "UPDATE requests SET status = $2, updated_at = $3 WHERE id = $1";

/// Inserts a request; `serial` when its certificate's serial is known already (an issuance that
/// records request and intent together), saving the update `intent_in` would make.
async fn insert_request_in<'c>(
    ex: impl sqlx::Executor<'c, Database = Any>,
    r: &NewRequest<'_>,
    serial: Option<&str>,
    now: UnixTime,
) -> Result<i64> {
    let (id,): (i64,) = sqlx::query_as(INSERT_REQUEST_SQL)
        .bind(r.device_id)
        .bind(r.requester)
        .bind(r.template)
        .bind(r.kind.as_str())
        .bind(r.status.as_str())
        .bind(r.csr_der)
        .bind(now.0)
        .bind(r.previous_serial)
        .bind(serial)
        .fetch_one(ex)
        .await?;
    Ok(id)
}

/// Records the intent; with `request_recorded` false the request row already names the serial
/// and the signing status (inserted together), so it is not updated again.
async fn intent_in(
    tx: &mut sqlx::Transaction<'_, Any>,
    c: &CertificateIntent<'_>,
    request_recorded: bool,
    now: UnixTime,
) -> Result<()> {
    if let Some(previous) = c.previous_serial {
        // One certificate has one successor: this primary key is the claim (across replicas).
        sqlx::query(INSERT_SUCCESSOR_SQL)
            .bind(previous)
            .bind(c.serial)
            .execute(&mut **tx)
            .await
            .map_err(duplicate(|| format!("a successor of {previous}")))?;
    }
    sqlx::query(INSERT_INTENT_SQL)
        .bind(c.serial)
        .bind(c.request_id)
        .bind(c.device_id)
        .bind(c.template)
        .bind(i64::from(c.template_major))
        .bind(i64::from(c.template_minor))
        .bind(c.subject)
        .bind(c.not_before.0)
        .bind(c.not_after.0)
        .bind(CertState::Signing.as_str())
        .bind(now.0)
        .bind(c.previous_serial)
        .bind(c.renew_after.0)
        .execute(&mut **tx)
        .await?;
    if !request_recorded {
        return Ok(());
    }
    sqlx::query("UPDATE requests SET serial = $2, status = $3, updated_at = $4 WHERE id = $1")
        .bind(c.request_id)
        .bind(c.serial)
        .bind(RequestStatus::Signing.as_str())
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn certificates(rows: Vec<CertificateRow>) -> Result<Vec<Certificate>> {
    rows.into_iter().map(Certificate::try_from).collect()
}

impl Store {
    /// Records a request without a certificate yet (held for approval); a SCEP transaction
    /// (ID, signer) is tied to it in the same commit, and a transaction already tied to a request
    /// is `StoreError::Duplicate` (the caller answers with that request).
    pub async fn insert_request(
        &self,
        r: &NewRequest<'_>,
        scep_transaction: Option<(&str, &str)>,
        now: UnixTime,
    ) -> Result<i64> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let id = insert_request_in(&mut *tx, r, None, now).await?;
        if let Some((transaction, key)) = scep_transaction {
            crate::scep::insert_transaction_in(&mut *tx, transaction, key, id, now).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Notes the first use of a certificate; true only for the first call (its predecessor may
    /// be revoked as superseded then).
    pub async fn mark_first_used(&self, serial: &str, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE certificates SET first_used_at = $2 WHERE serial = $1 AND first_used_at IS NULL")
            .bind(serial)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_request_status(&self, id: i64, status: RequestStatus, detail: &str, now: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("UPDATE requests SET status = $2, detail = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .bind(detail)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a request from one status to another; false when it was not in `from` (one
    /// statement: of two racing approvals, one wins).
    pub async fn transition_request(
        &self,
        id: i64,
        from: RequestStatus,
        to: RequestStatus,
        detail: &str,
        now: UnixTime,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let r =
            sqlx::query("UPDATE requests SET status = $3, detail = $4, updated_at = $5 WHERE id = $1 AND status = $2")
                .bind(id)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(detail)
                .bind(now.0)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Requests in `status`, oldest first (the approval queue: `pending`).
    pub async fn requests_with_status(&self, status: RequestStatus, limit: i64) -> Result<Vec<Request>> {
        let rows = sqlx::query_as::<_, RequestRow>(
            "SELECT r.id, r.device_id, d.name AS device, r.requester, r.template, r.kind, r.status, r.csr_der, \
             r.serial, r.detail, r.created_at, r.updated_at, r.previous_serial FROM requests r \
             JOIN devices d ON d.id = r.device_id WHERE r.status = $1 ORDER BY r.id LIMIT $2",
        )
        .bind(status.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Request::try_from).collect()
    }

    /// Requests left `received` or `signing` since before `stale_before`: a process died while
    /// approving or signing them.
    pub async fn interrupted_requests(&self, stale_before: UnixTime, limit: i64) -> Result<Vec<Request>> {
        let rows = sqlx::query_as::<_, RequestRow>(
            "SELECT r.id, r.device_id, d.name AS device, r.requester, r.template, r.kind, r.status, r.csr_der, \
             r.serial, r.detail, r.created_at, r.updated_at, r.previous_serial FROM requests r \
             JOIN devices d ON d.id = r.device_id WHERE r.status IN ($1, $2) AND r.updated_at < $3 \
             ORDER BY r.id LIMIT $4",
        )
        .bind(RequestStatus::Received.as_str())
        .bind(RequestStatus::Signing.as_str())
        .bind(stale_before.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Request::try_from).collect()
    }

    /// Revokes the certificate intents of a request still `signing` (the signer died: whether
    /// a signature was made is unknown, so the serial goes on the CRL) and frees any successor
    /// claim they held; returns their serials.
    pub async fn abandon_intents(&self, request_id: i64, now: UnixTime) -> Result<Vec<String>> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE certificates SET state = $2, revoked_at = $3, revocation_reason = $4 \
             WHERE request_id = $1 AND state = $5 RETURNING serial",
        )
        .bind(request_id)
        .bind(CertState::Revoked.as_str())
        .bind(now.0)
        .bind(RevocationReason::CessationOfOperation.as_str())
        .bind(CertState::Signing.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for (serial,) in &rows {
            sqlx::query("DELETE FROM successors WHERE serial = $1").bind(serial).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    pub async fn request(&self, id: i64) -> Result<Option<Request>> {
        let row = sqlx::query_as::<_, RequestRow>(
            "SELECT r.id, r.device_id, d.name AS device, r.requester, r.template, r.kind, r.status, r.csr_der, \
             r.serial, r.detail, r.created_at, r.updated_at, r.previous_serial FROM requests r \
             JOIN devices d ON d.id = r.device_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Request::try_from).transpose()
    }

    /// Records a request and its certificate intent in one transaction (one commit before
    /// signing); `c.request_id` is ignored. A SCEP transaction (ID, signer) is tied to the
    /// request in the same commit. Returns the request id. `StoreError::Duplicate` when the
    /// certificate renewed already has a successor or the SCEP transaction a request (nothing is
    /// recorded then).
    pub async fn insert_request_with_intent(
        &self,
        r: &NewRequest<'_>,
        c: &CertificateIntent<'_>,
        scep_transaction: Option<(&str, &str)>,
        now: UnixTime,
    ) -> Result<i64> {
        // Concurrent issuances share a commit (group commit).
        self.grouped_intent(crate::group::IntentJob::of(r, c, scep_transaction, now)).await
    }

    /// Records a certificate about to be signed (state `signing`, no DER yet) for a request
    /// already recorded (approved, or a SCEP transaction).
    pub async fn insert_certificate_intent(&self, c: &CertificateIntent<'_>, now: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        intent_in(&mut tx, c, true, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores the signed certificate and marks it and its request issued, atomically; a renewal
    /// (the intent named a previous serial) also marks the old certificate `renewed`. Returns
    /// false when the intent was revoked while it was being signed (its device was blocked, or a
    /// stale intent was released): the DER is kept for the record, nothing goes live.
    pub async fn complete_certificate(
        &self,
        serial: &str,
        request_id: i64,
        thumbprint: &str,
        der: &[u8],
        now: UnixTime,
        audit: Option<&AuditEvent>,
    ) -> Result<bool> {
        let job = crate::group::CompleteJob {
            serial: serial.to_string(),
            request_id,
            thumbprint: thumbprint.to_string(),
            der: der.to_vec(),
            now,
            audit: audit.cloned(),
        };
        // Concurrent issuances share a commit (group commit).
        self.grouped_complete(job).await
    }

    pub async fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        let row = sqlx::query_as::<_, CertificateRow>(concat!(certificate_select!(), "WHERE c.serial = $1"))
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Certificate::try_from).transpose()
    }

    pub async fn certificate_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Certificate>> {
        const SQL: &str = concat!(certificate_select!(), "WHERE c.thumbprint = $1");
        let row = match &self.sqlite {
            Some(sqlite) => sqlite.readers.one(SQL, &[&thumbprint], CertificateRow::from_sqlite)?,
            None => sqlx::query_as::<_, CertificateRow>(SQL).bind(thumbprint).fetch_optional(&self.pool).await?,
        };
        row.map(Certificate::try_from).transpose()
    }

    /// The certificate that holds the one successor claim on `serial` (any state), if any.
    pub async fn successor(&self, serial: &str) -> Result<Option<Certificate>> {
        let row = sqlx::query_as::<_, CertificateRow>(concat!(
            certificate_select!(),
            "WHERE c.serial = (SELECT serial FROM successors WHERE previous_serial = $1)"
        ))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Certificate::try_from).transpose()
    }

    /// Every certificate of one device (any state), oldest first: one index range scan (the
    /// check-in path; `certificates_matching` with a device list scans for the admin's filters).
    pub async fn device_certificates(&self, device_id: i64) -> Result<Vec<Certificate>> {
        let rows = sqlx::query_as::<_, CertificateRow>(concat!(
            certificate_select!(),
            "WHERE c.device_id = $1 ORDER BY c.created_at, c.serial"
        ))
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        certificates(rows)
    }

    /// The templates of which the device holds a good certificate valid at `now` (one indexed
    /// query: a device's history of certificates does not make its policy requests slower).
    pub async fn templates_held(&self, device_id: i64, now: UnixTime) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT template FROM certificates WHERE device_id = $1 AND state IN ($2, $3) AND not_after > $4 \
             ORDER BY template",
        )
        .bind(device_id)
        .bind(CertState::Issued.as_str())
        .bind(CertState::Renewed.as_str())
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// The newest `limit` certificates.
    pub async fn certificates(&self, limit: i64) -> Result<Vec<Certificate>> {
        let rows = sqlx::query_as::<_, CertificateRow>(concat!(
            certificate_select!(),
            "ORDER BY c.created_at DESC, c.serial LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        certificates(rows)
    }

    /// Certificates by the administrator's filters, soonest expiry first.
    pub async fn certificates_matching(&self, f: &CertificateFilter) -> Result<Vec<Certificate>> {
        let rows = f
            .bind(sqlx::query(concat!(
                certificate_select!(),
                "WHERE c.not_after <= $1 AND ($2 = '' OR c.template = $2) AND ($3 < 0 OR c.template_major = $3) \
                 AND ($4 = '' OR c.state = $4) AND ($5 = '' OR replace(',' || $5 || ',', ',' || d.name || ',', '') <> ',' || $5 || ',') \
                 AND c.created_at <= $6 AND c.not_after > $7 ORDER BY c.not_after, c.serial LIMIT $8"
            )))
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        certificates(rows.iter().map(CertificateRow::from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Moves the renewal time of matching issued certificates to `now` ("renew now" for a
    /// cohort); returns how many moved.
    pub async fn renew_now(&self, f: &CertificateFilter, now: UnixTime) -> Result<u64> {
        let _writer = self.writer().await;
        let r = f
            .bind(sqlx::query(
                "UPDATE certificates SET renew_after = $8 WHERE state = $9 AND renew_after > $8 \
                 AND not_after <= $1 AND not_after > $7 AND ($2 = '' OR template = $2) AND ($3 < 0 OR template_major = $3) \
                 AND ($4 = '' OR state = $4) AND ($5 = '' OR device_id IN \
                   (SELECT id FROM devices WHERE replace(',' || $5 || ',', ',' || name || ',', '') <> ',' || $5 || ',')) \
                 AND created_at <= $6",
            ))
            .bind(now.0)
            .bind(CertState::Issued.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The next `limit` issued certificates whose renewal time is at or before `until`,
    /// earliest first: one range scan over `certificates_due`.
    pub async fn due_for_renewal(&self, until: UnixTime, limit: i64) -> Result<Vec<DueCertificate>> {
        Ok(sqlx::query_as::<_, DueCertificate>(
            "SELECT serial, device_id, template, template_major, thumbprint, not_after, renew_after \
             FROM certificates WHERE state = 'issued' AND renew_after <= $1 ORDER BY renew_after LIMIT $2",
        )
        .bind(until.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Issued certificates past their renewal time by more than `overdue_secs` (default: a day,
    /// or a tenth of the certificate's lifetime when that is shorter, so short-lived fleets are
    /// reported too) and still not renewed, expired for at most 30 days, with the latest refusal
    /// about the certificate itself, else the latest about its device, marked `device: ` (it may
    /// concern another of its templates).
    pub async fn stuck(&self, now: UnixTime, overdue_secs: Option<i64>, limit: i64) -> Result<Vec<Stuck>> {
        let rows = sqlx::query_as::<_, StuckRow>(concat!(
            "SELECT d.name AS device, d.blocked, c.serial, c.template, c.renew_after, c.not_after, \
             COALESCE((SELECT a.detail FROM audit_events a WHERE a.subject = c.serial AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1), \
              (SELECT 'device: ' || a.detail FROM audit_events a WHERE a.subject = d.name AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1)) AS last_error, \
             COALESCE((SELECT a.at FROM audit_events a WHERE a.subject = c.serial AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1), \
              (SELECT a.at FROM audit_events a WHERE a.subject = d.name AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1)) AS last_error_at \
             FROM certificates c JOIN devices d ON d.id = c.device_id WHERE ",
            stuck_where!(),
            " ORDER BY c.renew_after LIMIT $3"
        ))
        .bind(now.0)
        .bind(overdue_secs.map_or(-1, |s| s.max(0)))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Stuck {
                device: r.device,
                device_blocked: r.blocked != 0,
                serial: r.serial,
                template: r.template,
                renew_after: UnixTime(r.renew_after),
                not_after: UnixTime(r.not_after),
                last_error: r.last_error,
                last_error_at: r.last_error_at.map(UnixTime),
            })
            .collect())
    }

    /// Renewals already placed per minute in `[from, to)` (issued or being signed), keyed by
    /// the minute's start: one range scan over `certificates_due`.
    pub async fn renewals_per_minute(
        &self,
        from: UnixTime,
        to: UnixTime,
    ) -> Result<std::collections::HashMap<i64, i64>> {
        const SQL: &str = "SELECT (renew_after / 60) * 60 AS minute, COUNT(*) AS n FROM certificates \
             WHERE state IN ('issued', 'signing') AND renew_after >= $1 AND renew_after < $2 GROUP BY 1";
        let rows: Vec<(i64, i64)> = match &self.sqlite {
            Some(sqlite) => sqlite.readers.all(SQL, &[&from.0, &to.0], |r| Ok((r.get(0)?, r.get(1)?)))?,
            None => sqlx::query_as(SQL).bind(from.0).bind(to.0).fetch_all(&self.pool).await?,
        };
        Ok(rows.into_iter().collect())
    }
}

/// Request, successor claim, intent and SCEP transaction of one issuance, in `tx`.
pub(crate) async fn request_with_intent_in(
    tx: &mut sqlx::Transaction<'_, Any>,
    r: &NewRequest<'_>,
    c: &CertificateIntent<'_>,
    scep_transaction: Option<(&str, &str)>,
    now: UnixTime,
) -> Result<i64> {
    // The request goes in already naming its serial, in the signing state.
    let signing = NewRequest { status: RequestStatus::Signing, ..*r };
    let request_id = insert_request_in(&mut **tx, &signing, Some(c.serial), now).await?;
    intent_in(tx, &CertificateIntent { request_id, ..*c }, false, now).await?;
    if let Some((transaction, key)) = scep_transaction {
        crate::scep::insert_transaction_in(&mut **tx, transaction, key, request_id, now).await?;
    }
    Ok(request_id)
}

/// The signed certificate stored and, if its intent is still `signing`, made live, in `tx`.
pub(crate) async fn complete_in(
    tx: &mut sqlx::Transaction<'_, Any>,
    serial: &str,
    request_id: i64,
    thumbprint: &str,
    der: &[u8],
    now: UnixTime,
    audit: Option<&AuditEvent>,
) -> Result<bool> {
    let completed: Option<(String, Option<String>)> = sqlx::query_as(COMPLETE_SQL)
        .bind(serial)
        .bind(thumbprint)
        .bind(der)
        .bind(CertState::Issued.as_str())
        .bind(CertState::Signing.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some((state, previous_serial)) = completed else { return Ok(false) };
    if state != CertState::Issued.as_str() {
        return Ok(false);
    }
    if let Some(e) = audit {
        insert_audit(&mut **tx, e).await?;
    }
    // A renewal retires its predecessor (a first issuance has none: no statement).
    if let Some(previous) = previous_serial {
        sqlx::query(RETIRE_PREVIOUS_SQL)
            .bind(previous)
            .bind(CertState::Renewed.as_str())
            .bind(CertState::Issued.as_str())
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(REQUEST_ISSUED_SQL)
        .bind(request_id)
        .bind(RequestStatus::Issued.as_str())
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}
