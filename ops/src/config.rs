//! Loading a binary's configuration, written once: defaults, then a TOML
//! file if one is given, then environment variables under a prefix (`__`
//! separates levels: `RINGSIDE_ORIGIN_RULES__SEATS=6` sets `rules.seats`).
//! Unknown keys are the config type's to refuse (`deny_unknown_fields`).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};

/// `T::default()`, then `file` (which must exist when given), then the
/// `prefix`ed environment.
pub fn load<T>(file: Option<&Path>, prefix: &str) -> Result<T, Box<figment::Error>>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(f) = file {
        fig = fig.merge(Toml::file_exact(f));
    }
    fig.merge(Env::prefixed(prefix).split("__"))
        .extract()
        .map_err(Box::new)
}
