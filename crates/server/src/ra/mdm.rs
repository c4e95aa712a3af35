//! Windows MDM enrollment (MS-MDE2) at the RA: the MDM template, the device identity from
//! AdditionalContext, and what the device reported, recorded in the inventory.
use super::auth::Principal;
use super::enroll::{EnrollInput, Outcome};
use super::{Ra, RaError};

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

impl Ra {
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
