//! The scenarios of issue 10 and the Envoy configuration of each: one listener in front of the
//! same upstream, differing only in the transport and the HTTP filters, so every difference in
//! cost is the difference the scenario is about.

use crate::native_peer::{CLAIM_HEADERS, PAYLOAD_IN_METADATA, binding_filters};
use certbind_tests::render::render;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Scenario {
    /// Plain HTTP.
    S0,
    /// TLS 1.3, server certificate only.
    S1,
    /// TLS 1.3 with a required client certificate.
    S2,
    /// mTLS + a no-op Wasm filter (reads Authorization and the peer digest, sets one header).
    S2w,
    /// S2w plus one call of Envoy's `verify_signature` per request (a token-sized ES256 JWS, as
    /// certbind sends a fresh token's): S2v − S2w is the host's verify, the floor under R9.
    S2v,
    /// mTLS + native `jwt_authn` (ES256, local JWKS) with `jwt_cache_config`.
    S3,
    /// The same without the cache.
    S3u,
    /// The best native equal-function peer: cached `jwt_authn` + Lua binding check + `rbac`
    /// (`crate::native_peer`).
    S3b,
    /// mTLS + cached `jwt_authn` + `ext_authz` (HTTP service) asking certbind-pdp over mTLS.
    S4,
    /// certbind, the same token repeated (token and decision caches warm).
    S5,
    /// certbind with the decision cache off (a PDP call per request).
    S5p,
    /// certbind with a fresh token on every request (one ES256 verify each).
    S5c,
    /// certbind DPoP at the edge: TLS without a client certificate, a DPoP-bound token and a
    /// fresh proof on every request (one proof verify each).
    S5d,
    /// S5 with the overload protections of envoy/sidecar.yaml.tmpl: its circuit breakers, its
    /// overload manager and the filter's default PDP timeout (`make overload`; not in [`ALL`],
    /// so `make bench` compares the scenarios without them).
    ///
    /// [`ALL`]: Scenario::ALL
    S5o,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Self::S0,
        Self::S1,
        Self::S2,
        Self::S2w,
        Self::S2v,
        Self::S3,
        Self::S3u,
        Self::S3b,
        Self::S4,
        Self::S5,
        Self::S5p,
        Self::S5c,
        Self::S5d,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::S0 => "S0",
            Self::S1 => "S1",
            Self::S2 => "S2",
            Self::S2w => "S2w",
            Self::S2v => "S2v",
            Self::S3 => "S3",
            Self::S3u => "S3u",
            Self::S3b => "S3b",
            Self::S4 => "S4",
            Self::S5 => "S5",
            Self::S5p => "S5p",
            Self::S5c => "S5c",
            Self::S5d => "S5d",
            Self::S5o => "S5o",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([Self::S5o])
            .find(|s| s.id().eq_ignore_ascii_case(id))
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::S0 => "plain HTTP",
            Self::S1 => "TLS 1.3",
            Self::S2 => "mTLS",
            Self::S2w => "mTLS + no-op Wasm filter",
            Self::S2v => "mTLS + no-op Wasm filter + one host ES256 verify",
            Self::S3 => "mTLS + jwt_authn (cached)",
            Self::S3u => "mTLS + jwt_authn (uncached)",
            Self::S3b => "mTLS + jwt_authn (cached) + Lua binding + rbac",
            Self::S4 => "mTLS + jwt_authn + ext_authz",
            Self::S5 => "certbind (warm caches)",
            Self::S5p => "certbind, decision cache off",
            Self::S5c => "certbind, fresh token each request",
            Self::S5d => "certbind DPoP edge",
            Self::S5o => "certbind with the sidecar's overload protections",
        }
    }

    /// Whether the load generator presents a client certificate.
    pub fn mtls(self) -> bool {
        !matches!(self, Self::S0 | Self::S1 | Self::S5d)
    }

    pub fn tls(self) -> bool {
        self != Self::S0
    }

    /// Whether this scenario runs the certbind filter.
    pub fn certbind(self) -> bool {
        matches!(
            self,
            Self::S5 | Self::S5p | Self::S5c | Self::S5d | Self::S5o
        )
    }
}

/// Everything a scenario's configuration needs.
#[derive(Debug, Clone)]
pub struct ConfigVars {
    pub pki_dir: PathBuf,
    pub admin_port: u16,
    pub listen_port: u16,
    /// The idle listeners of the certbind scenarios' two other plugin configurations.
    pub sibling_ports: [u16; 2],
    pub upstream_port: u16,
    pub authz_port: u16,
    pub pdp_port: u16,
    pub issuer: String,
    /// The authz-server's JWKS, inlined for `jwt_authn` (its best case: no fetch).
    pub jwks_json: String,
    pub certbind_wasm: PathBuf,
    pub noop_wasm: PathBuf,
    /// S2v's `verify_signature` arguments, hex (`mint::verify_floor_arguments`).
    pub verify_arguments: String,
}

const AUDIENCE: &str = "spiffe://certbind.test/ns/demo/sa/orders";

const BASE: &str = r#"# certbind-bench scenario ${SCENARIO}: ${DESCRIPTION}
${OVERLOAD_MANAGER}
# As envoy/sidecar.yaml.tmpl, in every scenario alike: freed heap goes back to the system.
memory_allocator_manager: { bytes_to_release: 16777216, memory_release_interval: 1s }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: ${ADMIN_PORT} }
static_resources:
  listeners:
${LISTENERS}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
${UPSTREAM_BREAKERS}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${UPSTREAM_PORT} }
${EXTRA_CLUSTERS}
"#;

/// One listener: the measured one (`bench`) or, in the certbind scenarios, one of the idle
/// listeners carrying the sidecar's other plugin configurations.
const LISTENER: &str = r#"  - name: ${LISTENER_NAME}
    address:
      socket_address: { address: 127.0.0.1, port_value: ${LISTENER_PORT} }
    filter_chains:
${CHAIN_TRANSPORT}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ${LISTENER_NAME}
          codec_type: AUTO
          # The same connection manager as certbind's sidecar (envoy/sidecar.yaml.tmpl).
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          forward_client_cert_details: SANITIZE
          generate_request_id: true
          always_set_request_id_in_response: true
          route_config:
            name: ${LISTENER_NAME}
            virtual_hosts:
            - name: ${LISTENER_NAME}
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
${HTTP_FILTERS}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#;

const TLS_CHAIN: &str = r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: ${REQUIRE_CLIENT_CERT}
          common_tls_context:
            tls_params:
              tls_minimum_protocol_version: TLSv1_3
              tls_maximum_protocol_version: TLSv1_3
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: { filename: ${PKI_DIR}/${SERVER_CERT}.crt }
              private_key: { filename: ${PKI_DIR}/${SERVER_CERT}.key }
${VALIDATION}"#;

const VALIDATION: &str = r#"            validation_context:
              trusted_ca: { filename: ${PKI_DIR}/ca.crt }"#;

const NOOP_FILTER: &str = r#"          - name: noop
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: noop
                root_id: noop
                failure_policy: FAIL_CLOSED
                vm_config:
                  vm_id: noop
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: ${NOOP_WASM} } }${NOOP_CONFIGURATION}"#;

/// S2v's configuration of the no-op filter: one host verify per request.
const NOOP_VERIFY: &str = r#"
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "verify ${VERIFY_ARGUMENTS}""#;

const JWT_AUTHN: &str = r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                certbind:
                  issuer: "${ISSUER}"
                  audiences: [${AUDIENCE}]
                  local_jwks: { inline_string: '${JWKS}' }
${JWT_EXTRA}              rules:
              - match: { prefix: "/" }
                requires: { provider_name: certbind }"#;

const JWT_CACHE: &str = "                  jwt_cache_config: { jwt_cache_size: 1000 }\n";
const JWT_PAYLOAD: &str = "                  forward_payload_header: x-jwt-payload\n";

/// S4: `ext_authz` asks certbind-pdp's `/v1/ext_authz` endpoint over the same mTLS cluster
/// (`certbind_pdp`) the certbind filter uses, so both pay the same transport to the same PDP.
const EXT_AUTHZ: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              http_service:
                server_uri: { uri: "https://127.0.0.1:${PDP_PORT}", cluster: certbind_pdp, timeout: 1s }
                path_prefix: /v1/ext_authz
              allowed_headers:
                patterns: [{ exact: x-jwt-payload }]"#;

/// The filter as envoy/sidecar.yaml.tmpl deploys it: the `revocation` feed and the `usage`
/// counter on the authz-server, one `vm_id` shared by every plugin configuration.
const CERTBIND_FILTER: &str = r#"          - name: certbind
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: ${PLUGIN_NAME}
                root_id: certbind
                failure_policy: FAIL_CLOSED
                vm_config:
                  vm_id: certbind
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: ${CERTBIND_WASM} } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {
                      "issuer": "${ISSUER}",
                      "audience": "${PLUGIN_AUDIENCE}",
                      "trust_domain": "certbind.test",
                      "jwks": {"cluster": "certbind_authz", "authority": "127.0.0.1:${AUTHZ_PORT}"},
                      "pdp": {"cluster": "certbind_pdp", "authority": "127.0.0.1:${PDP_PORT}"${PDP_TIMEOUT}},
                      "revocation": {"path": "/v1/revocations"},
                      "usage": {"path": "/v1/usage/consume"},
                      "decision_cache_size": ${DECISION_CACHE_SIZE},
                      "token_cache_size": 1024,${BINDING}
                      "mode": "enforce"
                    }"#;

/// S5d's filter: DPoP at the edge. Proofs are minted just before each run (at most a few
/// seconds old); the short `max_age_s` keeps the replay cache (every proof's `jti` until it
/// ages out, 16 s) within its size at the edge's throughput: a run (0.5 + 5 s) of ~10,000
/// proofs/s from one client leaves ~54 live entries in each of the 1,024 slots, below the
/// client's share of one (98); S5d's runs are more than 16 s apart, so each starts empty.
const DPOP_BINDING: &str = r#"
                      "binding": "dpop",
                      "dpop": {"public_origin": "https://127.0.0.1:${LISTENER_PORT}", "max_age_s": 15, "clock_skew_s": 1, "replay_cache_size": 100000},"#;

/// The edge plugin configuration on an idle listener: envoy/sidecar.yaml.tmpl's.
const SIDECAR_DPOP_BINDING: &str = r#"
                      "binding": "dpop",
                      "dpop": {"public_origin": "https://127.0.0.1:${LISTENER_PORT}", "replay_cache_size": 4096},"#;

/// The authz-server cluster of envoy/sidecar.yaml.tmpl (mTLS as the `envoy` identity).
const CERTBIND_CLUSTERS: &str = r#"  - name: certbind_authz
    type: STATIC
    connect_timeout: 1s
${AUTHZ_BREAKERS}
    load_assignment:
      cluster_name: certbind_authz
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${AUTHZ_PORT} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          tls_params:
            tls_minimum_protocol_version: TLSv1_3
            tls_maximum_protocol_version: TLSv1_3
          tls_certificates:
          - certificate_chain: { filename: ${PKI_DIR}/envoy.crt }
            private_key: { filename: ${PKI_DIR}/envoy.key }
          validation_context:
            trusted_ca: { filename: ${PKI_DIR}/ca.crt }
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: { exact: spiffe://certbind.test/ns/demo/sa/authz }"#;

/// The PDP over mTLS: the certbind filter's decisions (S5*) and `ext_authz`'s (S4).
const PDP_CLUSTER: &str = r#"  - name: certbind_pdp
    type: STATIC
    connect_timeout: 1s
${PDP_BREAKERS}
    load_assignment:
      cluster_name: certbind_pdp
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${PDP_PORT} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          tls_params:
            tls_minimum_protocol_version: TLSv1_3
            tls_maximum_protocol_version: TLSv1_3
          tls_certificates:
          - certificate_chain: { filename: ${PKI_DIR}/envoy.crt }
            private_key: { filename: ${PKI_DIR}/envoy.key }
          validation_context:
            trusted_ca: { filename: ${PKI_DIR}/ca.crt }
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: { exact: spiffe://certbind.test/ns/demo/sa/pdp }"#;

/// S5o: envoy/sidecar.yaml.tmpl's overload manager, line for line (a test checks every line is
/// in the sidecar's file).
const SIDECAR_OVERLOAD_MANAGER: &str = r#"overload_manager:
  refresh_interval: 0.25s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: 1073741824
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 10000
  actions:
  - name: envoy.overload_actions.shrink_heap
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: { value: 0.90 }
  - name: envoy.overload_actions.stop_accepting_requests
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: { value: 0.98 }"#;

/// S5o: the sidecar's per-listener connection limit (envoy/sidecar.yaml.tmpl sets the same
/// value for each of its certbind listeners; this listener is called `bench`).
const SIDECAR_LISTENER_LIMIT: &str = r#"layered_runtime:
  layers:
  - name: static
    static_layer:
      envoy.resource_limits.listener.bench.connection_limit: 512"#;

/// S5o: the sidecar's circuit breakers of its authz-server, PDP and upstream clusters.
const SIDECAR_AUTHZ_BREAKERS: &str = r#"    circuit_breakers:
      thresholds:
      - { priority: DEFAULT, max_connections: 32, max_pending_requests: 64, max_requests: 512, max_retries: 3 }"#;
const SIDECAR_PDP_BREAKERS: &str = r#"    circuit_breakers:
      thresholds:
      - { priority: DEFAULT, max_connections: 128, max_pending_requests: 256, max_requests: 1024, max_retries: 3 }"#;
const SIDECAR_UPSTREAM_BREAKERS: &str = r#"    circuit_breakers:
      thresholds:
      - { priority: DEFAULT, max_connections: 1024, max_pending_requests: 1024, max_requests: 2048, max_retries: 3 }"#;

/// One of the sidecar's three certbind plugin configurations (envoy/sidecar.yaml.tmpl): every
/// certbind scenario's Envoy runs all three, one on the measured listener and two on idle ones,
/// as deployed (one VM, three root contexts, three revocation long-polls).
#[derive(Debug, Clone, Copy)]
struct Plugin {
    name: &'static str,
    listener: &'static str,
    cert: &'static str,
    audience: &'static str,
    dpop: bool,
}

const ORDERS: Plugin = Plugin {
    name: "certbind_orders",
    listener: "orders_sidecar",
    cert: "orders",
    audience: AUDIENCE,
    dpop: false,
};
const BILLING: Plugin = Plugin {
    name: "certbind_billing",
    listener: "billing_sidecar",
    cert: "billing",
    audience: "spiffe://certbind.test/ns/demo/sa/billing",
    dpop: false,
};
const EDGE: Plugin = Plugin {
    name: "certbind_orders_edge",
    listener: "orders_edge",
    cert: "orders",
    audience: AUDIENCE,
    dpop: true,
};

/// The plugin configuration on the measured listener, then the two on the idle ones.
fn plugins(scenario: Scenario) -> (Plugin, [Plugin; 2]) {
    if scenario == Scenario::S5d {
        (EDGE, [ORDERS, BILLING])
    } else {
        (ORDERS, [BILLING, EDGE])
    }
}

fn map(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn with(vars: &BTreeMap<String, String>, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut all = vars.clone();
    all.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    all
}

fn rendered(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    render(template, vars).map_err(|e| e.to_string())
}

/// A listener's transport: none, TLS with `cert`, or mTLS.
fn transport(
    tls: bool,
    mtls: bool,
    cert: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    if !tls {
        // `filters:` below continues this list item.
        return Ok("    - name: plain".to_owned());
    }
    let validation = if mtls {
        rendered(VALIDATION, vars)?
    } else {
        String::new()
    };
    rendered(
        TLS_CHAIN,
        &with(
            vars,
            &[
                ("VALIDATION", validation),
                ("SERVER_CERT", cert.to_owned()),
                ("REQUIRE_CLIENT_CERT", mtls.to_string()),
            ],
        ),
    )
}

/// `plugin`'s certbind filter for a listener on `port`; on the `measured` one with the
/// benchmark's DPoP settings (S5d), else with the sidecar's.
fn certbind_filter(
    plugin: Plugin,
    port: u16,
    measured: bool,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let vars = with(vars, &[("LISTENER_PORT", port.to_string())]);
    let binding = match (plugin.dpop, measured) {
        (false, _) => String::new(),
        (true, true) => rendered(DPOP_BINDING, &vars)?,
        (true, false) => rendered(SIDECAR_DPOP_BINDING, &vars)?,
    };
    rendered(
        CERTBIND_FILTER,
        &with(
            &vars,
            &[
                ("PLUGIN_NAME", plugin.name.to_owned()),
                ("PLUGIN_AUDIENCE", plugin.audience.to_owned()),
                ("BINDING", binding),
            ],
        ),
    )
}

fn listener(
    name: &str,
    port: u16,
    transport: String,
    filters: String,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    rendered(
        LISTENER,
        &with(
            vars,
            &[
                ("LISTENER_NAME", name.to_owned()),
                ("LISTENER_PORT", port.to_string()),
                ("CHAIN_TRANSPORT", transport),
                ("HTTP_FILTERS", filters),
            ],
        ),
    )
}

/// The Envoy configuration of `scenario` (a YAML document), or why there is none.
pub fn envoy_config(scenario: Scenario, v: &ConfigVars) -> Result<String, String> {
    let sidecar = scenario == Scenario::S5o;
    let only_s5o = |text: &str| if sidecar { text } else { "" }.to_owned();
    let vars = map(&[
        ("SCENARIO", scenario.id().to_owned()),
        ("DESCRIPTION", scenario.describe().to_owned()),
        ("ADMIN_PORT", v.admin_port.to_string()),
        ("UPSTREAM_PORT", v.upstream_port.to_string()),
        ("AUTHZ_PORT", v.authz_port.to_string()),
        ("PDP_PORT", v.pdp_port.to_string()),
        ("PKI_DIR", v.pki_dir.display().to_string()),
        ("ISSUER", v.issuer.clone()),
        ("AUDIENCE", AUDIENCE.to_owned()),
        // Single-quoted YAML: a quote inside would be doubled; JWKS JSON has none.
        ("JWKS", v.jwks_json.replace('\'', "''")),
        ("CERTBIND_WASM", v.certbind_wasm.display().to_string()),
        ("NOOP_WASM", v.noop_wasm.display().to_string()),
        ("VERIFY_ARGUMENTS", v.verify_arguments.clone()),
        (
            "DECISION_CACHE_SIZE",
            if scenario == Scenario::S5p {
                "0"
            } else {
                "1024"
            }
            .to_owned(),
        ),
        (
            "OVERLOAD_MANAGER",
            only_s5o(&format!(
                "{SIDECAR_OVERLOAD_MANAGER}\n{SIDECAR_LISTENER_LIMIT}"
            )),
        ),
        ("AUTHZ_BREAKERS", only_s5o(SIDECAR_AUTHZ_BREAKERS)),
        ("PDP_BREAKERS", only_s5o(SIDECAR_PDP_BREAKERS)),
        ("UPSTREAM_BREAKERS", only_s5o(SIDECAR_UPSTREAM_BREAKERS)),
        // The benchmark's scenarios give the PDP a second; S5o keeps the filter's default
        // (200 ms), which is what the sidecar runs with.
        (
            "PDP_TIMEOUT",
            if sidecar {
                ""
            } else {
                r#", "timeout_ms": 1000"#
            }
            .to_owned(),
        ),
    ]);
    let r = |t: &str| rendered(t, &vars);
    let jwt = |extra: &str| rendered(JWT_AUTHN, &with(&vars, &[("JWT_EXTRA", extra.to_owned())]));
    let (main, siblings) = plugins(scenario);
    let (filters, clusters) = match scenario {
        Scenario::S0 | Scenario::S1 | Scenario::S2 => (String::new(), String::new()),
        Scenario::S2w | Scenario::S2v => {
            let configuration = if scenario == Scenario::S2v {
                r(NOOP_VERIFY)?
            } else {
                String::new()
            };
            let noop = with(&vars, &[("NOOP_CONFIGURATION", configuration)]);
            (rendered(NOOP_FILTER, &noop)?, String::new())
        }
        Scenario::S3 => (jwt(&format!("{JWT_CACHE}{CLAIM_HEADERS}"))?, String::new()),
        Scenario::S3u => (jwt(CLAIM_HEADERS)?, String::new()),
        Scenario::S3b => (
            format!(
                "{}\n{}",
                jwt(&format!("{JWT_CACHE}{CLAIM_HEADERS}{PAYLOAD_IN_METADATA}"))?,
                binding_filters()
            ),
            String::new(),
        ),
        Scenario::S4 => (
            format!(
                "{}\n{}",
                jwt(&format!("{JWT_CACHE}{JWT_PAYLOAD}"))?,
                r(EXT_AUTHZ)?
            ),
            r(PDP_CLUSTER)?,
        ),
        Scenario::S5 | Scenario::S5p | Scenario::S5c | Scenario::S5d | Scenario::S5o => (
            certbind_filter(main, v.listen_port, true, &vars)?,
            format!("{}\n{}", r(CERTBIND_CLUSTERS)?, r(PDP_CLUSTER)?),
        ),
    };
    let mut listeners = vec![listener(
        "bench",
        v.listen_port,
        transport(scenario.tls(), scenario.mtls(), main.cert, &vars)?,
        filters,
        &vars,
    )?];
    if scenario.certbind() {
        for (plugin, port) in siblings.into_iter().zip(v.sibling_ports) {
            listeners.push(listener(
                plugin.listener,
                port,
                transport(true, !plugin.dpop, plugin.cert, &vars)?,
                certbind_filter(plugin, port, false, &vars)?,
                &vars,
            )?);
        }
    }
    let all = with(
        &vars,
        &[
            ("LISTENERS", listeners.join("\n")),
            ("EXTRA_CLUSTERS", clusters),
        ],
    );
    let yaml = rendered(BASE, &all)?;
    // Empty filter lists leave blank lines; YAML does not mind, a reader does.
    Ok(yaml
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

#[cfg(test)]
mod tests;
