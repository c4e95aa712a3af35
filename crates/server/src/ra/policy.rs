//! The enrollment policy a principal sees.
use super::auth::Principal;
use super::{Ra, RaError};
use autoenroll_core::model::Template;

#[derive(Debug, Clone)]
pub struct PolicyView {
    /// Stable per installation: clients key their cache on it.
    pub policy_id: String,
    /// The client's `lastUpdate` is at or after the newest template change.
    pub not_changed: bool,
    pub next_update_hours: u32,
    pub templates: Vec<Template>,
    pub issuing_ca_der: Vec<u8>,
}

impl Ra {
    /// The templates `principal` may enroll (their grants name it). A stored template that no longer validates is
    /// reported in the log and left out: one bad template never breaks policy for everyone.
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
        self.report_invalid(&all.invalid);
        let newest = all.valid.iter().map(|t| t.updated_at.0).max().unwrap_or(0);
        // What the asker may enroll (its grants), as an ADCS policy lists templates the caller
        // has Enroll rights on — and what its device holds, which it renews by possession.
        let now = self.now();
        let (groups, held) = match self.store.device(&principal.device).await? {
            Some(d) => (self.store.device_groups(d.id).await?, self.store.templates_held(d.id, now).await?),
            None => (vec![], vec![]),
        };
        let holds = |t: &Template| held.contains(&t.name);
        let templates: Vec<Template> =
            all.valid.into_iter().filter(|t| principal.may_enroll(t, &groups) || (t.enroll && holds(t))).collect();
        Ok(PolicyView {
            policy_id,
            not_changed: client_last_update.is_some_and(|l| l >= newest),
            next_update_hours: self.settings.next_update_hours,
            templates,
            issuing_ca_der: self.ca.issuing_der().to_vec(),
        })
    }
}
