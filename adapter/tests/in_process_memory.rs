//! What cluster-wide joins leave behind in memory, counted by jemalloc in this test binary:
//! a join that matched no socket must leave nothing on any node (Sails introduces every new
//! record to its class room's sockets; most nodes hold none of them).

mod support;

use std::time::Duration;

use support::*;
use tokio::time::{sleep, timeout};

// jemalloc, for its count of the bytes the process holds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated and not freed, by jemalloc's count.
fn held() -> isize {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats") as isize
}

const JOINS: usize = 5_000;

/// Joins the members of an empty room to `JOINS` new rooms, from one node of two; returns the
/// bytes still held afterwards, once everything settled.
async fn held_after_empty_joins(nodes: &[Node], from: usize) -> isize {
    for i in 0..JOINS {
        timeout(
            WAIT,
            nodes[0]
                .io
                .to("sails:todos")
                .join(format!("sails:todos:{}", from + i)),
        )
        .await
        .expect("join answered in time")
        .expect("join confirmed by every node");
    }
    // Requests and their answers are dropped once every node answered; give stragglers a beat.
    sleep(Duration::from_millis(300)).await;
    held()
}

#[tokio::test]
async fn a_join_that_matched_no_socket_leaves_nothing_behind() {
    let (_bus, nodes) = nodes_with(&["a", "b"], |c| c).await;
    // A first round warms every map and buffer up to its working size.
    let warm = held_after_empty_joins(&nodes, 0).await;
    let after = held_after_empty_joins(&nodes, JOINS).await;
    let per_join = (after - warm) as f64 / JOINS as f64;
    // socketioxide alone keeps an empty room entry per join and node (about 100 bytes each,
    // 200 a join here); what is left must be noise.
    assert!(
        per_join < 20.0,
        "{per_join:.0} bytes per join still held ({warm} → {after})"
    );
}
