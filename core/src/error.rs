//! The error type shared by every backend.

use std::fmt;
use std::path::PathBuf;

use crate::progress::Step;

/// Result with berth's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One rejected input value: which field, the value as given, and the rule
/// it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The field or option that holds the value, such as `manager name`.
    pub field: String,
    /// The value as the caller gave it (printed with escapes).
    pub value: String,
    /// The rule the value breaks, as a sentence a user can act on.
    pub rule: String,
}

impl InvalidValue {
    /// Creates a rejection of `value` in `field` for breaking `rule`.
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.field, self.value, self.rule)
    }
}

impl std::error::Error for InvalidValue {}

/// Boxed error from a backend library or the operating system.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a manager, initialiser or helper of berth.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input value breaks a rule; nothing was created.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),

    /// Several input values break rules; nothing was created.
    #[error("{}", join_problems(.0))]
    InvalidMany(Vec<InvalidValue>),

    /// A container or domain with this name already exists.
    #[error("container {name:?} already exists")]
    AlreadyExists {
        /// Full container name.
        name: String,
    },

    /// A step of an operation on a container failed.
    #[error("{step} of container {container:?} failed")]
    Step {
        /// Full container name.
        container: String,
        /// The step that failed.
        step: Step,
        /// The cause, from the backend library or the operating system.
        #[source]
        source: BoxError,
    },

    /// A create failed and undoing its steps failed as well. The original
    /// failure is the source; the undo failures are listed in the message.
    #[error("{cause}; undo also failed: {}", join_errors(.undo))]
    UndoFailed {
        /// The failure that started the undo.
        #[source]
        cause: Box<Error>,
        /// Each undo step that failed, as a message.
        undo: Vec<String>,
    },

    /// A file system operation failed on a path.
    #[error("{action} {path}", path = .path.display())]
    Io {
        /// The action that failed, such as `create directory`.
        action: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The host is not able to run this backend.
    #[error("host not ready: {message}")]
    Host {
        /// The missing part and how to fix it.
        message: String,
        /// The cause, where there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other failure of a backend library, with context.
    #[error("{context}")]
    Backend {
        /// The action that failed.
        context: String,
        /// The backend library's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Step`] for `step` of `container`.
    pub fn step(container: &str, step: Step, source: impl Into<BoxError>) -> Self {
        Self::Step {
            container: container.to_owned(),
            step,
            source: source.into(),
        }
    }

    /// Attaches the failures of an undo to this error. With no undo
    /// failures the error is returned unchanged.
    pub fn with_undo_failures(self, undo: Vec<String>) -> Self {
        if undo.is_empty() {
            self
        } else {
            Self::UndoFailed {
                cause: Box::new(self),
                undo,
            }
        }
    }

    /// Returns true when the error means nothing was created because an
    /// input was invalid.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::InvalidMany(_))
    }
}

fn join_problems(problems: &[InvalidValue]) -> String {
    let mut text = format!("{} invalid values:", problems.len());
    for problem in problems {
        text.push_str("\n  - ");
        text.push_str(&problem.to_string());
    }
    text
}

fn join_errors(errors: &[String]) -> String {
    errors.join("; ")
}

/// Formats an error and each of its sources, separated by `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
