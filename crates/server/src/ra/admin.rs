//! Administrative operations behind the CLI: templates, accounts, bootstrap tokens.
use super::templates::{client_auth_template, next_template_oid};
use super::{secrets, Ra, RaError};
use autoenroll_core::Kind;
use autoenroll_store::{AccountRow, StoreError, TemplateRow, TokenRow};

/// Template fields an administrator sets; `None` keeps the current (or default) value.
#[derive(Debug, Clone, Default)]
pub struct TemplateSpec {
    pub oid: Option<String>,
    pub description: Option<String>,
    pub validity_secs: Option<i64>,
    pub renewal_secs: Option<i64>,
    pub key_algorithm: Option<String>,
    pub min_key_bits: Option<i64>,
    pub key_usage: Option<String>,
    pub ext_key_usage: Option<String>,
    pub subject_from: Option<String>,
    pub allow_san: Option<bool>,
    pub enroll: Option<bool>,
    pub autoenroll: Option<bool>,
    pub same_key_renewal: Option<bool>,
    pub superseded: Option<String>,
    pub major: Option<i64>,
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

fn invalid(detail: String) -> RaError {
    RaError::new(Kind::BadRequest, "InvalidTemplate", detail)
}

fn apply(t: &mut TemplateRow, s: &TemplateSpec) -> Result<(), RaError> {
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &s.$f { t.$f = v.clone(); } )* };
    }
    set!(
        description,
        validity_secs,
        renewal_secs,
        key_algorithm,
        min_key_bits,
        key_usage,
        ext_key_usage,
        subject_from,
        allow_san,
        enroll,
        autoenroll,
        same_key_renewal,
        superseded,
        renewal_grace_secs,
        pend_all,
        retry_interval_secs
    );
    if s.retry_interval_secs.is_none() && t.retry_interval_secs > t.renewal_secs {
        // Short templates: the default week would exceed the renewal period.
        t.retry_interval_secs = t.renewal_secs;
    }
    if t.retry_interval_secs <= 0 || t.retry_interval_secs > t.renewal_secs {
        return Err(invalid("the retry interval must be positive and not above the renewal period".into()));
    }
    if t.renewal_grace_secs < 0 {
        return Err(invalid("renewal grace cannot be negative".into()));
    }
    if t.validity_secs <= 0 {
        return Err(invalid("validity must be positive".into()));
    }
    if t.renewal_secs <= 0 {
        return Err(invalid("renewal period must be positive".into()));
    }
    t.key_algorithm.parse::<autoenroll_keys::KeyAlgorithm>().map_err(|e| invalid(e.to_string()))?;
    if !matches!(t.subject_from.as_str(), "identity" | "request") {
        return Err(invalid(format!("subject-from must be identity or request, not {}", t.subject_from)));
    }
    // Validate usages by building a profile the CA would accept.
    let p = super::templates::profile_for(t);
    for k in &p.key_usage {
        if !["digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement"]
            .contains(&k.as_str())
        {
            return Err(invalid(format!("unknown or forbidden key usage {k}")));
        }
    }
    for e in &p.extended_key_usage {
        if !matches!(e.as_str(), "serverAuth" | "clientAuth") && const_oid_check(e).is_err() {
            return Err(invalid(format!("unknown EKU {e} (use serverAuth, clientAuth or a dotted OID)")));
        }
    }
    Ok(())
}

fn const_oid_check(s: &str) -> Result<(), ()> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() >= 2 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(())
    }
}

impl Ra {
    pub async fn templates(&self) -> Result<Vec<TemplateRow>, RaError> {
        Ok(self.store.templates().await?)
    }

    pub async fn template(&self, name: &str) -> Result<TemplateRow, RaError> {
        self.store
            .template(name)
            .await?
            .ok_or_else(|| RaError::new(Kind::NotFound, "UnknownTemplate", format!("unknown template {name}")))
    }

    pub async fn create_template(&self, name: &str, spec: &TemplateSpec) -> Result<TemplateRow, RaError> {
        if name.is_empty() || name.contains(',') || name.chars().any(char::is_control) {
            return Err(invalid("template names must be non-empty without commas".into()));
        }
        let now = self.now().0;
        let oid = match &spec.oid {
            Some(o) => {
                const_oid_check(o).map_err(|_| invalid(format!("bad OID {o}")))?;
                o.clone()
            }
            None => next_template_oid(self).await?,
        };
        let mut t = TemplateRow { major: spec.major.unwrap_or(1), ..client_auth_template(name, oid, now) };
        apply(&mut t, spec)?;
        self.store.insert_template(&t).await.map_err(|e| match e {
            StoreError::Duplicate(d) => RaError::new(Kind::Conflict, "Duplicate", format!("{d} already exists")),
            e => e.into(),
        })?;
        self.audit("admin", "template.create", name, "ok", &format!("oid {} v{}.{}", t.oid, t.major, t.minor)).await;
        Ok(t)
    }

    /// Applies the changes. A change bumps the minor version (clients keep their certificates)
    /// unless a higher major version is given (clients re-enroll).
    pub async fn update_template(&self, name: &str, spec: &TemplateSpec) -> Result<TemplateRow, RaError> {
        let mut t = self.template(name).await?;
        let before = t.clone();
        apply(&mut t, spec)?;
        if spec.oid.is_some() {
            return Err(invalid("a template's OID cannot change; create a new template and supersede".into()));
        }
        match spec.major {
            Some(m) if m < t.major => {
                return Err(invalid(format!("major version cannot go down ({} -> {m})", t.major)))
            }
            Some(m) if m > t.major => {
                t.major = m;
                t.minor = 0;
            }
            _ if t != before => t.minor += 1,
            _ => return Ok(t),
        }
        t.updated_at = self.now().0.max(before.updated_at + 1);
        self.store.update_template(&t).await?;
        self.audit("admin", "template.update", name, "ok", &format!("v{}.{}", t.major, t.minor)).await;
        Ok(t)
    }

    pub async fn create_account(&self, spec: &AccountSpec<'_>) -> Result<(), RaError> {
        if spec.name.is_empty() || spec.password.len() < 8 {
            return Err(RaError::new(
                Kind::BadRequest,
                "InvalidAccount",
                "account names must be non-empty and passwords at least 8 characters",
            ));
        }
        for t in &spec.templates {
            self.template(t).await?;
        }
        let row = AccountRow {
            name: spec.name.to_string(),
            password_hash: secrets::hash_password(spec.password),
            templates: spec.templates.join(","),
            disabled: false,
            created_at: self.now().0,
        };
        self.store.insert_account(&row).await.map_err(|e| match e {
            StoreError::Duplicate(d) => RaError::new(Kind::Conflict, "Duplicate", format!("{d} already exists")),
            e => e.into(),
        })?;
        self.audit("admin", "account.create", spec.name, "ok", "").await;
        Ok(())
    }

    /// Creates a one-time bootstrap token and returns it; only its hash is stored.
    pub async fn create_token(&self, spec: &TokenSpec<'_>) -> Result<(String, i64), RaError> {
        if spec.device.is_empty() || spec.ttl_secs <= 0 {
            return Err(RaError::new(
                Kind::BadRequest,
                "InvalidToken",
                "a token needs a device name and a positive TTL",
            ));
        }
        if let Some(t) = spec.template {
            self.template(t).await?;
        }
        let now = self.now().0;
        let t = secrets::new_token();
        let expires_at = now + spec.ttl_secs;
        self.store
            .insert_token(&TokenRow {
                id: t.id.clone(),
                secret_hash: t.secret_hash,
                device: spec.device.to_string(),
                template: spec.template.map(str::to_string),
                expires_at,
                used_at: None,
                created_at: now,
            })
            .await?;
        self.audit("admin", "token.create", spec.device, "ok", &format!("token {} expires {}", t.id, expires_at)).await;
        Ok((t.token, expires_at))
    }
}

impl Ra {
    pub async fn devices(&self, limit: i64) -> Result<Vec<autoenroll_store::DeviceSummary>, RaError> {
        Ok(self.store.devices(self.now().0, limit).await?)
    }

    pub async fn certificates_matching(
        &self,
        filter: &autoenroll_store::CertificateFilter,
    ) -> Result<Vec<autoenroll_store::CertificateRow>, RaError> {
        Ok(self.store.certificates_matching(filter).await?)
    }

    /// Moves the renewal time of a cohort to now: those certificates' renewals are accepted
    /// from now on, whatever the template's window says.
    pub async fn renew_now(&self, filter: &autoenroll_store::CertificateFilter) -> Result<u64, RaError> {
        let n = self.store.renew_now(filter, self.now().0).await?;
        self.audit("admin", "cert.renew-now", "-", "ok", &format!("{n} certificates: {filter:?}")).await;
        Ok(n)
    }

    /// Certificates whose renewal is overdue by more than `overdue_secs`, with the device's
    /// latest refusal: "what is stuck, and why".
    pub async fn stuck(&self, overdue_secs: i64, limit: i64) -> Result<Vec<autoenroll_store::StuckRow>, RaError> {
        let now = self.now().0;
        Ok(self.store.stuck(now, now - overdue_secs, limit).await?)
    }
}

impl Ra {
    /// A token for the admin REST API (`aea_<id>.<secret>`), shown once; only its hash is kept.
    pub async fn create_admin_token(&self, name: &str) -> Result<String, RaError> {
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(invalid("an admin token needs a name".into()));
        }
        let id = super::secrets::random_token_part(9);
        let secret = super::secrets::random_token_part(24);
        self.store.insert_admin_token(&id, name, &super::secrets::sha256(secret.as_bytes()), self.now().0).await?;
        self.audit("admin", "admin-token.create", name, "ok", &format!("token {id}")).await;
        Ok(format!("aea_{id}.{secret}"))
    }

    pub async fn revoke_admin_token(&self, name: &str) -> Result<u64, RaError> {
        let n = self.store.revoke_admin_token(name, self.now().0).await?;
        self.audit("admin", "admin-token.revoke", name, "ok", &format!("{n} tokens")).await;
        Ok(n)
    }

    /// The name of the administrator a bearer token belongs to (constant-time comparison).
    pub async fn authenticate_admin(&self, token: &str) -> Result<String, RaError> {
        let bad = || RaError::new(Kind::Unauthorized, "WrongCredentials", "unknown or revoked admin token");
        let (id, secret) = token.trim().strip_prefix("aea_").and_then(|t| t.split_once('.')).ok_or_else(bad)?;
        let (name, hash) = self.store.admin_token(id).await?.ok_or_else(bad)?;
        if !super::secrets::ct_eq(&super::secrets::sha256(secret.as_bytes()), &hash) {
            self.audit("anonymous", "admin.authenticate", id, "refused", "WrongCredentials").await;
            return Err(bad());
        }
        Ok(name)
    }
}
