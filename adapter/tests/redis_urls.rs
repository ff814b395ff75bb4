//! The adapter connects with every kind of Redis URL it documents, against real `redis-server`
//! processes: a password-protected server, a Sentinel-monitored master, and a wrong password
//! (not ready, no panic). Also: an unparsable URL is a clear error.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ioscale_adapter::{AdapterConfig, Cluster};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("redis-urls");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

fn wait_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis(args: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let dir = log_dir();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", dir.to_str().unwrap()])
        .args([
            "--logfile",
            dir.join(format!("redis-{port}.log")).to_str().unwrap(),
        ])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    wait_port(port);
    (Proc(child), port)
}

async fn connect(url: String, wait: Duration) -> ioscale_adapter::Result<Cluster> {
    let config = AdapterConfig::new(url)
        .with_node_id("url-test")
        .with_connect_wait(wait);
    Cluster::connect(config).await
}

#[tokio::test]
async fn password_url_connects() {
    let (_redis, port) = redis(&["--requirepass", "s3cret"]);
    let cluster = connect(
        format!("redis://:s3cret@127.0.0.1:{port}"),
        Duration::from_secs(5),
    )
    .await
    .expect("valid url");
    assert!(cluster.is_ready());
    assert!(!cluster.is_sharded());
    cluster.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_not_ready_and_does_not_panic() {
    let (_redis, port) = redis(&["--requirepass", "s3cret"]);
    let cluster = connect(
        format!("redis://:wrong@127.0.0.1:{port}"),
        Duration::from_millis(800),
    )
    .await
    .expect("the url itself is valid");
    assert!(!cluster.is_ready());
    cluster.shutdown().await;
}

#[tokio::test]
async fn sentinel_url_finds_the_master() {
    let (_master, master_port) = redis(&[]);
    let sentinel_port = free_port();
    let dir = log_dir();
    let conf = dir.join(format!("sentinel-{sentinel_port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor ioscale 127.0.0.1 {master_port} 1\n"
        ),
    )
    .expect("sentinel config");
    let _sentinel = Proc(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .args([
                "--logfile",
                dir.join(format!("sentinel-{sentinel_port}.log"))
                    .to_str()
                    .unwrap(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel"),
    );
    wait_port(sentinel_port);
    let cluster = connect(
        format!("redis-sentinel://127.0.0.1:{sentinel_port}?sentinelServiceName=ioscale"),
        Duration::from_secs(5),
    )
    .await
    .expect("valid sentinel url");
    assert!(
        cluster.is_ready(),
        "connected to the master through sentinel"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn rediss_url_is_accepted() {
    // No TLS server here: the URL must parse and the node start not ready, retrying.
    let port = free_port();
    let cluster = connect(
        format!("rediss://127.0.0.1:{port}"),
        Duration::from_millis(300),
    )
    .await
    .expect("rediss is a valid scheme");
    assert!(!cluster.is_ready());
    cluster.shutdown().await;
}

#[tokio::test]
async fn unparsable_url_is_a_clear_error() {
    let err = connect("http://nope".into(), Duration::from_millis(100))
        .await
        .expect_err("not a redis url");
    assert!(err.to_string().contains("redis"), "{err}");
}
