//! What a caller asks for ([`NewBuild`], [`NewModule`]) and its validation: every rule is checked before
//! anything is stored, and a refusal names the field (`modules[2].depends_on`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::model::{Build, Module, UserId};
use crate::{Error, FieldError};

/// The most modules a build may have.
pub const MAX_MODULES: usize = 500;
/// The longest project, ref or module name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// The longest command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// The longest timeout, in seconds (one day).
pub const MAX_TIMEOUT_S: u64 = 24 * 3600;
/// The most automatic retries of a module.
pub const MAX_RETRIES: u32 = 10;
/// The most builds in one batch.
pub const MAX_BATCH: usize = 100;

/// A build to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBuild {
    /// The project built.
    pub project: String,
    /// The ref built (default `main`).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Stop at the first hard failure (default false).
    #[serde(default)]
    pub fail_fast: Option<bool>,
    /// The whole build's timeout in seconds (default: the hub's).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Its modules.
    pub modules: Vec<NewModule>,
}

/// A module of a [`NewBuild`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewModule {
    /// Unique within the build: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// What the hub's executor runs (admins only, and only with an executor).
    #[serde(default)]
    pub command: Option<String>,
    /// Modules that must finish well first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A failure neither fails the build nor blocks dependents.
    #[serde(default)]
    pub allow_failure: bool,
    /// One run's timeout in seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Automatic retries of a failed run (default: the hub's).
    #[serde(default)]
    pub retries: Option<u32>,
}

impl NewBuild {
    /// A build of `project` with `modules`.
    pub fn new(project: impl Into<String>, modules: Vec<NewModule>) -> Self {
        Self { project: project.into(), modules, ..Self::default() }
    }
}

impl NewModule {
    /// A module called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// Depends on `names`.
    #[must_use]
    pub fn depends_on<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.depends_on = names.into_iter().map(Into::into).collect();
        self
    }

    /// Runs `command`.
    #[must_use]
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }
}

/// What the caller may put in a build, decided by the service from the actor and the hub.
pub(crate) struct Allowed {
    /// Commands are accepted (an admin or the system, and an executor is configured).
    pub(crate) commands: Result<(), &'static str>,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Checks `spec` (its fields named under `prefix`, e.g. `builds[1].`) and turns it into a queued build.
pub(crate) fn prepare(
    spec: NewBuild,
    prefix: &str,
    allowed: &Allowed,
    config: &BuildConfig,
    created_by: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Build, Error> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut refuse = |field: String, message: String| errors.push(FieldError { field, message });
    let project = spec.project.trim();
    if project.is_empty() || project.len() > MAX_NAME_BYTES || project.chars().any(char::is_control) {
        refuse(format!("{prefix}project"), format!("the project must be 1 to {MAX_NAME_BYTES} bytes of text"));
    }
    let git_ref = spec.git_ref.as_deref().map_or("main", str::trim);
    if git_ref.is_empty() || git_ref.len() > MAX_NAME_BYTES || git_ref.chars().any(char::is_control) {
        refuse(format!("{prefix}ref"), format!("the ref must be 1 to {MAX_NAME_BYTES} bytes of text"));
    }
    if spec.timeout_s.is_some_and(|timeout| timeout == 0 || timeout > MAX_TIMEOUT_S) {
        refuse(format!("{prefix}timeout_s"), format!("the timeout must be 1 to {MAX_TIMEOUT_S} seconds"));
    }
    if spec.modules.is_empty() || spec.modules.len() > MAX_MODULES {
        refuse(format!("{prefix}modules"), format!("a build has 1 to {MAX_MODULES} modules"));
    }
    let mut seen = HashSet::new();
    for (index, module) in spec.modules.iter().enumerate() {
        let field = |name: &str| format!("{prefix}modules[{index}].{name}");
        if !name_ok(&module.name) {
            refuse(field("name"), format!("a module name is 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-'"));
        } else if !seen.insert(module.name.as_str()) {
            refuse(field("name"), format!("the module name {:?} is used twice", module.name));
        }
        if let Some(command) = &module.command {
            if let Err(why) = allowed.commands {
                refuse(field("command"), why.to_owned());
            } else if command.trim().is_empty() || command.len() > MAX_COMMAND_BYTES || command.contains('\0') {
                refuse(field("command"), format!("a command is 1 to {MAX_COMMAND_BYTES} bytes, without NUL"));
            }
        }
        if module.timeout_s.is_some_and(|timeout| timeout == 0 || timeout > MAX_TIMEOUT_S) {
            refuse(field("timeout_s"), format!("the timeout must be 1 to {MAX_TIMEOUT_S} seconds"));
        }
        if module.retries.is_some_and(|retries| retries > MAX_RETRIES) {
            refuse(field("retries"), format!("at most {MAX_RETRIES} retries"));
        }
        if module.depends_on.len() > MAX_MODULES {
            refuse(field("depends_on"), format!("at most {MAX_MODULES} dependencies"));
        }
    }
    let names: HashSet<&str> = spec.modules.iter().map(|module| module.name.as_str()).collect();
    for (index, module) in spec.modules.iter().enumerate() {
        let mut unique = HashSet::new();
        for dependency in &module.depends_on {
            let field = format!("{prefix}modules[{index}].depends_on");
            if dependency == &module.name {
                refuse(field, format!("{:?} depends on itself", module.name));
            } else if !names.contains(dependency.as_str()) {
                refuse(field, format!("unknown dependency {dependency:?}"));
            } else if !unique.insert(dependency.as_str()) {
                refuse(field, format!("the dependency {dependency:?} is named twice"));
            }
        }
    }
    if errors.is_empty()
        && let Some(index) = cycle_member(&spec.modules)
    {
        errors.push(FieldError {
            field: format!("{prefix}modules[{index}].depends_on"),
            message: format!("the dependencies of {:?} form a cycle", spec.modules[index].name),
        });
    }
    if let Some(first) = errors.first() {
        let mut error = Error::invalid_input(first.message.clone());
        for field in errors {
            error = error.with_field(field.field, field.message);
        }
        return Err(error);
    }
    let modules = spec
        .modules
        .into_iter()
        .map(|module| Module {
            command: module.command,
            depends_on: module.depends_on,
            allow_failure: module.allow_failure,
            timeout_s: module.timeout_s,
            retries: module.retries.unwrap_or(config.default_retries),
            ..Module::new(module.name)
        })
        .collect();
    let mut build = Build::new(project, git_ref, modules, now);
    build.priority = spec.priority.unwrap_or(0);
    build.fail_fast = spec.fail_fast.unwrap_or(false);
    build.timeout_s = Some(spec.timeout_s.unwrap_or_else(|| config.default_timeout.as_secs().max(1)));
    build.created_by = created_by;
    build.mark_ready(now);
    Ok(build)
}

/// A module on a dependency cycle, if there is one (Kahn's algorithm: what cannot be ordered is on or behind a
/// cycle; the first such module in declaration order that is on one is named).
fn cycle_member(modules: &[NewModule]) -> Option<usize> {
    let index: HashMap<&str, usize> = modules.iter().enumerate().map(|(i, module)| (module.name.as_str(), i)).collect();
    let mut waiting: Vec<usize> = modules.iter().map(|module| module.depends_on.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); modules.len()];
    for (i, module) in modules.iter().enumerate() {
        for dependency in &module.depends_on {
            if let Some(&d) = index.get(dependency.as_str()) {
                dependents[d].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..modules.len()).filter(|&i| waiting[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &dependent in &dependents[i] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    if ordered == modules.len() {
        return None;
    }
    // Walk back along unordered dependencies from any unordered module: a path in a finite graph that never
    // reaches an ordered module must revisit one, and the revisited module is on a cycle.
    let mut at = (0..modules.len()).find(|&i| waiting[i] > 0)?;
    let mut visited = HashSet::new();
    while visited.insert(at) {
        at = modules[at]
            .depends_on
            .iter()
            .filter_map(|name| index.get(name.as_str()).copied())
            .find(|&d| waiting[d] > 0)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Allowed {
        Allowed { commands: Ok(()) }
    }

    fn check(modules: Vec<NewModule>) -> Result<Build, Error> {
        prepare(NewBuild::new("web", modules), "", &allowed(), &BuildConfig::default(), None, Utc::now())
    }

    fn fields(error: &Error) -> Vec<String> {
        error.fields().iter().map(|field| field.field.clone()).collect()
    }

    #[test]
    fn a_cycle_an_unknown_dependency_and_a_duplicate_name_are_refused_by_field() {
        let cycle = check(vec![
            NewModule::new("a"),
            NewModule::new("b").depends_on(["d"]),
            NewModule::new("c").depends_on(["b"]),
            NewModule::new("d").depends_on(["c"]),
        ])
        .expect_err("a cycle");
        assert_eq!(fields(&cycle).len(), 1);
        assert!(fields(&cycle)[0].starts_with("modules["), "{cycle:?}");
        assert!(cycle.to_string().contains("cycle"));

        let unknown = check(vec![NewModule::new("a").depends_on(["ghost"])]).expect_err("unknown");
        assert_eq!(fields(&unknown), ["modules[0].depends_on"]);
        let twice = check(vec![NewModule::new("a"), NewModule::new("a")]).expect_err("duplicate");
        assert_eq!(fields(&twice), ["modules[1].name"]);
        let refused = prepare(
            NewBuild::new("web", vec![NewModule::new("a").command("make")]),
            "builds[3].",
            &Allowed { commands: Err("only admins may give commands") },
            &BuildConfig::default(),
            None,
            Utc::now(),
        )
        .expect_err("no commands");
        assert_eq!(fields(&refused), ["builds[3].modules[0].command"]);
    }

    #[test]
    fn a_valid_dag_becomes_a_queued_build_with_defaults() {
        let build = check(vec![NewModule::new("a"), NewModule::new("b").depends_on(["a"])]).expect("valid");
        assert_eq!(build.git_ref, "main");
        assert_eq!(build.timeout_s, Some(300));
        assert!(build.modules[0].ready_at.is_some() && build.modules[1].ready_at.is_none());
    }
}
