//! The Helm chart's security settings: secure by default (JWT auth with a
//! generated secret mounted as a file, a generated API key, metrics and the
//! server API on an `admin` port that only a ClusterIP Service of its own
//! exposes, an ingress that routes to `http` only, no well-known password
//! anywhere), and still so with the values that change the credentials: an
//! existing Secret in place of the chart's, and `auth: none`.
//!
//! The invariants themselves are `ioscale_cluster_tests::helm`'s
//! `check_secure_by_default` and `check_jwt`, which `helm_chart.rs` holds every
//! other rendering to.

use anyhow::{Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::helm::{
    RELEASE, chart_dir, check_jwt, check_node_deployment, check_secure_by_default, env_var, find,
    kinds, node_setting, render_and_validate,
};
use ioscale_cluster_tests::tools::with_install_timeout;

#[tokio::test]
async fn existing_secret_replaces_the_charts_secret() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let values = chart_dir().join("ci").join("existing-secret-values.yaml");
        let docs =
            render_and_validate(&logs, "existing-secret", &["-f", &values.to_string_lossy()])
                .await?;
        let full = format!("{RELEASE}-ioscale");
        ensure!(
            !docs.iter().any(|d| d["kind"] == "Secret"),
            "no Secret when existingSecret is set: {:?}",
            kinds(&docs)
        );
        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, "ioscale-credentials")?;
        check_secure_by_default(&docs, &full)?;
        check_jwt(&docs, &full, "ioscale-credentials", Some("/pubsub"))?;
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        ensure!(
            env_var(c, "IOSCALE_API_KEY")
                .is_some_and(|e| e["valueFrom"]["secretKeyRef"]["name"] == "ioscale-credentials"),
            "the API key must come from the existing Secret"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn auth_none_renders_without_a_jwt_secret() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let values = chart_dir().join("ci").join("no-auth-values.yaml");
        let docs =
            render_and_validate(&logs, "no-auth", &["-f", &values.to_string_lossy()]).await?;
        let full = format!("{RELEASE}-ioscale");
        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, &full)?;
        // The API and the metrics stay on the admin port without connection auth too.
        check_secure_by_default(&docs, &full)?;
        let pod = &dep["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        ensure!(
            node_setting(&docs, c, "IOSCALE_AUTH").as_deref() == Some("none"),
            "IOSCALE_AUTH must say none"
        );
        for name in ["IOSCALE_AUTH_NAMESPACES", "IOSCALE_JWT_SECRET_FILE"] {
            ensure!(
                node_setting(&docs, c, name).is_none(),
                "{name} must not be set without auth"
            );
        }
        ensure!(
            pod["volumes"].is_null() && c["volumeMounts"].is_null(),
            "no JWT secret volume without auth: {}",
            pod["volumes"]
        );
        let secret = find(&docs, "Secret", &full)?;
        ensure!(
            secret["stringData"]["jwt-secret"].is_null()
                && secret["stringData"]["api-key"]
                    .as_str()
                    .is_some_and(|k| k.len() >= 32),
            "without auth: an API key, no JWT secret: {:?}",
            secret["stringData"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
        );
        Ok(())
    })
    .await
}
