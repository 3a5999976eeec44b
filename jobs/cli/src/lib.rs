//! The binary edge shared by every job binary: argument parsing whose usage errors are one
//! line and exit 2, logging, the async runtime, the process's signal watcher, and errors mapped
//! to exit codes and printed as one line. A binary's `main` is `parse`, then `run` with its
//! async body.
//!
//! This is the one library that prints and the one that uses `anyhow`: the libraries below it
//! return typed errors and data, and the binaries render them.
#![warn(clippy::too_many_lines)]

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches};

use sts_backup_core::error::Error;
use sts_backup_core::exit::Exit;
use sts_backup_core::interrupt;
use sts_backup_core::logging::{self, LogFormat};
use sts_backup_core::storage::StorageError;

/// Parses the process arguments. `--help` and `--version` print and end the process with 0;
/// a usage error prints one line naming the argument and ends it with 2.
pub fn parse<P: CommandFactory + FromArgMatches>() -> Result<P, ExitCode> {
    parse_from(P::command(), std::env::args_os())
}

/// [`parse`] with a command adjusted by the caller (extra help text) and explicit arguments.
pub fn parse_from<P: FromArgMatches>(
    command: clap::Command,
    args: impl IntoIterator<Item = OsString>,
) -> Result<P, ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    let parsed = command
        .try_get_matches_from(&args)
        .and_then(|m| P::from_arg_matches(&m));
    match parsed {
        Ok(parsed) => Ok(parsed),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            Err(if e.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                Exit::Invalid.into()
            })
        }
        Err(e) => {
            eprintln!("{}", usage_line(&e, &args));
            Err(Exit::Invalid.into())
        }
    }
}

/// Sets up logging, the runtime and the signal watcher, runs the job and turns its error into
/// one line and an exit code.
///
/// A SIGTERM/SIGINT ends the job here (exit 1, one line) unless a step that cleans up after
/// itself holds an [`interrupt::Interrupt`]: that step then ends the job its own way.
pub fn run<F>(log_format: LogFormat, job: impl FnOnce() -> F) -> Exit
where
    F: Future<Output = anyhow::Result<Exit>>,
{
    logging::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let outcome = runtime.block_on(async {
        interrupt::install()?;
        tokio::select! {
            outcome = job() => outcome,
            stopped = interrupt::unhandled() => Err(stopped.into()),
        }
    });
    match outcome {
        Ok(exit) => exit,
        Err(e) => report(&e),
    }
}

/// Prints an error as one line (`error: a: b: c`, or a JSON log event) and returns its exit
/// code, found from the typed error anywhere in the chain.
pub fn report(err: &anyhow::Error) -> Exit {
    let exit = err
        .chain()
        .find_map(|e| {
            e.downcast_ref::<Error>()
                .map(Error::exit)
                .or_else(|| e.downcast_ref::<StorageError>().map(StorageError::exit))
        })
        .unwrap_or(Exit::Failure);
    let line = logging::scrub(&format!("{err:#}").replace('\n', " "));
    match logging::format() {
        LogFormat::Json => tracing::error!(exit_code = exit as u8, "{line}"),
        LogFormat::Text => eprintln!("error: {line}"),
    }
    exit
}

/// One line for a usage error: clap's first paragraph joined, or, for a negative value that
/// clap took for a flag (`--part-size -5MiB`), a line naming the flag it was meant for.
fn usage_line(err: &clap::Error, args: &[OsString]) -> String {
    if matches!(err.kind(), ErrorKind::UnknownArgument | ErrorKind::NoEquals) {
        if let Some(line) = negative_value(err, args) {
            return line;
        }
    }
    let text = err.render().to_string();
    let paragraph: Vec<&str> = text
        .trim_start()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = paragraph.join(" ");
    if line.is_empty() {
        "error: invalid usage; see --help".into()
    } else {
        line
    }
}

fn negative_value(err: &clap::Error, args: &[OsString]) -> Option<String> {
    let ContextValue::String(invalid) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    args.windows(2).find_map(|pair| {
        let (flag, value) = (&pair[0], &pair[1]);
        let negative = value.starts_with(invalid.as_str()) && value.len() > 1 && value.as_bytes()[1].is_ascii_digit();
        (negative && flag.starts_with("--") && !flag.contains('='))
            .then(|| format!("error: {flag}: {value:?} is negative; give a positive value"))
    })
}
