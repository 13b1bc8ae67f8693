//! Fault injection for tests: built only with the cargo feature
//! `fault-injection`, which the crate's own tests turn on through a
//! dev-dependency on itself. Production builds have no such code path.
//!
//! A test installs a hook with [`LxcManager::set_fault_hook`]. A create
//! calls it at every [`FaultPoint`]: after each step has succeeded, and
//! once inside the template build, after the template is complete but
//! before it is published under its final name. When the hook returns an
//! error, the create fails there as if the step had failed, so its undo
//! runs. A hook may also act on the host first (mount over a directory to
//! make an undo fail, say) or block forever so that a test can kill the
//! process at that point.

use std::sync::Arc;

use berth_core::progress::Step;
use berth_core::{Error, Result};

use crate::manager::LxcManager;

/// A point of a create at which the fault hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The step has just succeeded.
    After(Step),
    /// A template build has its root file system and configuration but is
    /// not yet renamed to its final name. Called only when this create
    /// builds the template.
    TemplateBuilt,
}

impl FaultPoint {
    /// The create steps in their order, each as an [`FaultPoint::After`]
    /// point: the points every create passes.
    pub const CREATE_STEPS: [Step; 9] = [
        Step::Directory,
        Step::UserData,
        Step::Image,
        Step::Template,
        Step::Clone,
        Step::Configure,
        Step::Seed,
        Step::Start,
        Step::Wait,
    ];

    /// Returns the step an injected failure at this point is reported as.
    pub fn step(self) -> Step {
        match self {
            Self::After(step) => step,
            Self::TemplateBuilt => Step::Template,
        }
    }
}

impl std::fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::After(step) => write!(f, "after {step}"),
            Self::TemplateBuilt => f.write_str("template built, not yet published"),
        }
    }
}

/// A fault hook: called with the container name (the temporary template
/// name at [`FaultPoint::TemplateBuilt`]) and the point. An error fails the
/// create at that point with the returned message.
pub type FaultHook = dyn Fn(&str, FaultPoint) -> std::result::Result<(), String> + Send + Sync;

impl LxcManager {
    /// Installs `hook`, or removes the hook when `None`. Affects creates
    /// that reach a fault point after this call.
    pub fn set_fault_hook(&self, hook: Option<Arc<FaultHook>>) {
        *self
            .fault_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }

    /// Calls the installed hook, if any, after `step` of container `name`.
    pub(crate) fn fault_after(&self, name: &str, step: Step) -> Result<()> {
        self.fault(name, FaultPoint::After(step))
    }

    /// Calls the installed hook, if any, when template build `building` is
    /// complete but not yet published.
    pub(crate) fn fault_template_built(&self, building: &str) -> Result<()> {
        self.fault(building, FaultPoint::TemplateBuilt)
    }

    fn fault(&self, name: &str, point: FaultPoint) -> Result<()> {
        let hook = self
            .fault_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match hook {
            Some(hook) => hook(name, point).map_err(|message| {
                Error::step(
                    name,
                    point.step(),
                    format!("fault injected {point}: {message}"),
                )
            }),
            None => Ok(()),
        }
    }
}
