//! ACME (RFC 8555) decisions: nonces, accounts bound to autoenroll accounts by external account
//! binding, orders whose names the account's grants, device patterns and the template's name
//! policy allow, HTTP-01 validation, finalization through the same enrollment and renewal as
//! every other protocol, revocation, and renewal information (RFC 9773) from the server's own
//! renewal decision (`core::renewal::decide` on the server's facts: its load-spread time,
//! "renew now" for a cohort, revocation, a template's major version).
use super::auth::Principal;
use super::enroll::{EnrollInput, Issued, Outcome};
use super::renew::{Proof, Window};
use super::{secrets, Ra, RaError};
use crate::probe::{Dns01Probe, Http01Probe};
use autoenroll_core::model::{valid_name, AuditOutcome, CertState, RevocationReason};
use autoenroll_core::pki::{CertFacts, CsrFacts};
use autoenroll_core::renewal::{self, Decision, Held, Input, TemplatePolicy};
use autoenroll_core::{Refusal, Serial, UnixTime};
use autoenroll_proto::acme::{self as wire, ExternalAccountBinding, Jwk};
use aws_lc_rs::hmac;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A nonce is good for an hour after it was handed out, once.
const NONCE_SECS: i64 = 3600;
/// Orders and their authorizations live a week.
const ORDER_SECS: i64 = 7 * 86_400;
/// A finalize claim older than this with nothing to show was abandoned (its process died):
/// the order reads as invalid.
const FINALIZE_CLAIM_SECS: i64 = 300;
/// At most this many names in one order.
const MAX_IDENTIFIERS: usize = 100;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What ACME needs from the configuration.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The template `/acme/directory` issues from (`/acme/<template>/directory` names another).
    pub template: String,
    /// Where HTTP-01 validation connects.
    pub http01_port: u16,
    /// Names HTTP-01 validation resolves here instead of in DNS (tests, split-horizon names).
    pub resolve: Vec<(String, std::net::IpAddr)>,
    /// How long clients wait before asking for renewal information again (Retry-After):
    /// the longest a "renew now" or a revocation takes to reach them.
    pub ari_retry_after_secs: i64,
    /// The recursive resolver DNS-01 validation asks.
    pub dns01_resolver: std::net::SocketAddr,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            template: "WebServer".into(),
            http01_port: 80,
            resolve: vec![],
            ari_retry_after_secs: 6 * 3600,
            dns01_resolver: std::net::SocketAddr::from(([127, 0, 0, 1], 53)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

/// How a client proves control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
}

impl ChallengeKind {
    pub const ALL: [ChallengeKind; 2] = [ChallengeKind::Http01, ChallengeKind::Dns01];

    /// The challenge type's name on the wire (section 8.3, 8.4).
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzStatus {
    Pending,
    Valid,
    Invalid,
}

/// A problem an order or authorization carries (RFC 8555 section 6.7): its type's last part
/// and the detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProblem {
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// A DNS name, lower case.
    pub identifier: String,
    pub status: AuthzStatus,
    /// One token for every challenge of the authorization (as Let's Encrypt does).
    pub token: String,
    pub validated_at: Option<i64>,
    pub error: Option<StoredProblem>,
    /// The challenge the client answered (None while it has answered none).
    #[serde(default)]
    pub answered: Option<ChallengeKind>,
}

/// An order as the store keeps it (JSON in `acme_orders.body`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderBody {
    pub status: OrderStatus,
    pub template: String,
    pub identifiers: Vec<String>,
    pub authorizations: Vec<Authorization>,
    /// The serial of the certificate this order replaces (RFC 9773 section 5).
    pub replaces: Option<String>,
    /// A request held for an administrator's approval.
    pub request_id: Option<i64>,
    pub error: Option<StoredProblem>,
}

/// An order as a client sees it.
#[derive(Debug, Clone)]
pub struct AcmeOrder {
    pub id: i64,
    pub body: OrderBody,
    pub expires: UnixTime,
    pub certificate_serial: Option<String>,
}

/// An ACME account: its key and the autoenroll account it acts as.
#[derive(Debug, Clone)]
pub struct AcmeAccount {
    pub id: i64,
    pub key: Jwk,
    pub account: String,
    pub contact: Vec<String>,
}

/// Who asks to revoke: an account, or whoever holds the certificate's key.
pub enum Revoker<'a> {
    Account(&'a AcmeAccount),
    CertificateKey(&'a Jwk),
}

/// RFC 9773 section 4.2: when to renew, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalInfo {
    pub start: UnixTime,
    pub end: UnixTime,
    pub retry_after_secs: i64,
}

fn not_found(what: impl Into<String>) -> RaError {
    Refusal::UnknownAcmeResource { what: what.into() }.into()
}

impl Ra {
    /// The template `/acme/directory` issues from.
    pub fn acme_template(&self) -> &str {
        &self.settings.acme.template
    }

    fn nonce_key(&self) -> Result<&hmac::Key, RaError> {
        if let Some(key) = self.acme_nonce_key.get() {
            return Ok(key);
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.ca.derive_secret("acme nonce")?);
        Ok(self.acme_nonce_key.get_or_init(|| key))
    }

    /// A fresh nonce: when it was made and 12 random bytes, with a MAC by a key the CA layer
    /// derives (every replica holding the CA knows it, a database copy forges nothing).
    pub fn acme_nonce(&self) -> Result<String, RaError> {
        let mut payload = self.now().0.to_be_bytes().to_vec();
        payload.extend_from_slice(&secrets::random_bytes::<12>());
        let tag = hmac::sign(self.nonce_key()?, &payload);
        payload.extend_from_slice(&tag.as_ref()[..16]);
        Ok(B64URL.encode(payload))
    }

    /// Spends a nonce: ours (MAC), under an hour old, never used before (across replicas).
    pub async fn acme_use_nonce(&self, nonce: &str) -> Result<(), RaError> {
        let raw = B64URL.decode(nonce.as_bytes()).map_err(|_| Refusal::BadNonce)?;
        if raw.len() != 36 {
            return Err(Refusal::BadNonce.into());
        }
        let (payload, mac) = raw.split_at(20);
        let tag = hmac::sign(self.nonce_key()?, payload);
        if !bool::from(tag.as_ref()[..16].ct_eq(mac)) {
            return Err(Refusal::BadNonce.into());
        }
        let issued = UnixTime(i64::from_be_bytes(payload[..8].try_into().map_err(RaError::internal)?));
        let now = self.now();
        if now.0 - issued.0 > NONCE_SECS || issued.0 > now.0 + 60 {
            return Err(Refusal::BadNonce.into());
        }
        // Kept a little past its expiry: replicas' clocks differ by a few seconds.
        if !self.store.use_acme_nonce(nonce, issued.plus_secs(NONCE_SECS + 300), now).await? {
            return Err(Refusal::BadNonce.into());
        }
        Ok(())
    }

    /// An external account binding key for the autoenroll account `account` (an
    /// administrator's act): its id and the base64url MAC key to give the ACME client once.
    pub async fn acme_binding_key(
        &self,
        actor: &str,
        account: &str,
        ttl_secs: i64,
    ) -> Result<(String, String), RaError> {
        if ttl_secs <= 0 {
            return Err(Refusal::InvalidToken { detail: "the key needs a positive lifetime".into() }.into());
        }
        match self.store.account(account).await? {
            Some(a) if !a.disabled => {}
            _ => return Err(Refusal::InvalidAccount { detail: format!("no enabled account {account}") }.into()),
        }
        // A key whose text starts with '-' reads as an option on command lines (`certbot
        // --eab-hmac-key -Vf…` fails), so ids are drawn until their key's text does not (63 in
        // 64 do at once), which costs the key 0.02 of its 256 bits.
        let mut drawn = None;
        for _ in 0..32 {
            let kid = format!("eab_{}", secrets::random_token_part(12));
            let key = B64URL.encode(self.binding_mac_key(&kid)?);
            if !key.starts_with('-') {
                drawn = Some((kid, key));
                break;
            }
        }
        let (kid, key) = drawn.ok_or_else(|| RaError::internal("no binding key without a leading '-' in 32 draws"))?;
        let now = self.now();
        self.store.insert_acme_eab_key(&kid, account, now.plus_secs(ttl_secs), now).await?;
        self.audit(actor, "acme.eab", account, AuditOutcome::Ok, &format!("key {kid}")).await;
        Ok((kid, key))
    }

    /// The MAC key of a binding key id, derived in the CA layer: the database holds only ids.
    fn binding_mac_key(&self, kid: &str) -> Result<[u8; 32], RaError> {
        Ok(self.ca.derive_secret(&format!("acme eab key {kid}"))?)
    }

    fn account_view(&self, a: autoenroll_store::AcmeAccount) -> Result<AcmeAccount, RaError> {
        let json: serde_json::Value = serde_json::from_str(&a.jwk).map_err(RaError::internal)?;
        Ok(AcmeAccount {
            id: a.id,
            key: Jwk::from_json(&json).map_err(RaError::internal)?,
            account: a.account,
            contact: a.contact.split(' ').filter(|c| !c.is_empty()).map(str::to_string).collect(),
        })
    }

    /// An ACME account, while the enrollment account it acts as is enabled.
    pub async fn acme_account(&self, id: i64) -> Result<AcmeAccount, RaError> {
        let a = self.store.acme_account(id).await?.ok_or(Refusal::AcmeAccountUnknown)?;
        self.enabled_account_view(a).await
    }

    pub async fn acme_account_by_key(&self, key: &Jwk) -> Result<Option<AcmeAccount>, RaError> {
        match self.store.acme_account_by_thumbprint(&key.thumbprint()).await? {
            Some(a) => Ok(Some(self.enabled_account_view(a).await?)),
            None => Ok(None),
        }
    }

    async fn enabled_account_view(&self, a: autoenroll_store::AcmeAccount) -> Result<AcmeAccount, RaError> {
        if a.deactivated_at.is_some() {
            return Err(Refusal::WrongCredentials { what: "this ACME account was deactivated" }.into());
        }
        match self.store.account(&a.account).await? {
            Some(account) if !account.disabled => self.account_view(a),
            _ => {
                Err(Refusal::WrongCredentials { what: "the enrollment account of this ACME account is disabled" }
                    .into())
            }
        }
    }

    /// newAccount: the account of this key if there is one (`false`: not created now), else a
    /// new one bound by `binding` to the autoenroll account its key was made for.
    pub async fn acme_register(
        &self,
        key: &Jwk,
        contact: &[String],
        binding: Option<&ExternalAccountBinding>,
    ) -> Result<(AcmeAccount, bool), RaError> {
        if let Some(existing) = self.acme_account_by_key(key).await? {
            return Ok((existing, false));
        }
        let binding = binding.ok_or_else(|| Refusal::ExternalAccountRequired { detail: "none sent".into() })?;
        let refused = |detail: &str| -> RaError { Refusal::ExternalAccountRequired { detail: detail.into() }.into() };
        let now = self.now();
        let stored = self.store.acme_eab_key(&binding.kid).await?.ok_or_else(|| refused("unknown key id"))?;
        if stored.used_at.is_some() || stored.expires_at <= now {
            return Err(refused("the key was used or has expired"));
        }
        binding.verify(&self.binding_mac_key(&binding.kid)?).map_err(|_| refused("the binding's MAC is wrong"))?;
        match self.store.account(&stored.account).await? {
            Some(account) if !account.disabled => {}
            _ => return Err(refused("the enrollment account of this key is disabled")),
        }
        if contact.len() > 10 || contact.iter().any(|c| c.len() > 256 || !c.starts_with("mailto:") || c.contains(' ')) {
            return Err(Refusal::BadParameter { detail: "contact: up to 10 mailto: URLs".into() }.into());
        }
        let id = self
            .store
            .insert_acme_account(
                &key.thumbprint(),
                &key.canonical_json(),
                &stored.account,
                &contact.join(" "),
                &stored.kid,
                now,
            )
            .await
            .map_err(|e| match e {
                autoenroll_store::StoreError::Duplicate(_) => {
                    RaError::from(Refusal::Duplicate { what: "ACME account".into() })
                }
                e => e.into(),
            })?
            .ok_or_else(|| refused("the key was used or has expired"))?;
        self.audit(
            &format!("account:{}", stored.account),
            "acme.account",
            &id.to_string(),
            AuditOutcome::Ok,
            &format!("bound by {}", stored.kid),
        )
        .await;
        Ok((self.acme_account(id).await?, true))
    }

    /// Deactivates an account at its client's request (RFC 8555 section 7.3.6): from now on
    /// its key authenticates nothing; its certificates stay as they are.
    pub async fn acme_deactivate(&self, a: &AcmeAccount) -> Result<(), RaError> {
        self.deactivate_acme_account(&format!("account:{}", a.account), a.id).await
    }

    /// An administrator's deactivation (a leaked account key), or the client's own.
    pub async fn deactivate_acme_account(&self, actor: &str, id: i64) -> Result<(), RaError> {
        if self.store.acme_account(id).await?.is_none() {
            return Err(Refusal::AcmeAccountUnknown.into());
        }
        self.store.deactivate_acme_account(id, self.now()).await?;
        self.audit(actor, "acme.deactivate", &id.to_string(), AuditOutcome::Ok, "").await;
        Ok(())
    }

    /// ACME accounts, newest first: id, enrollment account, key thumbprint, binding key id,
    /// created, deactivated.
    pub async fn acme_accounts(&self, limit: i64) -> Result<Vec<autoenroll_store::AcmeAccount>, RaError> {
        Ok(self.store.acme_accounts(limit).await?)
    }

    /// The autoenroll account an ACME account acts as, for the device `device`.
    async fn acme_principal(&self, a: &AcmeAccount, device: &str) -> Result<Principal, RaError> {
        match self.store.account(&a.account).await? {
            Some(account) if !account.disabled => super::auth::account_principal(account, Some(device), None),
            _ => Err(Refusal::WrongCredentials { what: "the account this ACME account acts as is disabled" }.into()),
        }
    }

    /// newOrder: DNS names only, each one the account may have under the template (grants,
    /// device patterns, the template's name policy, the server's own names), checked now so that
    /// no name is validated for nothing.
    pub async fn acme_new_order(
        &self,
        a: &AcmeAccount,
        template: &str,
        identifiers: &[(String, String)],
        replaces: Option<&str>,
    ) -> Result<AcmeOrder, RaError> {
        if identifiers.is_empty() || identifiers.len() > MAX_IDENTIFIERS {
            return Err(
                Refusal::BadParameter { detail: format!("an order names 1 to {MAX_IDENTIFIERS} identifiers") }.into()
            );
        }
        let mut names: Vec<String> = Vec::new();
        for (kind, value) in identifiers {
            let name = dns_name(value);
            if kind != "dns"
                || name.starts_with("*.")
                || name.parse::<std::net::IpAddr>().is_ok()
                || valid_name(&name).is_err()
            {
                return Err(Refusal::UnsupportedIdentifier { identifier: format!("{kind}:{value}") }.into());
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let t = self.template(template).await?;
        let principal = self.acme_principal(a, &names[0]).await?;
        let (known, groups) = match self.store.device_with_groups(&principal.device).await? {
            Some((device, groups)) => (Some(device), groups),
            None => (None, vec![]),
        };
        if !principal.may_enroll(&t, &groups) {
            return Err(Refusal::NotPermitted { actor: principal.actor(), template: t.name }.into());
        }
        let vouched = self.check_device(&principal, known.as_ref()).await?;
        self.check_other_names(a, &principal, &names).await?;
        t.names.check(
            &t.name,
            vouched.then_some(principal.device.as_str()),
            None,
            &names,
            &[],
            &self.settings.server_names,
        )?;
        let replaces = match replaces {
            Some(id) => Some(self.replaceable(a, id, &names).await?),
            None => None,
        };
        let now = self.now();
        let body = OrderBody {
            status: OrderStatus::Pending,
            template: t.name,
            authorizations: names
                .iter()
                .map(|n| Authorization {
                    identifier: n.clone(),
                    status: AuthzStatus::Pending,
                    token: secrets::random_token_part(24),
                    validated_at: None,
                    error: None,
                    answered: None,
                })
                .collect(),
            identifiers: names,
            replaces,
            request_id: None,
            error: None,
        };
        let text = serde_json::to_string(&body).map_err(RaError::internal)?;
        let id = self.store.insert_acme_order(a.id, &text, now.plus_secs(ORDER_SECS), now).await?;
        Ok(AcmeOrder { id, body, expires: now.plus_secs(ORDER_SECS), certificate_serial: None })
    }

    /// The names after the first (the device's, which `check_device` checks): each within the
    /// account's device patterns, and none a device (in any spelling) that is blocked or bound
    /// to another owner. At newOrder and again at finalize (a week may pass in between).
    async fn check_other_names(&self, a: &AcmeAccount, principal: &Principal, names: &[String]) -> Result<(), RaError> {
        let owner = format!("account:{}", a.account);
        let super::auth::PrincipalKind::Account { devices, .. } = &principal.kind else { return Ok(()) };
        for name in names.iter().skip(1) {
            if !devices.iter().any(|p| autoenroll_core::model::glob_match(p, name)) {
                return Err(Refusal::DeviceNotAllowed { actor: principal.actor(), device: name.clone() }.into());
            }
            let known = match self.store.device(name).await? {
                Some(d) => Some(d),
                None => self.store.device_spelled_otherwise(name).await?,
            };
            if let Some(d) = known {
                if d.is_blocked() {
                    return Err(Refusal::DeviceBlocked { device: d.name }.into());
                }
                if d.owner.as_ref().is_some_and(|o| *o != owner) {
                    return Err(Refusal::DeviceBound { actor: principal.actor(), device: d.name }.into());
                }
            }
        }
        Ok(())
    }

    /// `replaces` (RFC 9773 section 5): a certificate this account's orders got, for the same
    /// names, still current and not renewed yet. Its serial.
    async fn replaceable(&self, a: &AcmeAccount, cert_id: &str, names: &[String]) -> Result<String, RaError> {
        let refused = |detail: &str| -> RaError { Refusal::ReplacesRefused { detail: detail.into() }.into() };
        let c = self.certificate_by_cert_id(cert_id).await?.ok_or_else(|| refused("no such certificate"))?;
        let order = self.store.acme_order_by_serial(&c.serial).await?;
        if order.as_ref().map(|o| o.acme_account_id) != Some(a.id) {
            return Err(refused("the certificate is not this account's"));
        }
        let facts = c.der.as_deref().map(CertFacts::parse).transpose().map_err(RaError::internal)?;
        let same_names = facts.is_some_and(|f| name_set(&f.dns_names) == name_set(names));
        if !same_names {
            return Err(refused("the order names other identifiers than the certificate"));
        }
        // A revoked or expired certificate may be replaced (by a new enrollment); one already
        // renewed has its successor (RFC 9773's alreadyReplaced).
        if c.state == CertState::Renewed {
            let successor = self.store.successor(&c.serial).await?.map(|s| s.serial).unwrap_or_default();
            return Err(Refusal::AlreadyRenewed { serial: c.serial, successor }.into());
        }
        Ok(c.serial)
    }

    /// The certificate a CertID names: its serial, with the AKI of our issuing CA.
    async fn certificate_by_cert_id(&self, cert_id: &str) -> Result<Option<autoenroll_store::Certificate>, RaError> {
        let (_, serial) = wire::parse_cert_id(cert_id).map_err(|e| Refusal::BadParameter { detail: e.to_string() })?;
        let Some(c) = self.store.certificate(Serial::from_bytes(&serial).as_str()).await? else { return Ok(None) };
        let ours = c.der.as_deref().and_then(|d| wire::cert_id_of(d).ok().flatten()).is_some_and(|id| id == cert_id);
        Ok(ours.then_some(c))
    }

    /// An order of this account (another account's orders do not exist for it).
    pub async fn acme_order(&self, a: &AcmeAccount, id: i64) -> Result<AcmeOrder, RaError> {
        let (order, revision) = self.load_order(a, id).await?;
        // A held request: look whether an administrator decided.
        if let (OrderStatus::Processing, Some(request_id)) = (order.body.status, order.body.request_id) {
            let principal = self.acme_principal(a, &order.body.identifiers[0]).await?;
            let mut body = order.body.clone();
            let serial = match self.retrieve_for(&principal, request_id).await {
                Ok(Outcome::Pending { .. }) => return Ok(order),
                Ok(Outcome::Issued(issued)) => {
                    body.status = OrderStatus::Valid;
                    Some(issued.serial)
                }
                // Busy or rate limited: ask again later.
                Err(e)
                    if matches!(e.kind(), autoenroll_core::Kind::Unavailable | autoenroll_core::Kind::RateLimited) =>
                {
                    return Ok(order)
                }
                Err(e) if e.refusal().is_some() => {
                    body.status = OrderStatus::Invalid;
                    body.error = Some(StoredProblem { kind: e.code().to_string(), detail: e.detail() });
                    None
                }
                Err(e) => return Err(e),
            };
            self.save_order(id, revision, &body, serial.as_deref()).await?;
            return self.load_order(a, id).await.map(|(o, _)| o);
        }
        Ok(order)
    }

    /// The account's orders a client may still act on (RFC 8555 section 7.1.2.1: pending ones
    /// included, invalid ones left out), newest first, at most 1,000.
    pub async fn acme_orders_of(&self, a: &AcmeAccount) -> Result<Vec<i64>, RaError> {
        let mut ids = Vec::new();
        let now = self.now();
        for row in self.store.acme_orders_of(a.id, now, 1000).await? {
            let (order, _) = order_from_row(row, now)?;
            if order.body.status != OrderStatus::Invalid {
                ids.push(order.id);
            }
        }
        Ok(ids)
    }

    async fn load_order(&self, a: &AcmeAccount, id: i64) -> Result<(AcmeOrder, i64), RaError> {
        let row = self
            .store
            .acme_order(id)
            .await?
            .filter(|o| o.acme_account_id == a.id)
            .ok_or_else(|| not_found("such order"))?;
        order_from_row(row, self.now())
    }

    async fn save_order(
        &self,
        id: i64,
        revision: i64,
        body: &OrderBody,
        serial: Option<&str>,
    ) -> Result<bool, RaError> {
        let text = serde_json::to_string(body).map_err(RaError::internal)?;
        Ok(self.store.update_acme_order(id, revision, &text, serial, self.now()).await?)
    }

    /// A challenge answered: validated now (the client says it is ready): HTTP-01 fetches the
    /// key authorization, DNS-01 looks for its digest in TXT. The authorization becomes valid,
    /// or invalid with the reason, and so does the order.
    pub async fn acme_validate(
        &self,
        a: &AcmeAccount,
        order_id: i64,
        index: usize,
        kind: ChallengeKind,
    ) -> Result<AcmeOrder, RaError> {
        let (order, _) = self.load_order(a, order_id).await?;
        let authz = order.body.authorizations.get(index).ok_or_else(|| not_found("such authorization"))?;
        if authz.status != AuthzStatus::Pending || order.body.status != OrderStatus::Pending {
            // Answered already (or the order is over): the client sees the state as it is.
            return Ok(order);
        }
        let key_authorization = wire::key_authorization(&authz.token, &a.key);
        let s = &self.settings.acme;
        let outcome = match kind {
            ChallengeKind::Http01 => Http01Probe { port: s.http01_port, resolve: &s.resolve }
                .fetch(&authz.identifier, &authz.token)
                .await
                .map(|text| (text.trim_end() == key_authorization, format!("{} bytes of something else", text.len()))),
            ChallengeKind::Dns01 => {
                let digest = wire::dns01_txt(&key_authorization);
                Dns01Probe { resolver: s.dns01_resolver }
                    .txt(&authz.identifier)
                    .await
                    .map(|found| (found.contains(&digest), format!("TXT {found:?}")))
            }
        };
        let (status, error) = match outcome {
            Ok((true, _)) => (AuthzStatus::Valid, None),
            Ok((false, shown)) => (
                AuthzStatus::Invalid,
                Some(StoredProblem {
                    kind: "incorrectResponse".into(),
                    detail: format!("{}: expected the key authorization, got {shown}", kind.as_str()),
                }),
            ),
            Err(e) => (
                AuthzStatus::Invalid,
                Some(StoredProblem { kind: e.problem_type().into(), detail: format!("{}: {e}", kind.as_str()) }),
            ),
        };
        let detail = format!("order {order_id}: {}", authz.identifier);
        let audited = if status == AuthzStatus::Valid { AuditOutcome::Ok } else { AuditOutcome::Refused };
        self.audit(&format!("account:{}", a.account), "acme.validate", &detail, audited, kind.as_str()).await;
        // Other authorizations of the order may be validated at the same time (by another
        // request or replica): this one's outcome is applied to the order as it is now.
        for _ in 0..20 {
            let (order, revision) = self.load_order(a, order_id).await?;
            let mut body = order.body.clone();
            let Some(target) = body.authorizations.get_mut(index) else { return Err(not_found("such authorization")) };
            if target.status != AuthzStatus::Pending || body.status != OrderStatus::Pending {
                return Ok(order);
            }
            target.status = status;
            target.answered = Some(kind);
            target.error = error.clone();
            target.validated_at = (status == AuthzStatus::Valid).then_some(self.now().0);
            if let Some(e) = &error {
                body.status = OrderStatus::Invalid;
                body.error = Some(e.clone());
            } else if body.authorizations.iter().all(|z| z.status == AuthzStatus::Valid) {
                body.status = OrderStatus::Ready;
            }
            if self.save_order(order_id, revision, &body, None).await? {
                return Ok(self.load_order(a, order_id).await?.0);
            }
        }
        Err(RaError::internal(format!("ACME order {order_id} kept changing")))
    }

    /// finalize: the CSR must name exactly the order's names, and nothing else in its subject
    /// than one of them as common name. The certificate comes from the same enrollment as every
    /// protocol; it is a renewal when the order replaces a certificate (explicitly, or because
    /// this account holds a current one for the same names and template) that may renew now.
    pub async fn acme_finalize(&self, a: &AcmeAccount, order_id: i64, csr_der: &[u8]) -> Result<AcmeOrder, RaError> {
        let (order, revision) = self.load_order(a, order_id).await?;
        if order.body.status != OrderStatus::Ready {
            return Err(Refusal::OrderNotReady { status: format!("{:?}", order.body.status).to_lowercase() }.into());
        }
        let csr = CsrFacts::parse(csr_der).map_err(super::enroll::csr_error)?;
        csr_names_match(&csr, &order.body.identifiers)?;
        // Everything that can fail is read before the claim.
        let principal = self.acme_principal(a, &order.body.identifiers[0]).await?;
        self.check_other_names(a, &principal, &order.body.identifiers).await?;
        let predecessor = self.renewable_predecessor(a, &principal, &order.body).await?;
        // Claim the order (processing) so that two finalize calls do not both issue.
        let mut body = order.body.clone();
        body.status = OrderStatus::Processing;
        if !self.save_order(order_id, revision, &body, None).await? {
            return Err(Refusal::OrderNotReady { status: "being finalized".into() }.into());
        }
        let result = match predecessor {
            Some(old) => {
                self.renew(csr, &old, Proof::Acme, Some(&principal), Window::Autoenrollment).await.map(Outcome::Issued)
            }
            None => {
                let input = EnrollInput { principal: &principal, csr_der, template_name: Some(&body.template) };
                self.enroll_labelled(input).await
            }
        };
        let (serial, refused) = match result {
            Ok(Outcome::Issued(issued)) => {
                body.status = OrderStatus::Valid;
                (Some(issued.serial), None)
            }
            Ok(Outcome::Pending { request_id }) => {
                body.request_id = Some(request_id);
                (None, None)
            }
            // A refusal ends the order; an internal failure or a passing one (busy, rate
            // limited, a renewal being signed) lets the client finalize again.
            Err(e) => {
                let passing =
                    matches!(e.kind(), autoenroll_core::Kind::Unavailable | autoenroll_core::Kind::RateLimited);
                if e.refusal().is_some() && !passing {
                    body.status = OrderStatus::Invalid;
                    body.error = Some(StoredProblem { kind: e.code().to_string(), detail: e.detail() });
                } else {
                    body.status = OrderStatus::Ready;
                }
                (None, Some(e))
            }
        };
        // Only this call moves a claimed order on (nothing else writes an order while it is
        // processing; a crash before this line leaves it to `load_order`).
        if !self.save_order(order_id, revision + 1, &body, serial.as_deref()).await? {
            return Err(RaError::internal(format!("ACME order {order_id} changed while it was being finalized")));
        }
        if let Some(e) = refused {
            return Err(e);
        }
        Ok(self.load_order(a, order_id).await?.0)
    }

    /// The certificate an order renews: the one it replaces, or this account's current one for
    /// the same names and template; only when that one may renew now (issued, unexpired, its
    /// window open or the server asking). Otherwise the order is a new enrollment.
    async fn renewable_predecessor(
        &self,
        a: &AcmeAccount,
        principal: &Principal,
        body: &OrderBody,
    ) -> Result<Option<Vec<u8>>, RaError> {
        let serial = match &body.replaces {
            Some(serial) => Some(serial.clone()),
            None => self.implicit_predecessor(a, principal, body).await?,
        };
        let Some(serial) = serial else { return Ok(None) };
        let Some(c) = self.store.certificate(&serial).await? else { return Ok(None) };
        let now = self.now();
        let (Some(der), CertState::Issued, true) = (c.der.clone(), c.state, c.not_after > now) else { return Ok(None) };
        let (Ok(facts), Some(t)) = (CertFacts::parse(&der), self.find_template(&c.template).await?) else {
            return Ok(None);
        };
        Ok(super::renew::renewal_open(&c, &facts, &t, Window::Autoenrollment, now).is_ok().then_some(der))
    }

    /// certbot and most clients send no `replaces`: a new order by the same account for the
    /// same names and template renews the certificate it holds, so that the inventory shows
    /// one line of renewals (and the old one is superseded), not two live certificates.
    async fn implicit_predecessor(
        &self,
        a: &AcmeAccount,
        principal: &Principal,
        body: &OrderBody,
    ) -> Result<Option<String>, RaError> {
        let Some(device) = self.store.device(&principal.device).await? else { return Ok(None) };
        let now = self.now();
        let mut held = self.store.device_certificates(device.id).await?;
        held.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        for c in
            held.iter().filter(|c| c.state == CertState::Issued && c.template == body.template && c.not_after > now)
        {
            let Some(order) = self.store.acme_order_by_serial(&c.serial).await? else { continue };
            let Ok(previous) = serde_json::from_str::<OrderBody>(&order.body) else { continue };
            if order.acme_account_id == a.id && name_set(&previous.identifiers) == name_set(&body.identifiers) {
                return Ok(Some(c.serial.clone()));
            }
        }
        Ok(None)
    }

    /// The certificate of a valid order, with its chain (leaf, issuing CA).
    pub async fn acme_certificate(&self, a: &AcmeAccount, order_id: i64) -> Result<Issued, RaError> {
        let (order, _) = self.load_order(a, order_id).await?;
        let serial = order.certificate_serial.ok_or_else(|| not_found("certificate for this order yet"))?;
        let c = self.store.certificate(&serial).await?.ok_or_else(|| not_found("certificate"))?;
        let der = c.der.clone().ok_or_else(|| not_found("certificate"))?;
        Ok(self.issued_from(c, der))
    }

    /// revokeCert (section 7.6): by the account whose order got the certificate (or another
    /// ACME account of the same autoenroll account), or by whoever holds the certificate's key.
    pub async fn acme_revoke(&self, by: Revoker<'_>, cert_der: &[u8], reason: Option<i64>) -> Result<(), RaError> {
        let reason = match reason.unwrap_or(0) {
            0 => RevocationReason::Unspecified,
            1 => RevocationReason::KeyCompromise,
            3 => RevocationReason::AffiliationChanged,
            4 => RevocationReason::Superseded,
            5 => RevocationReason::CessationOfOperation,
            code => return Err(Refusal::BadRevocationReason { code }.into()),
        };
        let facts = CertFacts::parse(cert_der).map_err(|e| Refusal::BadCertificate { detail: e.to_string() })?;
        let c = self
            .store
            .certificate(facts.serial.as_str())
            .await?
            .filter(|c| c.der.as_deref() == Some(cert_der))
            .ok_or(Refusal::UnknownCertificate)?;
        let (actor, allowed) = match by {
            Revoker::Account(a) => {
                let owner = match self.store.acme_order_by_serial(&c.serial).await? {
                    Some(o) => self.store.acme_account(o.acme_account_id).await?.map(|x| x.account),
                    None => None,
                };
                (format!("account:{}", a.account), owner.as_deref() == Some(a.account.as_str()))
            }
            Revoker::CertificateKey(key) => {
                let spki = jwk_spki_matches(key, &facts.spki_der);
                ("certificate-key".to_string(), spki)
            }
        };
        if !allowed {
            return Err(Refusal::NotPermitted { actor, template: c.template }.into());
        }
        if c.state == CertState::Revoked {
            return Err(Refusal::CertificateRevoked { serial: c.serial }.into());
        }
        self.revoke(&actor, &c.serial, reason).await
    }

    /// renewalInfo (RFC 9773): the server's renewal decision for the certificate, as a window.
    /// Due now (its renewal time passed, "renew now", revoked, template bumped, expired): a
    /// window that has passed, so clients renew at once. Else the load-spread time the server
    /// gave the certificate, for an hour.
    pub async fn acme_renewal_info(&self, cert_id: &str) -> Result<RenewalInfo, RaError> {
        let c = self.certificate_by_cert_id(cert_id).await?.ok_or_else(|| not_found("certificate with this CertID"))?;
        let now = self.now();
        let retry_after_secs = self.settings.acme.ari_retry_after_secs;
        let template = self.find_template(&c.template).await?;
        let due_now = RenewalInfo { start: now.minus_secs(3600), end: now.minus_secs(60), retry_after_secs };
        let Some(t) = template else { return Ok(due_now) };
        let revoked = match c.state {
            CertState::Revoked => true,
            // Renewed: its successor's fate is what counts.
            CertState::Renewed => self.store.successor(&c.serial).await?.is_some_and(|s| {
                s.state == CertState::Revoked && s.revocation_reason != Some(RevocationReason::Superseded)
            }),
            CertState::Issued | CertState::Signing => false,
        };
        let held = Held {
            not_before: c.not_before,
            not_after: c.not_after,
            template: Some(autoenroll_core::TemplateRef {
                oid: t.oid.to_string(),
                major: c.template_major,
                minor: c.template_minor,
            }),
            revoked,
        };
        let input = Input {
            now,
            held: Some(held),
            policy: TemplatePolicy { template: t.template_ref(), rule: t.renewal_rule() },
            pending: None,
            failure: None,
            forced: false,
            supersedes_held: false,
            scheduled: c.renew_after,
            lost: false,
        };
        match renewal::decide(&input) {
            Decision::Keep { recheck_at } => {
                let end = recheck_at.plus_secs(3600).min(c.not_after.minus_secs(60)).max(recheck_at.plus_secs(1));
                let until = (recheck_at.0 - now.0).max(60);
                Ok(RenewalInfo { start: recheck_at, end, retry_after_secs: retry_after_secs.min(until) })
            }
            Decision::Enroll(_) | Decision::Renew(_) | Decision::Retrieve { .. } | Decision::Wait { .. } => Ok(due_now),
        }
    }
}

/// Whether an account key is the certificate's key (revocation signed with it).
fn jwk_spki_matches(key: &Jwk, spki_der: &[u8]) -> bool {
    use der::{Decode, Reader};
    let Ok(spki) = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki_der) else { return false };
    let Some(bits) = spki.subject_public_key.as_bytes() else { return false };
    match key {
        Jwk::Ec { x, y, .. } => bits == [&[4u8][..], x, y].concat().as_slice(),
        Jwk::Ed25519 { x } => bits == x.as_slice(),
        Jwk::Rsa { n, e } => {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let parsed = der::SliceReader::new(bits)
                .and_then(|mut r| r.sequence(|r| Ok((der::asn1::UintRef::decode(r)?, der::asn1::UintRef::decode(r)?))));
            parsed.is_ok_and(|(modulus, exponent)| {
                modulus.as_bytes() == n.as_slice() && exponent.as_bytes() == e.as_slice()
            })
        }
    }
}

/// An order as it reads now, and the revision it was read at: past its expiry an unfinished
/// order is invalid (RFC 8555 section 7.1.6), and so is one whose finalize died after its
/// claim (no certificate, no held request): never finalizable again, since a finalize that is
/// only slow may still issue, and two issuances for one order are worse than a new order.
fn order_from_row(row: autoenroll_store::AcmeOrder, now: UnixTime) -> Result<(AcmeOrder, i64), RaError> {
    let mut body: OrderBody = serde_json::from_str(&row.body).map_err(RaError::internal)?;
    if now >= row.expires_at && matches!(body.status, OrderStatus::Pending | OrderStatus::Ready) {
        body.status = OrderStatus::Invalid;
    }
    let abandoned = body.status == OrderStatus::Processing
        && body.request_id.is_none()
        && row.certificate_serial.is_none()
        && row.updated_at < now.minus_secs(FINALIZE_CLAIM_SECS);
    if abandoned {
        body.status = OrderStatus::Invalid;
        body.error = Some(StoredProblem {
            kind: "serverInternal".into(),
            detail: "the finalization was interrupted; place a new order".into(),
        });
    }
    let order = AcmeOrder { id: row.id, body, expires: row.expires_at, certificate_serial: row.certificate_serial };
    Ok((order, row.revision))
}

/// A DNS name as names compare: ASCII case and a trailing dot aside.
fn dns_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A list of DNS names as a set, to compare two lists.
fn name_set(names: &[String]) -> Vec<String> {
    let mut set: Vec<String> = names.iter().map(|n| dns_name(n)).collect();
    set.sort();
    set.dedup();
    set
}

/// The CSR of an order: exactly the order's DNS names (case and a trailing dot aside), no
/// addresses, and a subject of at most one common name that is one of them (ACME validated
/// names, nothing else a subject could carry).
fn csr_names_match(csr: &CsrFacts, identifiers: &[String]) -> Result<(), RaError> {
    let (asked, ordered) = (name_set(&csr.dns_names), name_set(identifiers));
    if asked != ordered || !csr.ip_addrs.is_empty() {
        return Err(Refusal::SubjectAltNameMismatch { expected: ordered.join(","), got: asked.join(",") }.into());
    }
    let cns = autoenroll_core::pki::csr::common_names(&csr.subject);
    let only_cn = csr.subject.iter().all(|atv| atv.oid == autoenroll_core::oids::AT_COMMON_NAME);
    if cns.len() > 1 || !only_cn || cns.iter().any(|c| !ordered.contains(&dns_name(c))) {
        return Err(Refusal::SubjectMismatch {
            expected: "no subject, or CN=<one of the order's names>".into(),
            got: csr.subject.to_string(),
        }
        .into());
    }
    Ok(())
}
