//! ES256 through Envoy's own BoringSSL (`verify_signature`), end to end: the real Envoy loads
//! the real `.wasm`, whose start-up probe must find the foreign function working, and tokens
//! whose signatures exercise the r‖s → DER conversion go through it: Wycheproof's classes
//! (minimal INTEGERs with and without a leading zero, the other valid `s`, zero and
//! out-of-range scalars, wrong lengths, a DER signature where JWS wants r‖s) re-made with the
//! authz-server's real key, since the Wycheproof messages are not JWS signing inputs.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_tests::tokens::{Forge, b64url};
use certbind_tests::{Request, Response, System};
use std::sync::OnceLock;

fn shared() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| System::builder().start())
}

/// The P-256 group order n.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `n - v` for 0 < v < n, big-endian.
fn order_minus(v: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(ORDER[i]) - i16::from(v[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    out
}

/// A fresh consumer → orders token as (signing input, r‖s).
fn signed(f: &Forge) -> (String, [u8; 64]) {
    let token = f.token("consumer", "orders", "orders:read").unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = base64_decode(sig);
    (input.to_owned(), sig.try_into().unwrap())
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// Signs fresh tokens until `wanted(r‖s)` holds (a leading zero byte: ~1 in 256).
fn signed_where(f: &Forge, wanted: impl Fn(&[u8; 64]) -> bool) -> (String, [u8; 64]) {
    (0..20_000)
        .map(|_| signed(f))
        .find(|(_, sig)| wanted(sig))
        .expect("no such signature in 20,000 tries")
}

fn send(s: &System, input: &str, sig: &[u8]) -> Response {
    let token = format!("{input}.{}", b64url(sig));
    s.call(
        Some("consumer"),
        "orders",
        &Request::get("/orders/1").bearer(&token),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail(20)))
}

fn verdict(r: &Response) -> String {
    match r.status {
        200 => "admitted".into(),
        _ => r.json().map_or_else(
            |_| format!("{} {}", r.status, r.text()),
            |j| j["reason"].as_str().unwrap_or_default().to_owned(),
        ),
    }
}

#[test]
fn envoy_probes_its_verify_signature_and_uses_it() {
    let s = shared();
    let f = s.forge().unwrap();
    let (input, sig) = signed(&f);
    assert_eq!(verdict(&send(s, &input, &sig)), "admitted");
    assert_eq!(
        s.counter("certbind.es256.in_module").unwrap(),
        0,
        "a VM fell back to p256 inside the module:\n{}",
        s.logs_tail(20)
    );
    assert!(
        !s.envoy_log().contains("verified inside the module"),
        "the probe refused Envoy's verify_signature"
    );
}

#[test]
fn admits_every_valid_encoding_class_through_boringssl() {
    let s = shared();
    let f = s.forge().unwrap();
    let cases: Vec<(&str, (String, [u8; 64]))> = vec![
        (
            "r with its high bit set (DER needs a leading 0x00)",
            signed_where(&f, |g| g[0] >= 0x80),
        ),
        (
            "r below its high bit (no padding)",
            signed_where(&f, |g| g[0] < 0x80),
        ),
        (
            "r with a leading zero byte (shorter INTEGER)",
            signed_where(&f, |g| g[0] == 0),
        ),
        (
            "s with a leading zero byte (shorter INTEGER)",
            signed_where(&f, |g| g[32] == 0),
        ),
    ];
    for (what, (input, sig)) in &cases {
        assert_eq!(verdict(&send(s, input, sig)), "admitted", "{what}");
    }
    // (r, n - s) verifies as well as (r, s): ECDSA has no low-s rule (Wycheproof: valid).
    let (input, mut sig) = signed(&f);
    let other_s = order_minus(&sig[32..]);
    sig[32..].copy_from_slice(&other_s);
    assert_eq!(verdict(&send(s, &input, &sig)), "admitted", "(r, n - s)");
}

#[test]
fn refuses_every_invalid_signature_class_with_bad_signature() {
    let s = shared();
    let f = s.forge().unwrap();
    let (input, good) = signed(&f);
    let with = |edit: &dyn Fn(&mut [u8; 64])| {
        let mut sig = good;
        edit(&mut sig);
        sig.to_vec()
    };
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&good[..32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&good[32..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one bit of s flipped", with(&|g| g[63] ^= 1)),
        ("one bit of r flipped", with(&|g| g[0] ^= 0x40)),
        ("r = 0", with(&|g| g[..32].fill(0))),
        ("s = 0", with(&|g| g[32..].fill(0))),
        ("r = n", with(&|g| g[..32].copy_from_slice(&ORDER))),
        ("s = n", with(&|g| g[32..].copy_from_slice(&ORDER))),
        ("s = 2^256 - 1", with(&|g| g[32..].fill(0xff))),
        ("r and s swapped", {
            let mut sw = good[32..].to_vec();
            sw.extend_from_slice(&good[..32]);
            sw
        }),
        (
            "65 bytes (a trailing zero)",
            [good.as_slice(), &[0]].concat(),
        ),
        ("63 bytes", good[..63].to_vec()),
        ("the DER form instead of r‖s", der),
    ];
    for (what, sig) in &cases {
        assert_eq!(verdict(&send(s, &input, sig)), "bad_signature", "{what}");
    }
    // The genuine one still passes: each case failed for its one change.
    assert_eq!(verdict(&send(s, &input, &good)), "admitted");
}
