//! Certificate rotation end to end on a real Envoy (issue 8 item 7): `certbind-authz pki
//! rotate` replaces the consumer's and the sidecar's certificates while the real consumer calls
//! without pause; Envoy rereads them through file-based SDS (same pid, new certificate served),
//! no request fails, a token bound to the replaced client certificate is refused, and a broken
//! rotation leaves Envoy serving the pair it had.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_demo::authz::IssuedToken;
use certbind_demo::consumer::{CallResult, Consumer, ConsumerConfig, plan};
use certbind_tests::client::read_certs;
use certbind_tests::envoy::Admin;
use certbind_tests::{Request, Response, System};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The certificate `addr` serves in its handshake (we present `identity`'s certificate, which
/// the sidecar listeners require).
fn served_cert(pki: &Path, addr: SocketAddr, identity: &str) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&pki.join("ca.crt")).unwrap() {
        roots.add(ca).unwrap();
    }
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{identity}.key"))).unwrap();
    let chain = read_certs(&pki.join(format!("{identity}.crt"))).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    let conn = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost").unwrap().to_owned(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn file_cert(pki: &Path, name: &str) -> CertificateDer<'static> {
    read_certs(&pki.join(format!("{name}.crt"))).unwrap()[0].clone()
}

/// The serial number of a DER certificate in lower-case hex, as Envoy's `/certs` prints it:
/// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial INTEGER, ... } }.
fn serial_hex(der: &[u8]) -> String {
    /// (tag, content, rest) of the DER element at the start of `b`.
    fn element(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = b[0];
        let (len, start) = if b[1] < 0x80 {
            (usize::from(b[1]), 2)
        } else {
            let n = usize::from(b[1] & 0x7f);
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |acc, x| acc << 8 | usize::from(*x));
            (len, 2 + n)
        };
        (tag, &b[start..start + len], &b[start + len..])
    }
    let (_, cert, _) = element(der);
    let (_, tbs, _) = element(cert);
    let (tag, content, rest) = element(tbs);
    let serial = if tag == 0xa0 {
        element(rest).1
    } else {
        content
    };
    let serial = serial.strip_prefix(&[0u8]).unwrap_or(serial);
    serial.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every serial number in Envoy's admin `/certs` (the certificates it serves and presents).
fn admin_serials(admin: &Admin) -> String {
    certbind_tests::client::http_plain(admin.addr(), &Request::get("/certs"))
        .unwrap()
        .text()
}

fn reason(r: &Response) -> String {
    r.json_str("reason").unwrap_or_default()
}

/// Waits until `orders`'s listener serves the certificate now in `orders.crt`.
fn until_served(system: &System, within: Duration) -> Duration {
    let start = Instant::now();
    let want = file_cert(system.pki_dir(), "orders");
    loop {
        if served_cert(system.pki_dir(), system.sidecar("orders"), "inventory") == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "Envoy still serves the old orders certificate after {within:?}\n{}",
            system.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request_or_an_envoy_restart() {
    let system = System::builder().concurrency(2).start();
    let pki = system.pki_dir().to_path_buf();
    let pid = system.envoy_pid();
    let served_before = served_cert(&pki, system.sidecar("orders"), "inventory");
    assert_eq!(served_before, file_cert(&pki, "orders"));
    // A token bound to the consumer's certificate as it is before any rotation.
    let old_token = system.token("consumer", "orders", "orders:read").unwrap();
    let r = system
        .call(
            Some("consumer"),
            "orders",
            &Request::get("/orders/1").bearer(&old_token),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let stop = AtomicBool::new(false);
    let config = ConsumerConfig {
        authz: system.authz_addr(),
        orders: system.sidecar("orders"),
        billing: system.sidecar("billing"),
        pki_dir: pki.clone(),
        name: "consumer".into(),
        rounds: 1,
        interval: Duration::ZERO,
        least_privilege: true,
        dpop: None,
    };
    let (results, reloads, rotations) = std::thread::scope(|s| {
        // The real consumer, calling its whole plan (orders and billing, allowed and a 403)
        // without pause, one new TLS connection per call.
        let load = s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut consumer = Consumer::new(config).unwrap();
                let mut results: Vec<CallResult> = Vec::new();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for call in &plan(true) {
                        results.push(consumer.call(round, call).await);
                    }
                }
                (results, consumer.certificate_reloads())
            })
        });
        let mut rotations = Vec::new();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(1500));
            rotations.push(system.rotate_certs(&[]).unwrap());
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let (results, reloads) = load.join().unwrap();
        (results, reloads, rotations)
    });
    let failed: Vec<String> = results.iter().filter(|c| !c.ok).map(|c| c.line()).collect();
    println!(
        "{} consumer calls during two rotations of consumer, orders, billing and envoy: {} failed, {} certificate reloads, {} retried after a 401\n{}",
        results.len(),
        failed.len(),
        reloads,
        results.iter().filter(|c| c.retried).count(),
        rotations.join("")
    );
    assert!(
        results.len() >= 20,
        "too little load: {} calls",
        results.len()
    );
    assert!(
        failed.is_empty(),
        "failed calls:\n{}\n{}",
        failed.join("\n"),
        system.logs_tail(20)
    );
    assert_eq!(reloads, 2, "the consumer picks up each rotation once");

    // Envoy was not restarted and serves (and presents) the new certificates.
    assert_eq!(system.envoy_pid(), pid, "Envoy was restarted");
    until_served(&system, Duration::from_secs(5));
    let served = served_cert(&pki, system.sidecar("orders"), "inventory");
    assert_ne!(served, served_before);
    let certs = admin_serials(&system.admin());
    for name in ["orders", "billing", "envoy"] {
        let serial = serial_hex(&file_cert(&pki, name));
        assert!(
            certs.contains(&serial),
            "/certs lacks {name}'s new serial {serial}:\n{certs}"
        );
        assert!(rotations[1].contains(&serial), "{}", rotations[1]);
    }
    assert!(!certs.contains(&serial_hex(&served_before)), "{certs}");

    // The token bound to the consumer's old certificate, on a connection with its new one:
    // refused. A token for the new certificate: admitted.
    let r = system
        .call(
            Some("consumer"),
            "orders",
            &Request::get("/orders/1").bearer(&old_token),
        )
        .unwrap();
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (401, "binding_mismatch"),
        "{}",
        r.text()
    );
    let fresh = system.token("consumer", "orders", "orders:read").unwrap();
    let r = system
        .call(
            Some("consumer"),
            "orders",
            &Request::get("/orders/1").bearer(&fresh),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn the_consumer_recovers_from_a_binding_mismatch_with_one_new_token() {
    let system = System::builder().start();
    let config = ConsumerConfig {
        authz: system.authz_addr(),
        orders: system.sidecar("orders"),
        billing: system.sidecar("billing"),
        pki_dir: system.pki_dir().to_path_buf(),
        name: "consumer".into(),
        rounds: 1,
        interval: Duration::ZERO,
        least_privilege: false,
        dpop: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut consumer = Consumer::new(config).unwrap();
        let call = &plan(false)[0];
        let first = consumer.call(1, call).await;
        assert!(first.ok, "{}", first.line());
        // A token for the consumer's certificate as it is now, then a rotation of that
        // certificate: what a rotation leaves behind in a cache.
        let stale = system.token("consumer", "orders", "orders:read").unwrap();
        system.rotate_certs(&["consumer"]).unwrap();
        let r = system
            .call(
                Some("consumer"),
                "orders",
                &Request::get("/orders/1").bearer(&stale),
            )
            .unwrap();
        assert_eq!((r.status, reason(&r).as_str()), (401, "binding_mismatch"));
        let mismatches = system.counter("certbind.denied.binding_mismatch").unwrap();
        // The consumer's next call: new pair loaded, the old token dropped, 200.
        let next = consumer.call(2, call).await;
        assert!(next.ok, "{}", next.line());
        assert_eq!(consumer.certificate_reloads(), 1);
        assert!(next.fresh_token && next.new_certificate, "{}", next.line());
        // A token bound to the old certificate still in its cache (as if fetched just before
        // the reload): the sidecar answers 401 binding_mismatch, the consumer fetches a new
        // token once and the call passes.
        consumer.tokens_mut().insert(
            "orders",
            "orders:read",
            IssuedToken {
                access_token: stale,
                scope: "orders:read".into(),
                issued_at: certbind_tests::tokens::now(),
                expires_in: 300,
            },
        );
        let retried = consumer.call(3, call).await;
        assert!(
            retried.ok && retried.retried && retried.fresh_token,
            "{}",
            retried.line()
        );
        assert_eq!(retried.status, Some(200));
        assert_eq!(
            system.counter("certbind.denied.binding_mismatch").unwrap(),
            mismatches + 1,
            "the retry followed a binding_mismatch"
        );
    });
}

#[test]
fn a_broken_rotation_leaves_envoy_serving_the_pair_it_had() {
    let system = System::builder().start();
    let pki = system.pki_dir().to_path_buf();
    let token = system.token("consumer", "orders", "orders:read").unwrap();
    let get = || {
        system
            .call(
                Some("consumer"),
                "orders",
                &Request::get("/orders/1").bearer(&token),
            )
            .unwrap()
    };
    let before = served_cert(&pki, system.sidecar("orders"), "consumer");
    let failed_before = system
        .admin()
        .stats()
        .unwrap()
        .get("sds.orders.key_rotation_failed")
        .copied()
        .unwrap_or(0);
    let replace = |name: &str, body: &[u8]| {
        let tmp = pki.join(format!(".{name}.broken"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, pki.join(name)).unwrap();
    };
    // Half a pair: another workload's key beside orders' certificate.
    replace(
        "orders.key",
        &std::fs::read(pki.join("billing.key")).unwrap(),
    );
    // A truncated certificate.
    let crt = std::fs::read(pki.join("orders.crt")).unwrap();
    replace("orders.crt", &crt[..crt.len() / 2]);
    // Envoy counts both refusals and keeps serving what it had.
    let start = Instant::now();
    loop {
        let failed = system.admin().stats().unwrap()["sds.orders.key_rotation_failed"];
        if failed >= failed_before + 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "key_rotation_failed stayed at {failed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        served_cert(&pki, system.sidecar("orders"), "consumer"),
        before
    );
    let r = get();
    assert_eq!(r.status, 200, "{}", r.text());
    // A proper rotation afterwards is picked up.
    system.rotate_certs(&["orders"]).unwrap();
    until_served(&system, Duration::from_secs(5));
    assert_ne!(
        served_cert(&pki, system.sidecar("orders"), "consumer"),
        before
    );
    assert_eq!(get().status, 200);
}
