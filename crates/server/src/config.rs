//! Server configuration: an optional TOML file, then command-line overrides, then defaults.
//! Raw values are validated once into `ServerConfig`.
use crate::ra::RaSettings;
use autoenroll_core::model::ServerNames;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// CA keys, the SQLite database and the listener's TLS identity (made 0700). Default
    /// "autoenroll-data" in the working directory; the packages use /var/lib/autoenroll.
    pub data_dir: Option<PathBuf>,
    /// The HTTPS listener (MS-XCEP/MS-WSTEP, MDM, SCEP, check-in, admin API, console, /metrics),
    /// e.g. "0.0.0.0:8443". Default "127.0.0.1:8443"; port 0 picks a free port.
    pub listen: Option<String>,
    /// Database URL: sqlite://PATH (default: autoenroll.db in data_dir) or
    /// postgres://USER:PASSWORD@HOST:PORT/DB for several replicas.
    pub database: Option<String>,
    /// DNS names clients use to reach the server: they go into the listener certificate (new
    /// names re-issue it, also on SIGHUP). Default ["localhost"].
    pub hostnames: Option<Vec<String>>,
    /// The base URL clients are given (policy, enrollment, MDM), when the server sits behind
    /// another name or port, e.g. "https://ca.example.com". Must start with https://.
    pub public_url: Option<String>,
    /// Template used when a request names none. Default "Machine".
    pub default_template: Option<String>,
    /// Hours until clients should read policy again, and the CRL's validity. Default 8.
    pub next_update_hours: Option<u32>,
    /// Key algorithm of a new CA: p256 (default), p384, rsa2048, rsa3072, rsa4096.
    pub key_algorithm: Option<String>,
    /// Organization (O) in the CA certificates. Default "autoenroll".
    pub organization: Option<String>,
    /// Windows MDM enrollment (MS-MDE2).
    pub mdm: Option<RawMdm>,
    /// The SCEP server (RFC 8894) and the plain-HTTP listener.
    pub scep: Option<RawScep>,
    /// Revocation of renewed certificates.
    pub revocation: Option<RawRevocation>,
    /// Connection limits and timeouts against hostile traffic.
    pub limits: Option<RawLimits>,
    /// Prometheus metrics.
    pub metrics: Option<RawMetrics>,
    /// The HTTPS listener's certificate.
    pub tls: Option<RawTls>,
    /// ACME (RFC 8555) under /acme: template, HTTP-01 validation, renewal information.
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// Template `/acme/directory` issues from (`/acme/<template>/directory` names another).
    /// Default WebServer.
    pub template: Option<String>,
    /// The port HTTP-01 validation connects to (default 80).
    pub http01_port: Option<u16>,
    /// Names HTTP-01 validation connects to at a fixed address instead of the one DNS gives,
    /// e.g. { "www.example.test" = "127.0.0.1" } (split-horizon names, tests).
    pub resolve: Option<std::collections::BTreeMap<String, IpAddr>>,
    /// How long ACME clients wait before asking for renewal information again (Retry-After),
    /// so the longest a "renew now" or a revocation takes to reach them. Default "6h".
    pub ari_retry_after: Option<String>,
    /// The recursive resolver DNS-01 validation asks for `_acme-challenge` TXT records,
    /// e.g. "10.0.0.53:53". Default: the first nameserver of /etc/resolv.conf.
    pub dns01_resolver: Option<SocketAddr>,
}

/// The HTTPS listener's certificate. By default the server issues its own from its CA (and
/// re-issues it when the names change or a month before expiry). With `cert` and `key` it
/// serves the operator's files instead (e.g. from a public CA, which Windows MDM enrollment
/// needs), never writes them, and re-reads them on SIGHUP and every 12 hours.
#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM: the certificate, then its chain.
    pub cert: Option<PathBuf>,
    /// PEM: its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
}

/// Prometheus metrics. `/metrics` on the HTTPS listener always answers to an admin token
/// (`Authorization: Bearer aea_...`); this adds a plain-HTTP listener that serves `/metrics`
/// only, without a token, for a scraper on a trusted network (e.g. "127.0.0.1:9464").
#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of the token-free /metrics listener, e.g. "127.0.0.1:9464". Default: off.
    pub listen: Option<String>,
}

/// Connection limits; durations like "30s".
#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Open connections on the HTTPS listener. Default 4096.
    pub max_connections: Option<usize>,
    /// Open connections on the plain-HTTP listener (its own budget). Default 1024.
    pub max_http_connections: Option<usize>,
    /// Open connections from one client address (IPv6: one /64), on each listener. Default 256.
    pub per_ip_connections: Option<usize>,
    /// No byte read or written for this long closes a connection. Default "30s".
    pub idle_timeout: Option<String>,
    /// A request (headers, body, answer) must finish within this; also the longest a stop
    /// waits for requests in flight. Default "60s".
    pub request_timeout: Option<String>,
    /// The TLS handshake must finish within this. Default "10s".
    pub handshake_timeout: Option<String>,
    /// Request headers must arrive within this once they start. Default "10s".
    pub header_timeout: Option<String>,
    /// Count failed passwords and challenges per client address (default true; turn off
    /// behind a reverse proxy, where every client has the proxy's address).
    pub count_addresses: Option<bool>,
}

impl RawLimits {
    fn validate(self) -> Result<crate::conn::Limits, ConfigError> {
        let d = crate::conn::Limits::default();
        let duration = |name: &'static str, v: Option<String>, default: std::time::Duration| match v {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(&v) {
                Ok(t) if !t.is_zero() => Ok(t),
                Ok(_) => Err(ConfigError::Invalid(name, "must be more than zero".into())),
                Err(e) => Err(ConfigError::Invalid(name, e.to_string())),
            },
        };
        let count = |name: &'static str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(ConfigError::Invalid(name, "must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(crate::conn::Limits {
            max_connections: count("limits.max_connections", self.max_connections, d.max_connections)?,
            max_http_connections: count(
                "limits.max_http_connections",
                self.max_http_connections,
                d.max_http_connections,
            )?,
            per_ip_connections: count("limits.per_ip_connections", self.per_ip_connections, d.per_ip_connections)?,
            idle: duration("limits.idle_timeout", self.idle_timeout, d.idle)?,
            request: duration("limits.request_timeout", self.request_timeout, d.request)?,
            handshake: duration("limits.handshake_timeout", self.handshake_timeout, d.handshake)?,
            header: duration("limits.header_timeout", self.header_timeout, d.header)?,
        })
    }
}

#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    /// A renewed certificate is revoked (reason superseded) when its successor is first used,
    /// or after this long (default "7d").
    pub superseded_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScep {
    /// Template `/scep` issues from (default Machine).
    pub template: Option<String>,
    /// Accept DES/3DES envelopes from old clients (default false).
    pub legacy_ciphers: Option<bool>,
    /// The plain-HTTP listener: SCEP (most clients expect http://; the messages are signed and
    /// encrypted themselves), the CRL, the CA certificates and OCSP, which certificates name.
    /// Default: the HTTPS address with port 8080; "off" turns it off.
    pub http_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMdm {
    /// Template MDM enrollment issues from (default Machine).
    pub template: Option<String>,
    /// DMClient provider id (PROVIDER-ID in the provisioning document).
    pub provider_id: Option<String>,
    /// OMA-DM management server URL handed to devices (APPLICATION ADDR).
    pub management_url: Option<String>,
    /// Where the federated sign-in page may post its token (the `appru` a device passes),
    /// by prefix. Default `["ms-app://"]`: Windows' Web Authentication Broker.
    pub sign_in_return: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// DNS names in the listener certificate.
    pub hostnames: Vec<String>,
    /// Base URL clients are told to use; derived from the bound address when unset.
    pub public_url: Option<String>,
    pub ra: RaSettings,
    pub mdm_provider_id: String,
    pub mdm_management_url: Option<String>,
    /// Return-address prefixes the federated sign-in page posts tokens to.
    pub mdm_sign_in_return: Vec<String>,
    /// The plain-HTTP listener (SCEP, CRL, CA certificates, OCSP); None when turned off.
    pub scep_http_listen: Option<SocketAddr>,
    /// The token-free `/metrics` listener; None (the default) when off.
    pub metrics_listen: Option<SocketAddr>,
    /// Operator-supplied listener certificate and key (PEM files); None: issued by our CA.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub limits: crate::conn::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("parsing {path}: {err}")]
    Parse { path: String, err: String },
    #[error("invalid setting {0}: {1}")]
    Invalid(&'static str, String),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The plain-HTTP listener's port by default.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_DATA_DIR: &str = "autoenroll-data";

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|err| ConfigError::Read { path: path.display().to_string(), err })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.display().to_string(), err: e.to_string() })
    }

    /// Values set in `other` win.
    pub fn merge(self, other: RawConfig) -> RawConfig {
        RawConfig {
            data_dir: other.data_dir.or(self.data_dir),
            listen: other.listen.or(self.listen),
            database: other.database.or(self.database),
            hostnames: other.hostnames.or(self.hostnames),
            public_url: other.public_url.or(self.public_url),
            default_template: other.default_template.or(self.default_template),
            next_update_hours: other.next_update_hours.or(self.next_update_hours),
            key_algorithm: other.key_algorithm.or(self.key_algorithm),
            organization: other.organization.or(self.organization),
            mdm: other.mdm.or(self.mdm),
            scep: other.scep.or(self.scep),
            revocation: other.revocation.or(self.revocation),
            limits: other.limits.or(self.limits),
            metrics: other.metrics.or(self.metrics),
            tls: other.tls.or(self.tls),
            acme: other.acme.or(self.acme),
        }
    }

    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen: SocketAddr = self
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .map_err(|e| ConfigError::Invalid("listen", format!("{e}")))?;
        let database_url = self.database.unwrap_or_else(|| crate::ra::default_database_url(&data_dir));
        let key_algorithm = self.key_algorithm.as_deref().unwrap_or("p256").parse().map_err(|e| {
            ConfigError::Invalid("key_algorithm", format!("{e} (use p256, p384, rsa2048, rsa3072 or rsa4096)"))
        })?;
        let next_update_hours = self.next_update_hours.unwrap_or(8);
        if next_update_hours == 0 {
            return Err(ConfigError::Invalid("next_update_hours", "must be at least 1".into()));
        }
        if let Some(u) = &self.public_url {
            if !u.starts_with("https://") {
                return Err(ConfigError::Invalid("public_url", "must start with https://".into()));
            }
        }
        let mdm = self.mdm.unwrap_or_default();
        let sign_in_return = mdm.sign_in_return.clone().unwrap_or_else(|| vec!["ms-app://".into()]);
        if let Some(bad) = sign_in_return.iter().find(|p| !valid_sign_in_return(p)) {
            return Err(ConfigError::Invalid(
                "mdm.sign_in_return",
                format!("{bad}: use ms-app://, https://HOST/ or a loopback http://127.0.0.1:PORT/ prefix"),
            ));
        }
        let scep = self.scep.unwrap_or_default();
        // The plain-HTTP listener (SCEP, CRL, CA certificates, OCSP) is on by default: CryptoAPI
        // fetches revocation and issuer certificates over HTTP only, so certificates name it.
        // Same address as the HTTPS listener, port 8080 (an ephemeral port when HTTPS has one).
        let scep_http_listen = match scep.http_listen.as_deref() {
            Some("off") => None,
            Some(l) => {
                Some(l.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid("scep.http_listen", format!("{e}")))?)
            }
            None => Some(SocketAddr::new(listen.ip(), if listen.port() == 0 { 0 } else { DEFAULT_HTTP_PORT })),
        };
        let metrics_listen = match self.metrics.and_then(|m| m.listen).as_deref() {
            None | Some("off") => None,
            Some(l) => {
                Some(l.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid("metrics.listen", format!("{e}")))?)
            }
        };
        let tls_files = match self.tls.map(|t| (t.cert, t.key)) {
            None | Some((None, None)) => None,
            Some((Some(c), Some(k))) => Some((c, k)),
            Some(_) => return Err(ConfigError::Invalid("tls", "set both cert and key, or neither".into())),
        };
        let superseded_grace = match self.revocation.and_then(|r| r.superseded_grace) {
            Some(g) => humantime::parse_duration(&g)
                .map_err(|e| ConfigError::Invalid("revocation.superseded_grace", e.to_string()))?,
            None => std::time::Duration::from_secs(7 * 86_400),
        };
        let acme = self.acme.unwrap_or_default();
        let ari_retry_after = match acme.ari_retry_after {
            Some(v) => humantime::parse_duration(&v)
                .map_err(|e| ConfigError::Invalid("acme.ari_retry_after", e.to_string()))?
                .as_secs(),
            None => 6 * 3600,
        };
        let raw_limits = self.limits.unwrap_or_default();
        let count_addresses = raw_limits.count_addresses;
        let hostnames = self.hostnames.unwrap_or_else(|| vec!["localhost".into()]);
        let public_url = self.public_url.map(|u| u.trim_end_matches('/').to_string());
        let server_names = server_names(&hostnames, public_url.as_deref(), listen);
        Ok(ServerConfig {
            mdm_provider_id: mdm.provider_id.unwrap_or_else(|| "autoenroll".into()),
            mdm_management_url: mdm.management_url,
            mdm_sign_in_return: sign_in_return,
            limits: raw_limits.validate()?,
            scep_http_listen,
            metrics_listen,
            tls_files,
            listen,
            hostnames,
            public_url,
            ra: RaSettings {
                data_dir,
                database_url,
                key_algorithm,
                organization: self.organization.unwrap_or_else(|| "autoenroll".into()),
                default_template: self.default_template.unwrap_or_else(|| "Machine".into()),
                next_update_hours,
                mdm_template: mdm.template.unwrap_or_else(|| "Machine".into()),
                scep_template: scep.template.unwrap_or_else(|| "Machine".into()),
                scep_legacy_ciphers: scep.legacy_ciphers.unwrap_or(false),
                server_names,
                superseded_grace_secs: i64::try_from(superseded_grace.as_secs()).unwrap_or(i64::MAX),
                count_addresses: count_addresses.unwrap_or(true),
                acme: crate::ra::AcmeSettings {
                    template: acme.template.unwrap_or_else(|| "WebServer".into()),
                    http01_port: acme.http01_port.unwrap_or(80),
                    resolve: acme
                        .resolve
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(n, ip)| (n.to_ascii_lowercase(), ip))
                        .collect(),
                    ari_retry_after_secs: i64::try_from(ari_retry_after).unwrap_or(i64::MAX).max(1),
                    dns01_resolver: acme.dns01_resolver.unwrap_or_else(crate::probe::system_resolver),
                },
            },
        })
    }
}

/// A sign-in return prefix must name its host completely (`https://a.example` would also match
/// `https://a.example.evil`), and tokens, being bearer credentials, travel in clear text only on
/// the device itself (loopback, as OAuth native apps do).
fn valid_sign_in_return(prefix: &str) -> bool {
    // Userinfo (`http://127.0.0.1:80@evil/`) and backslashes make browsers go elsewhere.
    let authority = |rest: &str| rest.split_once('/').map(|(a, _)| a.to_string()).filter(|a| !a.contains(['@', '\\']));
    match prefix.split_once("://") {
        // Windows apps on the device itself (the broker captures the post).
        Some(("ms-app", _)) => true,
        Some(("https", rest)) => authority(rest).is_some_and(|a| !a.is_empty()),
        Some(("http", rest)) => authority(rest).is_some_and(|a| {
            ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| a == *h || a.starts_with(&format!("{h}:")))
        }),
        _ => false,
    }
}

enum IpHost {
    Ip(IpAddr),
    Dns(String),
}

/// The names and addresses clients reach this server by: its host names, the public URL's host
/// and the listen address (loopback is reserved by the name policy itself).
fn server_names(hostnames: &[String], public_url: Option<&str>, listen: SocketAddr) -> ServerNames {
    let mut names = ServerNames { dns: hostnames.to_vec(), ips: vec![] };
    if let Some(host) = public_url.and_then(|u| u.parse::<http::Uri>().ok()).and_then(|u| u.host().map(str::to_string))
    {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        match host.parse::<IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(host),
        }
    }
    if !listen.ip().is_unspecified() {
        names.ips.push(listen.ip());
    }
    names
}

impl ServerConfig {
    /// The IP addresses the listener certificate should name.
    pub fn tls_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = vec![
            "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        let ip = self.listen.ip();
        if !ip.is_unspecified() && !ips.contains(&ip) {
            ips.push(ip);
        }
        if let Some(IpHost::Ip(ip)) = self.public_host() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ips
    }

    /// The DNS names the listener's certificate carries: the host names, and the public URL's
    /// host (the name clients, Windows among them, connect to).
    pub fn tls_names(&self) -> Vec<String> {
        let mut names = self.hostnames.clone();
        if let Some(IpHost::Dns(h)) = self.public_host() {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&h)) {
                names.push(h);
            }
        }
        names
    }

    fn public_host(&self) -> Option<IpHost> {
        let host = self.public_url.as_deref()?.parse::<http::Uri>().ok()?.host()?.to_string();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Some(match host.parse::<IpAddr>() {
            Ok(ip) => IpHost::Ip(ip),
            Err(_) => IpHost::Dns(host),
        })
    }

    /// The base URL for the bound address.
    /// The plain-HTTP base certificates carry for a listener bound at `bound`: the public
    /// URL's host when there is one.
    pub fn http_base(&self, bound: SocketAddr) -> String {
        let public_host = self
            .public_url
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_string));
        let host = match public_host {
            Some(h) => h,
            None if bound.ip().is_unspecified() => {
                self.hostnames.first().cloned().unwrap_or_else(|| "localhost".into())
            }
            None => match bound.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            },
        };
        format!("http://{host}:{}", bound.port())
    }

    /// The base the server will publish when it runs, when the configuration alone says it
    /// (no port left for the system to pick): what `server init` certifies the chain for.
    pub fn planned_public_base(&self) -> Option<String> {
        match self.scep_http_listen {
            Some(a) if a.port() != 0 => Some(self.http_base(a)),
            Some(_) => None,
            None if self.listen.port() != 0 || self.public_url.is_some() => Some(self.base_url(self.listen)),
            None => None,
        }
    }

    pub fn base_url(&self, bound: SocketAddr) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = if bound.ip().is_unspecified() {
            self.hostnames.first().cloned().unwrap_or_else(|| "localhost".into())
        } else if bound.is_ipv6() {
            format!("[{}]", bound.ip())
        } else {
            bound.ip().to_string()
        };
        format!("https://{host}:{}", bound.port())
    }
}

/// The configuration reference (`docs/configuration.md`): every setting of the file, from the
/// structs' own documentation, so the reference cannot drift from what the server reads.
pub fn reference() -> String {
    let schema = schemars::schema_for!(RawConfig);
    let root = schema.as_value();
    let defs = root.get("$defs").cloned().unwrap_or_default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration structs (`crates/server/src/config.rs`) by \
         `AUTOENROLL_UPDATE_DOCS=1 cargo test -p autoenroll-server --test error_mapping_doc`; \
         a test fails when this file is out of date.\n\n\
         The server reads a TOML file given with `--config` (or `AUTOENROLL_CONFIG`); \
         command-line flags override it. Unknown keys are refused. Durations are written like \
         \"30s\", \"15m\", \"7d\". `systemctl reload` (SIGHUP) re-reads the file: new `hostnames` and \
         `[tls]` files apply at once, the rest at the next restart.\n",
    );
    let mut sections = Vec::new();
    out.push_str("\n## Top level\n\n| key | type | meaning |\n|---|---|---|\n");
    if let Some(props) = root.get("properties").and_then(|p| p.as_object()) {
        for (key, prop) in props {
            match reference_of(prop) {
                Some(def) => sections.push((key.clone(), def, describe(prop))),
                None => out.push_str(&row(key, prop)),
            }
        }
    }
    for (key, def, about) in sections {
        out.push_str(&format!("\n## [{key}]\n\n{about}\n\n| key | type | meaning |\n|---|---|---|\n"));
        if let Some(props) = defs.get(&def).and_then(|d| d.get("properties")).and_then(|p| p.as_object()) {
            for (k, prop) in props {
                out.push_str(&row(k, prop));
            }
        }
    }
    out
}

fn reference_of(prop: &serde_json::Value) -> Option<String> {
    let any = prop.get("anyOf").and_then(|a| a.as_array()).cloned().unwrap_or_default();
    any.iter()
        .chain(std::iter::once(prop))
        .find_map(|v| v.get("$ref").and_then(|r| r.as_str()))
        .map(|r| r.trim_start_matches("#/$defs/").to_string())
}

fn describe(prop: &serde_json::Value) -> String {
    prop.get("description").and_then(|d| d.as_str()).unwrap_or("").replace('\n', " ")
}

fn type_of(prop: &serde_json::Value) -> String {
    let types: Vec<String> = match prop.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|t| t.as_str()).map(str::to_string).collect(),
        _ => vec![],
    };
    let items = prop.get("items").map(type_of);
    types
        .into_iter()
        .filter(|t| t != "null")
        .map(|t| match (&*t, &items) {
            ("array", Some(i)) => format!("array of {i}"),
            ("integer", _) => "integer".into(),
            _ => t,
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn row(key: &str, prop: &serde_json::Value) -> String {
    format!("| `{key}` | {} | {} |\n", type_of(prop), describe(prop).replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::valid_sign_in_return;

    #[test]
    fn sign_in_return_prefixes_name_their_host_completely() {
        for ok in
            ["ms-app://", "ms-app://windows.immersivecontrolpanel", "https://mdm.example/", "http://127.0.0.1:9/x"]
        {
            assert!(valid_sign_in_return(ok), "{ok}");
        }
        // A prefix without its path would also match `https://mdm.example.evil/`; plain HTTP
        // would put a bearer token on the network; a non-loopback HTTP host too.
        for bad in
            ["https://mdm.example", "https://", "http://mdm.example/", "http://127.0.0.1.evil/", "javascript:x", ""]
        {
            assert!(!valid_sign_in_return(bad), "{bad}");
        }
    }
}
