//! Child processes: each in its own process group, so that a timeout or a Ctrl-C takes down the
//! whole tree (vng → qemu, make → gcc) and nothing outlives `lab`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Context;

static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once the user interrupted lab: errors that follow are consequences, not causes.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Remember a live process group so an interrupt can kill it.
pub fn register(pgid: i32) {
    GROUPS.lock().unwrap().insert(pgid);
}

pub fn unregister(pgid: i32) {
    GROUPS.lock().unwrap().remove(&pgid);
}

/// SIGKILL a process group; a group already gone is not an error.
pub fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP, kill every registered group and exit 130. Staging directories left behind
/// are never mistaken for cache entries (see `cache`), so exiting here loses nothing.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let groups: Vec<i32> = GROUPS.lock().map(|g| g.iter().copied().collect()).unwrap_or_default();
        for pgid in groups {
            kill_group(pgid);
        }
        eprintln!("\nlab: interrupted; child processes killed, nothing was added to the cache");
        std::process::exit(130);
    });
}

/// A duct expression for `program args...`, started in a process group of its own.
pub fn command<I, S>(program: &str, args: I) -> duct::Expression
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    duct::cmd(program, args).before_spawn(|cmd| {
        cmd.process_group(0);
        Ok(())
    })
}

/// Set up a std Command the same way (used where separate stdout/stderr pipes are needed).
pub fn in_own_group(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.process_group(0)
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run `expr` with stdout and stderr merged, appending every line to `log` and handing it to
/// `on_line`. A non-zero exit becomes an error carrying the last lines of output.
pub fn run_logged(expr: duct::Expression, log: &Path, mut on_line: impl FnMut(&str)) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let reader = expr.stderr_to_stdout().stdin_null().unchecked().reader().context("cannot start process")?;
    let pids = reader.pids();
    let pgid = pids.first().copied().unwrap_or(0) as i32;
    register(pgid);
    let mut recent: std::collections::VecDeque<String> = Default::default();
    let mut buffered = BufReader::new(&reader);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match buffered.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches('\n');
                let _ = writeln!(file, "{line}");
                on_line(line);
                recent.push_back(line.to_string());
                if recent.len() > 60 {
                    recent.pop_front();
                }
            }
            Err(e) => {
                unregister(pgid);
                return Err(e).context("reading process output");
            }
        }
    }
    let output = reader.try_wait().context("waiting for process")?.map(|o| o.status);
    unregister(pgid);
    kill_group(pgid);
    match output {
        Some(status) if status.success() => Ok(()),
        other => {
            let tail: Vec<String> = recent.into_iter().collect();
            anyhow::bail!(
                "{} (full log: {})\n--- last {} lines ---\n{}",
                match other {
                    Some(s) => format!("exited with {s}"),
                    None => "did not exit".to_string(),
                },
                log.display(),
                tail.len(),
                tail.join("\n")
            )
        }
    }
}

/// Run a short command and return its trimmed stdout, or an error naming the command.
pub fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}`"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run `cargo ARGS --message-format=json-render-diagnostics` in `project` (diagnostics go to the
/// terminal) and return its compiler-artifact messages: how the lab finds the binaries it runs in guests.
pub fn cargo_artifacts(project: &Path, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = std::process::Command::new("cargo")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(project)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    anyhow::ensure!(out.status.success(), "`cargo {}` failed; see above", args.join(" "));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut seen = 0;
        let err = run_logged(
            command("sh", ["-c", "for i in $(seq 1 100); do echo line$i; done; echo oops >&2; exit 3"]),
            &log,
            |_| seen += 1,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(seen, 101);
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("line100\noops"), "{err}");
        assert!(!err.contains("line10\n"), "only the tail is shown: {err}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("line1\n"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
