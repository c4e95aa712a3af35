//! PKCS#10 facts. Parsing is lenient where Windows is sloppy (string types in names, opaque
//! extension values such as the MDM DeviceID extension 1.3.6.1.4.1.311.66.1.0, which is raw
//! ASCII rather than DER) and strict where it matters: the self-signature must verify over the
//! request info exactly as received.
use super::{sig, PkiError};
use crate::oids;
use der::asn1::{AnyRef, UintRef};
use der::{Decode, Encode, Reader, SliceReader, Tagged};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::CertReq;

/// Largest CSR we look at; real ones are a few KiB.
pub const MAX_CSR_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFacts {
    Ec { curve_bits: u32 },
    Rsa { bits: u32 },
    Ed25519,
}

impl KeyFacts {
    pub fn bits(&self) -> u32 {
        match self {
            KeyFacts::Ec { curve_bits } => *curve_bits,
            KeyFacts::Rsa { bits } => *bits,
            KeyFacts::Ed25519 => 256,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            KeyFacts::Ec { curve_bits } => format!("EC P-{curve_bits}"),
            KeyFacts::Rsa { bits } => format!("RSA {bits}"),
            KeyFacts::Ed25519 => "Ed25519".into(),
        }
    }
}

/// How a request names its template, in the order we trust them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateHint {
    Oid { oid: String, major: u32, minor: u32 },
    Name(String),
}

#[derive(Debug, Clone)]
pub struct CsrFacts {
    pub der: Vec<u8>,
    pub subject: Name,
    pub subject_cn: Option<String>,
    pub spki: SubjectPublicKeyInfoOwned,
    pub spki_der: Vec<u8>,
    pub key: KeyFacts,
    pub extensions: Vec<Extension>,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<std::net::IpAddr>,
    pub template_hint: Option<TemplateHint>,
    /// szOID_RENEWAL_CERTIFICATE (1.3.6.1.4.1.311.13.1): the certificate being renewed.
    pub renewal_cert_der: Option<Vec<u8>>,
    /// PKCS#9 challengePassword (SCEP), any DirectoryString type.
    pub challenge_password: Option<String>,
    /// The machine name of szOID_REQUEST_CLIENT_INFO, which Windows certenroll adds: the
    /// computer a request comes from when nothing else names it.
    pub client_machine: Option<String>,
}

/// RSA keys under this are refused before anything else.
const MIN_RSA_BITS: u32 = crate::model::MIN_RSA_BITS;

impl CsrFacts {
    /// Parses a DER PKCS#10 and verifies its self-signature.
    pub fn parse(der_bytes: &[u8]) -> Result<CsrFacts, PkiError> {
        if der_bytes.len() > MAX_CSR_LEN {
            return Err(PkiError::Der("request too large".into()));
        }
        let req = CertReq::from_der(der_bytes)?;
        // A key too weak to verify with (aws-lc refuses RSA under 2048 bits) is named as what it
        // is, not as a bad signature.
        if let KeyFacts::Rsa { bits } = key_facts(&req.info.public_key)? {
            if bits < MIN_RSA_BITS {
                return Err(PkiError::WeakKey(format!("RSA {bits}")));
            }
        }
        // Verify over the request info as it came on the wire, not a re-encoding.
        let info_raw = first_element_raw(der_bytes)?;
        sig::verify(
            &req.info.public_key,
            &req.algorithm,
            info_raw,
            req.signature.as_bytes().ok_or_else(|| PkiError::Der("signature has unused bits".into()))?,
        )?;
        Self::facts(req, der_bytes)
    }

    /// A request as this server stored it (see `without_challenge`): its signature was verified
    /// when it arrived, and removing the challenge broke it, so it is not checked again.
    pub fn parse_stored(der_bytes: &[u8]) -> Result<CsrFacts, PkiError> {
        Self::facts(CertReq::from_der(der_bytes)?, der_bytes)
    }

    /// The request with its challengePassword attribute removed (a secret: SCEP challenges must
    /// not sit in the database); unchanged when it has none. Read it back with `parse_stored`.
    pub fn without_challenge(der_bytes: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut req = CertReq::from_der(der_bytes)?;
        if !req.info.attributes.iter().any(|a| a.oid == oids::CHALLENGE_PASSWORD) {
            return Ok(der_bytes.to_vec());
        }
        let kept: Vec<_> = req.info.attributes.iter().filter(|a| a.oid != oids::CHALLENGE_PASSWORD).cloned().collect();
        req.info.attributes = kept.try_into().map_err(|e: der::Error| PkiError::Der(e.to_string()))?;
        Ok(req.to_der()?)
    }

    fn facts(req: CertReq, der_bytes: &[u8]) -> Result<CsrFacts, PkiError> {
        let spki = req.info.public_key.clone();
        let key = key_facts(&spki)?;
        let mut extensions = Vec::new();
        let mut template_hint = None;
        let mut name_value_template = None;
        let mut renewal_cert_der = None;
        let mut challenge_password = None;
        let mut client_machine = None;
        for attr in req.info.attributes.iter() {
            if attr.oid == oids::EXTENSION_REQUEST || attr.oid == oids::MS_CERT_EXTENSIONS {
                for v in attr.values.iter() {
                    let exts: Vec<Extension> = v.decode_as()?;
                    extensions.extend(exts);
                }
            } else if attr.oid == oids::CHALLENGE_PASSWORD {
                challenge_password = attr.values.iter().next().map(|v| lenient_string(v.value()));
            } else if attr.oid == oids::MS_REQUEST_CLIENT_INFO {
                client_machine = attr.values.iter().next().and_then(|v| client_info_machine(v.value()));
            } else if attr.oid == oids::MS_RENEWAL_CERTIFICATE {
                renewal_cert_der = attr.values.iter().next().map(|v| v.to_der()).transpose()?;
            } else if attr.oid == oids::MS_ENROLLMENT_NAME_VALUE_PAIR {
                for v in attr.values.iter() {
                    if let Some(t) = name_value_template_of(v.value()) {
                        name_value_template = Some(t);
                    }
                }
            }
        }
        let mut dns_names = Vec::new();
        let mut ip_addrs = Vec::new();
        for ext in &extensions {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == oids::MS_CERTIFICATE_TEMPLATE {
                if let Ok(t) = super::template_ext::decode_template(value) {
                    template_hint = Some(TemplateHint::Oid { oid: t.oid, major: t.major, minor: t.minor });
                }
            } else if ext.extn_id == oids::MS_ENROLL_CERTTYPE && template_hint.is_none() {
                template_hint = super::template_ext::decode_template_name(value).map(TemplateHint::Name);
            } else if ext.extn_id == oids::CE_SUBJECT_ALT_NAME {
                let (dns, ips) = san_names(value)?;
                dns_names.extend(dns);
                ip_addrs.extend(ips);
            }
        }
        if template_hint.is_none() {
            template_hint = name_value_template.map(TemplateHint::Name);
        }
        Ok(CsrFacts {
            der: der_bytes.to_vec(),
            subject_cn: common_name(&req.info.subject),
            subject: req.info.subject,
            spki_der: spki.to_der()?,
            spki,
            key,
            extensions,
            dns_names,
            ip_addrs,
            template_hint,
            renewal_cert_der,
            challenge_password,
            client_machine,
        })
    }
}

/// The DNS names and IP addresses of a subjectAltName extension value (other name forms are
/// left out: we issue only these two).
pub(crate) fn san_names(value: &[u8]) -> Result<(Vec<String>, Vec<std::net::IpAddr>), PkiError> {
    let mut dns_names = Vec::new();
    let mut ip_addrs = Vec::new();
    for n in SubjectAltName::from_der(value)?.0 {
        match n {
            GeneralName::DnsName(d) => dns_names.push(d.to_string()),
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 => {
                    let b: [u8; 4] = ip.as_bytes().try_into().map_err(|_| PkiError::Der("ip".into()))?;
                    ip_addrs.push(std::net::IpAddr::from(b))
                }
                16 => {
                    let b: [u8; 16] = ip.as_bytes().try_into().map_err(|_| PkiError::Der("ip".into()))?;
                    ip_addrs.push(std::net::IpAddr::from(b))
                }
                _ => return Err(PkiError::Der("bad IP address in SAN".into())),
            },
            _ => {}
        }
    }
    Ok((dns_names, ip_addrs))
}

/// The raw TLV of the first element inside the outer SEQUENCE.
pub(crate) fn first_element_raw(der_bytes: &[u8]) -> Result<&[u8], PkiError> {
    let mut outer = SliceReader::new(der_bytes)?;
    let header = der::Header::decode(&mut outer)?;
    if header.tag() != der::Tag::Sequence {
        return Err(PkiError::Der("not a SEQUENCE".into()));
    }
    let start = outer.position();
    let inner_header = der::Header::decode(&mut outer)?;
    let inner_len = (inner_header.encoded_len()? + inner_header.length())?;
    let start: usize = start.try_into()?;
    let len: usize = inner_len.try_into()?;
    der_bytes.get(start..start + len).ok_or_else(|| PkiError::Der("truncated".into()))
}

/// The first CN of a name, decoding any string type leniently (Windows MDM CSRs carry `!` in
/// PrintableStrings, which strict decoders reject).
pub fn common_name(name: &Name) -> Option<String> {
    common_names(name).into_iter().next()
}

/// Every CN of a name, each decoded by its string type (a BMPString is UTF-16, so
/// `localhost` in one reads as `localhost`, not with NULs between the letters).
pub fn common_names(name: &Name) -> Vec<String> {
    name.iter().filter(|atv| atv.oid == oids::AT_COMMON_NAME).map(|atv| directory_string(&atv.value)).collect()
}

fn directory_string(value: &der::Any) -> String {
    let bytes = value.value();
    match value.tag() {
        der::Tag::BmpString => {
            let units: Vec<u16> =
                bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
            String::from_utf16_lossy(&units)
        }
        _ => lenient_string(bytes),
    }
}

fn lenient_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string()
}

/// The machine name a Windows request carries (szOID_REQUEST_CLIENT_INFO), read without
/// checking the request otherwise (the RA parses and verifies it fully).
pub fn client_machine_name(der_bytes: &[u8]) -> Option<String> {
    if der_bytes.len() > MAX_CSR_LEN {
        return None;
    }
    let req = CertReq::from_der(der_bytes).ok()?;
    let attr = req.info.attributes.iter().find(|a| a.oid == oids::MS_REQUEST_CLIENT_INFO)?;
    attr.values.iter().next().and_then(|v| client_info_machine(v.value()))
}

/// ClientInformation ::= SEQUENCE { clientId INTEGER, MachineName UTF8String, UserName
/// UTF8String, ProcessName UTF8String } ([MS-WCCE] 2.2.2.7.4): the machine name, if any.
/// `content` is the SEQUENCE's content (the attribute value without its header).
fn client_info_machine(content: &[u8]) -> Option<String> {
    let mut r = SliceReader::new(content).ok()?;
    let _client_id: der::asn1::Int = r.decode().ok()?;
    let machine: der::asn1::Utf8StringRef<'_> = r.decode().ok()?;
    Some(machine.as_str().to_string()).filter(|m| !m.is_empty())
}

fn name_value_template_of(value: &[u8]) -> Option<String> {
    // SEQUENCE OF SEQUENCE { BMPString name, BMPString value }
    let pairs: Vec<(der::asn1::BmpString, der::asn1::BmpString)> = decode_pairs(value).ok()?;
    pairs
        .into_iter()
        .find(|(n, _)| n.to_string().eq_ignore_ascii_case("CertificateTemplate"))
        .map(|(_, v)| v.to_string())
}

fn decode_pairs(value: &[u8]) -> der::Result<Vec<(der::asn1::BmpString, der::asn1::BmpString)>> {
    let mut r = SliceReader::new(value)?;
    r.sequence(|r| {
        let mut out = Vec::new();
        while !r.is_finished() {
            out.push(r.sequence(|r| Ok::<_, der::Error>((r.decode()?, r.decode()?)))?);
        }
        Ok::<_, der::Error>(out)
    })
}

pub fn key_facts(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyFacts, PkiError> {
    let alg = spki.algorithm.oid;
    if alg == oids::EC_PUBLIC_KEY {
        Ok(match sig::curve(spki)? {
            sig::Curve::P256 => KeyFacts::Ec { curve_bits: 256 },
            sig::Curve::P384 => KeyFacts::Ec { curve_bits: 384 },
        })
    } else if alg == oids::RSA_ENCRYPTION {
        let bytes =
            spki.subject_public_key.as_bytes().ok_or_else(|| PkiError::UnsupportedKey("RSA key bit string".into()))?;
        let mut r = SliceReader::new(bytes)?;
        let modulus: UintRef<'_> = r.sequence(|r| {
            let n: UintRef<'_> = r.decode()?;
            let _e: AnyRef<'_> = r.decode()?;
            Ok::<_, der::Error>(n)
        })?;
        let m = modulus.as_bytes();
        let lead = m.first().map(|b| 8 - b.leading_zeros()).unwrap_or(0);
        let bits = (m.len().saturating_sub(1) as u32) * 8 + lead;
        Ok(KeyFacts::Rsa { bits })
    } else if alg == oids::ED25519 {
        Ok(KeyFacts::Ed25519)
    } else {
        Err(PkiError::UnsupportedKey(alg.to_string()))
    }
}
