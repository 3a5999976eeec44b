//! `backup-monitor`: reads every store's bucket and Elasticsearch's snapshot state, judges
//! them against their schedules and serves Prometheus metrics. All logic lives in the
//! `sts_backup_monitor` library; this is flags, output and exit codes.
#![warn(clippy::too_many_lines)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sts_backup_cli as cli;
use sts_backup_core::interrupt::Interrupt;
use sts_backup_core::logging::LogFormat;
use sts_backup_core::signature::{self, Policy, TrustArgs};
use sts_backup_core::storage::StorageArgs;
use sts_backup_core::Exit;
use sts_backup_elasticsearch::ConnectionArgs;
use sts_backup_monitor::config::Config;
use sts_backup_monitor::metrics;
use sts_backup_monitor::monitor::Monitor;
use sts_backup_monitor::server::{self, Published};

const AFTER_HELP: &str = "\
The config file (JSON; the chart renders it) lists what to watch:
  {\"stores\": [{\"name\": \"stackgraph\", \"storage\": \"s3://sts-stackgraph-backup\",
                \"schedule\": \"0 3 * * *\", \"timeZone\": \"Etc/UTC\", \"grace\": \"1h\", \"verifyEvery\": \"7d\"}],
   \"elasticsearch\": {\"repository\": \"sts-backup\", \"policy\": \"auto-sts-backup\", \"grace\": \"1h\"}}

Exit codes:
  0  serve: stopped by SIGTERM; check: everything healthy
  1  check: something needs attention (unreachable, overdue, broken, corrupt)
  2  invalid input or usage (nothing was contacted)";

/// Judges backups from the outside and serves Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "backup-monitor", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// What to watch (JSON).
    #[arg(long, env = "MONITOR_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    #[command(flatten)]
    storage: StorageArgs,

    /// With trusted keys, backups not signed by one of them count as broken.
    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    es: ConnectionArgs,

    /// Shifts the monitor's clock (e.g. `26h`), to rehearse what it will report later.
    #[arg(long, env = "MONITOR_CLOCK_OFFSET", value_parser = humantime::parse_duration, global = true, hide = true)]
    clock_offset: Option<Duration>,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check periodically and serve /metrics and /healthz.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MONITOR_LISTEN", default_value = "0.0.0.0:9102")]
        listen: SocketAddr,
        /// Time between checks.
        #[arg(long, env = "MONITOR_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Check the config file and print what would be watched; contacts nothing.
    Validate,
    /// Check once (waiting for verifications) and print the result.
    Check {
        /// Output: prometheus text or a json report.
        #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = Output::Prometheus)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Prometheus,
    Json,
}

fn main() -> ExitCode {
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli::run(cli.log_format, || run(cli)).into()
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let path = cli
        .config
        .clone()
        .ok_or_else(|| sts_backup_core::Error::invalid("--config: missing (or set MONITOR_CONFIG)"))?;
    let config = Config::load(&path).map_err(|e| sts_backup_core::Error::invalid(e.to_string()))?;
    signature::install(Policy::from_args(&cli.trust, None)?)?;
    if let Command::Validate = cli.command {
        print_config(&config);
        return Ok(Exit::Ok);
    }
    let es = match &config.elasticsearch {
        Some(_) => Some(
            cli.es
                .client()
                .map_err(|e| sts_backup_core::Error::invalid(e.to_string()))?,
        ),
        None => None,
    };
    let offset = chrono::Duration::from_std(cli.clock_offset.unwrap_or_default())
        .map_err(|_| sts_backup_core::Error::invalid("--clock-offset: too large"))?;
    let (store_count, watches_es) = (config.stores.len(), config.elasticsearch.is_some());
    let mut monitor = Monitor::new(config, &cli.storage, es, offset).await?;
    match cli.command {
        Command::Validate => Ok(Exit::Ok),
        Command::Check { output } => check(&mut monitor, output).await,
        Command::Serve { listen, interval } => {
            let published = Published::new(interval * 3 + Duration::from_secs(60));
            let listener = server::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                "=== Watching {} store(s){}; metrics on http://{listen}/metrics every {}",
                store_count,
                if watches_es { " and Elasticsearch" } else { "" },
                humantime::format_duration(interval)
            );
            tokio::spawn(server::serve(listener, published.clone()));
            serve(&mut monitor, &published, interval).await
        }
    }
}

/// `validate`: what the configuration will watch, one line per store.
fn print_config(config: &Config) {
    for s in &config.stores {
        println!(
            "store {}: {} on schedule {:?} ({}), grace {}, verify every {}",
            s.name,
            s.storage,
            s.schedule.expr(),
            s.schedule.time_zone(),
            humantime::format_duration(s.grace),
            humantime::format_duration(s.verify_every)
        );
    }
    if let Some(es) = &config.elasticsearch {
        println!("elasticsearch: repository {}, SLM policy {}", es.repository, es.policy);
    }
}

/// `check`: one settled look, printed; exit 1 when anything is unhealthy.
async fn check(monitor: &mut Monitor, output: Output) -> anyhow::Result<Exit> {
    monitor.check().await;
    monitor.settle().await;
    let report = monitor.check().await;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Prometheus => out.write_all(metrics::render(&report).as_bytes())?,
        Output::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
    }
    out.flush()?;
    Ok(if report.healthy() { Exit::Ok } else { Exit::Failure })
}

/// `serve`: look every `interval` and publish, until SIGTERM/SIGINT (a clean stop, exit 0).
async fn serve(monitor: &mut Monitor, published: &Published, interval: Duration) -> anyhow::Result<Exit> {
    let mut interrupt = Interrupt::new()?;
    loop {
        let report = monitor.check().await;
        published.set(metrics::render(&report));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = interrupt.wait() => return Ok(Exit::Ok),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
