use crate::CaError;
use autoenroll_core::model::{TemplateRef, UnixTime};
use autoenroll_core::oids;
use autoenroll_core::pki::template_ext;
use autoenroll_keys::KeyPair;
use der::asn1::{Any, BitString, OctetString};
use der::flagset::FlagSet;
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_cert::Certificate;

/// A CA signing key. One method to sign, so an HSM-backed key can plug in later.
pub trait SigningKey: Send + Sync {
    fn spki_der(&self) -> &[u8];
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned;
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError>;
    /// A 32-byte secret for `label`, derived from the private key (HMAC-SHA256 keyed by it), so
    /// every process holding this CA agrees on it and nothing else can compute it.
    fn derive_secret(&self, label: &[u8]) -> Result<[u8; 32], CaError>;
}

impl SigningKey for KeyPair {
    fn spki_der(&self) -> &[u8] {
        KeyPair::spki_der(self)
    }
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        KeyPair::signature_algorithm(self)
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        Ok(KeyPair::sign(self, message)?)
    }
    fn derive_secret(&self, label: &[u8]) -> Result<[u8; 32], CaError> {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.to_pkcs8_der()?);
        let tag = hmac::sign(&key, label);
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        Ok(out)
    }
}

/// What the certificate will say, decided by the RA from the template and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub validity_secs: i64,
    pub key_usage: Vec<autoenroll_core::model::KeyUsage>,
    pub extended_key_usage: Vec<autoenroll_core::model::Eku>,
    pub template: Option<TemplateRef>,
    pub template_name: Option<String>,
    pub is_ca: bool,
}

/// A validated issuance request: the subject and names the RA approved, and the public key.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub subject: Name,
    pub spki_der: Vec<u8>,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<std::net::IpAddr>,
}

/// A certificate ready to sign; the RA records it before calling `Ca::sign`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub serial: Vec<u8>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    tbs_der: Vec<u8>,
}

#[derive(Sequence)]
struct Validity {
    not_before: Time,
    not_after: Time,
}

#[derive(Sequence)]
struct Tbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: Version,
    serial_number: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<Extension>,
}

#[derive(Sequence)]
struct CertificateDer {
    tbs: Any,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

pub struct Ca {
    pub(crate) root_der: Vec<u8>,
    /// Replaced when the root re-certifies the issuing key (same key and subject).
    issuing_der: std::sync::RwLock<std::sync::Arc<Vec<u8>>>,
    pub(crate) issuing_key: Box<dyn SigningKey>,
    issuing_subject: Name,
    issuing_key_id: Vec<u8>,
    issuing_not_after: UnixTime,
    /// Set once the public URLs are known (after the listeners bind).
    distribution: std::sync::RwLock<Option<Distribution>>,
    /// The directory the CA files live in (None for a CA built in memory).
    pub(crate) dir: Option<std::path::PathBuf>,
}

pub(crate) fn to_time(t: UnixTime) -> Result<Time, CaError> {
    let secs = u64::try_from(t.0).map_err(|_| CaError::Encoding("time before 1970".into()))?;
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
    Ok(Time::from(dt))
}

/// RFC 5280 method 1: SHA-1 of the subjectPublicKey bits.
pub(crate) fn key_id(spki_der: &[u8]) -> Result<Vec<u8>, CaError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    let d =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, spki.subject_public_key.raw_bytes());
    Ok(d.as_ref().to_vec())
}

fn ext(oid: const_oid::ObjectIdentifier, critical: bool, value: Vec<u8>) -> Result<Extension, CaError> {
    Ok(Extension { extn_id: oid, critical, extn_value: OctetString::new(value)? })
}

fn key_usage(usages: &[autoenroll_core::model::KeyUsage]) -> KeyUsage {
    use autoenroll_core::model::KeyUsage as K;
    let mut set = FlagSet::<KeyUsages>::default();
    for k in usages {
        set |= match k {
            K::DigitalSignature => KeyUsages::DigitalSignature,
            K::NonRepudiation => KeyUsages::NonRepudiation,
            K::KeyEncipherment => KeyUsages::KeyEncipherment,
            K::DataEncipherment => KeyUsages::DataEncipherment,
            K::KeyAgreement => KeyUsages::KeyAgreement,
            K::KeyCertSign => KeyUsages::KeyCertSign,
            K::CrlSign => KeyUsages::CRLSign,
        };
    }
    KeyUsage(set)
}

/// Builds the TBS for any certificate this crate makes; `issuer` None means self-signed.
pub(crate) struct TbsInput<'a> {
    pub serial: Vec<u8>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub subject: Name,
    pub spki_der: &'a [u8],
    pub issuer: Name,
    pub issuer_key_id: Vec<u8>,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub profile: &'a Profile,
    pub dns_names: &'a [String],
    pub ip_addrs: &'a [std::net::IpAddr],
    pub path_len: Option<u8>,
    /// CRL distribution point and CA-issuers URLs (end-entity certificates only).
    pub distribution: Option<&'a Distribution>,
}

/// Where relying parties find revocation data and the issuing CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub crl_url: String,
    pub ca_issuers_url: String,
    /// None for the issuing CA's own certificate (the responder answers for end entities).
    pub ocsp_url: Option<String>,
}

fn uri(u: &str) -> Result<x509_cert::ext::pkix::name::GeneralName, CaError> {
    Ok(x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(
        der::asn1::Ia5String::new(u).map_err(|e| CaError::Profile(format!("URL {u}: {e}")))?,
    ))
}

pub(crate) fn build_tbs(i: TbsInput<'_>) -> Result<Vec<u8>, CaError> {
    let p = i.profile;
    let mut exts = Vec::new();
    if p.is_ca {
        exts.push(ext(
            oids::CE_BASIC_CONSTRAINTS,
            true,
            BasicConstraints { ca: true, path_len_constraint: i.path_len }.to_der()?,
        )?);
    }
    if !p.key_usage.is_empty() {
        exts.push(ext(oids::CE_KEY_USAGE, true, key_usage(&p.key_usage).to_der()?)?);
    }
    if !p.extended_key_usage.is_empty() {
        let ekus = p.extended_key_usage.iter().map(|e| e.oid()).collect();
        exts.push(ext(oids::CE_EXT_KEY_USAGE, false, ExtendedKeyUsage(ekus).to_der()?)?);
    }
    if !i.dns_names.is_empty() || !i.ip_addrs.is_empty() {
        let san = autoenroll_keys::san_extension(i.dns_names, i.ip_addrs)?;
        exts.push(san);
    }
    exts.push(ext(oids::CE_SUBJECT_KEY_IDENTIFIER, false, OctetString::new(key_id(i.spki_der)?)?.to_der()?)?);
    exts.push(ext(
        oids::CE_AUTHORITY_KEY_IDENTIFIER,
        false,
        AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(i.issuer_key_id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        }
        .to_der()?,
    )?);
    if let Some(d) = i.distribution {
        use x509_cert::ext::pkix::crl::dp::DistributionPoint;
        use x509_cert::ext::pkix::name::DistributionPointName;
        use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax, CrlDistributionPoints};
        let cdp = CrlDistributionPoints(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![uri(&d.crl_url)?])),
            reasons: None,
            crl_issuer: None,
        }]);
        exts.push(ext(oids::CE_CRL_DISTRIBUTION_POINTS, false, cdp.to_der()?)?);
        let mut access = Vec::new();
        if let Some(ocsp) = &d.ocsp_url {
            access.push(AccessDescription { access_method: oids::AD_OCSP, access_location: uri(ocsp)? });
        }
        access.push(AccessDescription { access_method: oids::AD_CA_ISSUERS, access_location: uri(&d.ca_issuers_url)? });
        let aia = AuthorityInfoAccessSyntax(access);
        exts.push(ext(oids::PE_AUTHORITY_INFO_ACCESS, false, aia.to_der()?)?);
    }
    if let Some(t) = &p.template {
        exts.push(ext(oids::MS_CERTIFICATE_TEMPLATE, false, template_ext::encode_template(t)?)?);
    }
    if let Some(n) = &p.template_name {
        exts.push(ext(oids::MS_ENROLL_CERTTYPE, false, template_ext::encode_template_name(n)?)?);
    }
    let tbs = Tbs {
        version: Version::V3,
        serial_number: SerialNumber::new(&i.serial)?,
        signature: i.signature_algorithm,
        issuer: i.issuer,
        validity: Validity { not_before: to_time(i.not_before)?, not_after: to_time(i.not_after)? },
        subject: i.subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(i.spki_der)?,
        extensions: exts,
    };
    Ok(tbs.to_der()?)
}

pub(crate) fn sign_tbs(tbs_der: &[u8], key: &dyn SigningKey) -> Result<Vec<u8>, CaError> {
    let signature = key.sign(tbs_der)?;
    let cert = CertificateDer {
        tbs: Any::from_der(tbs_der)?,
        signature_algorithm: key.signature_algorithm(),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_der()?)
}

/// 16 random bytes, positive, never starting with a zero byte (so the length is fixed).
pub(crate) fn random_serial() -> Result<Vec<u8>, CaError> {
    Ok(autoenroll_keys::random_serial()?)
}

impl Ca {
    pub(crate) fn new(
        root_der: Vec<u8>,
        issuing_der: Vec<u8>,
        issuing_key: Box<dyn SigningKey>,
    ) -> Result<Ca, CaError> {
        let cert = Certificate::from_der(&issuing_der)?;
        let tbs = cert.tbs_certificate();
        if tbs.subject_public_key_info().to_der()? != issuing_key.spki_der() {
            return Err(CaError::Io("the issuing CA key does not match its certificate".into()));
        }
        Ok(Ca {
            issuing_subject: tbs.subject().clone(),
            issuing_key_id: key_id(issuing_key.spki_der())?,
            issuing_not_after: UnixTime(tbs.validity().not_after.to_unix_duration().as_secs() as i64),
            root_der,
            issuing_der: std::sync::RwLock::new(std::sync::Arc::new(issuing_der)),
            issuing_key,
            distribution: std::sync::RwLock::new(None),
            dir: None,
        })
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The issuing CA certificate (the newest, after a re-certification).
    /// A secret for `label` derived from the issuing key (the key itself never leaves): the
    /// same in every replica that holds this CA, unknowable from the database.
    pub fn derive_secret(&self, label: &str) -> Result<[u8; 32], CaError> {
        self.issuing_key.derive_secret(label.as_bytes())
    }

    pub fn issuing_der(&self) -> std::sync::Arc<Vec<u8>> {
        match self.issuing_der.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn replace_issuing_der(&self, der: Vec<u8>) {
        match self.issuing_der.write() {
            Ok(mut g) => *g = std::sync::Arc::new(der),
            Err(p) => *p.into_inner() = std::sync::Arc::new(der),
        }
    }

    /// Names the CRL and CA-issuers URLs in every end-entity certificate from now on (the
    /// running server sets them once its listeners are bound; other processes read the ones
    /// it recorded).
    pub fn set_distribution(&self, d: Distribution) {
        match self.distribution.write() {
            Ok(mut g) => *g = Some(d),
            Err(p) => *p.into_inner() = Some(d),
        }
    }

    /// The URLs certificates name, once set.
    pub fn distribution(&self) -> Option<Distribution> {
        match self.distribution.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn issuing_subject(&self) -> &Name {
        &self.issuing_subject
    }

    pub(crate) fn issuing_key_id(&self) -> &[u8] {
        &self.issuing_key_id
    }

    pub(crate) fn issuing_not_after(&self) -> UnixTime {
        self.issuing_not_after
    }

    /// Picks serial and validity and builds the TBS. NotBefore is `now`, never backdated;
    /// NotAfter never passes the issuing CA's own expiry.
    pub fn prepare(&self, req: &IssueRequest, profile: &Profile, now: UnixTime) -> Result<Prepared, CaError> {
        if profile.is_ca {
            return Err(CaError::Profile("end-entity issuance cannot make CA certificates".into()));
        }
        if profile.validity_secs <= 0 {
            return Err(CaError::Profile("validity must be positive".into()));
        }
        if now >= self.issuing_not_after {
            return Err(CaError::CaExpired);
        }
        let not_after = now.plus_secs(profile.validity_secs).min(self.issuing_not_after);
        let serial = random_serial()?;
        let distribution = match self.distribution.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let tbs_der = build_tbs(TbsInput {
            serial: serial.clone(),
            not_before: now,
            not_after,
            subject: req.subject.clone(),
            spki_der: &req.spki_der,
            issuer: self.issuing_subject.clone(),
            issuer_key_id: self.issuing_key_id.clone(),
            signature_algorithm: self.issuing_key.signature_algorithm(),
            profile,
            dns_names: &req.dns_names,
            ip_addrs: &req.ip_addrs,
            path_len: None,
            distribution: distribution.as_ref(),
        })?;
        Ok(Prepared { serial, not_before: now, not_after, tbs_der })
    }

    pub fn sign(&self, prepared: &Prepared) -> Result<Vec<u8>, CaError> {
        sign_tbs(&prepared.tbs_der, self.issuing_key.as_ref())
    }
}

/// The issuing CA key as a CMS signer (CMC responses).
struct IssuingSigner<'a>(&'a dyn SigningKey);

impl autoenroll_keys::CmsSigner for IssuingSigner<'_> {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.0.signature_algorithm()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, autoenroll_keys::KeyError> {
        self.0.sign(message).map_err(|_| autoenroll_keys::KeyError::Sign)
    }
}

impl Ca {
    /// A CMC Full PKI Response: `pki_response` (the PKIResponse content) signed by the issuing
    /// CA, carrying its certificate and `more_certs` (the issued certificate, the root).
    pub fn sign_cmc(&self, pki_response: &[u8], more_certs: &[Vec<u8>]) -> Result<Vec<u8>, CaError> {
        Ok(autoenroll_keys::sign_cms_typed(
            pki_response,
            autoenroll_core::oids::CMC_PKI_RESPONSE,
            &self.issuing_der(),
            &IssuingSigner(self.issuing_key.as_ref()),
            more_certs,
        )?)
    }
}
