//! certbind-pdp: the policy decision point. Pure policy logic (`policy`, `pattern`,
//! `condition`, `compile`, `eval`) apart from the I/O around it (`reload`, `app`, `tls`, `serve`).

pub mod app;
pub mod compile;
pub mod condition;
pub mod eval;
pub mod ext_authz;
pub mod health;
pub mod metrics;
pub mod pattern;
pub mod policy;
pub mod reload;
pub mod serve;
pub mod tls;

pub use app::{AppState, PeerIdentity, app};
pub use compile::CompiledPolicy;
pub use eval::{Outcome, Reason, decide};
pub use reload::PolicyStore;
