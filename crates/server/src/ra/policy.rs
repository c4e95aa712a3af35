//! The enrollment policy a principal sees.
use super::auth::Principal;
use super::{Ra, RaError};
use autoenroll_store::TemplateRow;

pub type PolicyTemplate = TemplateRow;

#[derive(Debug, Clone)]
pub struct PolicyView {
    /// Stable per installation: clients key their cache on it.
    pub policy_id: String,
    /// The client's `lastUpdate` is at or after the newest template change.
    pub not_changed: bool,
    pub next_update_hours: u32,
    pub templates: Vec<PolicyTemplate>,
    pub issuing_ca_der: Vec<u8>,
}

impl Ra {
    pub async fn policy(&self, principal: &Principal, client_last_update: Option<i64>) -> Result<PolicyView, RaError> {
        let policy_id = match self.store.setting("policy_id").await? {
            Some(id) => id,
            None => {
                let r: [u8; 16] = super::secrets::random_bytes();
                let h = hex::encode(r);
                let id = format!("{{{}-{}-{}-{}-{}}}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
                self.store.set_setting("policy_id", &id).await?;
                id
            }
        };
        let all = self.store.templates().await?;
        let newest = all.iter().map(|t| t.updated_at).max().unwrap_or(0);
        let templates: Vec<TemplateRow> =
            all.into_iter().filter(|t| t.enroll && principal.may_use_template(&t.name)).collect();
        Ok(PolicyView {
            policy_id,
            not_changed: client_last_update.is_some_and(|l| l >= newest),
            next_update_hours: self.settings.next_update_hours,
            templates,
            issuing_ca_der: self.ca.issuing_der().to_vec(),
        })
    }
}

impl Ra {
    /// The DER of the EKU extension value certificates of `t` will carry.
    pub fn ext_key_usage_der(&self, t: &TemplateRow) -> Result<Vec<u8>, RaError> {
        use der::Encode;
        let ekus = super::templates::profile_for(t)
            .extended_key_usage
            .iter()
            .map(|e| match e.as_str() {
                "serverAuth" => Ok(autoenroll_core::oids::KP_SERVER_AUTH),
                "clientAuth" => Ok(autoenroll_core::oids::KP_CLIENT_AUTH),
                other => other.parse().map_err(RaError::internal),
            })
            .collect::<Result<Vec<_>, _>>()?;
        x509_cert::ext::pkix::ExtendedKeyUsage(ekus).to_der().map_err(RaError::internal)
    }
}
