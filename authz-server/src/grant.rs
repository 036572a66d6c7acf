//! The client-credentials decision (RFC 6749 §4.4 with RFC 8705 §2 `tls_client_auth` and
//! RFC 8707 resource indicators): who is asking, for which audience, with which scopes.
//! Pure: no clock, no keys, no I/O.

use crate::clients::{Client, Registry};
use crate::oauth::{ErrorCode, Form, OAuthError};
use certbind_core::binding::{CertThumbprint, SpiffeId};

/// What the client may have: the input to token minting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    pub subject: SpiffeId,
    pub audience: String,
    /// Space-separated, in registry order, no duplicates.
    pub scope: String,
    pub thumbprint: CertThumbprint,
}

/// Finds the registered client that the (already CA-verified) certificate names.
pub fn authenticate<'r>(
    registry: &'r Registry,
    cert_der: Option<&[u8]>,
) -> Result<&'r Client, OAuthError> {
    let der = cert_der.ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidClient,
            "a client certificate is required (tls_client_auth)",
        )
    })?;
    let id = SpiffeId::from_cert_der(der).map_err(|_| {
        OAuthError::new(
            ErrorCode::InvalidClient,
            "the client certificate carries no valid SPIFFE ID",
        )
    })?;
    registry.by_spiffe_id(&id).ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidClient,
            "the client certificate names no registered client",
        )
    })
}

/// Decides a `/token` request. The certificate must already have passed TLS verification.
pub fn decide(
    registry: &Registry,
    cert_der: Option<&[u8]>,
    form: &Form,
) -> Result<Grant, OAuthError> {
    let client = authenticate(registry, cert_der)?;
    let der = cert_der.unwrap_or_default();
    if form
        .get("client_id")
        .is_some_and(|claimed| claimed != client.client_id)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "client_id does not match the client certificate",
        ));
    }
    match form.get("grant_type") {
        None => {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "grant_type is required",
            ));
        }
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "only client_credentials is supported",
            ));
        }
    }
    if !client.has_audiences() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not obtain access tokens",
        ));
    }
    let audience = match (form.get("audience"), form.get("resource")) {
        (None, None) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "audience or resource is required",
            ));
        }
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "audience and resource name different targets",
            ));
        }
        (Some(t), _) | (None, Some(t)) => t,
    };
    let allowed = client.scopes_for(audience).ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidTarget,
            "this client may not obtain tokens for that audience",
        )
    })?;
    let scope = match form.get("scope") {
        None => allowed.join(" "),
        Some(requested) => narrow_scope(allowed, requested)?,
    };
    Ok(Grant {
        client_id: client.client_id.clone(),
        subject: client.spiffe_id.clone(),
        audience: audience.to_owned(),
        scope,
        thumbprint: CertThumbprint::from_der(der),
    })
}

/// The requested scopes (RFC 6749 §3.3: tokens separated by single spaces), which must all be
/// allowed; answered in registry order without duplicates.
fn narrow_scope(allowed: &[String], requested: &str) -> Result<String, OAuthError> {
    let invalid = || {
        OAuthError::new(
            ErrorCode::InvalidScope,
            "a requested scope is not allowed for this client and audience",
        )
    };
    let mut wanted = Vec::new();
    for token in requested.split(' ') {
        if token.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "scope is malformed",
            ));
        }
        if !allowed.iter().any(|a| a == token) {
            return Err(invalid());
        }
        wanted.push(token);
    }
    Ok(allowed
        .iter()
        .filter(|a| wanted.contains(&a.as_str()))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::from_yaml(include_str!("../clients.yaml")).unwrap()
    }

    /// A certificate for `name` from a throwaway CA: grant logic only reads the SAN.
    fn cert(name: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        crate::ca::init(
            dir.path(),
            &[name],
            1,
            false,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        crate::ca::read_cert_der(&dir.path().join(format!("{name}.crt"))).unwrap()
    }

    fn form(body: &str) -> Form {
        Form::parse(body.as_bytes()).unwrap()
    }

    const ORDERS: &str = "spiffe%3A%2F%2Fcertbind.test%2Fns%2Fdemo%2Fsa%2Forders";

    #[test]
    fn grants_all_allowed_scopes_when_none_are_requested() {
        let der = cert("consumer");
        let g = decide(
            &registry(),
            Some(&der),
            &form(&format!("grant_type=client_credentials&audience={ORDERS}")),
        )
        .unwrap();
        assert_eq!(g.client_id, "consumer");
        assert_eq!(
            g.subject.as_str(),
            "spiffe://certbind.test/ns/demo/sa/consumer"
        );
        assert_eq!(g.audience, "spiffe://certbind.test/ns/demo/sa/orders");
        assert_eq!(g.scope, "orders:read orders:write");
        assert_eq!(g.thumbprint, CertThumbprint::from_der(&der));
    }

    #[test]
    fn narrows_to_the_requested_scopes_in_registry_order() {
        let der = cert("consumer");
        let body = format!(
            "grant_type=client_credentials&resource={ORDERS}&scope=orders%3Awrite+orders%3Aread+orders%3Awrite&client_id=consumer"
        );
        let g = decide(&registry(), Some(&der), &form(&body)).unwrap();
        assert_eq!(g.scope, "orders:read orders:write");
        let body = format!(
            "grant_type=client_credentials&resource={ORDERS}&audience={ORDERS}&scope=orders%3Aread"
        );
        assert_eq!(
            decide(&registry(), Some(&der), &form(&body)).unwrap().scope,
            "orders:read"
        );
    }

    #[test]
    fn refuses_each_bad_request_with_its_rfc6749_code() {
        let consumer = cert("consumer");
        let inventory = cert("inventory");
        let orders = cert("orders");
        let stranger = cert("stranger");
        let reg = registry();
        let ok = format!("grant_type=client_credentials&audience={ORDERS}");
        let billing = "spiffe%3A%2F%2Fcertbind.test%2Fns%2Fdemo%2Fsa%2Fbilling";
        let cases: Vec<(Option<&[u8]>, String, ErrorCode)> = vec![
            (None, ok.clone(), ErrorCode::InvalidClient),
            (Some(&stranger), ok.clone(), ErrorCode::InvalidClient),
            (Some(b"garbage"), ok.clone(), ErrorCode::InvalidClient),
            (
                Some(&consumer),
                format!("{ok}&client_id=inventory"),
                ErrorCode::InvalidClient,
            ),
            (
                Some(&consumer),
                format!("audience={ORDERS}"),
                ErrorCode::InvalidRequest,
            ),
            (
                Some(&consumer),
                format!("grant_type=password&audience={ORDERS}"),
                ErrorCode::UnsupportedGrantType,
            ),
            (Some(&orders), ok.clone(), ErrorCode::UnauthorizedClient),
            (
                Some(&consumer),
                "grant_type=client_credentials".into(),
                ErrorCode::InvalidRequest,
            ),
            (
                Some(&consumer),
                format!("{ok}&resource={billing}"),
                ErrorCode::InvalidTarget,
            ),
            (
                Some(&inventory),
                format!("grant_type=client_credentials&audience={billing}"),
                ErrorCode::InvalidTarget,
            ),
            (
                Some(&consumer),
                "grant_type=client_credentials&audience=orders".into(),
                ErrorCode::InvalidTarget,
            ),
            (
                Some(&inventory),
                format!("{ok}&scope=orders%3Awrite"),
                ErrorCode::InvalidScope,
            ),
            (
                Some(&consumer),
                format!("{ok}&scope=orders%3Aread++orders%3Awrite"),
                ErrorCode::InvalidScope,
            ),
            (
                Some(&consumer),
                format!("{ok}&scope=billing%3Aread"),
                ErrorCode::InvalidScope,
            ),
        ];
        for (der, body, code) in cases {
            let err = decide(&reg, der, &form(&body)).unwrap_err();
            assert_eq!(err.code, code, "{body}");
        }
    }

    #[test]
    fn inventory_gets_only_orders_read() {
        let der = cert("inventory");
        let g = decide(
            &registry(),
            Some(&der),
            &form(&format!("grant_type=client_credentials&audience={ORDERS}")),
        )
        .unwrap();
        assert_eq!(g.scope, "orders:read");
    }
}
