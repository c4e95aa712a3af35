//! Windows MDM enrollment (MS-MDE2) at the RA: the MDM template, the device identity from
//! AdditionalContext, and what the device reported, recorded in the inventory.
use super::auth::{Credentials, Principal, PrincipalKind};
use super::enroll::{EnrollInput, Outcome};
use super::{secrets, Ra, RaError};
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::Refusal;
use autoenroll_store::BootstrapToken;

/// What the provisioning document needs from the RA.
#[derive(Debug, Clone)]
pub struct MdmSettings {
    pub template: String,
    pub renew_period_days: u32,
    pub retry_interval_days: u32,
}

/// AdditionalContext items kept per device: bounded, so a client cannot grow the inventory.
const MAX_ITEMS: usize = 64;
const MAX_VALUE: usize = 1024;

/// How long the token the federated sign-in page hands out stays good: long enough for the
/// enrollment wizard to fetch policy and enroll, short enough to be useless later.
pub const SIGN_IN_TOKEN_SECS: i64 = 15 * 60;

impl Ra {
    /// Federated MDM sign-in (the page at AuthenticationServiceUrl): an account's password buys
    /// a single-use token that stands for the account (bound to nothing else, spent by the one
    /// enrollment it pays for, good for `SIGN_IN_TOKEN_SECS`); an administrator's bootstrap
    /// token is handed back as it is. Returns the token the device presents.
    pub async fn mdm_sign_in(&self, creds: &Credentials) -> Result<String, RaError> {
        let principal = self.authenticate(creds, None).await?;
        match (&principal.kind, creds) {
            (PrincipalKind::Token { .. }, Credentials::BootstrapToken(token)) => Ok(token.trim().to_string()),
            (PrincipalKind::Account { name, sign_in_token: None, .. }, Credentials::Password { .. }) => {
                let now = self.now();
                let t = secrets::new_token();
                self.store
                    .insert_token(&BootstrapToken {
                        id: t.id.clone(),
                        secret_hash: t.secret_hash,
                        device: String::new(),
                        template: None,
                        expires_at: now.plus_secs(SIGN_IN_TOKEN_SECS),
                        used_at: None,
                        created_at: now,
                        account: Some(name.clone()),
                    })
                    .await?;
                let actor = principal.actor();
                self.audit(&actor, "mdm.sign-in", &actor, AuditOutcome::Ok, &format!("token {}", t.id)).await;
                Ok(t.token)
            }
            // A sign-in token does not buy another one.
            _ => Err(Refusal::TokenNotAccepted { what: "sign-in" }.into()),
        }
    }

    pub async fn mdm_settings(&self) -> Result<MdmSettings, RaError> {
        self.mdm_settings_for(&self.settings.mdm_template).await
    }

    /// The renewal settings a device is given for a certificate of `template` (the one it got,
    /// which a hint may have picked over the MDM template).
    pub async fn mdm_settings_for(&self, template: &str) -> Result<MdmSettings, RaError> {
        let t = self.template(template).await?;
        let (renew_period_days, retry_interval_days) = t.mdm_days();
        Ok(MdmSettings { template: t.name, renew_period_days, retry_interval_days })
    }

    /// Enrolls a Windows device from the MDM template and records its AdditionalContext.
    pub async fn mdm_enroll(
        &self,
        principal: &Principal,
        csr_der: &[u8],
        context: &[(String, String)],
    ) -> Result<Outcome, RaError> {
        let template = self.settings.mdm_template.clone();
        let input = EnrollInput { principal, csr_der, template_name: Some(&template) };
        let issued = self.enroll_through(input, super::enroll::Channel::Mdm).await?;
        let items: Vec<(String, String)> = context
            .iter()
            .filter(|(n, _)| !n.is_empty())
            .take(MAX_ITEMS)
            .map(|(n, v)| (n.chars().take(128).collect(), v.chars().take(MAX_VALUE).collect()))
            .collect();
        if let Some(device) = self.store.device(&principal.device).await? {
            self.store.set_device_attributes(device.id, &items, self.now()).await?;
        }
        Ok(issued)
    }

    /// The MDM `EnrollmentType` the device of a certificate enrolled with (`Device` or `Full`),
    /// when it was recorded; a renewal's certificate goes where its predecessor is.
    pub async fn mdm_enrollment_type(&self, serial: &str) -> Result<Option<String>, RaError> {
        let Some(cert) = self.store.certificate(serial).await? else { return Ok(None) };
        let attributes = self.store.device_attributes(cert.device_id).await?;
        Ok(attributes.into_iter().find(|(n, _)| n == "EnrollmentType").map(|(_, v)| v))
    }

    pub async fn device_attributes(&self, device: &str) -> Result<Vec<(String, String)>, RaError> {
        match self.store.device(device).await? {
            Some(d) => Ok(self.store.device_attributes(d.id).await?),
            None => Ok(vec![]),
        }
    }
}
