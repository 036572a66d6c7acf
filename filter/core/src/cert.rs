//! What certbind reads from a client certificate: its DER bytes (from Envoy's PEM), its
//! validity window and its URI SANs, by a strict DER walk of RFC 5280's `Certificate` that
//! decodes only those fields.
//!
//! Envoy has already verified the certificate against the CA; the walk only has to find these
//! three facts, and refuse (fail closed) anything that is not DER in X.509's shape. A general
//! X.509 decoder did the same work with ~131 KB of Wasm code, 2–4 MB of Envoy's memory
//! (bench/README.md), and a decode and re-encode of the whole certificate for each new one.

use crate::validity::CertValidity;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`, `[1]`/`[2] IMPLICIT UniqueIdentifier`, `[3] EXPLICIT Extensions`.
const VERSION: u8 = 0xa0;
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
/// `GeneralName`'s `uniformResourceIdentifier [6] IMPLICIT IA5String`.
const URI_NAME: u8 = 0x86;
/// id-ce-subjectAltName, 2.5.29.17, as its DER contents.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts<'a> {
    pub validity: CertValidity,
    /// Every URI SAN, in order.
    pub uri_sans: Vec<&'a str>,
}

/// The facts of a DER certificate; `None` unless `der` is exactly one certificate in DER.
pub fn read(der: &[u8]) -> Option<CertFacts<'_>> {
    let mut whole = Der(der);
    let mut cert = Der(whole.expect(SEQUENCE)?);
    whole.end()?;
    let mut tbs = Der(cert.expect(SEQUENCE)?);
    cert.expect(SEQUENCE)?; // signatureAlgorithm
    cert.expect(BIT_STRING)?; // signatureValue
    cert.end()?;

    let version = match tbs.take_if(VERSION) {
        Some(explicit) => {
            let mut explicit = Der(explicit);
            let v = explicit.expect(INTEGER)?;
            explicit.end()?;
            // v2 or v3: DER leaves the default v1 out.
            match v {
                [n @ (1 | 2)] => *n,
                _ => return None,
            }
        }
        None => 0,
    };
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    let validity = validity(tbs.expect(SEQUENCE)?)?;
    tbs.expect(SEQUENCE)?; // subject
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    tbs.take_if(ISSUER_UID);
    tbs.take_if(SUBJECT_UID);
    let uri_sans = match tbs.take_if(EXTENSIONS) {
        Some(_) if version != 2 => return None,
        Some(explicit) => {
            let mut explicit = Der(explicit);
            let sans = uri_sans(explicit.expect(SEQUENCE)?)?;
            explicit.end()?;
            sans
        }
        None => Vec::new(),
    };
    tbs.end()?;
    Some(CertFacts { validity, uri_sans })
}

/// The DER inside a PEM `CERTIFICATE` block; `None` for anything else around or inside it
/// (a second block, another label, bad base64).
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim_ascii()
        .strip_prefix("-----BEGIN CERTIFICATE-----")?
        .strip_suffix("-----END CERTIFICATE-----")?;
    let base64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(base64).ok()
}

/// `Validity ::= SEQUENCE { notBefore Time, notAfter Time }`.
fn validity(contents: &[u8]) -> Option<CertValidity> {
    let mut v = Der(contents);
    let not_before = time(v.next()?)?;
    let not_after = time(v.next()?)?;
    v.end()?;
    Some(CertValidity::new(not_before, not_after))
}

/// Seconds since the epoch of a `Time` (RFC 5280 §4.1.2.5: UTCTime `YYMMDDHHMMSSZ`, years
/// 1950–2049, or GeneralizedTime `YYYYMMDDHHMMSSZ`, no fractions); before 1970 counts as 0.
fn time((tag, text): (u8, &[u8])) -> Option<u64> {
    let (year, rest) = match tag {
        UTC_TIME => {
            let (yy, rest) = text.split_at_checked(2)?;
            let yy = i64::from(digits(yy)?);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        GENERALIZED_TIME => {
            let (yyyy, rest) = text.split_at_checked(4)?;
            (i64::from(digits(yyyy)?), rest)
        }
        _ => return None,
    };
    // Month to second, then `Z`: exactly 11 bytes, so no other length passes.
    let [mo0, mo1, d0, d1, h0, h1, mi0, mi1, s0, s1, b'Z'] = *rest else {
        return None;
    };
    let field = |a, b| digits(&[a, b]).map(i64::from);
    let (month, day) = (field(mo0, mo1)?, field(d0, d1)?);
    let (hour, minute, second) = (field(h0, h1)?, field(mi0, mi1)?, field(s0, s1)?);
    let month_days = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let s = days_since_epoch(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(u64::try_from(s).unwrap_or(0))
}

/// Decimal digits only.
fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar, counted in 400-year
/// eras of 146,097 days from a year that starts in March (so the leap day ends it).
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The URI SANs of `Extensions ::= SEQUENCE OF Extension`; `None` if the subjectAltName
/// extension appears twice (RFC 5280 §4.2) or any extension is malformed.
fn uri_sans(extensions: &[u8]) -> Option<Vec<&str>> {
    let mut all = Der(extensions);
    let mut sans = None;
    while !all.is_empty() {
        let mut ext = Der(all.expect(SEQUENCE)?);
        let oid = ext.expect(OID)?;
        if let Some(critical) = ext.take_if(BOOLEAN) {
            // DER: only TRUE is written, FALSE being the default.
            (critical == [0xff]).then_some(())?;
        }
        let value = ext.expect(OCTET_STRING)?;
        ext.end()?;
        if oid == SAN_OID {
            if sans.is_some() {
                return None;
            }
            sans = Some(general_names(value)?);
        }
    }
    Some(sans.unwrap_or_default())
}

/// `GeneralName`'s choices `[0]`–`[8]` as DER tags them: the constructed ones (`otherName`,
/// `x400Address`, `directoryName`, `ediPartyName`) and the primitive ones (`rfc822Name`,
/// `dNSName`, `uniformResourceIdentifier`, `iPAddress`, `registeredID`).
const GENERAL_NAME_TAGS: [u8; 9] = [0xa0, 0x81, 0x82, 0xa3, 0xa4, 0xa5, URI_NAME, 0x87, 0x88];

/// The URIs of `GeneralNames ::= SEQUENCE OF GeneralName`; `None` for a tag no choice has.
fn general_names(value: &[u8]) -> Option<Vec<&str>> {
    let mut whole = Der(value);
    let mut names = Der(whole.expect(SEQUENCE)?);
    whole.end()?;
    let mut uris = Vec::new();
    while let Some((tag, contents)) = names.next() {
        if !GENERAL_NAME_TAGS.contains(&tag) {
            return None;
        }
        // The three IA5String choices: ASCII only. The constructed ones: DER elements only.
        if matches!(tag, 0x81 | 0x82 | URI_NAME) && !contents.is_ascii() {
            return None;
        }
        if tag & 0x20 != 0 {
            let mut inner = Der(contents);
            while inner.next().is_some() {}
            inner.end()?;
        }
        if tag == URI_NAME {
            uris.push(std::str::from_utf8(contents).ok()?);
        }
    }
    names.end()?;
    Some(uris)
}

/// A DER reader over the contents of one constructed element.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Some` when nothing is left: DER has no trailing bytes.
    fn end(&self) -> Option<()> {
        self.is_empty().then_some(())
    }

    /// The next element's tag and contents. Low tag numbers only (every tag in the fields
    /// read), definite lengths in their shortest form, at most three length bytes.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let [tag, first, rest @ ..] = self.0 else {
            return None;
        };
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (len, rest) = match *first {
            0..=0x7f => (usize::from(*first), rest),
            0x81..=0x83 => {
                let (bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
                let len = bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b));
                // Shortest form: no leading zero byte, no long form under 128.
                if bytes.first() == Some(&0) || len < 0x80 {
                    return None;
                }
                (len, rest)
            }
            _ => return None,
        };
        let (contents, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((*tag, contents))
    }

    /// The contents of the next element, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (t, contents) = self.next()?;
        (t == tag).then_some(contents)
    }

    /// The contents of the next element if it has `tag` (an OPTIONAL field); else nothing is read.
    fn take_if(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.0.first() != Some(&tag) {
            return None;
        }
        let mut ahead = Der(self.0);
        let contents = ahead.expect(tag)?;
        *self = ahead;
        Some(contents)
    }
}

#[cfg(test)]
mod tests;
