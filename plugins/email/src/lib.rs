//! The email channel: SMTP through lettre (pooled connections, STARTTLS or
//! implicit TLS, authentication), or `.eml` files for the embedded demo.
//!
//! The Message-ID is derived from the idempotency key, so every retry of a
//! follow-up carries the same one and receivers can de-duplicate. Replies
//! 4xx and lost connections are retryable; 5xx are permanent.

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use relance_plugin_api::net::{Guard, ResolveError};
use relance_plugin_api::template::{Part, part, render};
use relance_plugin_api::{
    Action, Cancel, DeliverRequest, Health, HealthcheckRequest, Manifest, Outcome, PROTOCOL,
    Plugin, SettingDoc,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TransportKind {
    #[default]
    Smtp,
    /// One `.eml` file per message in `dir` (the demo, and tests of content).
    File,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TlsMode {
    /// Plain text: only for a relay on the same machine.
    None,
    /// Upgrade with STARTTLS, refusing servers that do not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

/// The channel's `settings`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    transport: TransportKind,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: TlsMode,
    /// Name checked against the server certificate (default: `host`).
    #[serde(default)]
    tls_domain: Option<String>,
    /// Extra trusted root certificate (PEM), for a private CA.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    /// Filled from the environment by the configuration; never logged.
    #[serde(default)]
    password: Option<String>,
    from: String,
    #[serde(default)]
    reply_to: Option<String>,
    /// One-click unsubscribe URL template (https), e.g.
    /// `https://example.com/u?c={{id}}`.
    #[serde(default)]
    unsubscribe_url: Option<String>,
    #[serde(default)]
    unsubscribe_mailto: Option<String>,
    /// Right-hand side of Message-IDs (default: the sender's domain).
    #[serde(default)]
    message_id_domain: Option<String>,
    #[serde(default = "default_pool")]
    pool_size: u32,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// Folder of the file transport.
    #[serde(default)]
    dir: Option<PathBuf>,
    /// Networks the SSRF guard lets the SMTP connection through to (a relay
    /// on the same machine: `["127.0.0.1"]`); nothing internal otherwise.
    #[serde(default)]
    allow_networks: Vec<String>,
}

fn default_pool() -> u32 {
    4
}

fn default_timeout() -> u64 {
    30
}

enum Transport {
    Smtp(Box<Smtp>),
    File(PathBuf),
}

/// SMTP behind the SSRF guard: the host is resolved and every address
/// checked before each send, and lettre connects to the checked address
/// (TLS still verifies the host name), so a name that starts resolving to
/// an internal address (DNS rebinding) is refused then, not only at start.
struct Smtp {
    settings: Settings,
    host: String,
    guard: Guard,
    /// The pool of the address last checked; rebuilt when it changes.
    current: std::sync::Mutex<Option<(IpAddr, AsyncSmtpTransport<Tokio1Executor>)>>,
}

impl Smtp {
    /// The transport to a checked address of the host.
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, Outcome> {
        let addrs = self
            .guard
            .resolve(&self.host, 0)
            .await
            .map_err(|e| match e {
                ResolveError::Refused(r) => Outcome::permanent(r.to_string()),
                other => Outcome::retryable(other.to_string()),
            })?;
        let ip = addrs[0].ip();
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, t)) = current.as_ref()
            && addrs.iter().any(|a| a.ip() == *at)
        {
            return Ok(t.clone());
        }
        let t = smtp(&self.settings, &ip.to_string()).map_err(Outcome::permanent)?;
        *current = Some((ip, t.clone()));
        Ok(t)
    }
}

pub struct Email {
    transport: Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    unsubscribe_url: Option<String>,
    unsubscribe_mailto: Option<String>,
    id_domain: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Drop for Email {
    fn drop(&mut self) {
        // The SMTP pool's connections close through the runtime.
        let _entered = self.runtime.enter();
        drop(std::mem::replace(
            &mut self.transport,
            Transport::File(PathBuf::new()),
        ));
    }
}

/// A header lettre does not know, by name.
#[derive(Clone)]
struct Raw<const N: usize>(String);

const LIST_UNSUBSCRIBE: usize = 0;
const LIST_UNSUBSCRIBE_POST: usize = 1;

impl<const N: usize> Header for Raw<N> {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(if N == LIST_UNSUBSCRIBE {
            "List-Unsubscribe"
        } else {
            "List-Unsubscribe-Post"
        })
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

fn settings_doc() -> Vec<SettingDoc> {
    let doc = SettingDoc::new;
    vec![
        doc("transport", false, false, "`smtp` (default) or `file`"),
        doc("host", false, false, "SMTP server (required for smtp)"),
        doc(
            "port",
            false,
            false,
            "default 587 (starttls), 465 (implicit), 25 (none)",
        ),
        doc(
            "tls",
            false,
            false,
            "`starttls` (default), `implicit` or `none`",
        ),
        doc(
            "tls_domain",
            false,
            false,
            "name on the server certificate, default host",
        ),
        doc(
            "ca_file",
            false,
            false,
            "extra trusted root certificate (PEM)",
        ),
        doc("username", false, false, "SMTP login"),
        doc(
            "password",
            false,
            true,
            "SMTP password, from the environment",
        ),
        doc(
            "from",
            true,
            false,
            "sender, e.g. `Ventes <ventes@example.com>`",
        ),
        doc("reply_to", false, false, "Reply-To address"),
        doc(
            "unsubscribe_url",
            false,
            false,
            "https one-click unsubscribe URL template",
        ),
        doc("unsubscribe_mailto", false, false, "unsubscribe mailbox"),
        doc(
            "message_id_domain",
            false,
            false,
            "Message-ID domain, default the sender's",
        ),
        doc(
            "pool_size",
            false,
            false,
            "pooled SMTP connections (default 4)",
        ),
        doc(
            "timeout_secs",
            false,
            false,
            "SMTP command timeout (default 30)",
        ),
        doc("dir", false, false, "folder of the file transport"),
        doc(
            "allow_networks",
            false,
            false,
            "networks the SSRF guard lets through, e.g. [\"127.0.0.1\"] for a local relay",
        ),
    ]
}

impl Plugin for Email {
    fn manifest() -> Manifest {
        Manifest {
            name: "email".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            description: "email over SMTP, or .eml files".into(),
            actions: vec![Action::Message],
            settings: settings_doc(),
            max_batch: 0,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        let s: Settings =
            serde_json::from_value(settings).map_err(|e| format!("email settings: {e}"))?;
        let from: Mailbox = s.from.parse().map_err(|e| format!("`from`: {e}"))?;
        let reply_to = match &s.reply_to {
            Some(r) => Some(r.parse().map_err(|e| format!("`reply_to`: {e}"))?),
            None => None,
        };
        if let Some(u) = &s.unsubscribe_url
            && !u.starts_with("https://")
        {
            return Err("`unsubscribe_url` must be an https URL (RFC 8058)".into());
        }
        let id_domain = s
            .message_id_domain
            .clone()
            .unwrap_or_else(|| from.email.domain().to_owned());
        // One worker thread: the SMTP pool recycles connections and closes
        // idle ones in background tasks, which must run between sends.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("relance-email")
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let transport = match s.transport {
            TransportKind::File => {
                let dir = s
                    .dir
                    .clone()
                    .ok_or("`dir` is required with transport = \"file\"")?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("`dir` {}: {e}", dir.display()))?;
                Transport::File(dir)
            }
            TransportKind::Smtp => {
                let host = s
                    .host
                    .clone()
                    .ok_or("`host` is required with transport = \"smtp\"")?;
                let guard = Guard::from_allow(&s.allow_networks)?;
                guard
                    .check_host(&host)
                    .map_err(|e| format!("`host`: {e}"))?;
                // Builds once to report wrong TLS settings at start.
                let _entered = runtime.enter();
                smtp(&s, &host)?;
                Transport::Smtp(Box::new(Smtp {
                    settings: s.clone(),
                    host,
                    guard,
                    current: std::sync::Mutex::new(None),
                }))
            }
        };
        Ok(Self {
            transport,
            from,
            reply_to,
            unsubscribe_url: s.unsubscribe_url,
            unsubscribe_mailto: s.unsubscribe_mailto,
            id_domain,
            runtime,
        })
    }

    fn deliver(&self, request: DeliverRequest, cancel: &Cancel) -> Outcome {
        let (message, id) = match self.build(&request) {
            Ok(m) => m,
            Err(reason) => return Outcome::permanent(reason),
        };
        match &self.transport {
            Transport::File(dir) => write_eml(dir, &id, &message.formatted()),
            Transport::Smtp(smtp) => {
                let _entered = self.runtime.enter();
                self.runtime.block_on(async {
                    let t = match smtp.transport().await {
                        Ok(t) => t,
                        Err(refused) => return refused,
                    };
                    let send = t.send(message);
                    tokio::select! {
                        _ = cancel.cancelled() => Outcome::retryable("cancelled by the host"),
                        r = send => match r {
                            Ok(resp) => Outcome::Ok {
                                remote_id: Some(id),
                                data: Some(json!({
                                    "code": resp.code().to_string(),
                                    "message": resp.message().collect::<Vec<_>>().join(" "),
                                })),
                            },
                            Err(e) => classify(&e),
                        },
                    }
                })
            }
        }
    }

    fn healthcheck(&self, _request: HealthcheckRequest, _cancel: &Cancel) -> Health {
        match &self.transport {
            Transport::File(dir) => Health {
                healthy: dir.is_dir(),
                detail: format!("writing to {}", dir.display()),
            },
            Transport::Smtp(smtp) => {
                let _entered = self.runtime.enter();
                let tested = self.runtime.block_on(async {
                    match smtp.transport().await {
                        Ok(t) => t.test_connection().await.map_err(|e| e.to_string()),
                        Err(o) => Err(format!("{o:?}")),
                    }
                });
                match tested {
                    Ok(true) => Health {
                        healthy: true,
                        detail: "SMTP server answers".into(),
                    },
                    Ok(false) => Health {
                        healthy: false,
                        detail: "SMTP server refused NOOP".into(),
                    },
                    Err(e) => Health {
                        healthy: false,
                        detail: e.to_string(),
                    },
                }
            }
        }
    }
}

/// A pooled transport to `connect_to` (a checked address, or the host
/// itself to validate the settings); TLS verifies the configured name.
fn smtp(s: &Settings, connect_to: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = s
        .host
        .clone()
        .ok_or("`host` is required with transport = \"smtp\"")?;
    let tls_params = || -> Result<TlsParameters, String> {
        let domain = s.tls_domain.clone().unwrap_or_else(|| host.clone());
        let mut b = TlsParameters::builder(domain);
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("`ca_file` {}: {e}", ca.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("`ca_file`: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build().map_err(|e| format!("TLS: {e}"))
    };
    let (tls, port) = match s.tls {
        TlsMode::None => (Tls::None, 25),
        TlsMode::Starttls => (Tls::Required(tls_params()?), 587),
        TlsMode::Implicit => (Tls::Wrapper(tls_params()?), 465),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(connect_to)
        .port(s.port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(Duration::from_secs(s.timeout_secs.max(1))))
        .pool_config(PoolConfig::new().max_size(s.pool_size.max(1)));
    match (&s.username, &s.password) {
        (Some(u), Some(p)) => b = b.credentials(Credentials::new(u.clone(), p.clone())),
        (None, None) => {}
        _ => return Err("`username` and `password` go together".into()),
    }
    Ok(b.build())
}

impl Email {
    /// The message and its Message-ID; `Err` is a permanent reason.
    fn build(&self, r: &DeliverRequest) -> Result<(Message, String), String> {
        let to_addr = r
            .contact
            .email
            .as_deref()
            .ok_or_else(|| format!("contact {} has no email address", r.contact.id))?;
        let name = [&r.contact.first_name, &r.contact.last_name]
            .iter()
            .filter_map(|n| n.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        let to = Mailbox::new(
            (!name.is_empty()).then_some(name),
            to_addr
                .parse()
                .map_err(|e| format!("contact {}: invalid email: {e}", r.contact.id))?,
        );
        let id = message_id(&r.idempotency_key, &self.id_domain);
        let subject = part(r, Part::Subject).unwrap_or_default();
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(id.clone()))
            .date(std::time::SystemTime::from(r.now));
        if let Some(rt) = &self.reply_to {
            b = b.reply_to(rt.clone());
        }
        // A per-message signed URL from the host (`vars.unsubscribe_url`,
        // relance's one-click link) wins over the configured template.
        let one_click = r
            .vars
            .get("unsubscribe_url")
            .and_then(|v| v.as_str())
            .map(String::from)
            .or_else(|| self.unsubscribe_url.as_ref().map(|u| render(u, r, false)));
        let mut unsubscribe = Vec::new();
        if let Some(u) = &one_click {
            unsubscribe.push(format!("<{u}>"));
        }
        if let Some(m) = &self.unsubscribe_mailto {
            unsubscribe.push(format!("<mailto:{m}?subject=unsubscribe>"));
        }
        if !unsubscribe.is_empty() {
            b = b.header(Raw::<LIST_UNSUBSCRIBE>(unsubscribe.join(", ")));
        }
        if one_click.is_some() {
            b = b.header(Raw::<LIST_UNSUBSCRIBE_POST>(
                "List-Unsubscribe=One-Click".into(),
            ));
        }
        let text = part(r, Part::Text);
        let html = part(r, Part::Html);
        let message = match (text, html) {
            (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t, h)),
            (Some(t), None) => b.singlepart(SinglePart::plain(t)),
            (None, Some(h)) => b.singlepart(SinglePart::html(h)),
            (None, None) => return Err("the message has neither text nor html".into()),
        }
        .map_err(|e| format!("cannot build the message: {e}"))?;
        Ok((message, id))
    }
}

/// The same key always gives the same Message-ID.
pub fn message_id(idempotency_key: &str, domain: &str) -> String {
    let digest = hex::encode(Sha256::digest(idempotency_key.as_bytes()));
    format!("<relance.{}@{domain}>", &digest[..32])
}

fn classify(e: &lettre::transport::smtp::Error) -> Outcome {
    let reason = e.to_string();
    // lettre uses SMTPUTF8 (internationalised addresses) and 8BITMIME when
    // the server offers them; a server that does not will not on a retry.
    if e.is_permanent() || (e.is_client() && reason.contains("non-ascii")) {
        Outcome::permanent(format!("SMTP permanent failure: {reason}"))
    } else {
        // 4xx, timeouts, lost connections (even right after DATA: the same
        // Message-ID lets the receiver drop a duplicate) and TLS hiccups.
        Outcome::retryable(format!("SMTP: {reason}"))
    }
}

/// Writes `bytes` once, atomically, under a name derived from the id.
fn write_eml(dir: &std::path::Path, id: &str, bytes: &[u8]) -> Outcome {
    let name = id
        .trim_matches(|c| c == '<' || c == '>')
        .replace(['@', '/'], "_");
    let path = dir.join(format!("{name}.eml"));
    if path.exists() {
        return Outcome::ok(id.to_owned());
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
        Ok(()) => Outcome::Ok {
            remote_id: Some(id.to_owned()),
            data: Some(json!({ "file": path })),
        },
        Err(e) => Outcome::retryable(format!("cannot write {}: {e}", path.display())),
    }
}

relance_plugin_api::export_plugin!(Email);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_key() {
        let a = message_id("fu-1", "example.com");
        assert_eq!(a, message_id("fu-1", "example.com"));
        assert_ne!(a, message_id("fu-2", "example.com"));
        assert!(a.starts_with("<relance.") && a.ends_with("@example.com>"));
    }
}
