//! Logging setup shared by the jobs: human text or one JSON object per line, always on
//! stderr so stdout stays free for data (`list -o json`).

use clap::ValueEnum;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

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
const QUIET_CRATES: [&str; 8] = [
    "aws_config",
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
        .with_writer(std::io::stderr)
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
    use super::filter_spec;

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
