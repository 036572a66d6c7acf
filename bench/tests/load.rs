//! The load generator against an in-process HTTP server: statuses are told apart, and the open
//! loop charges the wait behind a slow answer to the requests that waited (no coordinated
//! omission); its pacer hands out every turn in order, never early.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use certbind_bench::load::{self, Mode, Target, Tokens};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A plain-HTTP server on a free port in its own thread: 200 for `Bearer good`, else 401, after
/// `delay`.
// A test helper outside #[test]: a server that cannot start must fail the test loudly.
#[allow(clippy::unwrap_used)]
fn server(delay: Duration) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new().fallback(move |headers: HeaderMap| async move {
                tokio::time::sleep(delay).await;
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer good") => StatusCode::OK,
                    _ => StatusCode::UNAUTHORIZED,
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn target(addr: SocketAddr, token: &str) -> Target {
    Target {
        addr,
        tls: None,
        path: "/orders/1".into(),
        tokens: Some(Tokens::Same(Arc::from(token))),
    }
}

#[test]
fn closed_loop_counts_only_200_answers_as_ok() {
    let addr = server(Duration::ZERO);
    let good = load::run(
        &target(addr, "good"),
        Mode::Closed { connections: 2 },
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(
        good.ok > 10 && good.bad_status == 0 && good.errors == 0,
        "{good:?}"
    );
    let bad = load::run(
        &target(addr, "bad"),
        Mode::Closed { connections: 2 },
        Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(bad.ok, 0);
    assert!(bad.bad_status > 10);
    assert_eq!(bad.first_error.as_deref(), Some("status 401"));
}

#[test]
fn open_loop_offers_the_rate_it_was_asked_for() {
    let addr = server(Duration::ZERO);
    let r = load::run(
        &target(addr, "good"),
        Mode::Open {
            connections: 4,
            rate: 200.0,
        },
        Duration::from_millis(500),
    )
    .unwrap();
    assert!(
        (90..=110).contains(&r.ok),
        "{} answers at 200 rps for 0.5 s",
        r.ok
    );
}

#[test]
fn open_loop_latency_includes_the_wait_behind_slow_answers() {
    // One connection, 50 ms per answer, 100 requests/s offered for 0.5 s: 50 requests, each
    // queued behind the previous ones. A closed-loop clock would say 50 ms for all of them.
    let addr = server(Duration::from_millis(50));
    let r = load::run(
        &target(addr, "good"),
        Mode::Open {
            connections: 1,
            rate: 100.0,
        },
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(r.ok, 50);
    assert!(
        r.quantile_us(0.5) > 500_000,
        "median {} µs",
        r.quantile_us(0.5)
    );
    assert!(
        r.quantile_us(0.99) > 1_500_000,
        "p99 {} µs",
        r.quantile_us(0.99)
    );
}

#[test]
fn the_pacer_hands_out_every_turn_in_order_never_early() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let period = Duration::from_micros(200);
    let start = Instant::now();
    let turns = runtime.block_on(async {
        let pacer = load::Pacer::start(start, period, 50);
        let mut turns = Vec::new();
        while let Some(turn) = pacer.next().await {
            turns.push(turn);
        }
        turns
    });
    assert_eq!(turns.len(), 50);
    for (k, t) in turns.iter().enumerate() {
        assert_eq!(t.intended, start + period * k as u32, "turn {k}");
        assert!(t.clock_from >= t.intended, "turn {k} handed out early");
    }
    // 50 turns 200 µs apart take ~10 ms: not bunched into the millisecond ticks of a timer wheel.
    let spread = turns.last().unwrap().clock_from - turns.first().unwrap().clock_from;
    assert!(spread >= period * 49, "50 turns within {spread:?}");
}

#[test]
fn a_turn_taken_late_starts_its_clock_at_the_intended_time() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let turn = runtime.block_on(async {
        let pacer = load::Pacer::start(start, Duration::from_millis(1), 1);
        // Busy past the turn's time: a worker held back by an earlier slow answer.
        std::thread::sleep(Duration::from_millis(20));
        pacer.next().await.unwrap()
    });
    assert_eq!(turn.clock_from, turn.intended);
    assert_eq!(turn.intended, start);
}

#[test]
fn a_dead_server_is_an_error_count_not_a_hang() {
    let port = certbind_tests::ports::free_port().unwrap();
    let addr = certbind_tests::ports::loopback(port);
    let r = load::run(
        &target(addr, "good"),
        Mode::NewConn { workers: 1 },
        Duration::from_millis(100),
    )
    .unwrap();
    assert_eq!(r.ok, 0);
    assert!(r.errors > 0);
    assert!(r.first_error.unwrap().contains("connect"));
}
