//! Administrative operations behind the CLI and the admin API: templates, accounts, bootstrap
//! tokens, fleet queries, admin tokens.
use super::templates::{client_auth_template, next_template_oid};
use super::{secrets, Ra, RaError};
use autoenroll_core::model::{valid_account_name, valid_name, valid_pattern, AuditOutcome, Template, TemplateError};
use autoenroll_core::Refusal;
use autoenroll_store::{
    Account, BootstrapToken, Certificate, CertificateFilter, DeviceSummary, StoreError, Stuck, Templates,
};

/// Template fields an administrator sets, as given (text from a command line or a request);
/// `None` keeps the current (or default) value. `apply` parses and validates them.
#[derive(Debug, Clone, Default)]
pub struct TemplateSpec {
    pub oid: Option<String>,
    pub description: Option<String>,
    pub validity_secs: Option<i64>,
    pub renewal_secs: Option<i64>,
    pub key_algorithm: Option<String>,
    pub min_key_bits: Option<u32>,
    /// Comma-separated key usage names.
    pub key_usage: Option<String>,
    /// Comma-separated EKU names or dotted OIDs.
    pub ext_key_usage: Option<String>,
    pub subject_from: Option<String>,
    pub allow_san: Option<bool>,
    pub enroll: Option<bool>,
    pub autoenroll: Option<bool>,
    pub same_key_renewal: Option<bool>,
    /// Comma-separated names of templates this one supersedes.
    pub superseded: Option<String>,
    pub major: Option<u32>,
    pub renewal_grace_secs: Option<i64>,
    pub pend_all: Option<bool>,
    pub retry_interval_secs: Option<i64>,
    /// Comma-separated grants: `account:*`, `account:NAME`, `account-group:NAME`,
    /// `device:PATTERN`, `device-group:NAME`, `token`, `holder:TEMPLATE`.
    pub grants: Option<String>,
    /// Comma-separated DNS suffixes request-supplied names may be under.
    pub dns_suffixes: Option<String>,
    /// Comma-separated IP ranges (CIDR) request-supplied addresses may be in.
    pub ip_ranges: Option<String>,
    pub allow_wildcards: Option<bool>,
    pub allow_server_names: Option<bool>,
    pub renewal_subset: Option<bool>,
    /// Comma-separated key types accepted: `ec`, `rsa`.
    pub key_types: Option<String>,
    pub allow_mdm: Option<bool>,
    /// A template for users (Windows user-context autoenrollment), not for computers.
    pub for_users: Option<bool>,
}

#[derive(Default)]
pub struct AccountSpec<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub templates: Vec<String>,
    /// Groups templates may grant to (`account-group:NAME`).
    pub groups: Vec<String>,
    /// Device-name patterns the account may enroll for; empty = any (`*`).
    pub devices: Vec<String>,
}

pub struct TokenSpec<'a> {
    pub device: &'a str,
    pub template: Option<&'a str>,
    pub ttl_secs: i64,
}

fn invalid(e: TemplateError) -> RaError {
    Refusal::InvalidTemplate { field: e.field, reason: e.reason }.into()
}

fn field<T: std::str::FromStr>(field: &'static str, text: &str) -> Result<T, RaError>
where
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|e: T::Err| invalid(TemplateError { field, reason: e.to_string() }))
}

fn list<T: std::str::FromStr>(name: &'static str, text: &str) -> Result<Vec<T>, RaError>
where
    T::Err: std::fmt::Display,
{
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| field(name, s)).collect()
}

/// Applies the given fields to `t` and validates the result: the first field that does not
/// hold is refused by name, before anything is stored.
fn apply(t: &mut Template, s: &TemplateSpec) -> Result<(), RaError> {
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &s.$f { t.$f = v.clone(); } )* };
    }
    set!(description, validity_secs, renewal_secs, allow_san, enroll, autoenroll, renewal_grace_secs, pend_all);
    if let Some(v) = &s.key_algorithm {
        t.key.algorithm = field("key_algorithm", v)?;
    }
    if let Some(v) = s.min_key_bits {
        t.key.min_rsa_bits = v;
    }
    if let Some(v) = s.same_key_renewal {
        t.key.same_key_renewal = v;
    }
    if let Some(v) = &s.key_usage {
        t.key_usage = list("key_usage", v)?;
    }
    if let Some(v) = &s.ext_key_usage {
        t.ekus = list("eku", v)?;
    }
    if let Some(v) = &s.subject_from {
        t.subject_from = field("subject_from", v)?;
    }
    if let Some(v) = &s.superseded {
        t.supersedes = list("supersedes", v)?;
    }
    if let Some(v) = &s.grants {
        t.grants = list("grants", v)?;
    }
    if let Some(v) = &s.dns_suffixes {
        t.names.dns_suffixes = v.split(',').map(|x| x.trim().to_ascii_lowercase()).filter(|x| !x.is_empty()).collect();
    }
    if let Some(v) = &s.ip_ranges {
        t.names.ip_ranges = list("ip_ranges", v)?;
    }
    if let Some(v) = s.allow_wildcards {
        t.names.allow_wildcards = v;
    }
    if let Some(v) = s.allow_server_names {
        t.names.allow_server_names = v;
    }
    if let Some(v) = s.renewal_subset {
        t.names.renewal_subset = v;
    }
    if let Some(v) = &s.key_types {
        t.key.accept = list("key_types", v)?;
    } else if s.key_algorithm.is_some() && !t.key.accept.contains(&t.key.algorithm.family()) {
        // A new key algorithm of another family: accept what agents will now generate.
        t.key.accept.push(t.key.algorithm.family());
    }
    if let Some(v) = s.for_users {
        t.for_users = v;
    }
    if let Some(v) = s.allow_mdm {
        t.allow_mdm = v;
    }
    match s.retry_interval_secs {
        Some(v) => t.retry_interval_secs = v,
        // Short templates: the default week would exceed the renewal period.
        None if t.retry_interval_secs > t.renewal_secs => t.retry_interval_secs = t.renewal_secs,
        None => {}
    }
    t.validate().map_err(invalid)
}

fn duplicate(e: StoreError) -> RaError {
    match e {
        StoreError::Duplicate(what) => Refusal::Duplicate { what }.into(),
        e => e.into(),
    }
}

impl Ra {
    /// Every template: the valid ones, and stored ones that no longer validate (with why).
    pub async fn templates(&self) -> Result<Templates, RaError> {
        Ok(self.store.templates().await?)
    }

    pub async fn create_template(&self, name: &str, spec: &TemplateSpec) -> Result<Template, RaError> {
        // New templates take keys of the family they generate (unless told otherwise).
        valid_name(name).map_err(|reason| invalid(TemplateError { field: "name", reason }))?;
        let now = self.now();
        let oid = match &spec.oid {
            Some(o) => field("oid", o)?,
            None => next_template_oid(self).await?,
        };
        let mut t = Template { major: spec.major.unwrap_or(1), ..client_auth_template(name, oid, now) };
        apply(&mut t, spec)?;
        if spec.key_types.is_none() {
            t.key.accept = vec![t.key.algorithm.family()];
        }
        self.store.insert_template(&t).await.map_err(duplicate)?;
        self.audit(
            super::LOCAL_ADMIN,
            "template.create",
            name,
            AuditOutcome::Ok,
            &format!("oid {} v{}.{}", t.oid, t.major, t.minor),
        )
        .await;
        Ok(t)
    }

    /// Applies the changes. A change bumps the minor version (holders keep their certificates)
    /// unless a higher major version is given (holders renew at once).
    pub async fn update_template(&self, actor: &str, name: &str, spec: &TemplateSpec) -> Result<Template, RaError> {
        // A stored template that no longer validates can be repaired here: it is read as
        // stored, and only the result has to validate.
        let mut t = self
            .store
            .template_as_stored(name)
            .await?
            .ok_or_else(|| RaError::from(Refusal::UnknownTemplate { name: name.to_string() }))?;
        let before = t.clone();
        if spec.oid.is_some() {
            return Err(invalid(TemplateError {
                field: "oid",
                reason: "a template's OID cannot change; create a new template and supersede".into(),
            }));
        }
        apply(&mut t, spec)?;
        match spec.major {
            Some(m) if m < t.major => {
                return Err(invalid(TemplateError {
                    field: "major",
                    reason: format!("the major version cannot go down ({} -> {m})", t.major),
                }))
            }
            Some(m) if m > t.major => {
                t.major = m;
                t.minor = 0;
            }
            _ if t != before => t.minor += 1,
            _ => return Ok(t),
        }
        t.updated_at = self.now().max(before.updated_at.plus_secs(1));
        self.store.update_template(&t).await?;
        self.audit(actor, "template.update", name, AuditOutcome::Ok, &format!("v{}.{}", t.major, t.minor)).await;
        Ok(t)
    }

    /// The next major version of `name`: every holder renews at its next check-in.
    pub async fn bump_major(&self, actor: &str, name: &str) -> Result<Template, RaError> {
        let t = self
            .store
            .template_as_stored(name)
            .await?
            .ok_or_else(|| RaError::from(Refusal::UnknownTemplate { name: name.to_string() }))?;
        let major = t.major.checked_add(1).ok_or_else(|| {
            invalid(TemplateError { field: "major", reason: "already at the highest major version".into() })
        })?;
        self.update_template(actor, name, &TemplateSpec { major: Some(major), ..Default::default() }).await
    }

    /// Disables (or re-enables) an account: its password and its sign-in tokens stop working
    /// at once; certificates it enrolled stay valid (revoke them to end those).
    pub async fn set_account_disabled(&self, name: &str, disabled: bool) -> Result<(), RaError> {
        if !self.store.set_account_disabled(name, disabled).await? {
            return Err(Refusal::InvalidAccount { detail: format!("no account {name:?}") }.into());
        }
        let action = if disabled { "account.disable" } else { "account.enable" };
        self.audit(super::LOCAL_ADMIN, action, name, AuditOutcome::Ok, "").await;
        Ok(())
    }

    pub async fn create_account(&self, spec: &AccountSpec<'_>) -> Result<(), RaError> {
        if spec.name.is_empty() || spec.password.len() < 8 {
            return Err(Refusal::InvalidAccount {
                detail: "account names must be non-empty and passwords at least 8 characters".into(),
            }
            .into());
        }
        // Grants name accounts (`account:NAME`), and an account's name is its default device.
        valid_account_name(spec.name)
            .map_err(|reason| Refusal::InvalidAccount { detail: format!("name {:?}: {reason}", spec.name) })?;
        for t in &spec.templates {
            self.template(t).await?;
        }
        for g in &spec.groups {
            valid_name(g).map_err(|reason| Refusal::InvalidAccount { detail: format!("group {g:?}: {reason}") })?;
        }
        for d in &spec.devices {
            if !valid_pattern(d) {
                return Err(Refusal::InvalidAccount {
                    detail: format!("device pattern {d:?}: use name characters, * and ?"),
                }
                .into());
            }
        }
        let account = Account {
            name: spec.name.to_string(),
            password_hash: self.hash_secret(spec.password).await?,
            templates: spec.templates.clone(),
            disabled: false,
            created_at: self.now(),
            groups: spec.groups.clone(),
            devices: if spec.devices.is_empty() { vec!["*".into()] } else { spec.devices.clone() },
        };
        self.store.insert_account(&account).await.map_err(duplicate)?;
        self.audit(super::LOCAL_ADMIN, "account.create", spec.name, AuditOutcome::Ok, "").await;
        Ok(())
    }

    /// Creates a one-time bootstrap token and returns it; only its hash is stored.
    pub async fn create_token(&self, spec: &TokenSpec<'_>) -> Result<(String, i64), RaError> {
        if spec.device.is_empty() || spec.ttl_secs <= 0 {
            return Err(
                Refusal::InvalidToken { detail: "a token needs a device name and a positive TTL".into() }.into()
            );
        }
        valid_name(spec.device).map_err(|reason| Refusal::BadDeviceName { name: spec.device.to_string(), reason })?;
        if let Some(t) = spec.template {
            self.template(t).await?;
        }
        let now = self.now();
        // The token reserves its device: an account cannot bind the name first.
        let device = self.store.touch_device(spec.device, now).await?;
        if device.owner.is_none() {
            self.store.bind_device(device.id, super::LOCAL_ADMIN).await?;
        }
        let t = secrets::new_token();
        let expires_at = now.plus_secs(spec.ttl_secs);
        self.store
            .insert_token(&BootstrapToken {
                id: t.id.clone(),
                secret_hash: t.secret_hash,
                device: spec.device.to_string(),
                template: spec.template.map(str::to_string),
                expires_at,
                used_at: None,
                created_at: now,
                account: None,
            })
            .await?;
        let detail = format!("token {} expires {}", t.id, expires_at);
        self.audit(super::LOCAL_ADMIN, "token.create", spec.device, AuditOutcome::Ok, &detail).await;
        Ok((t.token, expires_at.0))
    }
}

impl Ra {
    pub async fn devices(&self, limit: i64) -> Result<Vec<DeviceSummary>, RaError> {
        Ok(self.store.devices(self.now(), limit).await?)
    }

    pub async fn certificates_matching(&self, filter: &CertificateFilter) -> Result<Vec<Certificate>, RaError> {
        Ok(self.store.certificates_matching(filter).await?)
    }

    /// Moves the renewal time of a cohort to now: those certificates' renewals are accepted
    /// from now on, whatever the template's window says, and check-in tells their holders.
    pub async fn renew_now(&self, actor: &str, filter: &CertificateFilter) -> Result<u64, RaError> {
        let n = self.store.renew_now(filter, self.now()).await?;
        self.audit(actor, "cert.renew-now", "-", AuditOutcome::Ok, &format!("{n} certificates: {filter:?}")).await;
        Ok(n)
    }

    /// Puts devices in a group (templates grant `device-group:NAME`); returns how many were
    /// added (unknown devices are refused, nothing is changed then).
    pub async fn add_to_device_group(&self, actor: &str, group: &str, devices: &[String]) -> Result<usize, RaError> {
        valid_name(group).map_err(|reason| Refusal::BadParameter { detail: format!("group {group:?}: {reason}") })?;
        let mut ids = Vec::new();
        for d in devices {
            let device = self.store.device(d).await?.ok_or_else(|| Refusal::UnknownDevice { name: d.clone() })?;
            ids.push(device.id);
        }
        let mut added = 0;
        for id in ids {
            added += usize::from(self.store.add_device_to_group(group, id).await?);
        }
        self.audit(actor, "device-group.add", group, AuditOutcome::Ok, &devices.join(",")).await;
        Ok(added)
    }

    /// Takes devices out of a group; returns how many were in it.
    pub async fn remove_from_device_group(
        &self,
        actor: &str,
        group: &str,
        devices: &[String],
    ) -> Result<usize, RaError> {
        let mut removed = 0;
        for d in devices {
            if let Some(device) = self.store.device(d).await? {
                removed += usize::from(self.store.remove_device_from_group(group, device.id).await?);
            }
        }
        self.audit(actor, "device-group.remove", group, AuditOutcome::Ok, &devices.join(",")).await;
        Ok(removed)
    }

    pub async fn device_group_members(&self, group: &str) -> Result<Vec<String>, RaError> {
        Ok(self.store.device_group_members(group).await?)
    }

    /// A device with what the inventory knows about binding and groups.
    pub async fn device(&self, name: &str) -> Result<(autoenroll_store::Device, Vec<String>), RaError> {
        let d = self.store.device(name).await?.ok_or_else(|| Refusal::UnknownDevice { name: name.to_string() })?;
        let groups = self.store.device_groups(d.id).await?;
        Ok((d, groups))
    }

    /// Certificates whose renewal is overdue by more than `overdue_secs`, with the device's
    /// latest refusal: "what is stuck, and why".
    pub async fn stuck(&self, overdue_secs: Option<i64>, limit: i64) -> Result<Vec<Stuck>, RaError> {
        Ok(self.store.stuck(self.now(), overdue_secs, limit).await?)
    }
}

impl Ra {
    /// A token for the admin REST API (`aea_<id>.<secret>`), shown once; only its hash is kept.
    pub async fn create_admin_token(&self, name: &str) -> Result<String, RaError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Refusal::InvalidToken {
                detail: "an admin token needs a name: up to 128 characters, no spaces or control characters".into(),
            }
            .into());
        }
        let id = secrets::random_token_part(9);
        let secret = secrets::random_token_part(24);
        self.store.insert_admin_token(&id, name, &secrets::sha256(secret.as_bytes()), self.now()).await?;
        self.audit(super::LOCAL_ADMIN, "admin-token.create", name, AuditOutcome::Ok, &format!("token {id}")).await;
        Ok(format!("aea_{id}.{secret}"))
    }

    pub async fn revoke_admin_token(&self, name: &str) -> Result<u64, RaError> {
        let n = self.store.revoke_admin_token(name, self.now()).await?;
        self.audit(super::LOCAL_ADMIN, "admin-token.revoke", name, AuditOutcome::Ok, &format!("{n} tokens")).await;
        Ok(n)
    }

    /// The name of the administrator a bearer token belongs to (constant-time comparison).
    pub async fn authenticate_admin(&self, token: &str) -> Result<String, RaError> {
        let bad = || RaError::from(Refusal::WrongCredentials { what: "unknown or revoked admin token" });
        let (id, secret) = token.trim().strip_prefix("aea_").and_then(|t| t.split_once('.')).ok_or_else(bad)?;
        let stored = self.store.admin_token(id).await?.ok_or_else(bad)?;
        if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &stored.secret_hash) {
            if self.audit_this_refusal(&bad()) {
                self.audit("anonymous", "admin.authenticate", id, AuditOutcome::Refused, "WrongCredentials").await;
            }
            return Err(bad());
        }
        Ok(stored.name)
    }
}
