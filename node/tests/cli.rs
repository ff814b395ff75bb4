//! The `ioscale-node` binary's command line: bad configuration fails with a clear message,
//! and a node alone (the embedded default) starts, serves health and the API, and stops on
//! SIGTERM. Being an integration test of this package, it also makes `cargo nextest run`
//! build the binary the cluster tests start.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_ioscale-node");

#[test]
fn rejects_a_bad_node_id_with_a_message() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--node-id", "a#b"])
        .output()
        .expect("run ioscale-node");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--node-id"), "{text}");
}

#[test]
fn rejects_an_unparsable_listen_address() {
    let out = Command::new(BIN)
        .args(["--listen", "not-an-address"])
        .output()
        .expect("run ioscale-node");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn runs_alone_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--node-id", "solo"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ioscale-node");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("bound_addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the node logs its bound address");
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let ready = get("/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // No key given: the server API is off, not open.
    let nodes = get("/api/v1/nodes");
    assert!(
        nodes.starts_with("HTTP/1.1 404") && nodes.contains("server API is off"),
        "{nodes}"
    );
    let metrics = get("/metrics");
    assert!(
        metrics.contains("ioscale_adapter_broadcasts_published_total 0"),
        "{metrics}"
    );

    let pid = child.id() as i32;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "node did not exit within 8 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
