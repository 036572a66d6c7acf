//! A running [`System`] as the attack table's [`Switch`]: "down" stops the PDP or the
//! authz-server, "up" restarts it on the same port (the authz-server keeps its keys).

use crate::System;
use certbind_demo::control::{ControlError, Dependency, Switch};
use std::sync::{Mutex, MutexGuard};

pub struct SystemSwitch(pub Mutex<System>);

impl std::fmt::Debug for SystemSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemSwitch")
    }
}

impl SystemSwitch {
    pub fn system(&self) -> MutexGuard<'_, System> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Switch for SystemSwitch {
    fn available(&self, _: Dependency) -> bool {
        true
    }

    fn down(&self, which: Dependency) -> Result<(), ControlError> {
        let mut system = self.system();
        match which {
            Dependency::Pdp => system.stop_pdp(),
            Dependency::Authz => system.stop_authz(),
        }
        Ok(())
    }

    fn up(&self, which: Dependency) -> Result<(), ControlError> {
        let mut system = self.system();
        match which {
            Dependency::Pdp => system.start_pdp(),
            Dependency::Authz => system.start_authz(),
        }
        .map_err(|e| ControlError(e.to_string()))
    }
}
