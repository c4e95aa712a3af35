//! The CA hierarchy on disk: `<dir>/root.pem`, `root.key`, `issuing.pem`, `issuing.key`.
//! Keys are PKCS#8 PEM with mode 0600, created with `create_new` so nothing is overwritten.
use crate::issuer::{build_tbs, key_id, random_serial, sign_tbs, Ca, Profile, TbsInput};
use crate::CaError;
use autoenroll_core::model::{KeyUsage, UnixTime};
use autoenroll_keys::{KeyAlgorithm, KeyPair};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use x509_cert::name::Name;

const YEAR: i64 = 365 * 86_400;

pub struct CaPaths {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub issuing_cert: PathBuf,
    pub issuing_key: PathBuf,
}

impl CaPaths {
    pub fn new(dir: &Path) -> CaPaths {
        CaPaths {
            root_cert: dir.join("root.pem"),
            root_key: dir.join("root.key"),
            issuing_cert: dir.join("issuing.pem"),
            issuing_key: dir.join("issuing.key"),
        }
    }
}

pub fn exists(dir: &Path) -> bool {
    let p = CaPaths::new(dir);
    p.issuing_cert.exists() && p.issuing_key.exists()
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> CaError {
    CaError::Io(format!("{}: {e}", path.display()))
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| io(path, e))?;
    f.write_all(contents).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

pub(crate) fn pem_cert(der_bytes: &[u8]) -> Result<String, CaError> {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der_bytes)
        .map_err(|e| CaError::Encoding(e.to_string()))
}

pub(crate) fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, CaError> {
    let text = std::fs::read(path).map_err(|e| io(path, e))?;
    let (l, der_bytes) = der::pem::decode_vec(&text).map_err(|e| CaError::Io(format!("{}: {e}", path.display())))?;
    if l != label {
        return Err(CaError::Io(format!("{}: expected {label}", path.display())));
    }
    Ok(der_bytes)
}

pub(crate) fn ca_profile(key_usage: &[KeyUsage]) -> Profile {
    Profile {
        validity_secs: 0,
        key_usage: key_usage.to_vec(),
        extended_key_usage: vec![],
        template: None,
        template_name: None,
        is_ca: true,
    }
}

/// Creates a root (20 years) and an issuing CA (10 years) under `dir`.
pub fn init(dir: &Path, alg: KeyAlgorithm, org: &str, now: UnixTime) -> Result<Ca, CaError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
    }
    let paths = CaPaths::new(dir);
    let org = autoenroll_keys::escape_rdn_value(org);
    let root_name = Name::from_str(&format!("CN={org} Root CA,O={org}"))?;
    let issuing_name = Name::from_str(&format!("CN={org} Issuing CA,O={org}"))?;

    let root_key = KeyPair::generate(alg)?;
    let root_tbs = build_tbs(TbsInput {
        serial: random_serial()?,
        not_before: now,
        not_after: now.plus_secs(20 * YEAR),
        subject: root_name.clone(),
        spki_der: root_key.spki_der(),
        issuer: root_name.clone(),
        issuer_key_id: key_id(root_key.spki_der())?,
        signature_algorithm: root_key.signature_algorithm(),
        profile: &ca_profile(&[KeyUsage::KeyCertSign, KeyUsage::CrlSign]),
        dns_names: &[],
        ip_addrs: &[],
        path_len: None,
        distribution: None,
    })?;
    let root_der = sign_tbs(&root_tbs, &root_key)?;

    let issuing_key = KeyPair::generate(alg)?;
    let issuing_tbs = build_tbs(TbsInput {
        serial: random_serial()?,
        not_before: now,
        not_after: now.plus_secs(10 * YEAR),
        subject: issuing_name,
        spki_der: issuing_key.spki_der(),
        issuer: root_name,
        issuer_key_id: key_id(root_key.spki_der())?,
        signature_algorithm: root_key.signature_algorithm(),
        profile: &ca_profile(&[KeyUsage::DigitalSignature, KeyUsage::KeyCertSign, KeyUsage::CrlSign]),
        dns_names: &[],
        ip_addrs: &[],
        path_len: Some(0),
        distribution: None,
    })?;
    let issuing_der = sign_tbs(&issuing_tbs, &root_key)?;

    write_file(&paths.root_key, root_key.to_pem()?.as_bytes(), 0o600)?;
    write_file(&paths.issuing_key, issuing_key.to_pem()?.as_bytes(), 0o600)?;
    write_file(&paths.root_cert, pem_cert(&root_der)?.as_bytes(), 0o644)?;
    write_file(&paths.issuing_cert, pem_cert(&issuing_der)?.as_bytes(), 0o644)?;
    let mut ca = Ca::new(root_der, issuing_der, Box::new(issuing_key))?;
    ca.dir = Some(dir.to_path_buf());
    Ok(ca)
}

/// Loads the issuing CA (the root key stays on disk, unread).
pub fn load(dir: &Path) -> Result<Ca, CaError> {
    let paths = CaPaths::new(dir);
    let key_pem = std::fs::read_to_string(&paths.issuing_key).map_err(|e| io(&paths.issuing_key, e))?;
    let key = KeyPair::from_pem(&key_pem)?;
    let mut ca = Ca::new(
        read_pem(&paths.root_cert, "CERTIFICATE")?,
        read_pem(&paths.issuing_cert, "CERTIFICATE")?,
        Box::new(key),
    )?;
    ca.dir = Some(dir.to_path_buf());
    Ok(ca)
}

/// Moves the root's private key out of the CA directory to `out` (0600, never overwriting an
/// existing file; the copy is read back before the original is removed).
pub fn export_root_key(dir: &Path, out: &Path) -> Result<(), CaError> {
    let paths = CaPaths::new(dir);
    let pem = match std::fs::read_to_string(&paths.root_key) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CaError::Io(format!(
                "{} is not there: the root key is already offline",
                paths.root_key.display()
            )))
        }
        Err(e) => return Err(io(&paths.root_key, e)),
    };
    if let (Ok(o), Ok(d)) = (std::path::absolute(out), std::path::absolute(dir)) {
        if o.starts_with(d.parent().unwrap_or(&d)) {
            return Err(CaError::Io(format!("{}: the root key must leave the data directory", out.display())));
        }
    }
    write_file(out, pem.as_bytes(), 0o600)?;
    // The copy and its directory entry are on disk before the original goes.
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io(parent, e))?;
    }
    let copy = std::fs::read_to_string(out).map_err(|e| io(out, e))?;
    KeyPair::from_pem(&copy)?;
    if copy != pem {
        return Err(CaError::Io(format!("{}: the copy differs; the root key was left in place", out.display())));
    }
    std::fs::remove_file(&paths.root_key).map_err(|e| io(&paths.root_key, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Replaces a file atomically (a new file beside it, synced, then renamed, then the directory
/// synced): readers see the old or the new contents, never a torn one, and two processes doing
/// it at once each rename a complete file of their own.
pub(crate) fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let unique: String = autoenroll_keys::random_serial()?.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("{unique}.tmp"));
    write_file(&tmp, contents, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// Copies the CA directory's files (certificates and keys, modes kept) into `out`, a new
/// directory (0700): the CA half of a backup. Returns the file names copied.
pub fn backup_files(dir: &Path, out: &Path) -> Result<Vec<String>, CaError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(out).map_err(|e| io(out, e))?;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(out, e))?;
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if !path.is_file() {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mode = std::fs::metadata(&path).map_err(|e| io(&path, e))?.permissions().mode() & 0o777;
        let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
        write_file(&out.join(&name), &data, mode)?;
        copied.push(name);
    }
    copied.sort();
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssueRequest;
    use autoenroll_core::pki::cert::{verify_issued_by, CertFacts};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_load_issue() {
        for alg in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Rsa(2048)] {
            let dir = tempfile::tempdir().unwrap();
            let now = UnixTime(1_795_314_114);
            init(dir.path(), alg, "Test", now).unwrap();
            let mode = std::fs::metadata(dir.path().join("issuing.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(init(dir.path(), alg, "Test", now).is_err(), "init must not overwrite");
            let ca = load(dir.path()).unwrap();
            verify_issued_by(&ca.issuing_der(), ca.root_der()).unwrap();
            verify_issued_by(ca.root_der(), ca.root_der()).unwrap();

            let leaf_key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
            let profile = Profile {
                validity_secs: 86_400,
                key_usage: vec![KeyUsage::DigitalSignature],
                extended_key_usage: vec![autoenroll_core::model::Eku::CLIENT_AUTH],
                template: Some(autoenroll_core::TemplateRef {
                    oid: "1.3.6.1.4.1.311.21.8.1.2".into(),
                    major: 3,
                    minor: 1,
                }),
                template_name: Some("Machine".into()),
                is_ca: false,
            };
            let req = IssueRequest {
                subject: autoenroll_keys::cn_name("dev1").unwrap(),
                spki_der: leaf_key.spki_der().to_vec(),
                dns_names: vec!["dev1.example".into()],
                ip_addrs: vec![],
            };
            let p = ca.prepare(&req, &profile, now.plus_secs(5)).unwrap();
            let der_bytes = ca.sign(&p).unwrap();
            verify_issued_by(&der_bytes, &ca.issuing_der()).unwrap();
            let f = CertFacts::parse(&der_bytes).unwrap();
            assert_eq!(f.not_before, now.plus_secs(5));
            assert_eq!(f.not_after, now.plus_secs(5 + 86_400));
            assert_eq!(f.template, profile.template);
            assert_eq!(f.template_name.as_deref(), Some("Machine"));
            assert_eq!(f.subject_cn.as_deref(), Some("dev1"));
        }
    }
}
