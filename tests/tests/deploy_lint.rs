//! `deploy/Dockerfile`: hadolint (from PyPI, in the harness's venv) finds
//! nothing in it nor in the e2e script's stand-in images, the image has the
//! shape the deployment docs promise (multi-stage, non-root, a health check,
//! the browser client for the chat page), and its HEALTHCHECK command, run as
//! it is against a real node, tells ready from not.
//!
//! No Docker engine is needed: building the image is `deploy/e2e/compose-e2e.sh`.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::tools::{
    self, deploy_dir, expect_success, python_tool, with_install_timeout,
};
use ioscale_cluster_tests::{NodeOpts, NodeProc, RedisServer, TestLogs, with_timeout};
use serde_json::Value;

fn dockerfile() -> Result<String> {
    let p = deploy_dir().join("Dockerfile");
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// Instruction lines of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_owned());
            }
            cur.clear();
        }
    }
    out
}

#[tokio::test]
async fn hadolint_passes_and_catches_a_bad_dockerfile() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let log = logs.file("hadolint.log");
        let hadolint = python_tool("hadolint").await?;
        let root = ioscale_cluster_tests::logs::workspace_root();
        // The image, and the e2e script's stand-ins for public base images.
        let mut files = vec!["deploy/Dockerfile".to_owned()];
        for entry in std::fs::read_dir(deploy_dir().join("e2e").join("standins"))? {
            let p = entry?.path().join("Dockerfile");
            if p.exists() {
                files.push(p.strip_prefix(&root)?.to_string_lossy().into_owned());
            }
        }
        ensure!(files.len() >= 6, "stand-in Dockerfiles missing: {files:?}");
        for f in &files {
            let out = tools::run(
                &hadolint,
                &["--no-color", f],
                &root,
                &[],
                Duration::from_secs(60),
                Some(&log),
            )
            .await?;
            expect_success(&format!("hadolint {f}"), &out, &log)?;
        }

        // The linter must be able to fail here, or the check above proves nothing.
        let bad = logs.file("Dockerfile.bad");
        std::fs::write(&bad, "FROM debian:latest\nRUN apt-get install curl\n")?;
        let out = tools::run(
            &hadolint,
            &["--no-color", &bad.to_string_lossy()],
            &root,
            &[],
            Duration::from_secs(60),
            Some(&log),
        )
        .await?;
        ensure!(
            !out.success() && out.stdout.contains("DL3007") && out.stdout.contains("DL3008"),
            "hadolint must flag an unpinned base image and unpinned packages: {}",
            out.text()
        );
        Ok(())
    })
    .await
}

#[test]
fn image_shape() -> Result<()> {
    let text = dockerfile()?;
    let ins = instructions(&text);
    let from: Vec<&String> = ins.iter().filter(|l| l.starts_with("FROM ")).collect();
    ensure!(from.len() >= 2, "multi-stage build expected, got {from:?}");
    ensure!(
        from.last()
            .is_some_and(|l| l.contains("debian:") && l.contains("-slim")),
        "the runtime stage must be a slim Debian: {from:?}"
    );
    ensure!(
        from.iter()
            .any(|l| l.contains("rust:") && l.contains(" AS builder")),
        "a Rust builder stage expected: {from:?}"
    );
    // The legacy builder (and so this repository's e2e script) knows no BuildKit flags.
    ensure!(
        !text.contains("--mount=") && !text.contains("# syntax="),
        "BuildKit-only syntax"
    );
    let user: Vec<&String> = ins.iter().filter(|l| l.starts_with("USER ")).collect();
    let last_user = user.last().context("a USER instruction")?;
    ensure!(
        !last_user.contains("root") && !last_user.ends_with(" 0") && !last_user.contains(" 0:"),
        "the node must not run as root: {last_user}"
    );
    ensure!(
        ins.iter().filter(|l| l.starts_with("HEALTHCHECK ")).count() == 1,
        "exactly one HEALTHCHECK"
    );
    ensure!(
        ins.iter().any(|l| l.starts_with("COPY --from=client ")
            && l.contains("socket.io-client/dist/socket.io.min.js")),
        "the image must carry the browser client for /socket.io/socket.io.js"
    );
    ensure!(
        ins.iter()
            .any(|l| l.starts_with("ENV ") && l.contains("IOSCALE_CLIENT_SCRIPT=")),
        "IOSCALE_CLIENT_SCRIPT must point the node at the copied client"
    );
    let ignore = std::fs::read_to_string(
        ioscale_cluster_tests::logs::workspace_root().join(".dockerignore"),
    )
    .context("a .dockerignore at the build context (the repository root)")?;
    for must in ["target/", "node_modules/", ".git/"] {
        ensure!(ignore.contains(must), ".dockerignore must exclude {must}");
    }
    Ok(())
}

/// The HEALTHCHECK's exec-form command (`CMD ["bash", "-c", "…"]`).
fn healthcheck_command(text: &str) -> Result<Vec<String>> {
    let ins = instructions(text);
    let hc = ins
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .context("a HEALTHCHECK")?;
    let json = &hc[hc.find("CMD [").context("exec-form CMD")? + 4..];
    let cmd: Vec<Value> = serde_json::from_str(json).with_context(|| format!("parsing {json}"))?;
    cmd.into_iter()
        .map(|v| v.as_str().map(str::to_owned).context("string arguments"))
        .collect()
}

#[tokio::test]
async fn healthcheck_command_tells_ready_from_not() -> Result<()> {
    with_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cmd = healthcheck_command(&dockerfile()?)?;
        ensure!(cmd.len() >= 2, "healthcheck {cmd:?}");
        let (program, args) = (cmd[0].clone(), cmd[1..].to_vec());
        let run = |listen: String| {
            let (program, args) = (program.clone(), args.clone());
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                tools::run(
                    std::path::Path::new(&program),
                    &args,
                    &std::env::temp_dir(),
                    &[("IOSCALE_LISTEN", &listen)],
                    Duration::from_secs(10),
                    None,
                )
                .await
            }
        };

        let mut redis = RedisServer::start_with(&logs, &[]).await?;
        let node = NodeProc::start_in(&logs, NodeOpts::new("hc").with_redis(redis.url())).await?;
        // The image listens on 0.0.0.0:PORT; the check only uses the port.
        let listen = format!("0.0.0.0:{}", node.addr().port());
        let out = run(listen.clone()).await?;
        ensure!(out.success(), "a ready node must pass: {}", out.text());

        // Redis gone: /readyz answers 503 and the check must fail.
        redis.kill();
        let mut failed = false;
        for _ in 0..50 {
            if !run(listen.clone()).await?.success() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(failed, "the check must fail while the node is not ready");

        // Nothing listening at all.
        let free = ioscale_cluster_tests::redis::free_port()?;
        let out = run(format!("0.0.0.0:{free}")).await?;
        ensure!(!out.success(), "the check must fail when nothing listens");
        Ok(())
    })
    .await
}
