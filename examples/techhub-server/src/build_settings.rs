//! The `TECHHUB_BUILD_*` variables (API.md, "Example server configuration"), read on their own so the build
//! settings stay in one place. A bad value stops the server at start with a message naming the variable.

use std::time::Duration;

use techhub_core::BuildConfig;

use crate::settings::SettingError;

/// How builds run on this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildSettings {
    /// `TECHHUB_BUILD_EXECUTOR=process`: module commands run on this host (`none`: external executors only).
    pub(crate) process_executor: bool,
    /// `TECHHUB_BUILD_CONCURRENCY`: builds at once (workers on the `builds` queue).
    pub(crate) concurrency: usize,
    /// `TECHHUB_BUILD_MODULE_CONCURRENCY`: modules of one build at once.
    pub(crate) module_concurrency: usize,
    /// `TECHHUB_BUILD_MAX_QUEUED`: queued builds allowed.
    pub(crate) max_queued: usize,
    /// `TECHHUB_BUILD_TIMEOUT`: a build's default timeout.
    pub(crate) timeout: Duration,
    /// `TECHHUB_BUILD_RETRIES`: automatic retries of a failed module by default.
    pub(crate) retries: u32,
    /// `TECHHUB_BUILD_LOG_MAX_BYTES`: the log kept per module.
    pub(crate) log_max_bytes: u64,
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    range: (T, T),
) -> Result<T, SettingError> {
    let Some(text) = lookup(variable).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(value) if value >= range.0 && value <= range.1 => Ok(value),
        _ => Err(SettingError {
            variable,
            problem: format!("{text:?}: expected a whole number from {} to {}", range.0, range.1),
        }),
    }
}

impl BuildSettings {
    /// Reads the variables through `lookup`.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let process_executor = match lookup("TECHHUB_BUILD_EXECUTOR").as_deref().map(str::trim) {
            None | Some("" | "none") => false,
            Some("process") => true,
            Some(other) => {
                return Err(SettingError {
                    variable: "TECHHUB_BUILD_EXECUTOR",
                    problem: format!("{other:?}: expected none or process"),
                });
            }
        };
        Ok(Self {
            process_executor,
            concurrency: number(&lookup, "TECHHUB_BUILD_CONCURRENCY", 4, (1, 256))?,
            module_concurrency: number(&lookup, "TECHHUB_BUILD_MODULE_CONCURRENCY", 4, (1, 256))?,
            max_queued: number(&lookup, "TECHHUB_BUILD_MAX_QUEUED", 100, (1, 1_000_000))?,
            timeout: Duration::from_secs(number(&lookup, "TECHHUB_BUILD_TIMEOUT", 300, (1, 86_400))?),
            retries: number(&lookup, "TECHHUB_BUILD_RETRIES", 0, (0, 10))?,
            log_max_bytes: number(&lookup, "TECHHUB_BUILD_LOG_MAX_BYTES", 10 * 1024 * 1024, (1_024, 1 << 40))?,
        })
    }

    /// The hub's build configuration.
    pub(crate) fn config(&self) -> BuildConfig {
        BuildConfig::default()
            .module_concurrency(self.module_concurrency)
            .max_queued(self.max_queued)
            .default_timeout(self.timeout)
            .default_retries(self.retries)
            .log_max_bytes(self.log_max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<BuildSettings, SettingError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        BuildSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_api_md() {
        let settings = read(&[]).expect("defaults are valid");
        assert!(!settings.process_executor);
        assert_eq!((settings.concurrency, settings.module_concurrency, settings.max_queued), (4, 4, 100));
        assert_eq!(
            (settings.timeout, settings.retries, settings.log_max_bytes),
            (Duration::from_secs(300), 0, 10 << 20)
        );
        assert!(read(&[("TECHHUB_BUILD_EXECUTOR", "process")]).expect("valid").process_executor);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (variable, value) in [
            ("TECHHUB_BUILD_EXECUTOR", "docker"),
            ("TECHHUB_BUILD_CONCURRENCY", "0"),
            ("TECHHUB_BUILD_MODULE_CONCURRENCY", "many"),
            ("TECHHUB_BUILD_MAX_QUEUED", "-1"),
            ("TECHHUB_BUILD_TIMEOUT", "0"),
            ("TECHHUB_BUILD_RETRIES", "11"),
            ("TECHHUB_BUILD_LOG_MAX_BYTES", "12"),
        ] {
            let error = read(&[(variable, value)]).expect_err(variable);
            assert_eq!(error.variable, variable, "{error}");
        }
    }
}
