//! JWK helpers shared by the JWKS, DPoP and the issuer: the EC P-256 verifying key of a JWK's
//! coordinates and the RFC 7638 thumbprint (the JWKS `kid`, DPoP's `cnf.jkt`). A leaf: it
//! imports no other certbind module.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256};

/// The verifying key of JWK coordinates `x`, `y` (base64url of 32 bytes each), `None` when
/// they are malformed or not a point of the curve.
pub fn ec_p256_key(x: &str, y: &str) -> Option<VerifyingKey> {
    let coordinate = |s: &str| -> Option<[u8; 32]> {
        if s.len() != 43 {
            return None;
        }
        URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()
    };
    let (x, y) = (coordinate(x)?, coordinate(y)?);
    let mut sec1 = [0u8; 65];
    let (tag, rest) = sec1.split_first_mut()?;
    *tag = 0x04;
    let (sx, sy) = rest.split_at_mut(32);
    sx.copy_from_slice(&x);
    sy.copy_from_slice(&y);
    VerifyingKey::from_sec1_bytes(&sec1).ok()
}

/// RFC 7638 thumbprint: base64url(SHA-256) of the JSON object of the key's required members,
/// names sorted, no whitespace. `members` are (name, string value) pairs.
pub fn jwk_thumbprint(members: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut json = String::from("{");
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_json_string(&mut json, name);
        json.push(':');
        push_json_string(&mut json, value);
    }
    json.push('}');
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// The RFC 7638 thumbprint of an EC P-256 public key given as JWK `x` and `y`.
/// Used as the JWKS `kid` and as DPoP's `cnf.jkt`.
pub fn ec_p256_jwk_thumbprint(x: &str, y: &str) -> String {
    jwk_thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", x), ("y", y)])
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1: the RSA example key and its SHA-256 thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let n = concat!(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP",
            "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY",
            "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f",
            "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        );
        assert_eq!(
            jwk_thumbprint(&[("kty", "RSA"), ("n", n), ("e", "AQAB")]),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 9449 §6.1: `jkt` of the EC P-256 key in the §4.1 DPoP proof.
    #[test]
    fn rfc9449_example_ec_jkt() {
        assert_eq!(
            ec_p256_jwk_thumbprint(
                "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"
            ),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }
}
