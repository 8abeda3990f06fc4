//! The `homing` command on its own, without a server: what a person sees
//! before anything is set up. Sessions with real servers are tested by the
//! server package (`tests/api/cli.rs`), which runs this same binary.

use std::process::{Command, Output};

fn homing(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("HOMING_SERVER_URL")
        .env_remove("HOMING_PASSPHRASE")
        .output()
        .expect("homing runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_names_the_command() {
    let home = tempfile::tempdir().unwrap();
    let output = homing(home.path(), &["--version"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("homing {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn reading_mail_before_init_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let output = homing(home.path(), &["inbox"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("run `homing init ALIAS@SERVER` first"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn a_malformed_address_is_refused_before_anything_is_written() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    let output = homing(&store, &["init", "not-an-address"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not-an-address"),
        "{}",
        stderr(&output)
    );
    assert!(!store.exists(), "nothing is created for a refused address");
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let output = homing(home.path(), &["sned", "bob@example.org"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("sned"), "{}", stderr(&output));
}
