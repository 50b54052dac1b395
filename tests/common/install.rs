//! Third-party test tools installed under `target/` on first use and reused
//! afterwards (the Python Consul clients' venvs and the examples' venv, the
//! npm packages of the npm Consul suite and of the UI test): where they go,
//! how a failed command is shown, and one `python3 -m venv` + `pip install`
//! and one `npm ci`, each with a completion marker and a lock.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// `target/`: the parent of the per-target temporary directory Cargo gives
/// integration tests, so a custom `CARGO_TARGET_DIR` is respected.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .to_owned()
}

/// A finished command's status and output, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs an installing command, panicking with `missing` (what to install)
/// when it cannot start, and with its output and `first_run` (what the
/// first run needs, e.g. the package registry) when it fails.
pub fn run(command: &mut Command, what: &str, missing: &str, first_run: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}\n{missing}"));
    assert!(
        output.status.success(),
        "{what} failed: {command:?}\n{}\n({first_run})",
        describe(&output)
    );
}

/// `target/<name>/`, holding `node_modules` exactly as `source`'s
/// `package.json` and `package-lock.json` say, installed with `npm ci`
/// first if missing, incomplete or for other files. A marker written last
/// says the install is complete and for which files (it is removed before
/// an install, so an interrupted one never looks complete); a lock file
/// keeps two test processes from installing at once. `missing` says how to
/// get node and npm. Blocking: run it off the async runtime.
pub fn npm_install(name: &str, source: &Path, missing: &str) -> PathBuf {
    let root = target_dir().join(name);
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create target/{name}: {e}"));
    let read = |file: &str| {
        std::fs::read_to_string(source.join(file))
            .unwrap_or_else(|e| panic!("read {}: {e}", source.join(file).display()))
    };
    let (manifest, lock) = (read("package.json"), read("package-lock.json"));
    let wanted = format!("{manifest}\n{lock}");
    let marker = root.join(".roster-npm-complete");
    // Held until return: another `cargo test` installing the same modules
    // waits.
    let guard = File::create(target_dir().join(format!("{name}.lock"))).expect("lock file");
    guard.lock().expect("lock the npm install");
    if std::fs::read_to_string(&marker).is_ok_and(|text| text == wanted) {
        return root;
    }
    if marker.exists() {
        std::fs::remove_file(&marker).expect("remove a stale marker");
    }
    std::fs::write(root.join("package.json"), &manifest).expect("copy package.json");
    std::fs::write(root.join("package-lock.json"), &lock).expect("copy package-lock.json");
    // `npm ci` installs exactly the lock file, removing any node_modules
    // first; no install scripts run.
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&root),
        "npm ci",
        missing,
        "The first run needs access to the npm registry.",
    );
    std::fs::write(&marker, wanted).expect("write the npm marker");
    root
}

/// How to get a Python with venv, for a failed venv command.
const PYTHON_MISSING: &str = "Needs python3 with the venv module (Debian/Ubuntu: apt-get install \
     python3-venv), or ROSTER_PYTHON naming an interpreter.";

/// A venv's interpreter.
fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// The interpreter of the venv `target/<group>/<name>/`, holding exactly
/// `requirements` (pip requirement specifiers), created with
/// `python3 -m venv` (or `ROSTER_PYTHON`) and `pip install` first if
/// missing or incomplete. A marker written last says the venv is complete
/// and for which requirements; a lock file keeps two test processes from
/// building one venv at once. Blocking: run it off the async runtime.
pub fn python_venv(group: &str, name: &str, requirements: &[&str]) -> PathBuf {
    let root = target_dir().join(group);
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create target/{group}: {e}"));
    let venv = root.join(name);
    let marker = venv.join(".roster-venv-complete");
    let wanted = requirements.join("\n");
    // Held until return: another `cargo test` building the same venv waits.
    let lock = File::create(root.join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("lock the venv");
    let python = venv_python(&venv);
    let complete = std::fs::read_to_string(&marker).is_ok_and(|text| text == wanted);
    if complete && python.exists() {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove an incomplete venv");
    }
    let system_python = std::env::var_os("ROSTER_PYTHON").unwrap_or_else(|| "python3".into());
    run(
        Command::new(&system_python)
            .arg("-m")
            .arg("venv")
            .arg(&venv),
        "creating a venv",
        PYTHON_MISSING,
        "The first run needs access to PyPI.",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(requirements),
        &format!("pip install {}", requirements.join(" ")),
        PYTHON_MISSING,
        "The first run needs access to PyPI.",
    );
    std::fs::write(&marker, wanted).expect("write the venv marker");
    python
}
