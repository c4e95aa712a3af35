//! Certificate templates: what an administrator defines once and every issuance follows. A
//! `Template` is valid by construction only after `validate()`: the RA refuses invalid input
//! when a template is created or updated, and the store reports (instead of serving) a stored
//! template that no longer validates.
use super::state::UnknownValue;
use super::trust::{Grant, KeyFamily, NamePolicy};
use super::{TemplateRef, UnixTime};
use crate::oids;
use crate::pki::KeyFacts;
use crate::renewal::RenewalRule;
use crate::Refusal;
use const_oid::ObjectIdentifier;
use std::fmt;
use std::str::FromStr;

/// The key pair an enrollee generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    P256,
    P384,
    Rsa(u32),
}

impl FromStr for KeyAlgorithm {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "p256" | "ecp256" | "ecdsap256" => Ok(KeyAlgorithm::P256),
            "p384" | "ecp384" | "ecdsap384" => Ok(KeyAlgorithm::P384),
            "rsa2048" => Ok(KeyAlgorithm::Rsa(2048)),
            "rsa3072" => Ok(KeyAlgorithm::Rsa(3072)),
            "rsa4096" => Ok(KeyAlgorithm::Rsa(4096)),
            _ => Err(UnknownValue { what: "key algorithm (p256, p384, rsa2048, rsa3072, rsa4096)", value: s.into() }),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::P256 => f.pad("p256"),
            KeyAlgorithm::P384 => f.pad("p384"),
            KeyAlgorithm::Rsa(bits) => f.pad(&format!("rsa{bits}")),
        }
    }
}

impl KeyAlgorithm {
    pub fn bits(self) -> u32 {
        match self {
            KeyAlgorithm::P256 => 256,
            KeyAlgorithm::P384 => 384,
            KeyAlgorithm::Rsa(b) => b,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa(_))
    }
}

/// RFC 5280 key usage bits. Templates may name the end-entity ones; `KeyCertSign` and `CrlSign`
/// exist for the CA's own certificates only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyUsage {
    DigitalSignature,
    NonRepudiation,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

impl KeyUsage {
    const NAMES: [(KeyUsage, &'static str); 7] = [
        (KeyUsage::DigitalSignature, "digitalSignature"),
        (KeyUsage::NonRepudiation, "nonRepudiation"),
        (KeyUsage::KeyEncipherment, "keyEncipherment"),
        (KeyUsage::DataEncipherment, "dataEncipherment"),
        (KeyUsage::KeyAgreement, "keyAgreement"),
        (KeyUsage::KeyCertSign, "keyCertSign"),
        (KeyUsage::CrlSign, "cRLSign"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(k, _)| *k == self).map(|(_, n)| *n).unwrap_or("?")
    }

    /// Usable in an end-entity template.
    pub fn for_end_entities(self) -> bool {
        !matches!(self, KeyUsage::KeyCertSign | KeyUsage::CrlSign)
    }
}

impl FromStr for KeyUsage {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(k, _)| *k)
            .ok_or_else(|| UnknownValue { what: "key usage", value: s.into() })
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The one table of extended key usage names. Anything else is given as a dotted OID.
pub const EKU_NAMES: [(&str, ObjectIdentifier); 8] = [
    ("serverAuth", oids::KP_SERVER_AUTH),
    ("clientAuth", oids::KP_CLIENT_AUTH),
    ("codeSigning", ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3")),
    ("emailProtection", ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4")),
    ("timeStamping", ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8")),
    ("OCSPSigning", ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9")),
    ("ipsecIKE", ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.17")),
    ("smartcardLogon", ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2")),
];

/// anyExtendedKeyUsage: never issued (it would make a certificate good for every purpose).
const ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");

/// An extended key usage: a well-known name or any OID that DER can encode (parsed by
/// `const-oid`, the same code that encodes it into certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eku(pub ObjectIdentifier);

impl Eku {
    pub const SERVER_AUTH: Eku = Eku(oids::KP_SERVER_AUTH);
    pub const CLIENT_AUTH: Eku = Eku(oids::KP_CLIENT_AUTH);

    pub fn oid(self) -> ObjectIdentifier {
        self.0
    }

    pub fn name(self) -> Option<&'static str> {
        EKU_NAMES.iter().find(|(_, o)| *o == self.0).map(|(n, _)| *n)
    }
}

impl FromStr for Eku {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        let s = s.trim();
        if let Some((_, oid)) = EKU_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(Eku(*oid));
        }
        ObjectIdentifier::new(s).map(Eku).map_err(|_| UnknownValue {
            what: "extended key usage (a name such as serverAuth or clientAuth, or a dotted OID)",
            value: s.into(),
        })
    }
}

impl fmt::Display for Eku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.pad(n),
            None => f.pad(&self.0.to_string()),
        }
    }
}

/// Where the issued certificate's subject comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectFrom {
    /// `CN=<device>`: built from the authenticated identity.
    Identity,
    /// The enrollee supplies it in the request (MS-CRTD CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT).
    Request,
}

impl SubjectFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectFrom::Identity => "identity",
            SubjectFrom::Request => "request",
        }
    }
}

impl FromStr for SubjectFrom {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "identity" => Ok(SubjectFrom::Identity),
            "request" => Ok(SubjectFrom::Request),
            _ => Err(UnknownValue { what: "subject source (identity or request)", value: s.into() }),
        }
    }
}

impl fmt::Display for SubjectFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which keys a template accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// What enrollees generate (advertised in policy).
    pub algorithm: KeyAlgorithm,
    /// The smallest RSA key accepted (never under 2048).
    pub min_rsa_bits: u32,
    /// A renewal may keep the current key.
    pub same_key_renewal: bool,
    /// The kinds of key requests may carry (at least the family of `algorithm`).
    pub accept: Vec<KeyFamily>,
}

impl KeyAlgorithm {
    pub fn family(self) -> KeyFamily {
        match self {
            KeyAlgorithm::P256 | KeyAlgorithm::P384 => KeyFamily::Ec,
            KeyAlgorithm::Rsa(_) => KeyFamily::Rsa,
        }
    }
}

/// The smallest RSA key ever accepted, whatever a template says.
pub const MIN_RSA_BITS: u32 = 2048;
const MAX_RSA_BITS: u32 = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub oid: ObjectIdentifier,
    /// A higher major version makes holders renew at once; a minor one changes nothing held.
    pub major: u32,
    pub minor: u32,
    pub description: String,
    pub validity_secs: i64,
    /// Renewal starts at `not_after - min(renewal period, lifetime / 5)` (MDM: RenewPeriod).
    pub renewal_secs: i64,
    /// How long before the renewal window a renewal is still accepted (manual early renewal).
    pub renewal_grace_secs: i64,
    /// MDM RetryInterval: how often a device retries a failed renewal.
    pub retry_interval_secs: i64,
    pub key: KeyPolicy,
    pub key_usage: Vec<KeyUsage>,
    pub ekus: Vec<Eku>,
    pub subject_from: SubjectFrom,
    /// Copy DNS and IP subject alternative names from the request.
    pub allow_san: bool,
    pub enroll: bool,
    pub autoenroll: bool,
    /// Hold every new request for an administrator's approval.
    pub pend_all: bool,
    /// Templates this one replaces: holders of those enroll this one and retire the old.
    pub supersedes: Vec<String>,
    /// Who may enroll it (the Enroll right of an ADCS template's ACL).
    pub grants: Vec<Grant>,
    /// Which names requests may carry.
    pub names: NamePolicy,
    /// Windows MDM enrollment may pick this template by the request's template hint (otherwise
    /// MDM always issues from the configured MDM template).
    pub allow_mdm: bool,
    /// A template for users (Windows enrolls it in user context) rather than for computers
    /// (the device's own certificates; XCEP CT_FLAG_MACHINE_TYPE).
    pub for_users: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A template field that does not hold: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TemplateError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TemplateError {
    TemplateError { field, reason: reason.into() }
}

/// Names of templates and devices end up in file names (the agent's `live/<Template>`), log
/// lines and table columns: letters, digits, `-`, `_` and `.`, not starting with `.`, at most 64.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(c) => Err(format!("{c:?} is not allowed (use letters, digits, '-', '_' and '.')")),
        None => Ok(()),
    }
}

/// Seconds in whole days, rounded up, 1 to 1000.
fn whole_days(secs: i64) -> i64 {
    ((secs.max(0) + 86_399) / 86_400).clamp(1, 1000)
}

/// Account names: the name charset plus `@`, so a user principal name (`user@contoso.com`, what
/// Windows MDM sends) is one.
pub fn valid_account_name(name: &str) -> Result<(), String> {
    valid_name(&name.replace('@', "_")).map_err(|e| e.replace("and '.')", "'.' and '@')"))
}

impl Template {
    pub fn template_ref(&self) -> TemplateRef {
        TemplateRef { oid: self.oid.to_string(), major: self.major, minor: self.minor }
    }

    pub fn has_eku(&self, eku: Eku) -> bool {
        self.ekus.contains(&eku)
    }

    /// The Windows autoenrollment rule, as agents and the server's inventory apply it.
    pub fn renewal_rule(&self) -> RenewalRule {
        RenewalRule::Windows { renewal_period_secs: self.renewal_secs }
    }

    /// The MS-MDE2 rule (RenewPeriod before expiry, RetryInterval between attempts), in the
    /// whole days the provisioning document can say: what devices are told is what is enforced.
    pub fn mdm_rule(&self) -> RenewalRule {
        RenewalRule::Mdm {
            renew_period_secs: whole_days(self.renewal_secs) * 86_400,
            retry_interval_secs: whole_days(self.retry_interval_secs) * 86_400,
        }
    }

    /// RenewPeriod and RetryInterval as the MDM provisioning document gives them, in days
    /// (rounded up, at least one).
    pub fn mdm_days(&self) -> (u32, u32) {
        let days = |secs: i64| u32::try_from(whole_days(secs)).unwrap_or(1);
        (days(self.renewal_secs), days(self.retry_interval_secs))
    }

    /// The smallest RSA key accepted for this template.
    pub fn min_rsa_bits(&self) -> u32 {
        self.key.min_rsa_bits.max(MIN_RSA_BITS)
    }

    /// The key usages a certificate for `key` carries: the template's, without what that key
    /// cannot do — an EC key enciphers no keys or data (RFC 5480 3), an RSA key does no key
    /// agreement (RFC 4055 1.2); digitalSignature when nothing is left.
    pub fn key_usage_for(&self, key: &KeyFacts) -> Vec<KeyUsage> {
        let mut usages: Vec<KeyUsage> = self
            .key_usage
            .iter()
            .copied()
            .filter(|u| match key {
                KeyFacts::Rsa { .. } => *u != KeyUsage::KeyAgreement,
                _ => !matches!(u, KeyUsage::KeyEncipherment | KeyUsage::DataEncipherment),
            })
            .collect();
        if usages.is_empty() {
            usages.push(KeyUsage::DigitalSignature);
        }
        usages
    }

    /// Whether a request's key fits: a family the template accepts, at least its strength (RSA:
    /// the template's minimum, never under 2048; EC: at least the template's curve when the
    /// template generates EC keys, P-256 otherwise). Ed25519 is never accepted (Windows cannot
    /// use it).
    pub fn check_key(&self, key: &KeyFacts) -> Result<(), Refusal> {
        let (family, bits) = match key {
            KeyFacts::Rsa { bits } => (KeyFamily::Rsa, *bits),
            KeyFacts::Ec { curve_bits } => (KeyFamily::Ec, *curve_bits),
            KeyFacts::Ed25519 => {
                return Err(Refusal::KeyTypeNotAllowed { key: key.describe(), template: self.name.clone() })
            }
        };
        if !self.key.accept.contains(&family) {
            return Err(Refusal::KeyTypeNotAllowed { key: key.describe(), template: self.name.clone() });
        }
        let min_bits = match family {
            KeyFamily::Rsa => self.min_rsa_bits(),
            KeyFamily::Ec if self.key.algorithm.family() == KeyFamily::Ec => self.key.algorithm.bits(),
            KeyFamily::Ec => 256,
        };
        if bits < min_bits {
            return Err(Refusal::KeyTooWeak { key: key.describe(), min_bits, template: self.name.clone() });
        }
        Ok(())
    }

    /// Whether the template holds together; the first field that does not, with the reason.
    pub fn validate(&self) -> Result<(), TemplateError> {
        valid_name(&self.name).map_err(|r| invalid("name", r))?;
        if self.validity_secs <= 0 {
            return Err(invalid("validity", "must be positive"));
        }
        if self.renewal_secs <= 0 {
            return Err(invalid("renewal_period", "must be positive"));
        }
        if self.renewal_grace_secs < 0 {
            return Err(invalid("renewal_grace", "cannot be negative"));
        }
        if self.retry_interval_secs <= 0 || self.retry_interval_secs > self.renewal_secs {
            return Err(invalid("retry_interval", "must be positive and not above the renewal period"));
        }
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&self.key.min_rsa_bits) {
            return Err(invalid("min_key_bits", format!("must be between {MIN_RSA_BITS} and {MAX_RSA_BITS}")));
        }
        if let KeyAlgorithm::Rsa(bits) = self.key.algorithm {
            if bits < self.key.min_rsa_bits {
                return Err(invalid(
                    "key_algorithm",
                    format!("rsa{bits} is below the template's minimum of {} bits", self.key.min_rsa_bits),
                ));
            }
        }
        if self.key_usage.is_empty() {
            return Err(invalid("key_usage", "name at least one key usage"));
        }
        if !self.key.accept.contains(&self.key.algorithm.family()) {
            return Err(invalid(
                "key_types",
                format!("must include {}, the family of {}", self.key.algorithm.family(), self.key.algorithm),
            ));
        }
        for s in &self.names.dns_suffixes {
            let host = !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !host {
                return Err(invalid("dns_suffixes", format!("{s:?} is not a DNS name")));
            }
        }
        if let Some(k) = self.key_usage.iter().find(|k| !k.for_end_entities()) {
            return Err(invalid("key_usage", format!("{k} is for CA certificates only")));
        }
        if self.ekus.iter().any(|e| e.0 == ANY_EKU) {
            return Err(invalid("eku", "anyExtendedKeyUsage is never issued"));
        }
        if self.ekus.is_empty() {
            // Without the extension a certificate is good for every purpose (RFC 5280 4.2.1.12):
            // a server certificate among them.
            return Err(invalid("eku", "name at least one extended key usage"));
        }
        for s in &self.supersedes {
            valid_name(s).map_err(|r| invalid("supersedes", format!("{s:?}: {r}")))?;
            if *s == self.name {
                return Err(invalid("supersedes", "a template cannot supersede itself"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Template {
        Template {
            name: "Machine".into(),
            oid: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.21.8.1.1"),
            major: 1,
            minor: 0,
            description: String::new(),
            validity_secs: 365 * 86_400,
            renewal_secs: 42 * 86_400,
            renewal_grace_secs: 0,
            retry_interval_secs: 7 * 86_400,
            key: KeyPolicy {
                algorithm: KeyAlgorithm::P256,
                min_rsa_bits: 2048,
                same_key_renewal: false,
                accept: vec![KeyFamily::Ec],
            },
            key_usage: vec![KeyUsage::DigitalSignature],
            ekus: vec![Eku::CLIENT_AUTH],
            subject_from: SubjectFrom::Identity,
            allow_san: false,
            enroll: true,
            autoenroll: true,
            pend_all: false,
            supersedes: vec![],
            grants: vec![Grant::AnyAccount],
            names: NamePolicy::default(),
            allow_mdm: false,
            for_users: false,
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
        }
    }

    #[test]
    fn keys_are_checked_against_the_template() {
        let mut t = sample();
        assert_eq!(t.check_key(&KeyFacts::Ec { curve_bits: 256 }), Ok(()));
        assert_eq!(t.check_key(&KeyFacts::Ec { curve_bits: 384 }), Ok(()), "stronger is fine");
        assert_eq!(t.check_key(&KeyFacts::Rsa { bits: 4096 }).unwrap_err().code().as_str(), "KeyTypeNotAllowed");
        t.key.algorithm = KeyAlgorithm::P384;
        assert_eq!(t.check_key(&KeyFacts::Ec { curve_bits: 256 }).unwrap_err().code().as_str(), "KeyTooWeak");
        t.key.accept.push(KeyFamily::Rsa);
        assert_eq!(t.check_key(&KeyFacts::Rsa { bits: 2048 }), Ok(()));
        assert_eq!(t.check_key(&KeyFacts::Rsa { bits: 1024 }).unwrap_err().code().as_str(), "KeyTooWeak");
        t.key.min_rsa_bits = 3072;
        assert_eq!(t.check_key(&KeyFacts::Rsa { bits: 2048 }).unwrap_err().code().as_str(), "KeyTooWeak");
        assert_eq!(t.check_key(&KeyFacts::Ed25519).unwrap_err().code().as_str(), "KeyTypeNotAllowed");
    }

    #[test]
    fn ekus_parse_names_and_only_oids_der_can_carry() {
        assert_eq!("serverAuth".parse::<Eku>(), Ok(Eku::SERVER_AUTH));
        assert_eq!("clientauth".parse::<Eku>(), Ok(Eku::CLIENT_AUTH));
        assert_eq!("1.3.6.1.5.5.7.3.3".parse::<Eku>().unwrap().to_string(), "codeSigning");
        assert_eq!("1.2.3.4".parse::<Eku>().unwrap().to_string(), "1.2.3.4");
        // Accepted by a digits-and-dots check, refused by the encoder: refused here too.
        for bad in ["7.1", "1", "1..2", "1.2.", "serverauthx", ""] {
            assert!(bad.parse::<Eku>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(sample().validate(), Ok(()));
        type Change = Box<dyn Fn(&mut Template)>;
        let cases: Vec<(&str, Change)> = vec![
            ("name", Box::new(|t| t.name = "../evil".into())),
            ("name", Box::new(|t| t.name = "Web Server".into())),
            ("validity", Box::new(|t| t.validity_secs = 0)),
            ("renewal_period", Box::new(|t| t.renewal_secs = -1)),
            ("retry_interval", Box::new(|t| t.retry_interval_secs = t.renewal_secs + 1)),
            ("min_key_bits", Box::new(|t| t.key.min_rsa_bits = 1024)),
            (
                "key_algorithm",
                Box::new(|t| {
                    t.key.algorithm = KeyAlgorithm::Rsa(2048);
                    t.key.min_rsa_bits = 3072
                }),
            ),
            ("key_usage", Box::new(|t| t.key_usage = vec![KeyUsage::KeyCertSign])),
            ("key_usage", Box::new(|t| t.key_usage.clear())),
            ("eku", Box::new(|t| t.ekus.push(Eku(ANY_EKU)))),
            ("supersedes", Box::new(|t| t.supersedes.push("Machine".into()))),
            ("key_types", Box::new(|t| t.key.accept = vec![KeyFamily::Rsa])),
            ("dns_suffixes", Box::new(|t| t.names.dns_suffixes.push("*.example.test".into()))),
        ];
        for (field, change) in cases {
            let mut t = sample();
            change(&mut t);
            assert_eq!(t.validate().map_err(|e| e.field), Err(field));
        }
    }

    #[test]
    fn key_usage_and_algorithm_names_round_trip() {
        for (k, n) in KeyUsage::NAMES {
            assert_eq!(n.parse::<KeyUsage>(), Ok(k));
            assert_eq!(k.to_string(), n);
        }
        for a in ["p256", "p384", "rsa2048", "rsa3072", "rsa4096"] {
            assert_eq!(a.parse::<KeyAlgorithm>().unwrap().to_string(), a);
        }
        assert!("rsa1024".parse::<KeyAlgorithm>().is_err());
    }
}
