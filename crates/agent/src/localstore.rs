//! The agent's files:
//!
//! ```text
//! <state_dir>/certs/<Template>/<serial>/{key.pem, cert.pem, chain.pem, fullchain.pem}
//! <state_dir>/live/<Template> -> ../certs/<Template>/<serial>     (symlink)
//! <state_dir>/pending/<Template>/{key.pem, request.json, cert.pem, chain.pem}
//! <state_dir>/state.json, agent.lock
//! ```
//! An attempt starts by saving its key under `pending/`; the answer (a certificate or a
//! request id) is saved there too before anything goes live, so a crash at any point resumes.
//! A new pair is written and fsynced in its own directory, checked (key matches certificate),
//! and only then made live by renaming a symlink over the old one: a crash at any point leaves
//! the previous working pair in place. Older directories are the archive (pruned to N).
use crate::https::ClientIdentity;
use crate::AgentError;
use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use autoenroll_keys::KeyPair;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct LocalStore {
    root: PathBuf,
    keep: usize,
}

#[derive(Debug, Clone)]
pub struct Held {
    pub template: String,
    pub cert_der: Vec<u8>,
    pub facts: CertFacts,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyTemplateState {
    pub name: String,
    pub oid: String,
    pub major: u32,
    pub minor: u32,
    pub renewal_secs: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateStatus {
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    /// Consecutive failures and when to try again.
    #[serde(default)]
    pub failures: u32,
    pub retry_at: Option<i64>,
    pub last_hook: Option<HookOutcome>,
    /// What the server said about this template at the last check-in that answered.
    #[serde(default)]
    pub server: Option<ServerView>,
}

/// The server's view of a template's certificate, from check-in: the facts the agent feeds into
/// its own renewal decision (and keeps for when the server does not answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerView {
    /// The certificate the view is about (None: the device reported none).
    pub serial: Option<String>,
    /// The server's renewal time (its load-spread slot).
    pub renew_at: Option<i64>,
    pub revoked: bool,
    /// The server issued a newer certificate the device does not hold.
    pub lost: bool,
    /// The server renewed the held certificate and the answer never arrived.
    #[serde(default)]
    pub interrupted: bool,
    /// When the server's renewal window opens for the certificate: its template's renewal
    /// period, which an EST agent has no other way to learn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_opens: Option<i64>,
    /// When the server said so.
    pub at: i64,
    /// What it said to do, and why (`Renew/TemplateChanged`): a new word wins over a backoff.
    #[serde(default)]
    pub directive: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookOutcome {
    pub at: i64,
    pub command: String,
    /// `exit 0`, `exit 3`, `timed out after 30s`, `failed to start: ...`
    pub result: String,
    pub ok: bool,
}

/// What an attempt asks for: a new certificate, or a successor proven by the current one.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttemptKind {
    #[default]
    Enroll,
    Renew,
}

/// What an unfinished attempt left behind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingMeta {
    pub created_at: i64,
    pub kind: AttemptKind,
    /// Set when the server answered "pending".
    pub request_id: Option<String>,
    /// Not to be asked again before this time (the server's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
}

pub struct PendingAttempt {
    pub key: KeyPair,
    pub meta: PendingMeta,
    /// The certificate and chain, once received (then it only needs installing).
    pub received: Option<(Vec<u8>, Vec<Vec<u8>>)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// SHA-256 of bootstrap tokens already spent (never the tokens): a new token placed in the
    /// configuration is used, a spent one is not sent again.
    #[serde(default)]
    pub spent_tokens: Vec<String>,
    pub policy_fetched_at: Option<i64>,
    pub next_update_hours: Option<u32>,
    pub policy: Vec<PolicyTemplateState>,
    pub templates: BTreeMap<String, TemplateStatus>,
    /// What the last check-in said: the server has blocked this device.
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub checked_in_at: Option<i64>,
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Store { path: path.display().to_string(), message: e.to_string() }
}

/// Template names come from the server: only simple names become path components.
pub fn safe_component(name: &str) -> Result<&str, AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(AgentError::Protocol(format!("template name {name:?} is not usable as a file name")))
    }
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| store_err(path, e))?;
    f.write_all(data).map_err(|e| store_err(path, e))?;
    f.sync_all().map_err(|e| store_err(path, e))
}

/// Writes `path` whole or not at all: a temporary file beside it, synced, then renamed. A full
/// disk or a power cut leaves the old file (or none), never a truncated one.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    if let Err(e) = write_synced(&tmp, data, mode) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| store_err(path, e))
}

fn sync_dir(path: &Path) -> Result<(), AgentError> {
    std::fs::File::open(path).and_then(|d| d.sync_all()).map_err(|e| store_err(path, e))
}

fn pem(label: &str, der_bytes: &[u8]) -> Result<String, AgentError> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der_bytes).map_err(|e| AgentError::Protocol(e.to_string()))
}

fn read_cert_pem(path: &Path) -> Result<Vec<Vec<u8>>, AgentError> {
    let data = std::fs::read(path).map_err(|e| store_err(path, e))?;
    let certs = x509_cert::Certificate::load_pem_chain(&data).map_err(|e| store_err(path, e))?;
    certs.iter().map(|c| der::Encode::to_der(c).map_err(|e| store_err(path, e))).collect()
}

impl LocalStore {
    pub fn open(root: &Path, keep: usize) -> Result<LocalStore, AgentError> {
        for d in [root.to_path_buf(), root.join("certs"), root.join("live"), root.join("pending")] {
            std::fs::create_dir_all(&d).map_err(|e| store_err(&d, e))?;
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| store_err(root, e))?;
        Ok(LocalStore { root: root.to_path_buf(), keep })
    }

    pub fn live_dir(&self, template: &str) -> Result<PathBuf, AgentError> {
        Ok(self.root.join("live").join(safe_component(template)?))
    }

    /// The certificate currently live for `template`, read fresh from disk (someone else may
    /// have replaced it).
    pub fn current(&self, template: &str) -> Result<Option<Held>, AgentError> {
        let dir = self.live_dir(template)?;
        let cert_path = dir.join("cert.pem");
        if !cert_path.exists() {
            return Ok(None);
        }
        let certs = read_cert_pem(&cert_path)?;
        let Some(cert_der) = certs.into_iter().next() else { return Ok(None) };
        let facts = CertFacts::parse(&cert_der).map_err(|e| store_err(&cert_path, e))?;
        Ok(Some(Held { template: template.to_string(), cert_der, facts, dir }))
    }

    /// Every template with a live certificate.
    pub fn live_templates(&self) -> Result<Vec<String>, AgentError> {
        let live = self.root.join("live");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&live).map_err(|e| store_err(&live, e))? {
            let e = e.map_err(|e| store_err(&live, e))?;
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with('.') {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes the new pair, verifies it, swaps it live atomically and prunes the archive.
    pub fn install(
        &self,
        template: &str,
        key: &KeyPair,
        cert_der: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<PathBuf, AgentError> {
        let facts = CertFacts::parse(cert_der).map_err(|e| AgentError::Protocol(format!("issued certificate: {e}")))?;
        if facts.spki_der != key.spki_der() {
            return Err(AgentError::Protocol("the issued certificate does not carry our public key".into()));
        }
        let name = safe_component(template)?;
        let tdir = self.root.join("certs").join(name);
        let dir = tdir.join(&facts.serial.0);
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        write_synced(&dir.join("key.pem"), key.to_pem()?.as_bytes(), 0o600)?;
        crate::fault::point("mid-write");
        write_synced(&dir.join("cert.pem"), pem("CERTIFICATE", cert_der)?.as_bytes(), 0o644)?;
        let chain_pem = chain.iter().map(|c| pem("CERTIFICATE", c)).collect::<Result<String, _>>()?;
        write_synced(&dir.join("chain.pem"), chain_pem.as_bytes(), 0o644)?;
        let intermediates = chain
            .iter()
            .take(chain.len().saturating_sub(1))
            .map(|c| pem("CERTIFICATE", c))
            .collect::<Result<String, _>>()?;
        write_synced(&dir.join("fullchain.pem"), (pem("CERTIFICATE", cert_der)? + &intermediates).as_bytes(), 0o644)?;
        sync_dir(&dir)?;
        // Read back before going live: the files on disk are what services will load.
        let back = std::fs::read_to_string(dir.join("key.pem")).map_err(|e| store_err(&dir, e))?;
        if KeyPair::from_pem(&back)?.spki_der() != key.spki_der()
            || read_cert_pem(&dir.join("cert.pem"))?.first().map(Vec::as_slice) != Some(cert_der)
        {
            return Err(store_err(&dir, "written files do not read back"));
        }
        let live = self.root.join("live");
        let tmp = live.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("..").join("certs").join(name).join(&facts.serial.0), &tmp)
            .map_err(|e| store_err(&tmp, e))?;
        std::fs::rename(&tmp, live.join(name)).map_err(|e| store_err(&live, e))?;
        sync_dir(&live)?;
        self.prune(&tdir, &facts.serial.0);
        Ok(dir)
    }

    /// Keeps the live directory plus the `keep` newest archived ones.
    fn prune(&self, tdir: &Path, live_serial: &str) {
        let Ok(entries) = std::fs::read_dir(tdir) else { return };
        let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str() != Some(live_serial))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        old.sort();
        old.reverse();
        for (_, p) in old.into_iter().skip(self.keep) {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), %e, "could not prune archived certificate");
            }
        }
    }

    /// The private key of the live certificate.
    pub fn live_key(&self, template: &str) -> Result<KeyPair, AgentError> {
        let path = self.live_dir(template)?.join("key.pem");
        let pem = std::fs::read_to_string(&path).map_err(|e| store_err(&path, e))?;
        Ok(KeyPair::from_pem(&pem)?)
    }

    /// The chain (issuing CA, root) of the live certificate.
    pub fn live_chain(&self, template: &str) -> Result<Vec<Vec<u8>>, AgentError> {
        read_cert_pem(&self.live_dir(template)?.join("chain.pem"))
    }

    /// Archived (non-live) certificate directories for a template.
    pub fn archived(&self, template: &str) -> Result<Vec<PathBuf>, AgentError> {
        let tdir = self.root.join("certs").join(safe_component(template)?);
        let live =
            std::fs::read_link(self.live_dir(template)?).ok().and_then(|l| l.file_name().map(|f| f.to_os_string()));
        let mut out: Vec<PathBuf> = match std::fs::read_dir(&tdir) {
            Ok(rd) => rd.filter_map(Result::ok).filter(|e| Some(e.file_name()) != live).map(|e| e.path()).collect(),
            Err(_) => vec![],
        };
        out.sort();
        Ok(out)
    }

    /// A live, unexpired certificate with the clientAuth EKU, for TLS client authentication.
    pub fn client_identity(&self, now: UnixTime) -> Result<Option<ClientIdentity>, AgentError> {
        for t in self.live_templates()? {
            let Some(held) = self.current(&t)? else { continue };
            // A certificate the server issued a moment ago may start a second (or, with clock
            // skew, a few minutes) after our `now`: the server judges validity by its own clock.
            if !held.facts.has_client_auth()
                || now >= held.facts.not_after
                || now.plus_secs(300) < held.facts.not_before
            {
                continue;
            }
            let key = self.live_key(&t)?;
            let mut chain = vec![held.cert_der.clone()];
            // The issuing CA helps the server build the path; the root it has.
            if let Ok(c) = read_cert_pem(&held.dir.join("chain.pem")) {
                chain.extend(c.into_iter().take(1));
            }
            return Ok(Some(ClientIdentity { chain, key_pkcs8: key.to_pkcs8_der()? }));
        }
        Ok(None)
    }

    /// Exclusive use of the state directory for one cycle (a daemon and `renew --now` must not
    /// interleave). Blocks until the other holder is done; released on drop.
    pub fn lock(&self) -> Result<std::fs::File, AgentError> {
        let p = self.root.join("agent.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| store_err(&p, e))?;
        f.lock().map_err(|e| store_err(&p, e))?;
        Ok(f)
    }

    fn pending_dir(&self, template: &str) -> Result<PathBuf, AgentError> {
        Ok(self.root.join("pending").join(safe_component(template)?))
    }

    /// Starts an attempt: the key is on disk (0600) before anything is sent.
    pub fn begin_attempt(&self, template: &str, key: &KeyPair, meta: &PendingMeta) -> Result<(), AgentError> {
        let dir = self.pending_dir(template)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| store_err(&dir, e))?;
        // The request description first, the key last and whole: a pending directory without
        // key.pem is no attempt at all.
        self.save_pending_meta(template, meta)?;
        write_atomic(&dir.join("key.pem"), key.to_pem()?.as_bytes(), 0o600)?;
        sync_dir(&dir)
    }

    pub fn save_pending_meta(&self, template: &str, meta: &PendingMeta) -> Result<(), AgentError> {
        let dir = self.pending_dir(template)?;
        let data = serde_json::to_vec_pretty(meta).map_err(|e| store_err(&dir, e))?;
        write_atomic(&dir.join("request.json"), &data, 0o600)
    }

    /// Keeps the answer before installing it.
    pub fn save_received(&self, template: &str, cert_der: &[u8], chain: &[Vec<u8>]) -> Result<(), AgentError> {
        let dir = self.pending_dir(template)?;
        let chain_pem = chain.iter().map(|c| pem("CERTIFICATE", c)).collect::<Result<String, _>>()?;
        write_synced(&dir.join("chain.pem"), chain_pem.as_bytes(), 0o644)?;
        write_synced(&dir.join(".cert.pem.tmp"), pem("CERTIFICATE", cert_der)?.as_bytes(), 0o644)?;
        // cert.pem appears last and whole: its presence means "received".
        std::fs::rename(dir.join(".cert.pem.tmp"), dir.join("cert.pem")).map_err(|e| store_err(&dir, e))?;
        sync_dir(&dir)
    }

    /// The unfinished attempt for `template`, if any. Reading never changes anything (`agent
    /// status` calls it too): a key that does not parse is `AgentError::Key` (the cycle sets
    /// the attempt aside), any other read failure a store error.
    pub fn pending(&self, template: &str) -> Result<Option<PendingAttempt>, AgentError> {
        let dir = self.pending_dir(template)?;
        let key_pem = match std::fs::read_to_string(dir.join("key.pem")) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err(&dir, e)),
        };
        let key = KeyPair::from_pem(&key_pem)?;
        let meta = match std::fs::read(dir.join("request.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(template, %e, "pending request description unreadable; treating it as a new attempt");
                PendingMeta::default()
            }),
            Err(_) => PendingMeta::default(),
        };
        let received = if dir.join("cert.pem").exists() {
            match read_cert_pem(&dir.join("cert.pem")) {
                Ok(certs) => {
                    let chain = read_cert_pem(&dir.join("chain.pem")).unwrap_or_default();
                    certs.into_iter().next().map(|c| (c, chain))
                }
                Err(e) => {
                    tracing::warn!(template, %e, "received certificate unreadable; asking again");
                    None
                }
            }
        } else {
            None
        };
        Ok(Some(PendingAttempt { key, meta, received }))
    }

    /// Moves an attempt that can never finish out of the way (`pending/.set-aside-<T>-<time>`),
    /// keeping it for inspection.
    pub fn set_aside_pending(&self, template: &str) -> Result<(), AgentError> {
        let dir = self.pending_dir(template)?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = self.root.join("pending").join(format!(".set-aside-{}-{stamp}", safe_component(template)?));
        std::fs::rename(&dir, &aside).map_err(|e| store_err(&dir, e))
    }

    pub fn clear_pending(&self, template: &str) -> Result<(), AgentError> {
        let dir = self.pending_dir(template)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_err(&dir, e)),
        }
    }

    /// Takes a template's certificate out of service (it stays in the archive).
    pub fn retire(&self, template: &str) -> Result<(), AgentError> {
        let live = self.live_dir(template)?;
        match std::fs::remove_file(&live) {
            Ok(()) => sync_dir(&self.root.join("live")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_err(&live, e)),
        }
    }

    /// The state file. A torn or corrupt one is moved aside (`state.json.corrupt-<time>`) and
    /// the agent starts from an empty state: the certificates and keys on disk are the truth,
    /// the state file only remembers schedules and errors.
    pub fn load_state(&self) -> Result<State, AgentError> {
        let p = self.root.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => Ok(s),
                Err(e) => {
                    let stamp =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    let aside = self.root.join(format!("state.json.corrupt-{stamp}"));
                    tracing::warn!(%e, aside = %aside.display(), "state file unreadable; moved aside, starting afresh");
                    std::fs::rename(&p, &aside).map_err(|e| store_err(&p, e))?;
                    Ok(State::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(store_err(&p, e)),
        }
    }

    pub fn save_state(&self, s: &State) -> Result<(), AgentError> {
        let p = self.root.join("state.json");
        let data = serde_json::to_vec_pretty(s).map_err(|e| store_err(&p, e))?;
        write_atomic(&p, &data, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_path_tricks() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert!(safe_component(bad).is_err(), "{bad:?}");
        }
        assert!(safe_component("Web-Server_2.0").is_ok());
    }
}
