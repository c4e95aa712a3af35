//! What the web console needs from the RA beyond the admin API: sessions bought with an admin
//! token, and read-only views of the inventory (fleet figures, device search, one certificate).
//!
//! A session is a cookie value `<admin token id>.<expiry>.<nonce>.<MAC>`, the MAC an HMAC-SHA256 under
//! a key derived from the issuing CA key (every replica holding the CA accepts every session;
//! the database alone cannot make one). Nothing is stored per session: each request checks the MAC in constant time,
//! the expiry, and that the admin token is still unrevoked, so revoking the token ends its
//! sessions at once. The CSRF token of a session is another MAC of the cookie value.
use super::{secrets, Ra, RaError};
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::{Refusal, UnixTime};
use autoenroll_store::{DeviceFilter, FleetSummary};
use aws_lc_rs::hmac;
use base64::Engine;

/// How long a console session lasts (a working day).
pub const SESSION_SECS: i64 = 8 * 3600;
const KEY_LABEL: &str = "autoenroll console session v1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// As the audit log names them: `admin:<token name>`.
    pub actor: String,
    /// The value every form of this session must carry.
    pub csrf: String,
    pub expires: UnixTime,
}

impl Ra {
    /// The session MAC key: derived from the issuing CA key inside the CA layer, so every
    /// replica holding the CA agrees on it, and a copy of the database alone forges nothing.
    async fn console_key(&self) -> Result<hmac::Key, RaError> {
        let key = match self.console_key.get() {
            Some(k) => *k,
            None => {
                let k = self.ca.derive_secret(KEY_LABEL)?;
                let _ = self.console_key.set(k);
                k
            }
        };
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
    }

    /// Signs in with an admin token: the session cookie's value and the session.
    pub async fn console_sign_in(&self, token: &str) -> Result<(String, ConsoleSession), RaError> {
        let name = self.authenticate_admin(token).await?;
        let id = token.trim().strip_prefix("aea_").and_then(|t| t.split_once('.')).map(|(id, _)| id).unwrap_or("");
        let expires = self.now().plus_secs(SESSION_SECS);
        // The nonce makes each session (and its CSRF token) distinct, even within one second.
        let unsigned = format!("{id}.{}.{}", expires.0, secrets::random_token_part(12));
        let key = self.console_key().await?;
        let cookie = format!("{unsigned}.{}", B64.encode(hmac::sign(&key, unsigned.as_bytes())));
        self.audit(&format!("admin:{name}"), "console.sign-in", &name, AuditOutcome::Ok, "").await;
        let csrf = csrf_token(&key, &cookie);
        Ok((cookie, ConsoleSession { actor: format!("admin:{name}"), csrf, expires }))
    }

    /// The session a cookie value stands for, if it is genuine, unexpired and its admin token
    /// unrevoked.
    pub async fn console_session(&self, cookie: &str) -> Result<ConsoleSession, RaError> {
        let bad = || RaError::from(Refusal::WrongCredentials { what: "console session expired or not valid" });
        let (unsigned, mac) = cookie.rsplit_once('.').ok_or_else(bad)?;
        let mac = B64.decode(mac).map_err(|_| bad())?;
        let key = self.console_key().await?;
        hmac::verify(&key, unsigned.as_bytes(), &mac).map_err(|_| bad())?;
        let mut parts = unsigned.split('.');
        let (Some(id), Some(expires), Some(_nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let expires = UnixTime(expires.parse().map_err(|_| bad())?);
        if expires <= self.now() {
            return Err(bad());
        }
        let token = self.store.admin_token(id).await?.ok_or_else(bad)?;
        Ok(ConsoleSession { actor: format!("admin:{}", token.name), csrf: csrf_token(&key, cookie), expires })
    }

    /// The fleet now: expiry timeline for `weeks` weeks, renewal forecast for `days` days.
    pub async fn fleet_summary(&self, weeks: i64, days: i64) -> Result<FleetSummary, RaError> {
        Ok(self.store.fleet_summary(self.now(), weeks, days).await?)
    }

    pub async fn devices_matching(&self, filter: &DeviceFilter) -> Result<Vec<super::DeviceSummary>, RaError> {
        Ok(self.store.devices_matching(self.now(), filter).await?)
    }

    /// When the current CRL was signed and when it says the next one comes.
    pub async fn crl_times(&self) -> Result<Option<(UnixTime, UnixTime)>, RaError> {
        Ok(self.store.crl(super::crl::ISSUER).await?.map(|c| (c.this_update, c.next_update)))
    }

    /// Database connections: (open, idle).
    pub fn db_pool(&self) -> (u32, u32) {
        self.store.pool_connections()
    }

    /// One certificate by serial (any state).
    pub async fn certificate(&self, serial: &str) -> Result<super::Certificate, RaError> {
        self.store
            .certificate(serial)
            .await?
            .ok_or_else(|| Refusal::NoSuchCertificate { serial: serial.to_string() }.into())
    }
}

fn csrf_token(key: &hmac::Key, cookie: &str) -> String {
    B64.encode(hmac::sign(key, format!("csrf:{cookie}").as_bytes()))
}
