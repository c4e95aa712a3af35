//! Administrative operations behind the CLI and the admin API: templates, accounts, bootstrap
//! tokens, fleet queries, admin tokens.
use super::templates::{client_auth_template, next_template_oid};
use super::{secrets, Ra, RaError};
use autoenroll_core::model::{valid_name, AuditOutcome, Template, TemplateError};
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
}

pub struct AccountSpec<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub templates: Vec<String>,
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
        valid_name(name).map_err(|reason| invalid(TemplateError { field: "name", reason }))?;
        let now = self.now();
        let oid = match &spec.oid {
            Some(o) => field("oid", o)?,
            None => next_template_oid(self).await?,
        };
        let mut t = Template { major: spec.major.unwrap_or(1), ..client_auth_template(name, oid, now) };
        apply(&mut t, spec)?;
        self.store.insert_template(&t).await.map_err(duplicate)?;
        self.audit(
            "admin",
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
    pub async fn update_template(&self, name: &str, spec: &TemplateSpec) -> Result<Template, RaError> {
        let mut t = self.template(name).await?;
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
        self.audit("admin", "template.update", name, AuditOutcome::Ok, &format!("v{}.{}", t.major, t.minor)).await;
        Ok(t)
    }

    pub async fn create_account(&self, spec: &AccountSpec<'_>) -> Result<(), RaError> {
        if spec.name.is_empty() || spec.password.len() < 8 {
            return Err(Refusal::InvalidAccount {
                detail: "account names must be non-empty and passwords at least 8 characters".into(),
            }
            .into());
        }
        for t in &spec.templates {
            self.template(t).await?;
        }
        let account = Account {
            name: spec.name.to_string(),
            password_hash: secrets::hash_password(spec.password),
            templates: spec.templates.clone(),
            disabled: false,
            created_at: self.now(),
        };
        self.store.insert_account(&account).await.map_err(duplicate)?;
        self.audit("admin", "account.create", spec.name, AuditOutcome::Ok, "").await;
        Ok(())
    }

    /// Creates a one-time bootstrap token and returns it; only its hash is stored.
    pub async fn create_token(&self, spec: &TokenSpec<'_>) -> Result<(String, i64), RaError> {
        if spec.device.is_empty() || spec.ttl_secs <= 0 {
            return Err(
                Refusal::InvalidToken { detail: "a token needs a device name and a positive TTL".into() }.into()
            );
        }
        if let Some(t) = spec.template {
            self.template(t).await?;
        }
        let now = self.now();
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
            })
            .await?;
        let detail = format!("token {} expires {}", t.id, expires_at);
        self.audit("admin", "token.create", spec.device, AuditOutcome::Ok, &detail).await;
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
    pub async fn renew_now(&self, filter: &CertificateFilter) -> Result<u64, RaError> {
        let n = self.store.renew_now(filter, self.now()).await?;
        self.audit("admin", "cert.renew-now", "-", AuditOutcome::Ok, &format!("{n} certificates: {filter:?}")).await;
        Ok(n)
    }

    /// Certificates whose renewal is overdue by more than `overdue_secs`, with the device's
    /// latest refusal: "what is stuck, and why".
    pub async fn stuck(&self, overdue_secs: i64, limit: i64) -> Result<Vec<Stuck>, RaError> {
        let now = self.now();
        Ok(self.store.stuck(now, now.minus_secs(overdue_secs), limit).await?)
    }
}

impl Ra {
    /// A token for the admin REST API (`aea_<id>.<secret>`), shown once; only its hash is kept.
    pub async fn create_admin_token(&self, name: &str) -> Result<String, RaError> {
        valid_name(name)
            .map_err(|reason| Refusal::InvalidToken { detail: format!("admin token name {name:?}: {reason}") })?;
        let id = secrets::random_token_part(9);
        let secret = secrets::random_token_part(24);
        self.store.insert_admin_token(&id, name, &secrets::sha256(secret.as_bytes()), self.now()).await?;
        self.audit("admin", "admin-token.create", name, AuditOutcome::Ok, &format!("token {id}")).await;
        Ok(format!("aea_{id}.{secret}"))
    }

    pub async fn revoke_admin_token(&self, name: &str) -> Result<u64, RaError> {
        let n = self.store.revoke_admin_token(name, self.now()).await?;
        self.audit("admin", "admin-token.revoke", name, AuditOutcome::Ok, &format!("{n} tokens")).await;
        Ok(n)
    }

    /// The name of the administrator a bearer token belongs to (constant-time comparison).
    pub async fn authenticate_admin(&self, token: &str) -> Result<String, RaError> {
        let bad = || RaError::from(Refusal::WrongCredentials { what: "unknown or revoked admin token" });
        let (id, secret) = token.trim().strip_prefix("aea_").and_then(|t| t.split_once('.')).ok_or_else(bad)?;
        let stored = self.store.admin_token(id).await?.ok_or_else(bad)?;
        if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &stored.secret_hash) {
            self.audit("anonymous", "admin.authenticate", id, AuditOutcome::Refused, "WrongCredentials").await;
            return Err(bad());
        }
        Ok(stored.name)
    }
}
