//! Revocation lists: the RA decides when a CRL is due and what it lists; the CA signs it.
//! Replicas coordinate through the store: numbers come from one atomic counter, and a stored
//! CRL is only replaced by a higher-numbered one.
use super::{Ra, RaError};
use autoenroll_ca::{ChainUpkeep, Distribution, Published, RevokedEntry, RootUrls};
use autoenroll_store::Crl;

pub(super) const ISSUER: &str = "issuing";
/// The root's CRL and certificate rows in the store.
const ROOT: &str = "root";
/// Where relying parties find the CA certificates and the root's CRL, under the public base.
pub const ISSUING_PATH: &str = "/ca/issuing.crt";
pub const ROOT_PATH: &str = "/ca/root.crt";
pub const ROOT_CRL_PATH: &str = "/crl/root";
/// A CRL is valid for a day and re-signed when half of that has passed.
pub const CRL_VALIDITY_SECS: i64 = 86_400;

/// The base URL certificates name for the CRL, OCSP and the issuing CA (set by the server).
pub(crate) const PUBLIC_BASE_SETTING: &str = "server.public_base";

impl Ra {
    /// Tells the CA where certificates point relying parties: `<base>/crl`, `<base>/ocsp` and
    /// `<base>/ca/issuing.crt`. Called once the listeners know their public address; a plain
    /// HTTP base is preferred (CRL fetchers rarely speak TLS to a CA they are validating).
    /// `set_public_base`, recorded so every process on this database (the command line
    /// approving a request) puts the same URLs in what it issues.
    pub async fn publish_base(&self, base: &str) -> Result<(), RaError> {
        self.set_public_base(base);
        self.store.set_setting(PUBLIC_BASE_SETTING, base.trim_end_matches('/')).await?;
        Ok(())
    }

    /// The issuing CA certificate names `<base>/ca/root.crt` (AIA) and `<base>/crl/root` (CDP),
    /// and the root's CRL is fresh: done with the root key when it is at hand (`root_key`, else
    /// the CA directory's); otherwise logged as work for the operator. The re-certified issuing
    /// certificate and the root CRL are published in the database, where every process and
    /// replica takes them from. Run at start and with every CRL check (30 minutes).
    pub async fn chain_upkeep(&self, root_key: Option<&std::path::Path>) -> Result<ChainUpkeep, RaError> {
        let Some(base) = self.store.setting(PUBLIC_BASE_SETTING).await? else { return Ok(ChainUpkeep::Current) };
        let urls = RootUrls { cert_url: format!("{base}{ROOT_PATH}"), crl_url: format!("{base}{ROOT_CRL_PATH}") };
        let now = self.now();
        let issuing = self.store.ca(ISSUER).await?;
        let root_crl = self.store.crl(ROOT).await?;
        let published = Published { issuing: issuing.as_deref(), root_crl_until: root_crl.map(|c| c.next_update) };
        let result = self.ca.chain_upkeep(&urls, published, root_key, now)?;
        match &result {
            ChainUpkeep::Current => {}
            ChainUpkeep::Done { recertified, root_crl, root_crl_until } => {
                if *recertified {
                    self.store.upsert_ca(ISSUER, &self.ca.issuing_der(), now).await?;
                }
                // Numbered by time, as inside the CRL.
                let crl = Crl { number: now.0, this_update: now, next_update: *root_crl_until, der: root_crl.clone() };
                self.store.save_crl(ROOT, &crl).await?;
                tracing::info!(
                    recertified,
                    root_crl_until = %root_crl_until,
                    "issuing CA certificate names {} and {}; root CRL signed",
                    urls.cert_url,
                    urls.crl_url
                );
            }
            ChainUpkeep::NeedsRootKey { recertify, root_crl_until } => tracing::warn!(
                recertify,
                root_crl_until = ?root_crl_until,
                "the root key is offline: run `autoenroll server ca upkeep --root-key FILE` where it is \
                 (the issuing CA certificate should name {} and {}; the root CRL must be re-signed)",
                urls.cert_url,
                urls.crl_url
            ),
        }
        Ok(result)
    }

    /// The root's CRL (DER), when one was signed.
    pub async fn root_crl(&self) -> Result<Option<Vec<u8>>, RaError> {
        Ok(self.store.crl(ROOT).await?.map(|c| c.der))
    }

    pub fn set_public_base(&self, base: &str) {
        let base = base.trim_end_matches('/');
        self.ca.set_distribution(Distribution {
            crl_url: format!("{base}/crl"),
            ca_issuers_url: format!("{base}{ISSUING_PATH}"),
            ocsp_url: Some(format!("{base}/ocsp")),
        });
    }

    pub fn issuing_der(&self) -> std::sync::Arc<Vec<u8>> {
        self.ca.issuing_der()
    }

    /// The current CRL (DER), re-signed first when it is missing, older than the last
    /// revocation, or past half its validity.
    pub async fn crl(&self) -> Result<Vec<u8>, RaError> {
        let now = self.now();
        let stored = self.store.crl(ISSUER).await?;
        let last_revocation = self.store.last_revocation_at().await?.unwrap_or_default();
        match stored {
            Some(c)
                // Strictly after: a revocation in the CRL's own second may have come after it.
                if c.this_update > last_revocation
                    && now.0 < c.this_update.0 + (c.next_update.0 - c.this_update.0) / 2 =>
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
        for r in self.store.revoked_certificates(now).await? {
            let serial =
                hex::decode(&r.serial).map_err(|_| RaError::internal(format!("serial {} is not hex", r.serial)))?;
            entries.push(RevokedEntry { serial, revoked_at: r.revoked_at, reason: r.reason.crl_reason() });
        }
        let next = now.plus_secs(CRL_VALIDITY_SECS);
        let der = self.ca.sign_crl(&entries, number as u64, now, next)?;
        self.store.save_crl(ISSUER, &Crl { number, this_update: now, next_update: next, der: der.clone() }).await?;
        tracing::info!(number, entries = entries.len(), "published CRL");
        match self.store.crl(ISSUER).await? {
            Some(c) => Ok(c.der),
            None => Err(RaError::internal("the CRL vanished after it was saved")),
        }
    }
}
