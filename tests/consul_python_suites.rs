//! py-consul 1.8.0's own test suite, its test files unchanged, against
//! roster instead of a Consul container.
//!
//! The suite comes from the library's sdist on PyPI (`pip download
//! --no-binary`, pinned by hash), unpacked under `target/consul-suites/` on
//! first use and reused afterwards; it runs in a venv under
//! `target/consul-venvs/` holding the library and the suite's test tools.
//! Their conftest.py starts Consul through Docker; pytest runs with
//! `--confcutdir` at their `tests/`, so it is never read, and with our
//! plugin `tests/consul_python_suites/roster_fixtures.py`, which defines
//! the same fixtures over two rosters this test starts (ACLs off, and on
//! with a management token) and empties them before each test, as a fresh
//! container would be.
//!
//! `tests/consul_python_suites/out_of_scope.txt` lists the tests of what
//! roster does not serve, each with its reason; they are deselected. Every
//! other test must pass, and every listed test must exist.
//!
//! python-consul 1.1.0 is not run this way: its sdist on PyPI has no tests
//! (nor has 1.0.1's), and GitHub, where they are, is out of CI's reach.
//! `tests/consul_python.rs` drives it with our own script instead.
//!
//! Needs `python3` with the `venv` module (Debian: `python3-venv`), `tar`,
//! and access to PyPI the first time. `ROSTER_PYTHON` names another
//! interpreter.

mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{
    install::{self, describe, target_dir},
    start_server, start_server_with,
};

/// The library, its test tools, pinned to the versions the list was made
/// with.
const REQUIREMENTS: &[&str] = &[
    "py-consul==1.8.0",
    "pytest==9.2.0",
    "pytest-asyncio==1.5.0",
    "aiohttp==3.14.5",
    "packaging==26.4",
];

/// The sdist that holds the suite, as a pip requirement pinned by hash.
const SDIST: &str = "py-consul==1.8.0 \
     --hash=sha256:ed9ab0adb335d33ea84f7622f372411f8e288bb09aee5e7632264d28d285a52c";

/// The directory the sdist unpacks to.
const SDIST_ROOT: &str = "py_consul-1.8.0";

/// The Consul version the suite's version checks see: the newest its
/// conftest.py runs, so every version-gated test runs as against it.
const CONSUL_VERSION: &str = "1.22.0";

/// The ACL roster's management token.
const ACL_TOKEN: &str = "py-consul-suite-management-token";

/// The whole run; it normally takes well under a minute.
const SUITE_LIMIT: Duration = Duration::from_secs(300);

/// Our files: the fixtures plugin, pytest's settings, the list.
fn ours() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consul_python_suites")
}

/// `target/consul-suites/py_consul-1.8.0/`, the unpacked sdist, fetched
/// with `python`'s pip first if missing or incomplete (a marker written
/// last; a lock against a concurrent fetch). Blocking.
fn fetch_suite(python: &Path) -> PathBuf {
    let root = target_dir().join("consul-suites");
    std::fs::create_dir_all(&root).expect("create target/consul-suites");
    let suite = root.join(SDIST_ROOT);
    let marker = root.join(format!("{SDIST_ROOT}.complete"));
    let lock = File::create(root.join(format!("{SDIST_ROOT}.lock"))).expect("lock file");
    lock.lock().expect("lock the suite");
    if std::fs::read_to_string(&marker).is_ok_and(|text| text == SDIST) && suite.exists() {
        return suite;
    }
    if marker.exists() {
        std::fs::remove_file(&marker).expect("remove a stale marker");
    }
    let download = root.join("download");
    for stale in [&download, &suite] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).expect("remove an incomplete fetch");
        }
    }
    std::fs::create_dir_all(&download).expect("create the download directory");
    // pip checks the hash only of requirements read from a file.
    let requirement = download.join("requirements.txt");
    std::fs::write(&requirement, format!("{SDIST}\n")).expect("write the requirement");
    let missing = "The suite needs python3 with the venv module and pip.";
    install::run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--require-hashes",
                "--dest",
            ])
            .arg(&download)
            .arg("--requirement")
            .arg(&requirement),
        "pip download of the py-consul sdist",
        missing,
        "The first run needs access to PyPI.",
    );
    let archive = download.join(format!("{SDIST_ROOT}.tar.gz"));
    install::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&root),
        "unpacking the py-consul sdist",
        "The suite needs tar.",
        "",
    );
    assert!(
        suite.join("tests").join("conftest.py").exists(),
        "the sdist has no tests/conftest.py: {}",
        suite.display()
    );
    std::fs::write(&marker, SDIST).expect("write the suite marker");
    suite
}

/// The listed test ids; panics on a line without a reason, or an id listed
/// twice.
fn out_of_scope() -> Vec<String> {
    let path = ours().join("out_of_scope.txt");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut seen = BTreeSet::new();
    let mut list = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line.split_once(" # ").unwrap_or_else(|| {
            panic!(
                "{}:{}: `test id # reason` expected: {line}",
                path.display(),
                number + 1
            )
        });
        let id = id.trim();
        assert!(
            !reason.trim().is_empty(),
            "{}:{}: no reason for {id}",
            path.display(),
            number + 1
        );
        assert!(seen.insert(id.to_owned()), "{id} is listed twice");
        list.push(id.to_owned());
    }
    list
}

/// pytest in `suite`, with our plugin and settings and nothing of the
/// environment that would redirect the clients.
fn pytest(python: &Path, suite: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .current_dir(suite)
        // -B: no __pycache__ in the unpacked suite.
        .args(["-B", "-m", "pytest"])
        .arg("-c")
        .arg(ours().join("pytest.ini"))
        .arg("--rootdir")
        .arg(suite)
        // Their tests/conftest.py is read, their root conftest.py (Docker)
        // is not.
        .arg("--confcutdir")
        .arg(suite.join("tests"))
        .args(["-p", "roster_fixtures", "-p", "no:cacheprovider"])
        // Python 3.11's AST sometimes fails on pytest's own source
        // excerpts ("AST constructor recursion depth mismatch"), turning
        // a failure into an internal error: native tracebacks avoid it.
        .arg("--tb=native")
        .env("PYTHONPATH", ours())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_SSL")
        .env_remove("CONSUL_HTTP_SSL_VERIFY")
        // requests honours proxy variables; roster is local.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end within [`SUITE_LIMIT`].
async fn output(mut command: tokio::process::Command, what: &str) -> std::process::Output {
    tokio::time::timeout(SUITE_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in {SUITE_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: cannot run pytest: {e}"))
}

/// ACLs on, default deny, one management token.
fn acl_config() -> roster::config::AclConfig {
    let text = format!(
        r#"
        enabled = true
        default_policy = "deny"
        [[tokens]]
        name = "suite-admin"
        secret = "{ACL_TOKEN}"
        management = true
        "#
    );
    toml::from_str(&text).expect("a valid [acl] table")
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_1_8_0_own_suite_passes_but_for_the_listed_tests() {
    let (python, suite) = tokio::task::spawn_blocking(|| {
        let python = install::python_venv("consul-venvs", "py-consul-suite", REQUIREMENTS);
        let suite = fetch_suite(&python);
        (python, suite)
    })
    .await
    .expect("venv and suite setup");
    let list = out_of_scope();

    let plain = start_server().await;
    let acl = start_server_with(&[], |config| config.acl = acl_config()).await;
    let mut run = pytest(&python, &suite);
    run.args(["-q", "-rfEs", "tests"])
        .env("ROSTER_HTTP_PORT", plain.http_addr.port().to_string())
        .env("ROSTER_ACL_HTTP_PORT", acl.http_addr.port().to_string())
        .env("ROSTER_ACL_TOKEN", ACL_TOKEN)
        .env("ROSTER_CONSUL_VERSION", CONSUL_VERSION)
        .env("ROSTER_OUT_OF_SCOPE", ours().join("out_of_scope.txt"));
    let result = output(run, "the py-consul suite").await;
    plain.stop().await;
    acl.stop().await;
    assert!(
        result.status.success(),
        "py-consul's suite failed against roster\n{}",
        describe(&result)
    );
    // The last line is pytest's summary, e.g. "77 passed, 91 deselected in
    // 20.1s": nothing may be skipped either, and exactly the listed tests
    // were deselected (the plugin stops the run if one does not exist).
    let stdout = String::from_utf8_lossy(&result.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    let expected_deselected = format!("{} deselected", list.len());
    assert!(
        summary.contains(" passed")
            && summary.contains(&expected_deselected)
            && ["failed", "error", "skipped", "xfailed", "xpassed"]
                .iter()
                .all(|word| !summary.contains(word)),
        "unexpected summary {summary:?}\n{}",
        describe(&result)
    );
    println!("{summary}");
}
