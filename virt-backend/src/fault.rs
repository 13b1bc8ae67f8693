//! Fault injection for tests: built only with the cargo feature
//! `fault-injection`, which the crate's own tests turn on through a
//! dev-dependency on itself. Production builds have no such code path.
//!
//! A test installs a hook with [`VirtManager::set_fault_hook`]. A create
//! calls it at every [`FaultPoint`]: after each step has succeeded, and
//! once inside a base image import, after the bytes are uploaded and
//! checked but before the image is published under its final volume name.
//! When the hook returns an error, the create fails there as if the step
//! had failed, so its undo runs. A hook may also act on the host first
//! (mount over a file to make an undo fail, say) or block forever so that
//! a test can kill the process at that point.

use std::sync::Arc;

use berth_core::{Error, Result, Step};

use crate::manager::VirtManager;

/// A point of a create at which the fault hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The step has just succeeded.
    After(Step),
    /// A base image import has uploaded and checked its `.partial` volume
    /// but not yet cloned it into the final volume. Called only when this
    /// create imports the image.
    ImageUploaded,
}

impl FaultPoint {
    /// The create steps in their order, each as an [`FaultPoint::After`]
    /// point: the points every create passes.
    pub const CREATE_STEPS: [Step; 9] = [
        Step::Directory,
        Step::UserData,
        Step::Image,
        Step::Clone,
        Step::Seed,
        Step::Define,
        Step::Configure,
        Step::Start,
        Step::Wait,
    ];

    /// Returns the step an injected failure at this point is reported as.
    pub fn step(self) -> Step {
        match self {
            Self::After(step) => step,
            Self::ImageUploaded => Step::Image,
        }
    }
}

impl std::fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::After(step) => write!(f, "after {step}"),
            Self::ImageUploaded => f.write_str("image uploaded, not yet published"),
        }
    }
}

/// A fault hook: called with the container name and the point. An error
/// fails the create at that point with the returned message.
pub type FaultHook = dyn Fn(&str, FaultPoint) -> std::result::Result<(), String> + Send + Sync;

impl VirtManager {
    /// Installs `hook`, or removes the hook when `None`. Affects creates
    /// that reach a fault point after this call.
    pub fn set_fault_hook(&self, hook: Option<Arc<FaultHook>>) {
        *self
            .fault_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }

    /// Calls the installed hook, if any, after `step` of container `name`,
    /// and returns its error as a failure of that step.
    pub(crate) fn fault_step(&self, name: &str, step: Step) -> Result<()> {
        let point = FaultPoint::After(step);
        self.fault(name, point)
            .map_err(|message| Error::step(name, point.step(), message))
    }

    /// Calls the installed hook, if any, at `point` of container `name`.
    /// Returns the hook's error as a message that names the point.
    pub(crate) fn fault(&self, name: &str, point: FaultPoint) -> std::result::Result<(), String> {
        let hook = self
            .fault_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match hook {
            Some(hook) => {
                hook(name, point).map_err(|message| format!("fault injected {point}: {message}"))
            }
            None => Ok(()),
        }
    }
}
