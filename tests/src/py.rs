//! The Python client of the dialect tests: python-socketio, an independent Socket.IO
//! implementation, running `tests/py/dialects_client.py` against the cluster.
//!
//! The venv lives in `target/py-venv`, created on first use from the pinned
//! `tests/py/requirements.txt` under a file lock (nextest runs tests as parallel processes)
//! and stamped with the requirements it holds, so a changed pin reinstalls.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::logs::{TestLogs, target_dir, workspace_root};

/// Longest venv creation plus `pip install` (a cold machine downloads the wheels).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);

/// `tests/py`
pub fn py_dir() -> PathBuf {
    workspace_root().join("tests").join("py")
}

/// `target/py-venv`
pub fn venv_dir() -> PathBuf {
    target_dir().join("py-venv")
}

fn step(program: &Path, args: &[&str], deadline: std::time::Instant) -> Result<()> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    // Read the pipes on threads so a chatty pip cannot block on a full pipe.
    let mut out = child.stdout.take().context("piped stdout")?;
    let mut err = child.stderr.take().context("piped stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {INSTALL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
    );
    if !status.success() {
        bail!("`{shown}` failed ({status}):\n{out}{err}");
    }
    Ok(())
}

/// The venv's python, creating the venv first if it is missing or holds other requirements.
///
/// # Errors
/// If `python3 -m venv` or `pip install` fails (is python3-venv installed?) or takes too long.
pub async fn venv_python() -> Result<PathBuf> {
    let requirements = py_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".ioscale-requirements");
    let ready = {
        let (stamp, python, wanted) = (stamp.clone(), python.clone(), wanted.clone());
        move || python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
    };
    if ready() {
        return Ok(python);
    }
    let python_out = python.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        std::fs::create_dir_all(target_dir())?;
        let lock_path = target_dir().join(".ioscale-py-venv.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock().context("locking the python venv")?;
        if ready() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + INSTALL_TIMEOUT;
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("removing the stale {}", venv.display()))?;
        }
        let venv_arg = venv.to_string_lossy().into_owned();
        step(Path::new("python3"), &["-m", "venv", &venv_arg], deadline)
            .context("creating the venv (on Debian: apt-get install python3-venv)")?;
        let req_arg = requirements.to_string_lossy().into_owned();
        step(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                &req_arg,
            ],
            deadline,
        )?;
        std::fs::write(&stamp, &wanted)?;
        Ok(())
    })
    .await
    .context("venv task panicked")??;
    Ok(python_out)
}

/// What a script run printed.
#[derive(Debug, Clone)]
pub struct PyRun {
    /// Exit code (`None` when killed).
    pub code: Option<i32>,
    /// Standard output (the script's JSON report).
    pub stdout: String,
    /// Standard error (its diagnostics).
    pub stderr: String,
}

/// Runs `tests/py/<script> args…` with the venv's python, killed after `timeout`; its output
/// is also saved as `<script>.log` in the test's log directory.
///
/// # Errors
/// If it cannot start or does not finish in time.
pub async fn run_script(
    logs: &TestLogs,
    script: &str,
    args: &[String],
    timeout: Duration,
) -> Result<PyRun> {
    let python = venv_python().await?;
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(py_dir().join(script))
        .args(args)
        .current_dir(py_dir())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{script} did not finish within {timeout:?}"))?
        .with_context(|| format!("running {script}"))?;
    let run = PyRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let _ = std::fs::write(
        logs.file(&format!("{script}.log")),
        format!(
            "{script} {args:?}\n(exit {:?})\n--- stdout\n{}\n--- stderr\n{}\n",
            run.code, run.stdout, run.stderr
        ),
    );
    Ok(run)
}
