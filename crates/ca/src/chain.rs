//! The issuing CA's own certificate as relying parties walk it: an AIA caIssuers URL to the root
//! certificate and a CRL distribution point for the root's CRL, both on the public (plain-HTTP)
//! base, so chain builders that fetch issuers (CryptoAPI) and check revocation of every CA
//! below the root find both. Only the root key certifies the issuing CA and signs the root's
//! CRL: that happens when the root key is at hand, never otherwise.
use crate::crl::CrlSigner;
use crate::files::{ca_profile, io, pem_cert, read_pem, replace_file, CaPaths};
use crate::issuer::{build_tbs, key_id, random_serial, sign_tbs, Ca, Distribution, TbsInput};
use crate::CaError;
use autoenroll_core::model::{KeyUsage, UnixTime};
use autoenroll_core::oids;
use autoenroll_keys::KeyPair;
use der::{Decode, Encode};
use std::path::Path;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints};
use x509_cert::Certificate;

/// What the caller knows beyond the CA directory: an issuing certificate another process
/// published (the database), and until when the published root CRL is good.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published<'a> {
    pub issuing: Option<&'a [u8]>,
    pub root_crl_until: Option<UnixTime>,
}

/// Where the issuing CA certificate points: the root certificate and the root's CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootUrls {
    pub cert_url: String,
    pub crl_url: String,
}

/// The root's CRL is good for a year and re-signed when less than 60 days remain.
pub const ROOT_CRL_VALIDITY_SECS: i64 = 365 * 86_400;
pub const ROOT_CRL_RENEW_BEFORE_SECS: i64 = 60 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainUpkeep {
    /// The issuing certificate names the URLs and the root's CRL is fresh.
    Current,
    /// Done with the root key: the issuing CA re-certified (same key, subject and validity,
    /// new serial), and the root's CRL signed (DER, valid until the time given) for the caller
    /// to publish.
    Done { recertified: bool, root_crl: Vec<u8>, root_crl_until: UnixTime },
    /// Work that needs the root key, which is not at hand (kept offline).
    NeedsRootKey { recertify: bool, root_crl_until: Option<UnixTime> },
}

fn uris(names: &[GeneralName]) -> impl Iterator<Item = &str> {
    names.iter().filter_map(|n| match n {
        GeneralName::UniformResourceIdentifier(u) => Some(u.as_str()),
        _ => None,
    })
}

/// Whether the certificate names `urls` (AIA caIssuers and a CRL distribution point).
fn names_urls(cert_der: &[u8], urls: &RootUrls) -> Result<bool, CaError> {
    let cert = Certificate::from_der(cert_der)?;
    let (mut aia, mut cdp) = (false, false);
    for e in cert.tbs_certificate().extensions().map(Vec::as_slice).unwrap_or_default() {
        if e.extn_id == oids::PE_AUTHORITY_INFO_ACCESS {
            let access = AuthorityInfoAccessSyntax::from_der(e.extn_value.as_bytes())?;
            aia = access.0.iter().any(|a| {
                a.access_method == oids::AD_CA_ISSUERS
                    && matches!(&a.access_location, GeneralName::UniformResourceIdentifier(u) if u.as_str() == urls.cert_url)
            });
        } else if e.extn_id == oids::CE_CRL_DISTRIBUTION_POINTS {
            let points = CrlDistributionPoints::from_der(e.extn_value.as_bytes())?;
            cdp = points.0.iter().any(|p| match &p.distribution_point {
                Some(DistributionPointName::FullName(names)) => uris(names).any(|u| u == urls.crl_url),
                _ => false,
            });
        }
    }
    Ok(aia && cdp)
}

fn same_key(a: &[u8], b: &[u8]) -> Result<bool, CaError> {
    let spki = |der: &[u8]| -> Result<Vec<u8>, CaError> {
        Ok(Certificate::from_der(der)?.tbs_certificate().subject_public_key_info().to_der()?)
    };
    Ok(spki(a)? == spki(b)?)
}

#[cfg(test)]
fn crl_next_update(der: &[u8]) -> Option<UnixTime> {
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).ok()?;
    let next = crl.tbs_cert_list.next_update?;
    Some(UnixTime(i64::try_from(next.to_unix_duration().as_secs()).ok()?))
}

impl Ca {
    /// Brings the issuing CA certificate and the root's CRL up to date for `urls`: takes a
    /// re-certified issuing certificate another process published (same key, names the URLs);
    /// otherwise re-certifies the issuing key when its certificate does not name them; signs a
    /// new root CRL when the published one is missing or expires within
    /// `ROOT_CRL_RENEW_BEFORE_SECS`, or on re-certification. `root_key` is the root's private key
    /// file (default `<ca dir>/root.key`); without it, says what is left to do.
    pub fn chain_upkeep(
        &self,
        urls: &RootUrls,
        published: Published<'_>,
        root_key: Option<&Path>,
        now: UnixTime,
    ) -> Result<ChainUpkeep, CaError> {
        let Some(dir) = self.dir.as_deref() else { return Ok(ChainUpkeep::Current) };
        let paths = CaPaths::new(dir);
        // Another process (the upkeep command, a replica) may have re-certified the issuing key.
        let candidates = [published.issuing.map(<[u8]>::to_vec), read_pem(&paths.issuing_cert, "CERTIFICATE").ok()];
        for other in candidates.into_iter().flatten() {
            let current = self.issuing_der();
            if other != *current
                && same_key(&other, &current)?
                && names_urls(&other, urls)?
                && !names_urls(&current, urls)?
            {
                self.replace_issuing_der(other);
            }
        }
        let recertify = !names_urls(&self.issuing_der(), urls)?;
        let crl_due = published.root_crl_until.is_none_or(|until| until.0 - now.0 < ROOT_CRL_RENEW_BEFORE_SECS);
        if !recertify && !crl_due {
            return Ok(ChainUpkeep::Current);
        }
        let key_path = root_key.unwrap_or(&paths.root_key);
        let key_pem = match std::fs::read_to_string(key_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ChainUpkeep::NeedsRootKey { recertify, root_crl_until: published.root_crl_until });
            }
            Err(e) => return Err(io(key_path, e)),
        };
        let root_key = KeyPair::from_pem(&key_pem)?;
        let root = Certificate::from_der(self.root_der())?;
        if root.tbs_certificate().subject_public_key_info().to_der()? != root_key.spki_der() {
            return Err(CaError::Io(format!("{} is not the key of this CA's root", key_path.display())));
        }
        let root_name = root.tbs_certificate().subject().clone();
        let root_key_id = key_id(root_key.spki_der())?;
        if recertify {
            let current = Certificate::from_der(&self.issuing_der())?;
            let validity = current.tbs_certificate().validity();
            let secs = |t: x509_cert::time::Time| {
                i64::try_from(t.to_unix_duration().as_secs())
                    .map(UnixTime)
                    .map_err(|_| CaError::Encoding("issuing CA validity".into()))
            };
            let distribution =
                Distribution { crl_url: urls.crl_url.clone(), ca_issuers_url: urls.cert_url.clone(), ocsp_url: None };
            let tbs = build_tbs(TbsInput {
                serial: random_serial()?,
                // The same validity: what the issuing CA signed before stays nested in it.
                not_before: secs(validity.not_before)?,
                not_after: secs(validity.not_after)?,
                subject: current.tbs_certificate().subject().clone(),
                spki_der: &current.tbs_certificate().subject_public_key_info().to_der()?,
                issuer: root_name.clone(),
                issuer_key_id: root_key_id.clone(),
                signature_algorithm: root_key.signature_algorithm(),
                profile: &ca_profile(&[KeyUsage::DigitalSignature, KeyUsage::KeyCertSign, KeyUsage::CrlSign]),
                dns_names: &[],
                ip_addrs: &[],
                path_len: Some(0),
                distribution: Some(&distribution),
            })?;
            let der = sign_tbs(&tbs, &root_key)?;
            // The file first: a crash between the two leaves the new certificate for next start.
            replace_file(&paths.issuing_cert, pem_cert(&der)?.as_bytes(), 0o644)?;
            self.replace_issuing_der(der);
        }
        // The root revokes nothing (an issuing CA is replaced, not revoked, here): an empty
        // list, numbered by time so that a newer one always has the higher number.
        let until = now.plus_secs(ROOT_CRL_VALIDITY_SECS);
        let number = u64::try_from(now.0).unwrap_or_default();
        let signer = CrlSigner { key: &root_key, issuer: &root_name, key_id: &root_key_id };
        let root_crl = signer.sign(&[], number, now, until)?;
        Ok(ChainUpkeep::Done { recertified: recertify, root_crl, root_crl_until: until })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use autoenroll_core::pki::cert::verify_issued_by;

    const T0: i64 = 1_800_000_000;

    fn urls(base: &str) -> RootUrls {
        RootUrls { cert_url: format!("{base}/ca/root.crt"), crl_url: format!("{base}/crl/root") }
    }

    fn done_until(u: &ChainUpkeep) -> Option<UnixTime> {
        match u {
            ChainUpkeep::Done { root_crl, root_crl_until, .. } => {
                assert_eq!(crl_next_update(root_crl), Some(*root_crl_until));
                Some(*root_crl_until)
            }
            _ => None,
        }
    }

    #[test]
    fn recertifies_with_the_root_key_and_says_what_is_left_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::init(dir.path(), autoenroll_keys::KeyAlgorithm::P256, "Test", UnixTime(T0)).unwrap();
        let before = ca.issuing_der();
        let a = urls("http://pki.example:8080");
        let none = Published::default();
        let done = ca.chain_upkeep(&a, none, None, UnixTime(T0 + 10)).unwrap();
        assert!(matches!(done, ChainUpkeep::Done { recertified: true, .. }));
        let until = done_until(&done).unwrap();
        assert_eq!(until, UnixTime(T0 + 10 + ROOT_CRL_VALIDITY_SECS));
        let after = ca.issuing_der();
        assert_ne!(before, after);
        assert!(names_urls(&after, &a).unwrap() && !names_urls(&before, &a).unwrap());
        verify_issued_by(&after, ca.root_der()).unwrap();
        // Same key, subject and validity: what the old certificate issued still chains to it.
        let old = Certificate::from_der(&before).unwrap();
        let new = Certificate::from_der(&after).unwrap();
        assert_eq!(old.tbs_certificate().subject(), new.tbs_certificate().subject());
        assert_eq!(old.tbs_certificate().validity(), new.tbs_certificate().validity());
        assert_eq!(crate::load(dir.path()).unwrap().issuing_der(), after, "the file was replaced");
        let published = Published { issuing: None, root_crl_until: Some(until) };
        assert_eq!(ca.chain_upkeep(&a, published, None, UnixTime(T0 + 20)).unwrap(), ChainUpkeep::Current);
        // A process holding the old certificate takes the new one (from the database or the file).
        let stale = crate::load(dir.path()).unwrap();
        stale.replace_issuing_der(before.to_vec());
        let offered = Published { issuing: Some(&after), root_crl_until: Some(until) };
        assert_eq!(stale.chain_upkeep(&a, offered, None, UnixTime(T0 + 15)).unwrap(), ChainUpkeep::Current);
        assert_eq!(stale.issuing_der(), after);

        // The root key taken offline: a new base, and later a CRL about to lapse, need it.
        let offline = dir.path().join("offline-root.key");
        std::fs::rename(dir.path().join("root.key"), &offline).unwrap();
        let b = urls("http://pki2.example:8080");
        assert_eq!(
            ca.chain_upkeep(&b, published, None, UnixTime(T0 + 30)).unwrap(),
            ChainUpkeep::NeedsRootKey { recertify: true, root_crl_until: Some(until) }
        );
        let late = T0 + 10 + ROOT_CRL_VALIDITY_SECS - ROOT_CRL_RENEW_BEFORE_SECS + 1;
        assert!(matches!(
            ca.chain_upkeep(&a, published, None, UnixTime(late)).unwrap(),
            ChainUpkeep::NeedsRootKey { recertify: false, .. }
        ));
        let done = ca.chain_upkeep(&a, published, Some(&offline), UnixTime(late)).unwrap();
        assert!(matches!(done, ChainUpkeep::Done { recertified: false, .. }));
        assert_eq!(done_until(&done), Some(UnixTime(late + ROOT_CRL_VALIDITY_SECS)));
        // Another CA's key is refused.
        let other = tempfile::tempdir().unwrap();
        crate::init(other.path(), autoenroll_keys::KeyAlgorithm::P256, "Other", UnixTime(T0)).unwrap();
        assert!(ca.chain_upkeep(&b, published, Some(&other.path().join("root.key")), UnixTime(late)).is_err());
    }
}
