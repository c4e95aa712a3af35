//! Slowing down guessing. Failed passwords and challenges are counted per account and per
//! client address in the store (every replica sees the same counts); past a limit the account
//! or address is locked for a while, audited as `auth.lockout`. Password hashes are computed on
//! the blocking pool, a few at a time, never on the async workers that serve everyone else.
use super::{secrets, Ra, RaError};
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::Refusal;
use std::net::IpAddr;

/// Failures are counted in windows of this length...
pub const WINDOW_SECS: i64 = 15 * 60;
/// ...and a key that reaches its limit in one is locked this long.
pub const LOCK_SECS: i64 = 15 * 60;
/// One account, whoever guesses: a person mistyping stays far below it.
pub const ACCOUNT_LIMIT: i64 = 10;
/// One address, whatever it guesses (passwords of many accounts, challenges): devices behind
/// one NAT share it, so it is higher.
pub const ADDRESS_LIMIT: i64 = 30;

/// Who a failed secret check counts against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Account(&'a str),
    Address(IpAddr),
}

impl Subject<'_> {
    fn key(&self) -> String {
        match self {
            Subject::Account(name) => format!("account:{name}"),
            Subject::Address(ip) => format!("ip:{}", crate::conn::address_key(*ip)),
        }
    }

    fn limit(&self) -> i64 {
        match self {
            Subject::Account(_) => ACCOUNT_LIMIT,
            Subject::Address(_) => ADDRESS_LIMIT,
        }
    }
}

/// The subjects of a check: the account, and the address when known.
pub(crate) fn subjects(account: Option<&str>, client: Option<IpAddr>) -> Vec<Subject<'_>> {
    let mut s = Vec::with_capacity(2);
    if let Some(a) = account {
        s.push(Subject::Account(a));
    }
    if let Some(ip) = client {
        s.push(Subject::Address(ip));
    }
    s
}

impl Ra {
    /// Refuses at once (no hash computed) while any subject is locked.
    pub(crate) async fn refuse_if_locked(&self, subjects: &[Subject<'_>]) -> Result<(), RaError> {
        let now = self.now();
        for s in subjects {
            if let Some(until) = self.store.auth_locked_until(&s.key(), now).await? {
                return Err(Refusal::TooManyAttempts { retry_after_secs: (until.0 - now.0).max(1) }.into());
            }
        }
        Ok(())
    }

    /// Counts an attempt against each subject *before* its secret is checked, so that a burst
    /// of concurrent guesses cannot all pass the lock check: an attempt beyond a subject's
    /// limit locks it and is refused without a hash. A successful check gives the attempt
    /// back (`note_success`).
    pub(crate) async fn count_attempt(&self, subjects: &[Subject<'_>]) -> Result<(), RaError> {
        let counted: Vec<Subject<'_>> = subjects
            .iter()
            .copied()
            .filter(|s| self.settings.count_addresses || matches!(s, Subject::Account(_)))
            .collect();
        let subjects = counted.as_slice();
        self.refuse_if_locked(subjects).await?;
        let now = self.now();
        for s in subjects {
            let key = s.key();
            let attempts = self.store.note_auth_failure(&key, now, WINDOW_SECS).await?;
            if attempts > s.limit() {
                let until = now.plus_secs(LOCK_SECS);
                self.store.lock_auth(&key, until).await?;
                let detail = format!("{} failures in {} min; locked until {until}", s.limit(), WINDOW_SECS / 60);
                tracing::warn!(subject = %key, %until, "too many failed attempts: locked");
                self.audit("server", "auth.lockout", &key, AuditOutcome::Refused, &detail).await;
                return Err(Refusal::TooManyAttempts { retry_after_secs: LOCK_SECS }.into());
            }
        }
        Ok(())
    }

    /// A good secret: its attempt is given back to the address (one good password does not
    /// excuse guessing others, but devices behind one address must not lock it by succeeding),
    /// and the account's count starts afresh.
    pub(crate) async fn note_success(&self, subjects: &[Subject<'_>]) -> Result<(), RaError> {
        for s in subjects {
            match s {
                Subject::Account(_) => self.store.clear_auth_failures(&s.key()).await.map(|_| ())?,
                Subject::Address(_) => self.store.forgive_auth_attempt(&s.key()).await?,
            }
        }
        Ok(())
    }

    /// Forgets counters whose window and lock are long over (run with the periodic checks).
    pub async fn prune_throttle(&self) -> Result<u64, RaError> {
        Ok(self.store.prune_auth_failures(self.now().plus_secs(-(WINDOW_SECS + LOCK_SECS))).await?)
    }

    /// Whether `password` matches `stored` (None: an unknown account, which costs the same
    /// time). Runs on the blocking pool, at most one hash per CPU at a time.
    pub(crate) async fn check_password(&self, stored: Option<String>, password: &str) -> Result<bool, RaError> {
        let permit = tokio::time::timeout(HASH_QUEUE_WAIT, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| RaError::from(Refusal::ServerBusy))?
            .map_err(RaError::internal)?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match stored {
                Some(h) => secrets::verify_password(&h, &password),
                None => {
                    secrets::burn_password_time(&password);
                    false
                }
            }
        })
        .await
        .map_err(RaError::internal)
    }

    /// A hash to store, computed on the blocking pool (with the same slots as checks).
    pub(crate) async fn hash_secret(&self, secret: &str) -> Result<String, RaError> {
        let permit = self.hashing.clone().acquire_owned().await.map_err(RaError::internal)?;
        let secret = secret.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            secrets::hash_password(&secret)
        })
        .await
        .map_err(RaError::internal)
    }
}

/// Refused logins written to the audit log per minute, at most: a guesser must not turn the
/// audit log into a disk-filling, writer-blocking flood (each event is a durable write).
pub const MAX_REFUSAL_AUDITS_PER_MINUTE: u32 = 600;

/// Counts this minute's refused-login audit events (minute, count).
#[derive(Default)]
pub(crate) struct RefusalAudits(std::sync::Mutex<(i64, u32)>);

impl Ra {
    /// Whether a refusal (a login, a request) is written to the audit log: not when it only
    /// repeats a lock already audited (`TooManyAttempts`) or a busy server, and at most
    /// `MAX_REFUSAL_AUDITS_PER_MINUTE` a minute (the surplus is counted in one log line).
    pub(crate) fn audit_this_refusal(&self, e: &RaError) -> bool {
        use autoenroll_core::RefusalCode as C;
        if matches!(e.refusal_code(), Some(C::TooManyAttempts | C::ServerBusy)) {
            return false;
        }
        let minute = self.now().0 / 60;
        let mut g = self.refusal_audits.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != minute {
            if g.1 > MAX_REFUSAL_AUDITS_PER_MINUTE {
                tracing::warn!(
                    suppressed = g.1 - MAX_REFUSAL_AUDITS_PER_MINUTE,
                    "refused requests beyond the audit log's share were not written to it"
                );
            }
            *g = (minute, 0);
        }
        g.1 = g.1.saturating_add(1);
        g.1 <= MAX_REFUSAL_AUDITS_PER_MINUTE
    }
}

/// A login waiting longer than this for a hashing slot is told to come back: the queue of a
/// guessing flood must not grow without bound.
const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
