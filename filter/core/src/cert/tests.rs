//! The walk against x509-cert's full decoder on real certificates (rcgen), and against
//! hand-built DER for every shape it must refuse.

use super::*;
use crate::cert_reference::read as reference;
use rcgen::{CertificateParams, KeyPair, SanType};
use std::net::{IpAddr, Ipv4Addr};

fn rcgen_cert(sans: Vec<SanType>, years: (i32, i32)) -> rcgen::Certificate {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    params.not_before = rcgen::date_time_ymd(years.0, 2, 28);
    params.not_after = rcgen::date_time_ymd(years.1, 12, 31);
    params.self_signed(&KeyPair::generate().unwrap()).unwrap()
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

#[test]
fn reads_what_x509_cert_reads() {
    let id = "spiffe://certbind.test/ns/demo/sa/consumer";
    let cases = [
        (vec![], (2027, 2028)),
        (vec![uri(id)], (2027, 2028)),
        (
            vec![SanType::DnsName("a.test".try_into().unwrap()), uri(id)],
            (1999, 2049),
        ),
        (
            vec![uri(id), uri("spiffe://certbind.test/ns/x/sa/y")],
            (2049, 2050),
        ),
        (
            vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::Rfc822Name("a@b.test".try_into().unwrap()),
                uri("https://a.test/x"),
            ],
            (1970, 2100),
        ),
    ];
    for (sans, years) in cases {
        let cert = rcgen_cert(sans, years);
        let facts = read(cert.der()).unwrap();
        let (validity, uris) = reference(cert.der()).unwrap();
        assert_eq!(facts.validity, validity, "{years:?}");
        assert_eq!(facts.uri_sans, uris, "{years:?}");
        assert_eq!(pem_to_der(&cert.pem()).as_deref(), Some(&cert.der()[..]));
    }
}

#[test]
fn reads_the_window_of_a_certificate() {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = rcgen::date_time_ymd(2027, 1, 1);
    params.not_after = rcgen::date_time_ymd(2027, 1, 2);
    let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let start = 1_798_761_600; // 2027-01-01T00:00:00Z
    assert_eq!(
        read(cert.der()).unwrap().validity,
        CertValidity::new(start, start + 86_400)
    );
}

#[test]
fn counts_days_as_the_calendar_does() {
    let mut days = 0;
    for year in 1970..2401 {
        for month in 1..=12u8 {
            for day in 1..=31u8 {
                let Ok(date) = der::DateTime::new(year, month, day, 0, 0, 0) else {
                    continue;
                };
                let at = days_since_epoch(year.into(), month.into(), day.into());
                assert_eq!(at, days, "{year}-{month}-{day}");
                assert_eq!(at * 86_400, date.unix_duration().as_secs() as i64);
                days += 1;
            }
        }
    }
    assert_eq!(days_since_epoch(1969, 12, 31), -1);
}

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        n @ 0..0x80 => out.push(n as u8),
        n @ 0x80..0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

fn utc(text: &str) -> Vec<u8> {
    tlv(UTC_TIME, text.as_bytes())
}

fn san(names: &[Vec<u8>]) -> Vec<u8> {
    seq(&[tlv(OID, SAN_OID), tlv(OCTET_STRING, &seq(names))])
}

/// A v3 certificate with these validity times and extensions (`None`: no extensions field).
fn cert_with(times: [Vec<u8>; 2], extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
    versioned(Some(2), times, extensions)
}

/// The same with this `[0] EXPLICIT` version field (`None`: left out, v1).
fn versioned(version: Option<u8>, times: [Vec<u8>; 2], extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut tbs: Vec<Vec<u8>> = version
        .map(|v| tlv(VERSION, &tlv(INTEGER, &[v])))
        .into_iter()
        .collect();
    tbs.extend([
        tlv(INTEGER, &[1]),
        seq(&[tlv(OID, &[0x2a])]),
        seq(&[]),
        seq(&times),
        seq(&[]),
        seq(&[seq(&[tlv(OID, &[0x2a])]), tlv(BIT_STRING, &[0, 4])]),
    ]);
    if let Some(ext) = extensions {
        tbs.push(tlv(EXTENSIONS, &seq(ext)));
    }
    seq(&[seq(&tbs), seq(&[tlv(OID, &[0x2a])]), tlv(BIT_STRING, &[0])])
}

const ID: &str = "spiffe://certbind.test/ns/demo/sa/consumer";

fn times() -> [Vec<u8>; 2] {
    [utc("270101000000Z"), utc("270102000000Z")]
}

fn with_names(names: &[Vec<u8>]) -> Vec<u8> {
    cert_with(times(), Some(&[san(names)]))
}

#[test]
fn admits_the_hand_built_certificate() {
    let der = with_names(&[tlv(0x82, b"a.test"), tlv(URI_NAME, ID.as_bytes())]);
    let facts = read(&der).unwrap();
    assert_eq!(facts.uri_sans, [ID]);
    assert_eq!(
        facts.validity,
        CertValidity::new(1_798_761_600, 1_798_848_000)
    );
    assert_eq!(read(&cert_with(times(), None)).unwrap().uri_sans, [""; 0]);
    let critical = seq(&[
        tlv(OID, SAN_OID),
        tlv(BOOLEAN, &[0xff]),
        tlv(OCTET_STRING, &seq(&[tlv(URI_NAME, ID.as_bytes())])),
    ]);
    assert_eq!(
        read(&cert_with(times(), Some(&[critical])))
            .unwrap()
            .uri_sans,
        [ID]
    );
}

#[test]
fn refuses_a_second_subject_alt_name_extension() {
    let one = san(&[tlv(URI_NAME, ID.as_bytes())]);
    let other = san(&[tlv(URI_NAME, b"spiffe://certbind.test/ns/demo/sa/admin")]);
    assert!(read(&cert_with(times(), Some(std::slice::from_ref(&one)))).is_some());
    assert_eq!(read(&cert_with(times(), Some(&[one, other]))), None);
}

#[test]
fn refuses_malformed_names_and_extensions() {
    let bad_names = [
        vec![tlv(URI_NAME, "spiffe://certbind.test/ns/dé".as_bytes())],
        vec![tlv(0x16, ID.as_bytes())], // a universal tag is no GeneralName
        vec![tlv(0x8e, b"x"), tlv(URI_NAME, ID.as_bytes())], // nor is [14]
        vec![tlv(0x80, b"x"), tlv(URI_NAME, ID.as_bytes())], // otherName is constructed
        vec![tlv(0x82, "é.test".as_bytes()), tlv(URI_NAME, ID.as_bytes())], // dNSName: IA5
        vec![tlv(0xa4, b"spiffe"), tlv(URI_NAME, ID.as_bytes())], // directoryName: not DER
    ];
    for names in bad_names {
        assert_eq!(read(&with_names(&names)), None, "{names:?}");
    }
    let explicit_false = seq(&[
        tlv(OID, SAN_OID),
        tlv(BOOLEAN, &[0]),
        tlv(OCTET_STRING, &seq(&[])),
    ]);
    let trailing_in_value = seq(&[
        tlv(OID, SAN_OID),
        tlv(OCTET_STRING, &[seq(&[]), vec![0]].concat()),
    ]);
    let not_a_sequence = seq(&[tlv(OID, SAN_OID), tlv(OCTET_STRING, &tlv(0x31, &[]))]);
    for ext in [explicit_false, trailing_in_value, not_a_sequence] {
        assert_eq!(
            read(&cert_with(times(), Some(std::slice::from_ref(&ext)))),
            None,
            "{ext:02x?}"
        );
    }
}

#[test]
fn refuses_extensions_outside_v3() {
    let ext = [san(&[tlv(URI_NAME, ID.as_bytes())])];
    assert!(read(&versioned(Some(2), times(), Some(&ext))).is_some());
    assert!(read(&versioned(Some(1), times(), None)).is_some());
    assert!(read(&versioned(None, times(), None)).is_some());
    for version in [None, Some(1)] {
        assert_eq!(read(&versioned(version, times(), Some(&ext))), None);
    }
    // v1 written out (DER leaves the default out), and no such version as v4.
    for version in [0, 3] {
        assert_eq!(read(&versioned(Some(version), times(), None)), None);
    }
}

#[test]
fn reads_both_time_forms_and_the_utc_century() {
    let cases = [
        (utc("491231235959Z"), 2_524_607_999),
        (utc("500101000000Z"), 0),
        (tlv(GENERALIZED_TIME, b"20500101000000Z"), 2_524_608_000),
        (tlv(GENERALIZED_TIME, b"19691231235959Z"), 0),
        (utc("240229120000Z"), 1_709_208_000),
        (tlv(GENERALIZED_TIME, b"20000229000000Z"), 951_782_400),
    ];
    for (time, secs) in cases {
        let der = cert_with([time.clone(), time.clone()], None);
        assert_eq!(
            read(&der).map(|f| f.validity),
            Some(CertValidity::new(secs, secs)),
            "{time:02x?}"
        );
    }
}

#[test]
fn refuses_times_that_are_not_rfc_5280s() {
    let bad = [
        utc("270101000000"),
        utc("2701010000Z"),
        utc("270101000000+0100"),
        utc("271301000000Z"),
        utc("270001000000Z"),
        utc("270229000000Z"),
        utc("270431000000Z"),
        utc("270100000000Z"),
        utc("270101240000Z"),
        utc("270101006000Z"),
        utc("270101000060Z"),
        utc("27010100000aZ"),
        utc("2701010000 0Z"),
        tlv(GENERALIZED_TIME, b"21000229000000Z"),
        tlv(GENERALIZED_TIME, b"20270101000000.5Z"),
        tlv(GENERALIZED_TIME, b"270101000000Z"),
        tlv(INTEGER, b"270101000000Z"),
    ];
    for time in bad {
        let der = cert_with([time.clone(), utc("280101000000Z")], None);
        assert_eq!(read(&der), None, "{:?}", String::from_utf8_lossy(&time));
    }
}

#[test]
fn refuses_anything_but_exactly_one_der_certificate() {
    let der = with_names(&[tlv(URI_NAME, ID.as_bytes())]);
    assert!(read(&der).is_some());
    for end in 0..der.len() {
        assert_eq!(read(&der[..end]), None, "cut at {end}");
    }
    assert_eq!(read(&[der.clone(), vec![0]].concat()), None);
    assert_eq!(read(&[der.clone(), der.clone()].concat()), None);
    // The same contents behind a length with a leading zero byte, and an indefinite length.
    let (_, contents) = Der(&der).next().unwrap();
    let n = contents.len();
    let mut long = vec![SEQUENCE, 0x83, 0, (n >> 8) as u8, n as u8];
    long.extend_from_slice(contents);
    assert_eq!(read(&long), None);
    let mut short_as_long = tlv(SEQUENCE, &[]);
    short_as_long.splice(1..2, [0x81, 0x00]);
    assert_eq!(Der(&short_as_long).next(), None);
    let mut indefinite = vec![SEQUENCE, 0x80];
    indefinite.extend_from_slice(contents);
    indefinite.extend([0, 0]);
    assert_eq!(read(&indefinite), None);
    assert_eq!(Der(&[0x1f, 0x01, 0x00]).next(), None, "high tag number");
}

#[test]
fn takes_the_der_out_of_one_pem_block() {
    let cert = rcgen_cert(vec![uri(ID)], (2027, 2028));
    let pem = cert.pem();
    assert_eq!(pem_to_der(&pem).as_deref(), Some(&cert.der()[..]));
    assert_eq!(
        pem_to_der(&pem.replace('\n', "\r\n")).as_deref(),
        Some(&cert.der()[..])
    );
    let refused = [
        format!("{pem}{pem}"),
        pem.replace("CERTIFICATE", "PUBLIC KEY"),
        pem.replacen("M", "*", 1),
        pem.replace("-----END CERTIFICATE-----", ""),
        format!("junk{pem}"),
        String::new(),
    ];
    for bad in refused {
        assert_eq!(pem_to_der(&bad), None, "{bad:?}");
    }
}

/// Mutated certificates (bytes changed, flipped, cut or dropped): the walk never panics, and
/// wherever it and x509-cert both accept one, they read the same facts. The walk accepts some
/// that x509-cert refuses (~500 of 20,000): each changed a field the walk skips without
/// decoding (the algorithms, names, key, signature, another extension's OID, the inside of a
/// GeneralName other than a URI, e.g. a `registeredID` longer than x509-cert's OIDs may be),
/// which Envoy has verified. The certificate is made afresh on every run (a new key); the
/// mutations are drawn from a fixed seed.
#[test]
fn agrees_with_x509_cert_on_mutated_certificates() {
    let sans = vec![
        uri(ID),
        SanType::DnsName("a.test".try_into().unwrap()),
        uri("spiffe://certbind.test/ns/x/sa/y"),
    ];
    let base = rcgen_cert(sans, (2027, 2049)).der().to_vec();
    let mut next = crate::test_rng::draws(0x9e37_79b9_7f4a_7c15);
    let (mut both, mut ours_only) = (0, 0);
    for _ in 0..20_000 {
        let mut der = base.clone();
        for _ in 0..1 + next(3) {
            let at = next(der.len());
            match next(4) {
                0 => der[at] = next(256) as u8,
                1 => der[at] ^= 1 << next(8),
                2 => der.truncate(at),
                _ => {
                    der.remove(at);
                }
            }
            if der.is_empty() {
                break;
            }
        }
        match (read(&der), reference(&der)) {
            (Some(facts), Some((validity, uris))) => {
                both += 1;
                assert_eq!(facts.validity, validity, "{der:02x?}");
                assert_eq!(facts.uri_sans, uris, "{der:02x?}");
            }
            (Some(_), None) => ours_only += 1,
            (None, _) => {}
        }
    }
    assert!(both > 100, "too few mutants both accepted: {both}");
    eprintln!("both accepted {both}, only the walk {ours_only}");
}
