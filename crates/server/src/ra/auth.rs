//! Who is asking: accounts (WS-Security UsernameToken), one-time bootstrap tokens, or a client
//! certificate this CA issued (TLS) — and what a principal may enroll (the template's grants)
//! and for which device (account device patterns, device binding).
use super::{secrets, throttle, Ra, RaError};
use autoenroll_core::model::{glob_match, permitted, valid_name, AuditOutcome, CertState, Requester, Template};
use autoenroll_core::{Refusal, Thumbprint};
use autoenroll_store::{Certificate, Device};

pub enum Credentials {
    None,
    Password {
        username: String,
        password: String,
        /// The client's address, when known: failures count against it too.
        client: Option<std::net::IpAddr>,
    },
    BootstrapToken(String),
    /// The TLS client certificate chain, leaf first.
    ClientCertificate(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    Account {
        name: String,
        /// Templates the account is restricted to; empty = every one its grants allow.
        templates: Vec<String>,
        groups: Vec<String>,
        /// Device-name patterns the account may act for.
        devices: Vec<String>,
        /// The single-use sign-in token (federated MDM sign-in) the account authenticated
        /// with, spent by the request it pays for; None for a password.
        sign_in_token: Option<String>,
    },
    Token {
        id: String,
        template: Option<String>,
    },
    /// A device authenticated by a certificate of `template` this CA issued. `current` is
    /// false for a certificate already renewed (still valid): it may report and collect, not
    /// enroll.
    Certificate {
        serial: String,
        template: String,
        current: bool,
    },
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
            PrincipalKind::Certificate { serial, .. } => format!("cert:{serial}"),
        }
    }

    /// Whether this principal may enroll `template`: its grants name the principal (and an
    /// account's own template list, when it has one, names the template). `device_groups` are
    /// the groups of the principal's device. For a check-in this is what the device should hold.
    pub fn may_enroll(&self, template: &Template, device_groups: &[String]) -> bool {
        let requester = match &self.kind {
            PrincipalKind::Account { name, templates, groups, .. } => {
                if !templates.is_empty() && !templates.contains(&template.name) {
                    return false;
                }
                Requester::Account { name, groups }
            }
            PrincipalKind::Token { template, .. } => Requester::Token { template: template.as_deref() },
            PrincipalKind::Certificate { template, .. } => Requester::Holder { template },
        };
        template.enroll && permitted(&template.name, &template.grants, &requester, &self.device, device_groups)
    }

    /// The single-use token a request by this principal spends: an administrator's bootstrap
    /// token, or the token the federated sign-in page gave an account.
    pub fn token_to_spend(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::Token { id, .. } | PrincipalKind::Account { sign_in_token: Some(id), .. } => Some(id),
            PrincipalKind::Account { .. } | PrincipalKind::Certificate { .. } => None,
        }
    }

    /// Whether the principal may ask for certificates at all (a certificate already renewed
    /// may only report and collect).
    pub fn may_request(&self) -> bool {
        !matches!(self.kind, PrincipalKind::Certificate { current: false, .. })
    }

    /// Whom a device this principal creates is bound to: the account that named it, or the
    /// administrator who made the token for it.
    /// None for a certificate: a device never binds itself (after an administrator unbound it,
    /// the next account allowed to enroll it does).
    fn owner(&self) -> Option<String> {
        match &self.kind {
            PrincipalKind::Account { name, .. } => Some(format!("account:{name}")),
            PrincipalKind::Token { .. } => Some(super::LOCAL_ADMIN.to_string()),
            PrincipalKind::Certificate { .. } => None,
        }
    }
}

/// What authentication is for: requests need live credentials. `Identify` only names the
/// asker (a check-in, collecting a pending request, naming the device beside a signed renewal):
/// it also takes the spent bootstrap token that paid for a request and a certificate already
/// renewed (a device whose successor did not install must still hear what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Request,
    Identify,
}

/// The longest account name a password is checked for.
const MAX_USERNAME: usize = 256;

/// An account acting for `device_hint` (a device name it reported), else for itself.
pub(super) fn account_principal(
    a: autoenroll_store::Account,
    device_hint: Option<&str>,
    sign_in_token: Option<String>,
) -> Result<Principal, RaError> {
    // A device name the client reports must be a valid one; without one the account acts for
    // itself (its name was checked when it was made, and may be a UPN such as a@b.example).
    let device = match device_hint.filter(|d| !d.is_empty()) {
        Some(d) => {
            valid_name(d).map_err(|reason| Refusal::BadDeviceName { name: d.to_string(), reason })?;
            d.to_string()
        }
        None => a.name.clone(),
    };
    Ok(Principal {
        device,
        kind: PrincipalKind::Account {
            templates: a.templates,
            name: a.name,
            groups: a.groups,
            devices: a.devices,
            sign_in_token,
        },
    })
}

impl Ra {
    /// Checks credentials without consuming anything (a bootstrap token is consumed only by
    /// the issuance it pays for). `device_hint` names the device for account requests.
    pub async fn authenticate(&self, creds: &Credentials, device_hint: Option<&str>) -> Result<Principal, RaError> {
        self.authenticate_for(creds, device_hint, Purpose::Request).await
    }

    pub async fn authenticate_for(
        &self,
        creds: &Credentials,
        device_hint: Option<&str>,
        purpose: Purpose,
    ) -> Result<Principal, RaError> {
        let now = self.now();
        let result: Result<Principal, RaError> = match creds {
            Credentials::None => Err(Refusal::MissingToken.into()),
            Credentials::Password { username, password, client } => {
                self.password_login(username, password, *client, device_hint).await
            }
            Credentials::BootstrapToken(token) => {
                let bad = || RaError::from(Refusal::WrongCredentials { what: "unknown bootstrap token" });
                let (id, secret) = secrets::split_token(token).ok_or_else(bad)?;
                let row = self.store.token(id).await?.ok_or_else(bad)?;
                let identifying = purpose == Purpose::Identify;
                if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &row.secret_hash) {
                    Err(bad())
                } else if row.used_at.is_some() && (!identifying || row.account.is_some()) {
                    // A spent administrator's token still names the request it paid for (to
                    // collect it); a sign-in token is the account's password for one
                    // enrollment, and nothing once spent or expired.
                    Err(Refusal::TokenUsed.into())
                } else if now >= row.expires_at && (!identifying || row.account.is_some()) {
                    Err(Refusal::TokenExpired.into())
                } else if let Some(name) = row.account {
                    // A sign-in token is the account that signed in, for as long as the
                    // account stays enabled.
                    match self.store.account(&name).await? {
                        Some(a) if !a.disabled => account_principal(a, device_hint, Some(row.id)),
                        _ => Err(bad()),
                    }
                } else {
                    Ok(Principal {
                        device: row.device,
                        kind: PrincipalKind::Token { id: row.id, template: row.template },
                    })
                }
            }
            Credentials::ClientCertificate(der) => {
                // rustls verified the chain to our CA at the session's full handshake (a resumed
                // session carries that chain, maybe from hours ago); here, on every request, the
                // store says whether the certificate is still good and the clock whether it is
                // within its validity. The row found by the thumbprint of these very bytes holds
                // their validity, so the certificate is not parsed again.
                let row = self
                    .store
                    .certificate_by_thumbprint(Thumbprint::of_der(der).as_str())
                    .await?
                    .ok_or(Refusal::UnknownClientCertificate)?;
                let current = row.state == CertState::Issued;
                let renewed_ok = purpose == Purpose::Identify && row.state == CertState::Renewed;
                if !current && !renewed_ok {
                    Err(Refusal::ClientCertificateNotValid { state: row.state }.into())
                } else if now >= row.not_after || now < row.not_before {
                    Err(Refusal::ClientCertificateExpired.into())
                } else {
                    if current {
                        self.note_use(&row).await?;
                    }
                    Ok(Principal {
                        device: row.device,
                        kind: PrincipalKind::Certificate { serial: row.serial, template: row.template, current },
                    })
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
            if self.audit_this_refusal(e) {
                self.audit(&subject, "authenticate", &subject, AuditOutcome::Refused, e.code()).await;
            }
        }
        result
    }

    /// An account's password, throttled per account and per client address.
    async fn password_login(
        &self,
        username: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
        device_hint: Option<&str>,
    ) -> Result<Principal, RaError> {
        let wrong = || RaError::from(Refusal::WrongCredentials { what: "wrong username or password" });
        // Account names are short: a long one is a guess at something else (and would make a
        // counter key the database refuses), counted against the address alone.
        if username.len() > MAX_USERNAME {
            self.count_attempt(&throttle::subjects(None, client)).await?;
            return Err(wrong());
        }
        let subjects = throttle::subjects(Some(username), client);
        self.count_attempt(&subjects).await?;
        let account = self.store.account(username).await?;
        // Unknown and disabled accounts cost a hash too: nobody learns which exist.
        let stored = account.as_ref().filter(|a| !a.disabled).map(|a| a.password_hash.clone());
        let Some(a) = account.filter(|_| stored.is_some()) else {
            self.check_password(None, password).await?;
            return Err(wrong());
        };
        if !self.check_password(stored, password).await? {
            return Err(wrong());
        }
        self.note_success(&subjects).await?;
        if secrets::needs_rehash(&a.password_hash) {
            // An older hash (PBKDF2, weaker parameters) is replaced while the password is at
            // hand, unless the password was changed meanwhile.
            let fresh = self.hash_secret(password).await?;
            self.store.replace_password_hash(&a.name, &a.password_hash, &fresh).await?;
        }
        account_principal(a, device_hint, None)
    }

    /// A certificate was used (to authenticate, or to sign its renewal): the first use revokes
    /// the certificate it renewed (reason superseded), which had stayed good until its
    /// successor proved to be in service.
    pub(crate) async fn note_use(&self, c: &Certificate) -> Result<(), RaError> {
        if c.first_used_at.is_some() || c.previous_serial.is_none() {
            return Ok(());
        }
        let now = self.now();
        if self.store.mark_first_used(&c.serial, now).await? {
            if let Some(old) = self.store.revoke_predecessor(&c.serial, now).await? {
                let detail = format!("superseded (its successor {} is in use)", c.serial);
                self.audit("server", "cert.revoke", &old, AuditOutcome::Ok, &detail).await;
            }
        }
        Ok(())
    }

    /// Whether a principal may enroll for its device (`device`: the inventory's row, None on
    /// first sight), before anything is written: an account only for device names its patterns
    /// allow and only for devices that are unbound or its own; a blocked device is refused.
    /// Returns whether someone stands behind the device's name (see `issue_request`).
    pub(crate) async fn check_device(&self, p: &Principal, device: Option<&Device>) -> Result<bool, RaError> {
        if let PrincipalKind::Account { devices, .. } = &p.kind {
            if !devices.iter().any(|pattern| glob_match(pattern, &p.device)) {
                return Err(Refusal::DeviceNotAllowed { actor: p.actor(), device: p.device.clone() }.into());
            }
        }
        if device.is_none() {
            // A new device whose name differs from a known one only in case or a trailing
            // dot is that device under another spelling (DNS names compare so): refused, or a
            // requester could get a certificate for a device bound to someone else.
            if let Some(other) = self.store.device_spelled_otherwise(&p.device).await? {
                return Err(Refusal::DeviceNameTaken { device: other.name }.into());
            }
        }
        if let Some(d) = device {
            let mine = match &p.kind {
                PrincipalKind::Account { .. } => d.owner.is_none() || d.owner == p.owner(),
                // Tokens and challenges are made for a device by an administrator; a
                // certificate is the device itself.
                PrincipalKind::Token { .. } | PrincipalKind::Certificate { .. } => true,
            };
            if !mine {
                return Err(Refusal::DeviceBound { actor: p.actor(), device: d.name.clone() }.into());
            }
            if d.is_blocked() {
                return Err(Refusal::DeviceBlocked { device: d.name.clone() }.into());
            }
        }
        let vouched = match &p.kind {
            PrincipalKind::Token { .. } => true,
            PrincipalKind::Account { devices, .. } => vouching_pattern(devices, &p.device),
            PrincipalKind::Certificate { .. } => match device.and_then(|d| d.owner.as_deref()) {
                Some(owner) => self.owner_vouches(owner, &p.device).await?,
                None => false,
            },
        };
        Ok(vouched)
    }

    /// Whether the owner a device is bound to stands behind its name: an administrator did
    /// (tokens, challenges), or an account whose explicit device patterns name it.
    pub(crate) async fn owner_vouches(&self, owner: &str, device: &str) -> Result<bool, RaError> {
        if owner == super::LOCAL_ADMIN {
            return Ok(true);
        }
        Ok(match owner.strip_prefix("account:") {
            Some(name) => self.store.account(name).await?.is_some_and(|a| vouching_pattern(&a.devices, device)),
            None => false,
        })
    }

    /// The device a principal enrolls for, created on first sight and bound to its owner, once
    /// every check passed (a refused request leaves no device behind). A racing request that
    /// bound it to someone else first wins.
    ///
    /// `known` is the device as this request read it already: when it was seen recently there is
    /// nothing to write, and it is not read again.
    pub(crate) async fn claim_device(&self, p: &Principal, known: Option<&Device>) -> Result<Device, RaError> {
        let now = self.now();
        let mut device = match known {
            Some(d) => self.store.touch_seen_device(d.clone(), now).await?,
            None => self.store.touch_device(&p.device, now).await?,
        };
        if let (None, Some(owner)) = (&device.owner, p.owner()) {
            if self.store.bind_device(device.id, &owner).await? {
                device.owner = Some(owner);
            } else {
                device = self.store.device(&p.device).await?.ok_or_else(|| RaError::internal("device vanished"))?;
            }
        }
        if matches!(p.kind, PrincipalKind::Account { .. }) && device.owner != p.owner() {
            return Err(Refusal::DeviceBound { actor: p.actor(), device: device.name }.into());
        }
        Ok(device)
    }
}

/// An account's device patterns vouch for a name when one other than the catch-all `*` names
/// it: `*` lets an account enroll any device but stands behind none of their names.
fn vouching_pattern(patterns: &[String], device: &str) -> bool {
    patterns.iter().any(|pattern| pattern != "*" && glob_match(pattern, device))
}
