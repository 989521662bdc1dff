//! Why a scenario file was refused.

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML does not have the scenario's shape (a typo, a wrong type).
    #[error("{0}")]
    Parse(Box<figment::Error>),
    /// The TOML parsed but says something impossible.
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn invalid(msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(msg.into())
}
