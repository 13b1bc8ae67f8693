//! Progress of long operations, for callers that show it.
//!
//! A manager reports each step of a create as it starts and ends, and byte
//! counts while it downloads or imports an image. Observing progress never
//! changes the result of the operation.

use std::fmt;
use std::time::Duration;

/// A named step of creating or destroying a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Checking the inputs.
    Validate,
    /// Creating the container directory.
    Directory,
    /// Writing the cloud-init user data.
    UserData,
    /// Fetching or importing an image.
    Image,
    /// Building the template container or base volume of an image.
    Template,
    /// Cloning the template into the new container.
    Clone,
    /// Defining the domain or its volumes.
    Define,
    /// Applying the container's configuration.
    Configure,
    /// Writing the NoCloud seed.
    Seed,
    /// Starting the container.
    Start,
    /// Waiting for the container to be running.
    Wait,
    /// Stopping the container.
    Stop,
    /// Destroying the container and its storage.
    Destroy,
    /// Moving the container directory aside.
    RemoveDirectory,
    /// Listing containers.
    List,
}

impl Step {
    /// Returns the step's name as printed in messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Directory => "directory",
            Self::UserData => "user data",
            Self::Image => "image",
            Self::Template => "template",
            Self::Clone => "clone",
            Self::Define => "define",
            Self::Configure => "configure",
            Self::Seed => "seed",
            Self::Start => "start",
            Self::Wait => "wait",
            Self::Stop => "stop",
            Self::Destroy => "destroy",
            Self::RemoveDirectory => "remove directory",
            Self::List => "list",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent<'a> {
    /// A step of the named container's create began.
    StepStarted {
        /// Full container name.
        container: &'a str,
        /// The step.
        step: Step,
    },
    /// A step of the named container's create ended successfully.
    StepFinished {
        /// Full container name.
        container: &'a str,
        /// The step.
        step: Step,
        /// Time the step took.
        elapsed: Duration,
    },
    /// Bytes of a download or import so far.
    Bytes {
        /// The transferred item, such as an image URL or file name.
        what: &'a str,
        /// Bytes transferred so far.
        done: u64,
        /// Total size in bytes, where known.
        total: Option<u64>,
    },
}

/// Receives progress reports. Implementations must be cheap and must not
/// panic: they run on the manager's thread in the middle of an operation.
pub trait Progress: Send + Sync {
    /// Handles one report.
    fn report(&self, event: &ProgressEvent<'_>);
}

/// A [`Progress`] that ignores every report.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _event: &ProgressEvent<'_>) {}
}

impl<F> Progress for F
where
    F: Fn(&ProgressEvent<'_>) + Send + Sync,
{
    fn report(&self, event: &ProgressEvent<'_>) {
        self(event)
    }
}

/// Runs `work` as `step` of `container`, reporting its start and, when it
/// succeeds, its end with the time it took.
pub fn run_step<T, E>(
    progress: &dyn Progress,
    container: &str,
    step: Step,
    work: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    progress.report(&ProgressEvent::StepStarted { container, step });
    let started = std::time::Instant::now();
    let value = work()?;
    progress.report(&ProgressEvent::StepFinished {
        container,
        step,
        elapsed: started.elapsed(),
    });
    tracing::debug!(
        container,
        step = step.as_str(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "step finished"
    );
    Ok(value)
}
