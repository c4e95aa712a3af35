//! SCEP enrollment decisions: who a request is from (a renewal signed by a certificate we
//! issued, or a new enrollment paying with a challenge), the challenge checks in their fixed
//! order, pending requests and polling. The wire format lives in `frontends::scep`.
use super::enroll::{check_key, csr_error, issue_request, Issued, Recorded};
use super::lifecycle::Retrieved;
use super::renew::{Proof, Window};
use super::templates::profile_for;
use super::{secrets, Ra, RaError};
use autoenroll_ca::ContentCipher;
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::pki::{CsrFacts, KeyFacts};
use autoenroll_core::{oids, Kind, Serial};
use autoenroll_store::{ChallengeRow, NewRequest, TemplateRow};
use std::str::FromStr;

/// A PKCSReq or RenewalReq after its signature was verified and its envelope opened.
pub struct ScepRequest<'a> {
    pub renewal_req: bool,
    pub transaction_id: &'a str,
    pub signer_cert_der: &'a [u8],
    pub csr_der: &'a [u8],
    /// The template named by the URL path (`/scep/<template>`), else the SCEP default.
    pub path_template: Option<&'a str>,
}

/// What an administrator asks a dynamic challenge to be bound to. Unset fields take the
/// template's values (subject `CN=<device>`, no SANs, the template's key size and EKUs).
#[derive(Debug, Clone, Default)]
pub struct ChallengeSpec {
    pub device: String,
    pub template: String,
    pub ttl_secs: i64,
    pub subject: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<std::net::IpAddr>,
    pub min_key_bits: Option<i64>,
    pub ext_key_usage: Option<Vec<String>>,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> RaError {
    RaError::new(Kind::Unauthorized, code, detail)
}

fn mismatch(code: &'static str, detail: impl Into<String>) -> RaError {
    RaError::new(Kind::PolicyDenied, code, detail)
}

fn name_list<I: IntoIterator<Item = String>>(items: I) -> String {
    let mut v: Vec<String> =
        items.into_iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    v.sort();
    v.dedup();
    v.join(",")
}

/// Subjects compare by their RFC 4514 text, case-insensitively (string types may differ).
fn normalized_subject(s: &str) -> Result<String, RaError> {
    let n = x509_cert::name::Name::from_str(s)
        .map_err(|e| RaError::new(Kind::BadRequest, "BadSubject", format!("subject {s:?}: {e}")))?;
    Ok(n.to_string().to_ascii_lowercase())
}

fn eku_oid(name: &str) -> String {
    match name {
        "serverAuth" => oids::KP_SERVER_AUTH.to_string(),
        "clientAuth" => oids::KP_CLIENT_AUTH.to_string(),
        other => other.to_string(),
    }
}

/// The EKUs a CSR asks for (its extensionRequest), as OIDs.
fn requested_ekus(csr: &CsrFacts) -> Vec<String> {
    use der::Decode;
    csr.extensions
        .iter()
        .filter(|e| e.extn_id == oids::CE_EXT_KEY_USAGE)
        .filter_map(|e| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|eku| eku.0.into_iter().map(|o| o.to_string()))
        .collect()
}

/// `<8 hex id>-<32 hex secret>`: PrintableString-safe, so every SCEP client can carry it.
fn new_challenge() -> (String, String, Vec<u8>) {
    let id = hex::encode(secrets::random_bytes::<4>());
    let secret = hex::encode(secrets::random_bytes::<16>());
    let hash = secrets::sha256(secret.as_bytes());
    (format!("{id}-{secret}"), id, hash)
}

const STATIC_CHALLENGE_SETTING: &str = "scep.static_challenge.";

impl Ra {
    /// The certificates GetCACert hands out: the RA (recipient and CertRep signer), then the
    /// issuing CA and the root.
    pub fn scep_certificates(&self) -> Vec<Vec<u8>> {
        vec![self.scep.cert_der().to_vec(), self.ca.issuing_der().to_vec(), self.ca.root_der().to_vec()]
    }

    pub fn scep_legacy_ciphers(&self) -> bool {
        self.settings.scep_legacy_ciphers
    }

    /// Decrypts a request envelope. Any failure to decrypt is one code (no padding oracle);
    /// a legacy cipher on a server that refuses them is said plainly.
    pub fn scep_open_envelope(&self, envelope: &[u8]) -> Result<(Vec<u8>, ContentCipher), RaError> {
        self.scep.open_envelope(envelope, self.settings.scep_legacy_ciphers).map_err(|e| match e {
            autoenroll_ca::CaError::Key(autoenroll_keys::KeyError::Unsupported(m)) => {
                RaError::new(Kind::BadRequest, "UnsupportedCipher", m)
            }
            _ => RaError::new(Kind::BadRequest, "BadMessageCheck", "the request envelope could not be decrypted"),
        })
    }

    /// Audits a refusal decided before the RA saw the request (cipher, digest, envelope).
    pub async fn audit_scep_refusal(&self, transaction_id: &str, e: &RaError) {
        self.record_failure(&format!("scep:{transaction_id}"), "scep.message", "-", e).await;
    }

    /// Signs a CertRep with the RA key.
    pub fn scep_sign(&self, content: &[u8], attributes: Vec<x509_cert::attr::Attribute>) -> Result<Vec<u8>, RaError> {
        Ok(self.scep.sign(content, attributes, &[self.ca.issuing_der().to_vec()])?)
    }

    pub async fn create_challenge(&self, spec: &ChallengeSpec) -> Result<(String, i64), RaError> {
        if spec.device.is_empty() || spec.ttl_secs <= 0 {
            return Err(RaError::new(
                Kind::BadRequest,
                "InvalidChallenge",
                "a challenge needs a device and a positive TTL",
            ));
        }
        let template = self.template(&spec.template).await?;
        if !template.enroll {
            return Err(mismatch(
                "TemplateNotAllowed",
                format!("template {} does not allow enrollment", template.name),
            ));
        }
        let subject = match &spec.subject {
            Some(s) => s.clone(),
            None => format!("CN={}", autoenroll_keys::escape_rdn_value(&spec.device)),
        };
        normalized_subject(&subject)?;
        let now = self.now().0;
        self.store.touch_device(&spec.device, now).await?;
        let (challenge, id, secret_hash) = new_challenge();
        let expires_at = now + spec.ttl_secs;
        let ekus = spec.ext_key_usage.clone().unwrap_or_else(|| {
            template.ext_key_usage.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
        });
        self.store
            .insert_challenge(&ChallengeRow {
                id: id.clone(),
                secret_hash,
                device: spec.device.clone(),
                template: template.name.clone(),
                subject,
                dns_names: name_list(spec.dns_names.iter().cloned()),
                ip_addrs: name_list(spec.ip_addrs.iter().map(|i| i.to_string())),
                min_key_bits: spec.min_key_bits.unwrap_or(template.min_key_bits).max(2048),
                ext_key_usage: name_list(ekus.iter().map(|e| eku_oid(e.trim()))),
                created_at: now,
                expires_at,
                used_at: None,
                used_transaction: None,
                used_key: None,
            })
            .await?;
        self.audit(
            "admin",
            "challenge.create",
            &spec.device,
            "ok",
            &format!("challenge {id} for {} expires {expires_at}", template.name),
        )
        .await;
        Ok((challenge, expires_at))
    }

    /// Sets (or with `None` clears) the static challenge of a template; only its hash is kept.
    pub async fn set_static_challenge(&self, template: &str, secret: Option<&str>) -> Result<(), RaError> {
        self.template(template).await?;
        let key = format!("{STATIC_CHALLENGE_SETTING}{template}");
        let value = match secret {
            Some(s) if s.len() >= 8 => hex::encode(secrets::sha256(s.as_bytes())),
            Some(_) => {
                return Err(RaError::new(
                    Kind::BadRequest,
                    "WeakChallenge",
                    "a static challenge needs at least 8 characters",
                ))
            }
            None => String::new(),
        };
        self.store.set_setting(&key, &value).await?;
        self.audit("admin", "challenge.static", template, "ok", if secret.is_some() { "set" } else { "cleared" }).await;
        Ok(())
    }

    async fn static_challenge_matches(&self, template: &str, password: &str) -> Result<bool, RaError> {
        let stored = self.store.setting(&format!("{STATIC_CHALLENGE_SETTING}{template}")).await?.unwrap_or_default();
        let Ok(stored) = hex::decode(stored) else { return Ok(false) };
        Ok(!stored.is_empty() && secrets::ct_eq(&secrets::sha256(password.as_bytes()), &stored))
    }

    /// A PKCSReq or RenewalReq. A transaction already answered gets the same answer again.
    pub async fn scep_request(&self, req: &ScepRequest<'_>) -> Result<Retrieved, RaError> {
        let ours = verify_issued_by(req.signer_cert_der, self.ca.issuing_der()).is_ok();
        let signer_key = transaction_signer(req.signer_cert_der, ours)?;
        if let Some(id) = self.store.scep_transaction(req.transaction_id, &signer_key).await? {
            return self.retrieve(id).await;
        }
        if ours {
            // Signed with a certificate we issued: a renewal, proven by possession of its key.
            let csr = CsrFacts::parse(req.csr_der).map_err(csr_error)?;
            let issued = self.renew(csr, req.signer_cert_der, Proof::ScepSigned, None, Window::Autoenrollment).await?;
            self.store
                .insert_scep_transaction(req.transaction_id, &signer_key, issued.request_id, self.now().0)
                .await?;
            return Ok(Retrieved::Issued(issued));
        }
        let actor = format!("scep:{}", req.transaction_id);
        let result = self.scep_enroll(req, &signer_key).await;
        match &result {
            // Audited with the certificate, in the same transaction.
            Ok(Retrieved::Issued(_)) => {}
            Ok(Retrieved::Pending { request_id }) => {
                self.audit(&actor, "scep.issue", "-", "pending", &format!("request {request_id}")).await;
            }
            Err(e) => self.record_failure(&actor, "scep.issue", "-", e).await,
        }
        result
    }

    async fn scep_enroll(&self, req: &ScepRequest<'_>, signer_key: &str) -> Result<Retrieved, RaError> {
        let now = self.now();
        let self_signed = verify_issued_by(req.signer_cert_der, req.signer_cert_der).is_ok();
        let csr = CsrFacts::parse(req.csr_der).map_err(csr_error)?;
        if req.renewal_req || (!self_signed && csr.challenge_password.is_none()) {
            return Err(refuse("ForeignCertificate", "the request is signed by a certificate this CA did not issue"));
        }
        let (device, template, challenge_id) = self.check_challenge(&csr, req, signer_key).await?;
        let device_row = self.store.device(&device).await?;
        let device_row = match device_row {
            Some(d) => d,
            None => self.store.touch_device(&device, now.0).await?,
        };
        if device_row.blocked {
            return Err(mismatch("DeviceBlocked", format!("device {device} is blocked")));
        }
        check_key(&csr.key, &template)?;
        let request = issue_request(&csr, &template, &device)?;
        if let Some(id) = &challenge_id {
            // The single-use check and the write are one statement (exactly once across replicas).
            if !self.store.use_challenge(id, req.transaction_id, signer_key, now.0).await? {
                return Err(refuse("ChallengeUsed", "the challenge was already used by another request"));
            }
        }
        let requester = format!("scep:{}", challenge_id.as_deref().unwrap_or("static"));
        if template.pend_all {
            let request_id = self
                .store
                .insert_request(
                    &NewRequest {
                        device_id: device_row.id,
                        requester: &requester,
                        template: &template.name,
                        kind: "scep",
                        status: "received",
                        csr_der: &csr.der,
                        previous_serial: None,
                    },
                    now.0,
                )
                .await?;
            self.store.insert_scep_transaction(req.transaction_id, signer_key, request_id, now.0).await?;
            return Err(RaError::new(Kind::Pending, "Pending", format!("request {request_id} awaits approval"))
                .with_request(request_id));
        }
        let profile = profile_for(&template);
        let actor = format!("scep:{}", req.transaction_id);
        let (request_id, serial, der) = self
            .issue_recorded(Recorded {
                audit: super::enroll::Audit {
                    actor: &actor,
                    action: "scep.issue",
                    subject: &template.name,
                    note: String::new(),
                },
                previous_serial: None,
                device_id: device_row.id,
                requester: &requester,
                template_name: &template.name,
                kind: "scep",
                csr_der: &csr.der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: Some((req.transaction_id, signer_key)),
            })
            .await?;
        Ok(Retrieved::Issued(Issued {
            certificate_der: der,
            chain: self.chain_der(),
            request_id,
            serial: serial.0,
            template: template.name,
        }))
    }

    /// The challenge checks, in the documented order (docs/scep.md). Returns the device, the
    /// template and the dynamic challenge to spend (None for a template's static challenge).
    async fn check_challenge(
        &self,
        csr: &CsrFacts,
        req: &ScepRequest<'_>,
        signer_key: &str,
    ) -> Result<(String, TemplateRow, Option<String>), RaError> {
        let now = self.now().0;
        let path_template = req.path_template.unwrap_or(&self.settings.scep_template);
        // 1. A challenge at all.
        let Some(password) = csr.challenge_password.as_deref().map(str::trim).filter(|p| !p.is_empty()) else {
            return Err(refuse("ChallengeMissing", "the request carries no challenge password"));
        };
        // 2. The template's static challenge, when it has one.
        if self.static_challenge_matches(path_template, password).await? {
            let template = self.template(path_template).await?;
            let device = csr.subject_cn.clone().or_else(|| csr.dns_names.first().cloned()).ok_or_else(|| {
                RaError::new(Kind::BadCsr, "SubjectRequired", "the request names no device (no CN and no DNS name)")
            })?;
            return Ok((device, template, None));
        }
        // 3. A dynamic challenge: known, right secret (constant-time on hashes).
        let invalid = || refuse("ChallengeInvalid", "the challenge password is not valid");
        let (id, secret) = password.split_once('-').ok_or_else(invalid)?;
        let row = self.store.challenge(id).await?.ok_or_else(invalid)?;
        if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &row.secret_hash) {
            return Err(invalid());
        }
        // 4. Not expired; 5. not spent by another transaction or key.
        if now >= row.expires_at {
            return Err(refuse("ChallengeExpired", format!("challenge {id} expired")));
        }
        let retry =
            row.used_transaction.as_deref() == Some(req.transaction_id) && row.used_key.as_deref() == Some(signer_key);
        if row.used_at.is_some() && !retry {
            return Err(refuse("ChallengeUsed", format!("challenge {id} was already used")));
        }
        // 6. The device is still in the inventory.
        if self.store.device(&row.device).await?.is_none() {
            return Err(mismatch("DeviceNotEnrolled", format!("device {} is not in the inventory", row.device)));
        }
        // 7. The template it was made for is the one asked for, and still enrollable.
        let template = match self.store.template(&row.template).await? {
            Some(t) if t.enroll && (req.path_template.is_none() || req.path_template == Some(t.name.as_str())) => t,
            _ => {
                return Err(mismatch(
                    "TemplateNotAssigned",
                    format!("challenge {id} is for template {}, not {path_template}", row.template),
                ))
            }
        };
        // 8. Subject, 9. SANs, 10. key, 11. EKUs: the request is the one the challenge was made for.
        if normalized_subject(&row.subject)? != csr.subject.to_string().to_ascii_lowercase() {
            return Err(mismatch("SubjectMismatch", format!("expected subject {}, got {}", row.subject, csr.subject)));
        }
        let sans = (name_list(csr.dns_names.iter().cloned()), name_list(csr.ip_addrs.iter().map(|i| i.to_string())));
        if sans != (row.dns_names.clone(), row.ip_addrs.clone()) {
            return Err(mismatch(
                "SubjectAltNameMismatch",
                format!("expected SANs [{}] [{}], got [{}] [{}]", row.dns_names, row.ip_addrs, sans.0, sans.1),
            ));
        }
        match csr.key {
            KeyFacts::Rsa { bits } if i64::from(bits) >= row.min_key_bits => {}
            ref k => {
                return Err(mismatch(
                    "KeyLengthMismatch",
                    format!("expected an RSA key of at least {} bits, got {}", row.min_key_bits, k.describe()),
                ))
            }
        }
        let allowed: Vec<&str> = row.ext_key_usage.split(',').filter(|s| !s.is_empty()).collect();
        if let Some(extra) = requested_ekus(csr).into_iter().find(|e| !allowed.contains(&e.as_str())) {
            return Err(mismatch(
                "EkuMismatch",
                format!("the request asks for EKU {extra}, not allowed by the challenge"),
            ));
        }
        Ok((row.device, template, Some(row.id)))
    }

    /// CertPoll: the state of a transaction this signer started.
    pub async fn scep_poll(&self, transaction_id: &str, signer_cert_der: &[u8]) -> Result<Retrieved, RaError> {
        let ours = verify_issued_by(signer_cert_der, self.ca.issuing_der()).is_ok();
        let key = transaction_signer(signer_cert_der, ours)?;
        match self.store.scep_transaction(transaction_id, &key).await? {
            Some(id) => self.retrieve(id).await,
            None => Err(RaError::new(Kind::NotFound, "UnknownTransaction", format!("no transaction {transaction_id}"))),
        }
    }

    /// GetCert: a certificate we issued, by serial.
    pub async fn scep_get_cert(&self, serial: &[u8]) -> Result<Vec<u8>, RaError> {
        let serial = Serial::from_bytes(serial);
        self.store
            .certificate(serial.as_str())
            .await?
            .and_then(|c| c.der)
            .ok_or_else(|| RaError::new(Kind::NotFound, "UnknownCertificate", format!("no certificate {serial}")))
    }
}

/// Who a transaction belongs to. A renewal signed by one of our certificates belongs to that
/// certificate (the same key renewing again later is a new request); a first enrollment to its
/// key, since clients may re-create their self-signed signer between retries and polls.
fn transaction_signer(cert_der: &[u8], ours: bool) -> Result<String, RaError> {
    if ours {
        return Ok(format!("cert:{}", autoenroll_core::Thumbprint::of_der(cert_der).as_str()));
    }
    signer_key_id(cert_der)
}

/// SHA-256 of the signer's public key.
fn signer_key_id(cert_der: &[u8]) -> Result<String, RaError> {
    use der::{Decode, Encode};
    // Lenient: a client's own first signer certificate may bend RFC 5280 (sscep's long serials).
    let cert = x509_cert::certificate::CertificateInner::<x509_cert::certificate::Raw>::from_der(cert_der)
        .map_err(|e| RaError::new(Kind::BadRequest, "BadSignerCertificate", e.to_string()))?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(RaError::internal)?;
    Ok(autoenroll_keys::sha256_hex(&spki))
}
