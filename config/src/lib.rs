//! The one configuration loader of the gateway and the node: defaults, then a TOML file,
//! then environment variables, deserialised into the caller's `serde(deny_unknown_fields)`
//! struct; flags are applied by the caller on top. Unknown keys in the file and unknown
//! variables in the caller's namespace are errors that name them.
//!
//! It knows no setting of either binary: the caller names its namespace and hands over a
//! value with every key set, whose serialisation lists the keys and types the variables.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The environment variables that belong to one binary.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    /// `OBB_` for the gateway, `OBB_NODE_` for the node.
    pub prefix: &'a str,
    /// Sections reached as `<prefix><section>_<key>`, longest first where one is the end of
    /// another (`local_llm` before `llm`).
    pub sections: &'a [&'a str],
    /// Where a key of no listed section lives: a section, or the top level when `None`.
    pub default_section: Option<&'a str>,
    /// Variables under `prefix` that are not settings of this binary: exact names, or
    /// prefixes ending in `_` (the node's `OBB_NODE_` for the gateway). A variable under such
    /// a prefix that names one of this binary's keys is still its setting (the gateway's
    /// `OBB_NODE_ALIVE_SECONDS` is `node_alive_seconds`).
    pub not_settings: &'a [&'a str],
    /// Where the settings are documented, for the message about an unknown variable.
    pub docs: &'a str,
}

impl Namespace<'_> {
    /// Whether `name` is this binary's: `Some(true)` surely, `Some(false)` surely not, `None`
    /// when only a prefix of another's says not (then it is if it names a key).
    fn is_setting(&self, name: &str) -> Option<bool> {
        if !name.starts_with(self.prefix) || self.not_settings.contains(&name) {
            return Some(false);
        }
        let others = self
            .not_settings
            .iter()
            .any(|other| other.ends_with('_') && name.starts_with(other));
        if others { None } else { Some(true) }
    }

    /// The section (or `None`, the top level) and key a variable names.
    fn place(&self, name: &str) -> (Option<String>, String) {
        let rest = name[self.prefix.len()..].to_ascii_lowercase();
        for section in self.sections {
            if let Some(key) = rest.strip_prefix(&format!("{section}_")) {
                return (Some((*section).to_owned()), key.to_owned());
            }
        }
        (self.default_section.map(str::to_owned), rest)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, or a value does not fit its setting; `message` names the key.
    #[error("invalid config `{origin}`: {message}")]
    Invalid { origin: String, message: String },
    #[error("unknown environment variable `{name}`; see {docs}")]
    UnknownVariable { name: String, docs: String },
}

/// Reads `file` (when given) and then the variables of `namespace` in `env` (usually
/// `std::env::vars()`) over the defaults of `T`. `every_key` is a `T` with every optional
/// key set, so that its serialisation names every setting and the type of its value.
pub fn load<T: Serialize + DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    namespace: &Namespace<'_>,
    every_key: &T,
) -> Result<T, LoadError> {
    let origin = file.map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
    let invalid = |message: String| LoadError::Invalid {
        origin: origin.clone(),
        message,
    };
    let mut table = match file {
        Some(path) => read(path)?,
        None => toml::Table::new(),
    };
    let known = toml::Table::try_from(every_key).map_err(|e| invalid(e.to_string()))?;
    for (name, raw) in env {
        let surely = namespace.is_setting(&name);
        if surely == Some(false) {
            continue;
        }
        let (section, key) = namespace.place(&name);
        let known_section = match &section {
            Some(section) => known.get(section).and_then(toml::Value::as_table),
            None => Some(&known),
        };
        let like = known_section.and_then(|t| t.get(&key));
        if like.is_none() && surely.is_none() {
            continue;
        }
        let Some(like) = like else {
            return Err(LoadError::UnknownVariable {
                name,
                docs: namespace.docs.to_owned(),
            });
        };
        let value = typed(like, &raw);
        let target = match section {
            Some(section) => match table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(invalid(format!(
                        "`{name}` names a section the file sets to a value"
                    )));
                }
            },
            None => &mut table,
        };
        target.insert(key, value);
    }
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_owned();
        if path == "." {
            invalid(message)
        } else {
            invalid(format!("`{path}`: {message}"))
        }
    })
}

fn read(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| LoadError::Invalid {
        origin: path.display().to_string(),
        message: e.message().to_owned(),
    })
}

/// A variable's value, typed like its setting: a number or a boolean where the setting is
/// one (left a string when it does not parse, so that the error names the setting), a
/// comma-separated list where it is a list, and otherwise the text as it is (a key or a
/// path that looks like a number stays a string).
fn typed(like: &toml::Value, raw: &str) -> toml::Value {
    let text = || toml::Value::String(raw.to_owned());
    match like {
        toml::Value::Integer(_) => raw.parse().map_or_else(|_| text(), toml::Value::Integer),
        toml::Value::Float(_) => raw.parse().map_or_else(|_| text(), toml::Value::Float),
        toml::Value::Boolean(_) => raw.parse().map_or_else(|_| text(), toml::Value::Boolean),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        port: u16,
        token: Option<String>,
        names: Vec<String>,
        inner: Inner,
        other_limit: u32,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        on: bool,
    }

    const NAMESPACE: Namespace<'static> = Namespace {
        prefix: "T_",
        sections: &["inner"],
        default_section: None,
        not_settings: &["T_LOG", "T_OTHER_"],
        docs: "the tests",
    };

    fn every_key() -> Settings {
        Settings {
            token: Some(String::new()),
            ..Settings::default()
        }
    }

    fn load_with(file: Option<&Path>, pairs: &[(&str, &str)]) -> Result<Settings, LoadError> {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        load(file, env, &NAMESPACE, &every_key())
    }

    #[test]
    fn the_environment_overrides_the_file_and_is_typed_like_each_setting() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "port = 1\ntoken = \"file\"\n[inner]\non = false").unwrap();
        let settings = load_with(
            Some(file.path()),
            &[
                ("T_PORT", "2"),
                ("T_TOKEN", "123"),
                ("T_NAMES", "a, b,"),
                ("T_INNER_ON", "true"),
                ("T_LOG", "debug"),
                ("T_OTHER_THING", "x"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(settings.port, 2);
        assert_eq!(
            settings.token.as_deref(),
            Some("123"),
            "a token stays a string"
        );
        assert_eq!(settings.names, ["a", "b"]);
        assert!(settings.inner.on);
        assert_eq!(settings.other_limit, 0);
    }

    #[test]
    fn a_variable_under_another_binarys_prefix_that_names_a_key_of_ours_is_ours() {
        let settings = load_with(None, &[("T_OTHER_LIMIT", "7"), ("T_OTHER_THING", "x")]).unwrap();
        assert_eq!(settings.other_limit, 7);
    }

    #[test]
    fn unknown_keys_variables_and_bad_values_are_named() {
        let err = load_with(None, &[("T_PROT", "2")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable `T_PROT`; see the tests"
        );
        let err = load_with(None, &[("T_INNER_OFF", "2")]).unwrap_err();
        assert!(err.to_string().contains("`T_INNER_OFF`"), "{err}");
        let err = load_with(None, &[("T_PORT", "many")]).unwrap_err();
        assert!(err.to_string().contains("`port`: invalid type"), "{err}");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[inner]\nonn = true").unwrap();
        let err = load_with(Some(file.path()), &[]).unwrap_err();
        assert!(
            err.to_string().contains("`inner.onn`: unknown field `onn`"),
            "{err}"
        );
        let missing = load_with(Some(Path::new("/nonexistent.toml")), &[]);
        assert!(matches!(missing, Err(LoadError::Read { .. })));
    }
}
