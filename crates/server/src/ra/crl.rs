//! Revocation lists: the RA decides when a CRL is due and what it lists; the CA signs it.
//! Replicas coordinate through the store: numbers come from one atomic counter, and a stored
//! CRL is only replaced by a higher-numbered one.
use super::{Ra, RaError};
use autoenroll_ca::{Distribution, RevokedEntry};
use autoenroll_core::{Kind, UnixTime};
use autoenroll_store::CrlRow;

const ISSUER: &str = "issuing";
/// A CRL is valid for a day and re-signed when half of that has passed.
pub const CRL_VALIDITY_SECS: i64 = 86_400;

impl Ra {
    /// Tells the CA where certificates point relying parties: `<base>/crl`, `<base>/ocsp` and
    /// `<base>/ca/issuing.crt`. Called once the listeners know their public address; a plain
    /// HTTP base is preferred (CRL fetchers rarely speak TLS to a CA they are validating).
    pub fn set_public_base(&self, base: &str) {
        let base = base.trim_end_matches('/');
        self.ca.set_distribution(Distribution {
            crl_url: format!("{base}/crl"),
            ca_issuers_url: format!("{base}/ca/issuing.crt"),
            ocsp_url: format!("{base}/ocsp"),
        });
    }

    pub fn issuing_der(&self) -> &[u8] {
        self.ca.issuing_der()
    }

    /// The current CRL (DER), re-signed first when it is missing, older than the last
    /// revocation, or past half its validity.
    pub async fn crl(&self) -> Result<Vec<u8>, RaError> {
        let now = self.now().0;
        let stored = self.store.crl(ISSUER).await?;
        let last_revocation = self.store.last_revocation_at().await?.unwrap_or(0);
        match stored {
            Some(c)
                if c.this_update >= last_revocation && now < c.this_update + (c.next_update - c.this_update) / 2 =>
            {
                Ok(c.der)
            }
            _ => self.publish_crl().await,
        }
    }

    /// Signs and stores a new CRL; returns the newest stored one (another replica may have
    /// published a higher number meanwhile).
    pub async fn publish_crl(&self) -> Result<Vec<u8>, RaError> {
        let now = self.now();
        let number = self.store.next_crl_number(ISSUER).await?;
        let mut entries = Vec::new();
        for r in self.store.revoked_certificates(now.0).await? {
            let serial =
                hex::decode(&r.serial).map_err(|_| RaError::internal(format!("serial {} is not hex", r.serial)))?;
            entries.push(RevokedEntry {
                serial,
                revoked_at: UnixTime(r.revoked_at),
                reason: super::lifecycle::crl_reason(&r.reason),
            });
        }
        let next = now.plus_secs(CRL_VALIDITY_SECS);
        let der = self.ca.sign_crl(&entries, number as u64, now, next)?;
        self.store
            .save_crl(ISSUER, &CrlRow { number, this_update: now.0, next_update: next.0, der: der.clone() })
            .await?;
        tracing::info!(number, entries = entries.len(), "published CRL");
        match self.store.crl(ISSUER).await? {
            Some(c) => Ok(c.der),
            None => Err(RaError::new(Kind::Internal, "Internal", "CRL vanished")),
        }
    }
}
