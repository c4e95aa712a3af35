//! Who is asking: accounts (WS-Security UsernameToken), one-time bootstrap tokens, or a client
//! certificate this CA issued (TLS).
use super::{secrets, Ra, RaError};
use autoenroll_core::model::{AuditOutcome, CertState};
use autoenroll_core::pki::CertFacts;
use autoenroll_core::{Refusal, Thumbprint};

pub enum Credentials {
    None,
    Password {
        username: String,
        password: String,
    },
    BootstrapToken(String),
    /// The TLS client certificate chain, leaf first.
    ClientCertificate(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    Account { name: String, templates: Vec<String> },
    Token { id: String, template: Option<String> },
    Certificate { serial: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The device the certificate will be for.
    pub device: String,
}

impl Principal {
    pub fn actor(&self) -> String {
        match &self.kind {
            PrincipalKind::Account { name, .. } => format!("account:{name}"),
            PrincipalKind::Token { id, .. } => format!("token:{id}"),
            PrincipalKind::Certificate { serial } => format!("cert:{serial}"),
        }
    }

    /// Whether this principal may ask for `template` at all (the template's own `enroll`
    /// permission is checked separately).
    pub fn may_use_template(&self, template: &str) -> bool {
        match &self.kind {
            PrincipalKind::Account { templates, .. } => templates.is_empty() || templates.iter().any(|t| t == template),
            PrincipalKind::Token { template: Some(t), .. } => t == template,
            PrincipalKind::Token { template: None, .. } | PrincipalKind::Certificate { .. } => true,
        }
    }
}

impl Ra {
    /// Checks credentials without consuming anything (a bootstrap token is consumed only by
    /// the issuance it pays for). `device_hint` names the device for account requests.
    pub async fn authenticate(&self, creds: &Credentials, device_hint: Option<&str>) -> Result<Principal, RaError> {
        let now = self.now();
        let result: Result<Principal, RaError> = match creds {
            Credentials::None => Err(Refusal::MissingToken.into()),
            Credentials::Password { username, password } => {
                let wrong = || Refusal::WrongCredentials { what: "wrong username or password" }.into();
                match self.store.account(username).await? {
                    Some(a) if !a.disabled && secrets::verify_password(&a.password_hash, password) => Ok(Principal {
                        device: device_hint.filter(|d| !d.is_empty()).unwrap_or(&a.name).to_string(),
                        kind: PrincipalKind::Account { templates: a.templates, name: a.name },
                    }),
                    Some(_) => Err(wrong()),
                    None => {
                        secrets::burn_password_time(password);
                        Err(wrong())
                    }
                }
            }
            Credentials::BootstrapToken(token) => {
                let bad = || RaError::from(Refusal::WrongCredentials { what: "unknown bootstrap token" });
                let (id, secret) = secrets::split_token(token).ok_or_else(bad)?;
                let row = self.store.token(id).await?.ok_or_else(bad)?;
                if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &row.secret_hash) {
                    Err(bad())
                } else if row.used_at.is_some() {
                    Err(Refusal::TokenUsed.into())
                } else if now >= row.expires_at {
                    Err(Refusal::TokenExpired.into())
                } else {
                    Ok(Principal {
                        device: row.device,
                        kind: PrincipalKind::Token { id: row.id, template: row.template },
                    })
                }
            }
            Credentials::ClientCertificate(der) => {
                // rustls already verified the chain to our root and the validity period; the
                // store says whether we still consider the certificate good.
                let facts =
                    CertFacts::parse(der).map_err(|e| Refusal::BadClientCertificate { detail: e.to_string() })?;
                let row = self
                    .store
                    .certificate_by_thumbprint(Thumbprint::of_der(der).as_str())
                    .await?
                    .ok_or(Refusal::UnknownClientCertificate)?;
                if row.state != CertState::Issued {
                    Err(Refusal::ClientCertificateNotValid { state: row.state }.into())
                } else if now >= facts.not_after {
                    Err(Refusal::ClientCertificateExpired.into())
                } else {
                    Ok(Principal { device: row.device, kind: PrincipalKind::Certificate { serial: row.serial } })
                }
            }
        };
        if let Err(e) = &result {
            let subject = match creds {
                Credentials::Password { username, .. } => format!("account:{username}"),
                Credentials::BootstrapToken(t) => {
                    format!("token:{}", secrets::split_token(t).map(|(id, _)| id).unwrap_or("?"))
                }
                Credentials::ClientCertificate(_) => "client-certificate".into(),
                Credentials::None => "anonymous".into(),
            };
            self.audit(&subject, "authenticate", &subject, AuditOutcome::Refused, e.code()).await;
        }
        result
    }
}
