//! ES256 through Envoy's BoringSSL: the once-per-VM probe that decides whether this VM's
//! signatures go to the host (`host::EnvoyForeign`) or stay in the module.

use crate::host::EnvoyForeign;
use crate::metrics::{Counter, Metrics};
use certbind_core::flow::Engine;
use certbind_core::host_es256::{Probe, probe};

/// Probes the host's `verify_signature` once per VM: used when it answers a known genuine and
/// a known tampered signature rightly; otherwise signatures stay in the module, said once in
/// the log and counted.
pub fn use_host_signatures(engine: &mut Engine, metrics: &Metrics, root_id: u32) {
    match probe(&EnvoyForeign) {
        Probe::Works => engine.use_host_signatures(Box::new(EnvoyForeign)),
        Probe::Missing => {
            log::warn!(
                "[ctx {root_id}] host has no verify_signature: ES256 verified inside the module"
            );
            metrics.bump(Counter::Es256InModule);
        }
        Probe::Wrong => {
            log::error!(
                "[ctx {root_id}] host verify_signature answered a known case wrongly: \
                 not used, ES256 verified inside the module"
            );
            metrics.bump(Counter::Es256InModule);
        }
    }
}
