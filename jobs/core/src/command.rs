//! The export/import commands the jobs drive. They are run directly, never through a shell;
//! an argument `{file}` is replaced by a scratch file path, otherwise the data flows through
//! the command's stdout (export) or stdin (import).

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::interrupt::Interrupt;

/// The placeholder for a scratch file path.
pub const FILE_PLACEHOLDER: &str = "{file}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    argv: Vec<String>,
}

impl CommandSpec {
    /// `what` names the command in errors (`EXPORT_CMD`, `IMPORT_CMD`, `--empty-check`).
    pub fn new(what: &str, argv: Vec<String>) -> Result<Self> {
        match argv.first() {
            None => Err(Error::invalid(format!("{what}: missing; give the command after `--`"))),
            Some(program) if program.is_empty() => Err(Error::invalid(format!("{what}: the program name is empty"))),
            Some(_) => Ok(CommandSpec { argv }),
        }
    }

    /// Splits a command line the way a shell splits words (quotes, backslashes), without
    /// running a shell: for flags such as `--empty-check` that carry a whole command.
    pub fn parse_line(what: &str, line: &str) -> Result<Self> {
        let argv =
            shell_words::split(line).map_err(|e| Error::invalid(format!("{what}: cannot split {line:?}: {e}")))?;
        Self::new(what, argv)
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub fn uses_file(&self) -> bool {
        self.argv.iter().any(|a| a.contains(FILE_PLACEHOLDER))
    }

    /// A copy with an extra trailing argument (the importer's force flag).
    pub fn with_arg(&self, arg: &str) -> Self {
        let mut argv = self.argv.clone();
        argv.push(arg.to_string());
        CommandSpec { argv }
    }

    /// The argv with `{file}` replaced.
    pub fn rendered(&self, file: Option<&Path>) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| match file {
                Some(f) => a.replace(FILE_PLACEHOLDER, &f.to_string_lossy()),
                None => a.clone(),
            })
            .collect()
    }

    /// The command as one line for logs.
    pub fn display(&self) -> String {
        shell_words::join(&self.argv)
    }

    /// Spawns the command. Its stdout goes to our stderr unless `stdout` says otherwise, so
    /// our own stdout stays reserved for data.
    pub fn spawn(&self, file: Option<&Path>, stdin: Stdio, stdout: Stdio) -> Result<Child> {
        let argv = self.rendered(file);
        Command::new(&argv[0])
            .args(&argv[1..])
            // Its own process group, so stopping it also stops whatever it started.
            .process_group(0)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Command(format!("cannot start {:?}: {e}", argv[0])))
    }

    /// Runs the command to completion with no data flowing through it.
    pub async fn run(&self, file: Option<&Path>) -> Result<ExitStatus> {
        let mut child = self.spawn(file, Stdio::null(), Stdio::from(std::io::stderr()))?;
        child
            .wait()
            .await
            .map_err(|e| Error::Command(format!("waiting for {:?}: {e}", self.argv[0])))
    }
}

/// A scratch directory for `{file}` commands, under `root` (default: the system temp dir).
/// It is removed when dropped, on success and failure alike.
pub fn scratch_dir(root: Option<&Path>, prefix: &str) -> Result<tempfile::TempDir> {
    let root = root.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix(prefix).tempdir_in(&root).map_err(|e| {
        Error::io(
            format!("--scratch-dir: cannot create a scratch directory in {}", root.display()),
            e,
        )
    })
}

/// Waits for a command started by [`CommandSpec::spawn`]; on SIGTERM/SIGINT stops it (and
/// its process group). `what` names it in errors ("export command").
pub async fn finish(spec: &CommandSpec, what: &str, child: &mut Child, interrupt: &mut Interrupt) -> Result<()> {
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| Error::Command(format!("waiting for the {what}: {e}")))?,
        err = interrupt.wait() => {
            kill(child).await;
            return Err(err);
        }
    };
    if !status.success() {
        return Err(Error::Command(format!(
            "{what} `{}` {}",
            spec.display(),
            describe_status(status)
        )));
    }
    Ok(())
}

/// Stops a command started by [`CommandSpec::spawn`] and everything in its process group,
/// then reaps it. Used on every failure path, so no exporter or importer outlives the job.
pub async fn kill(child: &mut Child) {
    kill_group(child.id());
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Kills the process group led by `pid` (the command's own group, see [`CommandSpec::spawn`]):
/// what the command left running in the background goes too, even after the command itself
/// was reaped.
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Describes how a command ended, for error messages.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended abnormally".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_placeholder() {
        let c = CommandSpec::new(
            "EXPORT_CMD",
            vec!["etcdctl".into(), "snapshot".into(), "save".into(), "{file}".into()],
        )
        .unwrap();
        assert!(c.uses_file());
        assert_eq!(c.rendered(Some(Path::new("/s/x")))[3], "/s/x");
        let c = CommandSpec::new("EXPORT_CMD", vec!["pg_dump".into(), "-Fc".into()]).unwrap();
        assert!(!c.uses_file());
    }

    #[test]
    fn refuses_missing_command_and_splits_lines_without_a_shell() {
        assert!(matches!(CommandSpec::new("EXPORT_CMD", vec![]), Err(Error::Invalid(_))));
        let c = CommandSpec::parse_line("--empty-check", "psql -c 'select 1; drop x' $HOME").unwrap();
        assert_eq!(c.argv(), ["psql", "-c", "select 1; drop x", "$HOME"]);
        assert!(CommandSpec::parse_line("--empty-check", "a 'b").is_err());
    }
}
