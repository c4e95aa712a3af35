//! Who is asking: accounts (WS-Security UsernameToken), one-time bootstrap tokens, or a client
//! certificate this CA issued (TLS).
use super::{secrets, Ra, RaError};
use autoenroll_core::pki::CertFacts;
use autoenroll_core::{Kind, Thumbprint};

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
        let result = match creds {
            Credentials::None => Err(RaError::new(
                Kind::Unauthorized,
                "MissingToken",
                "no credentials: send a WS-Security UsernameToken, a bootstrap token or a client certificate",
            )),
            Credentials::Password { username, password } => match self.store.account(username).await? {
                Some(a) if !a.disabled && secrets::verify_password(&a.password_hash, password) => Ok(Principal {
                    device: device_hint.filter(|d| !d.is_empty()).unwrap_or(&a.name).to_string(),
                    kind: PrincipalKind::Account {
                        templates: a
                            .templates
                            .split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_string)
                            .collect(),
                        name: a.name,
                    },
                }),
                Some(_) => Err(RaError::new(Kind::Unauthorized, "WrongCredentials", "wrong username or password")),
                None => {
                    secrets::burn_password_time(password);
                    Err(RaError::new(Kind::Unauthorized, "WrongCredentials", "wrong username or password"))
                }
            },
            Credentials::BootstrapToken(token) => {
                let bad = || RaError::new(Kind::Unauthorized, "WrongCredentials", "unknown bootstrap token");
                let (id, secret) = secrets::split_token(token).ok_or_else(bad)?;
                let row = self.store.token(id).await?.ok_or_else(bad)?;
                if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &row.secret_hash) {
                    Err(bad())
                } else if row.used_at.is_some() {
                    Err(RaError::new(Kind::Unauthorized, "TokenUsed", "bootstrap token was already used"))
                } else if now.0 >= row.expires_at {
                    Err(RaError::new(Kind::Unauthorized, "TokenExpired", "bootstrap token has expired"))
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
                let facts = CertFacts::parse(der)
                    .map_err(|e| RaError::new(Kind::Unauthorized, "BadClientCertificate", e.to_string()))?;
                let row =
                    self.store.certificate_by_thumbprint(Thumbprint::of_der(der).as_str()).await?.ok_or_else(|| {
                        RaError::new(
                            Kind::Unauthorized,
                            "UnknownClientCertificate",
                            "client certificate is not in the inventory",
                        )
                    })?;
                if row.state != "issued" {
                    Err(RaError::new(
                        Kind::Unauthorized,
                        "ClientCertificateNotValid",
                        format!("client certificate is {}", row.state),
                    ))
                } else if now >= facts.not_after {
                    Err(RaError::new(Kind::Unauthorized, "ClientCertificateExpired", "client certificate has expired"))
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
            self.audit(&subject, "authenticate", &subject, "refused", e.code).await;
        }
        result
    }
}
