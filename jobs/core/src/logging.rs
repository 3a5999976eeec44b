//! Logging setup shared by the jobs: human text or one JSON object per line, always on
//! stderr so stdout stays free for data (`list -o json`). Credentials never reach it: every
//! line passes through [`scrub`], whatever the level and whichever crate logged it.

use clap::ValueEnum;
use std::io::Write;
use std::sync::{OnceLock, RwLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Values that must never be printed (S3 keys), registered as they are read.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a secret is replaced with.
const REDACTED: &str = "[redacted]";

/// Registers a value that no log or error line may show. Values under four characters are
/// not registered: replacing them would garble ordinary text and hides nothing.
pub fn redact(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    // JSON logs escape some characters; hide the escaped form too.
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    for form in [secret.to_string(), escaped.trim_matches('"').to_string()] {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
}

/// `text` with every registered secret replaced.
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// Stderr through [`scrub`]: one event is collected, cleaned and written in one go.
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer(Vec::new())
    }
}

struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        let line = scrub(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format chosen at start-up (text until [`init`] runs).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Crates whose own logging stays at `warn` unless `RUST_LOG` names them: the AWS SDK and
/// HTTP stacks are chatty and, at debug level, print request details such as access key IDs.
const QUIET_CRATES: [&str; 10] = [
    "aws_config",
    "aws_runtime",
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "aws_sdk_s3",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
];

/// The filter for a `RUST_LOG` value (default `info`), with [`QUIET_CRATES`] at `warn`.
fn filter_spec(rust_log: Option<&str>) -> String {
    let user = rust_log.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("info");
    let mut spec = user.to_string();
    for krate in QUIET_CRATES.iter().filter(|k| !user.contains(*k)) {
        spec.push_str(&format!(",{krate}=warn"));
    }
    spec
}

/// Installs the global subscriber. `RUST_LOG` sets the level (default `info`).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let spec = filter_spec(std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(filter_spec(None)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests calling several entry points) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::{filter_spec, redact, scrub};

    #[test]
    fn scrubs_registered_secrets() {
        redact("AKIDEXAMPLE0000");
        redact("se/cr\"et+key");
        redact("abc");
        assert_eq!(scrub("id=AKIDEXAMPLE0000 x"), "id=[redacted] x");
        assert_eq!(scrub(r#"{"k":"se/cr\"et+key"}"#), r#"{"k":"[redacted]"}"#);
        assert_eq!(scrub("abc"), "abc");
    }

    #[test]
    fn keeps_sdk_crates_quiet_unless_named() {
        assert!(filter_spec(None).starts_with("info,aws_config=warn"));
        let debug = filter_spec(Some("debug"));
        assert!(
            debug.starts_with("debug,") && debug.contains("aws_sdk_s3=warn"),
            "{debug}"
        );
        let named = filter_spec(Some("info,aws_sdk_s3=debug"));
        assert!(!named.contains("aws_sdk_s3=warn"), "{named}");
    }
}
