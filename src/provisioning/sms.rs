//! Delivery gateways for one-time codes: SMS and the optional "call me" voice callback.
//!
//! Owns how a message reaches a phone: the `log` gateway (appends one JSON line per message
//! to a file in the data directory and logs it; the development default) and the `http`
//! gateway (a templated request, enough for a Vonage/Nexmo-style API; the transport, a
//! pooled client per gateway, is in `http_client.rs`). It knows nothing of codes' limits or
//! accounts.

use super::http_client::{HttpClient, HttpRequest};
use crate::config::{BodyEncoding, GatewayConfig, GatewayKind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One message to deliver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// E.164 with `+`.
    pub to: String,
    pub from: String,
    pub text: String,
    /// Our verification id, echoed by delivery reports.
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway disabled")]
    Disabled,
    #[error("gateway configuration: {0}")]
    Config(String),
    #[error("gateway i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("gateway request: {0}")]
    Http(String),
    #[error("gateway answered {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// A configured gateway.
#[derive(Debug)]
pub enum Gateway {
    None,
    Log { path: PathBuf, lock: parking_lot::Mutex<()> },
    Http(HttpGateway),
}

/// The templated HTTP gateway.
#[derive(Debug)]
pub struct HttpGateway {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body_template: String,
    encoding: Encoding,
    client: HttpClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Form,
    Json,
    Raw,
}

impl Gateway {
    /// Builds the gateway a config section describes; unknown kinds are an error.
    pub fn from_config(c: &GatewayConfig, data_dir: &Path) -> Result<Gateway, GatewayError> {
        match c.kind {
            GatewayKind::None => Ok(Gateway::None),
            GatewayKind::Log => Ok(Gateway::Log { path: data_dir.join(&c.log_file), lock: Default::default() }),
            GatewayKind::Http => Ok(Gateway::Http(HttpGateway::from_config(c)?)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !matches!(self, Gateway::None)
    }

    /// Delivers one message; Ok once the gateway accepted it.
    pub async fn send(&self, msg: &Outgoing) -> Result<(), GatewayError> {
        match self {
            Gateway::None => Err(GatewayError::Disabled),
            Gateway::Log { path, lock } => {
                tracing::info!(to = %msg.to, reference = %msg.reference, "message (log gateway): {}", msg.text);
                let _l = lock.lock();
                append_line(path, msg)
            }
            Gateway::Http(g) => g.send(msg).await,
        }
    }
}

fn append_line(path: &Path, msg: &Outgoing) -> Result<(), GatewayError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = serde_json::json!({"to": msg.to, "from": msg.from, "text": msg.text, "ref": msg.reference});
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()?;
    Ok(())
}

impl HttpGateway {
    fn from_config(c: &GatewayConfig) -> Result<HttpGateway, GatewayError> {
        if c.url.is_empty() {
            return Err(GatewayError::Config("the http gateway needs a url".into()));
        }
        let encoding = match c.body_encoding {
            BodyEncoding::Form => Encoding::Form,
            BodyEncoding::Json => Encoding::Json,
            BodyEncoding::Raw => Encoding::Raw,
        };
        let timeout = Duration::from_secs(c.timeout_secs.max(1));
        let client = HttpClient::new(c.ca_file.as_deref(), timeout).map_err(|e| GatewayError::Config(e.to_string()))?;
        Ok(HttpGateway {
            url: c.url.clone(),
            method: c.method.clone(),
            headers: c.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            body_template: c.body_template.clone(),
            encoding,
            client,
        })
    }

    async fn send(&self, msg: &Outgoing) -> Result<(), GatewayError> {
        let request = HttpRequest {
            method: self.method.clone(),
            url: fill(&self.url, msg, url_escape),
            headers: self.headers.clone(),
            body: fill(&self.body_template, msg, |v| self.escape(v)),
        };
        let answer = self.client.send(&request).await.map_err(|e| GatewayError::Http(e.to_string()))?;
        if !(200..300).contains(&answer.status) {
            let body: String = answer.body.chars().take(200).collect();
            return Err(GatewayError::Rejected { status: answer.status, body });
        }
        Ok(())
    }

    fn escape(&self, v: &str) -> String {
        match self.encoding {
            Encoding::Form => url_escape(v),
            Encoding::Json => json_escape(v),
            Encoding::Raw => v.to_string(),
        }
    }
}

/// Replaces `{to}` (E.164 digits without `+`), `{from}`, `{text}`, `{ref}`, each escaped.
fn fill(template: &str, msg: &Outgoing, escape: impl Fn(&str) -> String) -> String {
    let to = msg.to.trim_start_matches('+');
    template
        .replace("{to}", &escape(to))
        .replace("{from}", &escape(&msg.from))
        .replace("{text}", &escape(&msg.text))
        .replace("{ref}", &escape(&msg.reference))
}

fn url_escape(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// A message text: `{app}`, `{code}`, `{spoken_code}` (digits separated by spaces).
pub fn render_text(template: &str, app: &str, code: &str) -> String {
    let spoken: Vec<String> = code.chars().map(String::from).collect();
    template.replace("{app}", app).replace("{spoken_code}", &spoken.join(" ")).replace("{code}", code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_per_encoding() {
        let msg = Outgoing { to: "+33612345678".into(), from: "Acme & Co".into(), text: "Your \"x\" code is: 1234".into(), reference: "r1".into() };
        assert_eq!(fill("to={to}&from={from}&text={text}", &msg, url_escape), "to=33612345678&from=Acme+%26+Co&text=Your+%22x%22+code+is%3A+1234");
        assert_eq!(fill("{\"text\":\"{text}\"}", &msg, json_escape), "{\"text\":\"Your \\\"x\\\" code is: 1234\"}");
        assert_eq!(render_text("Your {app} code is {spoken_code} ({code})", "A", "123"), "Your A code is 1 2 3 (123)");
    }
}
