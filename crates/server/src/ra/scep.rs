//! SCEP enrollment decisions: who a request is from (a renewal signed by a certificate we
//! issued, or a new enrollment paying with a challenge), the challenge checks in their fixed
//! order, pending requests and polling. The wire format lives in `frontends::scep`.
use super::enroll::{csr_error, issue_request, Issue, Issued, Outcome, Recorded};
use super::renew::{Proof, Window};
use super::templates::profile_for;
use super::{secrets, throttle, Ra, RaError};
use autoenroll_ca::ContentCipher;
use autoenroll_core::model::{valid_name, AuditOutcome, Eku, RequestKind, RequestStatus, Template};
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::pki::{CsrFacts, KeyFacts};
use autoenroll_core::{oids, Refusal, RefusalCode, Serial};
use autoenroll_store::{Challenge, NewRequest};
use std::str::FromStr;

/// A PKCSReq or RenewalReq after its signature was verified and its envelope opened.
pub struct ScepRequest<'a> {
    pub renewal_req: bool,
    pub transaction_id: &'a str,
    pub signer_cert_der: &'a [u8],
    pub csr_der: &'a [u8],
    /// The template named by the URL path (`/scep/<template>`), else the SCEP default.
    pub path_template: Option<&'a str>,
    /// The client's address: wrong challenges count against it.
    pub client: Option<std::net::IpAddr>,
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
    pub min_key_bits: Option<u32>,
    pub ext_key_usage: Option<Vec<Eku>>,
}

/// Names compare lower-case, sorted and without duplicates.
fn name_list<I: IntoIterator<Item = String>>(items: I) -> Vec<String> {
    let mut v: Vec<String> =
        items.into_iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    v.sort();
    v.dedup();
    v
}

/// Subjects compare by their RFC 4514 text, case-insensitively (string types may differ).
fn normalized_subject(s: &str) -> Result<String, Refusal> {
    let n = x509_cert::name::Name::from_str(s)
        .map_err(|e| Refusal::BadSubject { subject: s.to_string(), detail: e.to_string() })?;
    Ok(n.to_string().to_ascii_lowercase())
}

/// The EKUs a CSR asks for (its extensionRequest).
fn requested_ekus(csr: &CsrFacts) -> Vec<Eku> {
    use der::Decode;
    csr.extensions
        .iter()
        .filter(|e| e.extn_id == oids::CE_EXT_KEY_USAGE)
        .filter_map(|e| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|eku| eku.0.into_iter().map(Eku))
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
/// Who devices created with a static challenge are bound to: nobody vouches for their names
/// (the client chose them), and no account may take them over.
const STATIC_CHALLENGE_OWNER: &str = "scep:static";

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
        self.scep.open_envelope(envelope, self.settings.scep_legacy_ciphers).map_err(|e| {
            RaError::from(match e {
                autoenroll_ca::CaError::Key(autoenroll_keys::KeyError::Unsupported(detail)) => {
                    Refusal::UnsupportedCipher { detail }
                }
                _ => Refusal::BadMessageCheck,
            })
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

    /// A one-time challenge for a device and template, made by an administrator: the device
    /// is bound to `admin` if it was not yet. It replaces any unspent one for the same pair (at
    /// most one is outstanding).
    pub async fn create_challenge(&self, actor: &str, spec: &ChallengeSpec) -> Result<(String, i64), RaError> {
        self.make_challenge(actor, spec, true).await
    }

    /// `create_challenge`; `bind` is false when the server makes it at check-in (a device's
    /// binding is an administrator's or its first enroller's, never the server's).
    pub(crate) async fn make_challenge(
        &self,
        actor: &str,
        spec: &ChallengeSpec,
        bind: bool,
    ) -> Result<(String, i64), RaError> {
        if spec.device.is_empty() || spec.ttl_secs <= 0 {
            return Err(
                Refusal::InvalidChallenge { detail: "a challenge needs a device and a positive TTL".into() }.into()
            );
        }
        valid_name(&spec.device).map_err(|reason| Refusal::BadDeviceName { name: spec.device.clone(), reason })?;
        let template = self.template(&spec.template).await?;
        if !template.enroll {
            return Err(Refusal::TemplateNotAllowed { template: template.name }.into());
        }
        let subject = match &spec.subject {
            Some(s) => s.clone(),
            None => format!("CN={}", autoenroll_keys::escape_rdn_value(&spec.device)),
        };
        normalized_subject(&subject)?;
        let now = self.now();
        let device = self.store.touch_device(&spec.device, now).await?;
        if bind && device.owner.is_none() {
            self.store.bind_device(device.id, super::LOCAL_ADMIN).await?;
        }
        let (challenge, id, secret_hash) = new_challenge();
        let expires_at = now.plus_secs(spec.ttl_secs);
        let mut ekus = spec.ext_key_usage.clone().unwrap_or_else(|| template.ekus.clone());
        ekus.sort();
        ekus.dedup();
        self.store
            .replace_challenge(&Challenge {
                id: id.clone(),
                secret_hash,
                device: spec.device.clone(),
                template: template.name.clone(),
                subject,
                dns_names: name_list(spec.dns_names.iter().cloned()),
                ip_addrs: name_list(spec.ip_addrs.iter().map(|i| i.to_string())),
                min_key_bits: spec.min_key_bits.unwrap_or(template.key.min_rsa_bits).max(2048),
                ekus,
                created_at: now,
                expires_at,
                used_at: None,
                used_transaction: None,
                used_key: None,
            })
            .await?;
        self.audit(
            actor,
            "challenge.create",
            &spec.device,
            AuditOutcome::Ok,
            &format!("challenge {id} for {} expires {expires_at}", template.name),
        )
        .await;
        Ok((challenge, expires_at.0))
    }

    /// Sets (or with `None` clears) the static challenge of a template; only its hash is kept.
    pub async fn set_static_challenge(&self, template: &str, secret: Option<&str>) -> Result<(), RaError> {
        self.template(template).await?;
        let key = format!("{STATIC_CHALLENGE_SETTING}{template}");
        let value = match secret {
            // Salted and slow: the challenge is shared by many devices and long-lived.
            Some(s) if s.len() >= 8 => self.hash_secret(s).await?,
            Some(_) => return Err(Refusal::WeakChallenge.into()),
            None => String::new(),
        };
        self.store.set_setting(&key, &value).await?;
        let detail = if secret.is_some() { "set" } else { "cleared" };
        self.audit(super::LOCAL_ADMIN, "challenge.static", template, AuditOutcome::Ok, detail).await;
        Ok(())
    }

    async fn static_challenge_matches(&self, template: &str, password: &str) -> Result<bool, RaError> {
        let key = format!("{STATIC_CHALLENGE_SETTING}{template}");
        let stored = self.store.setting(&key).await?.unwrap_or_default();
        if stored.is_empty() {
            return Ok(false);
        }
        if stored.starts_with('$') {
            if self.verified_challenges.known(&key, &stored, password) {
                return Ok(true);
            }
            let matches = self.check_password(Some(stored.clone()), password).await?;
            if matches {
                self.verified_challenges.remember(&key, &stored, password);
            }
            return Ok(matches);
        }
        // An unsalted SHA-256 of earlier versions: compared, then replaced by a slow hash.
        let Ok(legacy) = hex::decode(&stored) else { return Ok(false) };
        let matches = secrets::ct_eq(&secrets::sha256(password.as_bytes()), &legacy);
        if matches {
            self.store.set_setting(&key, &self.hash_secret(password).await?).await?;
            // (A set-static-challenge racing this rehash is rare and only re-set the same way.)
        }
        Ok(matches)
    }

    /// A PKCSReq or RenewalReq. A transaction already answered gets the same answer again.
    pub async fn scep_request(&self, req: &ScepRequest<'_>) -> Result<Outcome, RaError> {
        let ours = verify_issued_by(req.signer_cert_der, &self.ca.issuing_der()).is_ok();
        let signer_key = transaction_signer(req.signer_cert_der, ours)?;
        if let Some(id) = self.store.scep_transaction(req.transaction_id, &signer_key).await? {
            return self.retrieve(id).await;
        }
        if ours {
            // Signed with a certificate we issued: a renewal, proven by possession of its key.
            let csr = CsrFacts::parse(req.csr_der).map_err(csr_error)?;
            let issued = self.renew(csr, req.signer_cert_der, Proof::ScepSigned, None, Window::Autoenrollment).await?;
            self.store.insert_scep_transaction(req.transaction_id, &signer_key, issued.request_id, self.now()).await?;
            return Ok(Outcome::Issued(issued));
        }
        let actor = format!("scep:{}", req.transaction_id);
        let result = self.scep_enroll(req, &signer_key, &actor).await;
        // Issued is audited with the certificate (same transaction), pending where it is held.
        if let Err(e) = &result {
            self.record_failure(&actor, "scep.issue", "-", e).await;
        }
        result
    }

    async fn scep_enroll(&self, req: &ScepRequest<'_>, signer_key: &str, actor: &str) -> Result<Outcome, RaError> {
        let now = self.now();
        let self_signed = verify_issued_by(req.signer_cert_der, req.signer_cert_der).is_ok();
        let csr = CsrFacts::parse(req.csr_der).map_err(csr_error)?;
        if req.renewal_req || (!self_signed && csr.challenge_password.is_none()) {
            return Err(Refusal::ForeignCertificate.into());
        }
        let (device, template, challenge_id) = self.check_challenge(&csr, req, signer_key).await?;
        let existing = self.store.device(&device).await?;
        match (&challenge_id, &existing) {
            // A dynamic challenge was made for an existing device (checked above).
            (Some(_), Some(_)) => {}
            (Some(_), None) => return Err(Refusal::DeviceNotEnrolled { device }.into()),
            // A static challenge names its device in the request: it may create one, never
            // claim one the inventory holds — except a device it created itself that holds no
            // good certificate any more (expired, revoked): it enrolls again.
            (None, Some(d)) => {
                let own = d.owner.as_deref() == Some(STATIC_CHALLENGE_OWNER);
                let holds =
                    self.store.device_certificates(d.id).await?.iter().any(|c| c.state.is_good() && c.not_after > now);
                if !own || holds {
                    return Err(Refusal::DeviceNameTaken { device }.into());
                }
            }
            (None, None) => {
                valid_name(&device).map_err(|reason| Refusal::BadDeviceName { name: device.clone(), reason })?;
                // Nor one the inventory holds under another spelling (case, a trailing dot).
                if let Some(other) = self.store.device_spelled_otherwise(&device).await? {
                    return Err(Refusal::DeviceNameTaken { device: other.name }.into());
                }
            }
        }
        if existing.as_ref().is_some_and(|d| d.is_blocked()) {
            return Err(Refusal::DeviceBlocked { device }.into());
        }
        template.check_key(&csr.key)?;
        // A dynamic challenge was made for an existing device: its name is as good as its
        // owner's word (an administrator's, or an account's explicit pattern); a static
        // challenge vouches for nothing.
        let vouched = match (&challenge_id, existing.as_ref().and_then(|d| d.owner.as_deref())) {
            (Some(_), Some(owner)) => self.owner_vouches(owner, &device).await?,
            _ => false,
        };
        let request = issue_request(&csr, &template, &device, vouched, &self.settings.server_names)?;
        let device_row = match existing {
            Some(d) => d,
            // Every check passed: the device is created now, owned by no account.
            None => {
                let d = self.store.touch_device(&device, now).await?;
                if !self.store.bind_device(d.id, STATIC_CHALLENGE_OWNER).await? {
                    return Err(Refusal::DeviceNameTaken { device }.into());
                }
                d
            }
        };
        if let Some(id) = &challenge_id {
            // The single-use check and the write are one statement (exactly once across replicas).
            if !self.store.use_challenge(id, req.transaction_id, signer_key, now).await? {
                return Err(Refusal::ChallengeUsed { id: id.clone() }.into());
            }
        }
        let requester = format!("scep:{}", challenge_id.as_deref().unwrap_or("static"));
        if template.pend_all {
            let held = NewRequest {
                device_id: device_row.id,
                requester: &requester,
                template: &template.name,
                kind: RequestKind::Scep,
                status: RequestStatus::Pending,
                csr_der: &csr.der,
                previous_serial: None,
            };
            let transaction = Some((req.transaction_id, signer_key));
            return match self.hold_for_approval(&held, transaction, (actor, "scep.issue", "-")).await? {
                Some(request_id) => Ok(Outcome::Pending { request_id }),
                None => self.transaction_outcome(req.transaction_id, signer_key).await,
            };
        }
        let profile = profile_for(&template, &csr.key);
        let issued = self
            .issue_recorded(Recorded {
                audit: super::enroll::Audit {
                    actor,
                    action: "scep.issue",
                    subject: &template.name,
                    note: String::new(),
                },
                previous_serial: None,
                device_id: device_row.id,
                requester: &requester,
                template_name: &template.name,
                kind: RequestKind::Scep,
                csr_der: &csr.der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: Some((req.transaction_id, signer_key)),
            })
            .await?;
        match issued {
            Issue::New { request_id, serial, der } => Ok(Outcome::Issued(Issued {
                certificate_der: der,
                chain: self.chain_der(),
                request_id,
                serial: serial.0,
                template: template.name,
            })),
            // A parallel identical message recorded the transaction first: the same answer.
            Issue::Taken => self.transaction_outcome(req.transaction_id, signer_key).await,
        }
    }

    /// The outcome of the request a transaction produced (waiting briefly while it is signed).
    async fn transaction_outcome(&self, transaction: &str, signer_key: &str) -> Result<Outcome, RaError> {
        for _ in 0..50 {
            if let Some(id) = self.store.scep_transaction(transaction, signer_key).await? {
                // A racing copy of this transaction is being signed: wait for its answer.
                let in_progress = self
                    .store
                    .request(id)
                    .await?
                    .is_some_and(|r| matches!(r.status, RequestStatus::Received | RequestStatus::Signing));
                if !in_progress {
                    return self.retrieve(id).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(Refusal::UnknownTransaction { id: transaction.to_string() }.into())
    }

    /// The challenge checks, in the documented order (docs/scep.md). Returns the device, the
    /// template and the dynamic challenge to spend (None for a template's static challenge).
    async fn check_challenge(
        &self,
        csr: &CsrFacts,
        req: &ScepRequest<'_>,
        signer_key: &str,
    ) -> Result<(String, Template, Option<String>), RaError> {
        let path_template = req.path_template.unwrap_or(&self.settings.scep_template);
        // 1. A challenge at all.
        let Some(password) = csr.challenge_password.as_deref().map(str::trim).filter(|p| !p.is_empty()) else {
            return Err(Refusal::ChallengeMissing.into());
        };
        // Counted against the address before any check (and any hash); given back unless the
        // challenge was wrong.
        let subjects = throttle::subjects(None, req.client);
        self.count_attempt(&subjects).await?;
        let checked = self.check_challenge_secret(csr, req, signer_key, path_template, password).await;
        let guessed_wrong = matches!(&checked, Err(e) if e.refusal_code() == Some(RefusalCode::ChallengeInvalid));
        if !guessed_wrong {
            self.note_success(&subjects).await?;
        }
        checked
    }

    /// Steps 2 to 7 of `check_challenge`.
    async fn check_challenge_secret(
        &self,
        csr: &CsrFacts,
        req: &ScepRequest<'_>,
        signer_key: &str,
        path_template: &str,
        password: &str,
    ) -> Result<(String, Template, Option<String>), RaError> {
        let now = self.now();
        // 2. The template's static challenge, when it has one.
        if self.static_challenge_matches(path_template, password).await? {
            let template = self.template(path_template).await?;
            let device = csr
                .subject_cn
                .clone()
                .or_else(|| csr.dns_names.first().cloned())
                .ok_or_else(|| Refusal::SubjectRequired { template: template.name.clone() })?;
            return Ok((device, template, None));
        }
        // 3. A dynamic challenge: known, right secret (constant-time on hashes).
        let invalid = || RaError::from(Refusal::ChallengeInvalid);
        let (id, secret) = password.split_once('-').ok_or_else(invalid)?;
        let row = self.store.challenge(id).await?.ok_or_else(invalid)?;
        if !secrets::ct_eq(&secrets::sha256(secret.as_bytes()), &row.secret_hash) {
            return Err(invalid());
        }
        // 4. Not expired; 5. not spent by another transaction or key.
        if now >= row.expires_at {
            return Err(Refusal::ChallengeExpired { id: id.to_string() }.into());
        }
        let retry =
            row.used_transaction.as_deref() == Some(req.transaction_id) && row.used_key.as_deref() == Some(signer_key);
        if row.used_at.is_some() && !retry {
            return Err(Refusal::ChallengeUsed { id: id.to_string() }.into());
        }
        // 6. The device is still in the inventory.
        if self.store.device(&row.device).await?.is_none() {
            return Err(Refusal::DeviceNotEnrolled { device: row.device }.into());
        }
        // 7. The template it was made for is the one asked for, and still enrollable.
        let template = match self.find_template(&row.template).await? {
            Some(t) if t.enroll && (req.path_template.is_none() || req.path_template == Some(t.name.as_str())) => t,
            _ => {
                return Err(Refusal::TemplateNotAssigned {
                    challenge: id.to_string(),
                    template: row.template,
                    asked: path_template.to_string(),
                }
                .into())
            }
        };
        // 8. Subject, 9. SANs, 10. key, 11. EKUs: the request is the one the challenge was made for.
        if normalized_subject(&row.subject)? != csr.subject.to_string().to_ascii_lowercase() {
            return Err(Refusal::SubjectMismatch { expected: row.subject, got: csr.subject.to_string() }.into());
        }
        let sans = (name_list(csr.dns_names.iter().cloned()), name_list(csr.ip_addrs.iter().map(|i| i.to_string())));
        if sans != (row.dns_names.clone(), row.ip_addrs.clone()) {
            let show = |(dns, ip): &(Vec<String>, Vec<String>)| format!("[{}] [{}]", dns.join(","), ip.join(","));
            return Err(Refusal::SubjectAltNameMismatch {
                expected: show(&(row.dns_names, row.ip_addrs)),
                got: show(&sans),
            }
            .into());
        }
        match csr.key {
            KeyFacts::Rsa { bits } if bits >= row.min_key_bits => {}
            ref k => return Err(Refusal::KeyLengthMismatch { min_bits: row.min_key_bits, got: k.describe() }.into()),
        }
        if let Some(extra) = requested_ekus(csr).into_iter().find(|e| !row.ekus.contains(e)) {
            return Err(Refusal::EkuMismatch { eku: extra.to_string() }.into());
        }
        Ok((row.device, template, Some(row.id)))
    }

    /// CertPoll: the state of a transaction this signer started.
    pub async fn scep_poll(&self, transaction_id: &str, signer_cert_der: &[u8]) -> Result<Outcome, RaError> {
        let ours = verify_issued_by(signer_cert_der, &self.ca.issuing_der()).is_ok();
        let key = transaction_signer(signer_cert_der, ours)?;
        match self.store.scep_transaction(transaction_id, &key).await? {
            Some(id) => self.retrieve(id).await,
            None => Err(Refusal::UnknownTransaction { id: transaction_id.to_string() }.into()),
        }
    }

    /// GetCert: a certificate we issued, by serial.
    pub async fn scep_get_cert(&self, serial: &[u8]) -> Result<Vec<u8>, RaError> {
        let serial = Serial::from_bytes(serial);
        self.store
            .certificate(serial.as_str())
            .await?
            .and_then(|c| c.der)
            .ok_or_else(|| Refusal::NoSuchCertificate { serial: serial.0.clone() }.into())
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
        .map_err(|e| Refusal::BadSignerCertificate { detail: e.to_string() })?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(RaError::internal)?;
    Ok(autoenroll_keys::sha256_hex(&spki))
}
