//! Default templates, template OIDs, and the listener's own TLS identity.
use super::{Ra, RaError};
use autoenroll_ca::{IssueRequest, Profile};
use autoenroll_core::model::{
    Eku, Grant, KeyAlgorithm, KeyFamily, KeyPolicy, KeyUsage, NamePolicy, RequestKind, SubjectFrom, Template, UnixTime,
};
use autoenroll_keys::KeyPair;
use const_oid::ObjectIdentifier;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

pub const DAY: i64 = 86_400;
const OID_ARC_SETTING: &str = "template_oid_arc";
const OID_NEXT_SETTING: &str = "template_oid_next";

/// ADCS names templates under 1.3.6.1.4.1.311.21.8 with a random per-forest arc; we do the same
/// per installation so Windows clients see familiar template OIDs.
pub(crate) async fn next_template_oid(ra: &Ra) -> Result<ObjectIdentifier, RaError> {
    let arc = match ra.store.setting(OID_ARC_SETTING).await? {
        Some(a) => a,
        None => {
            let r: [u8; 8] = super::secrets::random_bytes();
            let a = u32::from_be_bytes([r[0], r[1], r[2], r[3]]) & 0x7fff_ffff;
            let b = u32::from_be_bytes([r[4], r[5], r[6], r[7]]) & 0x7fff_ffff;
            let arc = format!("{}.{a}.{b}", autoenroll_core::oids::MS_TEMPLATE_ARC);
            ra.store.set_setting(OID_ARC_SETTING, &arc).await?;
            arc
        }
    };
    let next: i64 = ra.store.setting(OID_NEXT_SETTING).await?.and_then(|v| v.parse().ok()).unwrap_or(1);
    ra.store.set_setting(OID_NEXT_SETTING, &(next + 1).to_string()).await?;
    ObjectIdentifier::new(&format!("{arc}.{next}")).map_err(RaError::internal)
}

/// A client-authentication template with the product defaults: 1 year, renewal period 6
/// weeks, P-256 keys (EC only), subject from the device identity, autoenrolled, enrollable by
/// accounts and bootstrap tokens (not by holders of other templates' certificates).
pub(crate) fn client_auth_template(name: &str, oid: ObjectIdentifier, now: UnixTime) -> Template {
    Template {
        name: name.to_string(),
        oid,
        major: 1,
        minor: 0,
        description: String::new(),
        validity_secs: 365 * DAY,
        renewal_secs: 42 * DAY,
        renewal_grace_secs: 0,
        retry_interval_secs: 7 * DAY,
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
        grants: vec![Grant::AnyAccount, Grant::Token],
        names: NamePolicy::default(),
        allow_mdm: false,
        for_users: false,
        created_at: now,
        updated_at: now,
    }
}

pub(crate) async fn ensure_defaults(ra: &Ra) -> Result<(), RaError> {
    if ra.store.setting("defaults_created").await?.is_some() {
        return Ok(());
    }
    let now = ra.now();
    let base = client_auth_template("Machine", next_template_oid(ra).await?, now);
    // Windows MDM and SCEP clients generate RSA keys; agents generate P-256.
    let both = KeyPolicy { accept: vec![KeyFamily::Ec, KeyFamily::Rsa], ..base.key.clone() };
    let machine = Template {
        description: "Device client authentication; subject built from the device identity".into(),
        key: both.clone(),
        ..base
    };
    let web = Template {
        name: "WebServer".into(),
        oid: next_template_oid(ra).await?,
        description: "TLS server; the enrollee supplies subject and DNS names".into(),
        validity_secs: 90 * DAY,
        renewal_secs: 30 * DAY,
        key_usage: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
        ekus: vec![Eku::SERVER_AUTH],
        subject_from: SubjectFrom::Request,
        allow_san: true,
        // A TLS server certificate: accounts only (never a device's Machine certificate), for
        // the device's own name unless an administrator adds DNS suffixes or IP ranges.
        grants: vec![Grant::AnyAccount],
        ..machine.clone()
    };
    for t in [machine, web] {
        match ra.store.insert_template(&t).await {
            Ok(()) | Err(autoenroll_store::StoreError::Duplicate(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ra.store.set_setting("defaults_created", &now.0.to_string()).await?;
    Ok(())
}

/// What a certificate of `t` for `key` carries (key usages by key type).
pub(crate) fn profile_for(t: &Template, key: &autoenroll_core::pki::KeyFacts) -> Profile {
    Profile {
        validity_secs: t.validity_secs,
        key_usage: t.key_usage_for(key),
        extended_key_usage: t.ekus.clone(),
        template: Some(t.template_ref()),
        template_name: Some(t.name.clone()),
        is_ca: false,
    }
}

fn write_private(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    // Unique per process: replicas sharing a data directory may refresh at the same time.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(crate) async fn tls_identity(
    ra: &Ra,
    hostnames: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(String, Vec<Vec<u8>>), RaError> {
    let dir = ra.settings.data_dir.join("tls");
    let key_path = dir.join("server.key");
    let cert_path = dir.join("server.pem");
    let now = ra.now();
    if let (Ok(key), Ok(pem)) = (std::fs::read_to_string(&key_path), std::fs::read(&cert_path)) {
        if let Ok(chain) = x509_cert::Certificate::load_pem_chain(&pem) {
            let ders: Vec<Vec<u8>> = chain.iter().filter_map(|c| der::Encode::to_der(c).ok()).collect();
            // Kept while it has a month left and names every name and address the server now
            // answers to (a new --hostname or --public-url gets a new certificate).
            let fresh = ders
                .first()
                .and_then(|d| autoenroll_core::pki::CertFacts::parse(d).ok())
                .map(|f| {
                    f.not_after.0 - now.0 > 30 * DAY
                        && hostnames.iter().all(|h| f.dns_names.iter().any(|n| n.eq_ignore_ascii_case(h)))
                        && ips.iter().all(|ip| f.ip_addrs.contains(ip))
                })
                .unwrap_or(false);
            let same_ca = ders.get(1).map(|d| d.as_slice() == ra.ca.issuing_der().as_slice()).unwrap_or(false);
            if fresh && same_ca {
                return Ok((key, ders));
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(RaError::internal)?;
    let key = KeyPair::generate(KeyAlgorithm::P256).map_err(RaError::internal)?;
    let cn = hostnames.first().map(String::as_str).unwrap_or("localhost");
    let req = IssueRequest {
        subject: autoenroll_keys::cn_name(cn).map_err(RaError::internal)?,
        spki_der: key.spki_der().to_vec(),
        dns_names: hostnames.to_vec(),
        ip_addrs: ips.to_vec(),
    };
    let profile = Profile {
        validity_secs: 365 * DAY,
        key_usage: vec![KeyUsage::DigitalSignature],
        extended_key_usage: vec![Eku::SERVER_AUTH],
        template: None,
        template_name: None,
        is_ca: false,
    };
    // Recorded like any other issuance: nothing we sign is missing from the store.
    let device = ra.store.touch_device("autoenroll-server", now).await?;
    // The server's own device: no account may claim it.
    if device.owner.is_none() {
        ra.store.bind_device(device.id, super::LOCAL_ADMIN).await?;
    }
    let issued = ra
        .issue_recorded(super::enroll::Recorded {
            audit: super::enroll::Audit {
                actor: "server",
                action: "issue",
                subject: "TLSListener",
                note: String::new(),
            },
            previous_serial: None,
            device_id: device.id,
            requester: "server",
            template_name: "TLSListener",
            kind: RequestKind::Listener,
            csr_der: &[],
            request: &req,
            profile: &profile,
            renewal_secs: 30 * DAY,
            scep_transaction: None,
        })
        .await?;
    let super::enroll::Issue::New { der: leaf, .. } = issued else {
        return Err(RaError::internal("the listener certificate has no predecessor to be taken"));
    };
    let chain = vec![leaf, ra.ca.issuing_der().to_vec()];
    let mut pem = String::new();
    for c in &chain {
        pem.push_str(&der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, c).map_err(RaError::internal)?);
    }
    let key_pem = key.to_pem().map_err(RaError::internal)?;
    write_private(&key_path, key_pem.as_bytes(), 0o600).map_err(RaError::internal)?;
    write_private(&cert_path, pem.as_bytes(), 0o644).map_err(RaError::internal)?;
    Ok((key_pem, chain))
}
