//! The `klubz-ledger` binary as an operator runs it.

use crate::helpers::admin_url;
use std::path::Path;
use std::process::{Command, Output};

fn ledger(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klubz-ledger"));
    cmd.args(args).current_dir(dir);
    for var in [
        "DATABASE_URL",
        "ENVIRONMENT",
        "JWT_SECRET",
        "ENCRYPTION_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run klubz-ledger")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn repo_migrations() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A copy of the real migrations tree that a test may break.
fn copy_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for dialect in ["sqlite", "postgres"] {
        let to = dir.path().join("migrations").join(dialect);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(repo_migrations().join(dialect)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn check_migrations_passes_on_the_real_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = repo_migrations();
    let out = ledger(
        dir.path(),
        &["check-migrations", "--dir", tree.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migrations ok"));
}

#[test]
fn check_migrations_names_a_gap_a_duplicate_and_a_one_dialect_file() {
    let existing = std::fs::read_dir(repo_migrations().join("sqlite"))
        .unwrap()
        .count();
    let gap = format!("{:04}_late.sql", existing + 2);
    let one_dialect = format!("{:04}_only_here.sql", existing + 1);
    // (case, files to add as (dialect, name), the file the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 3] = [
        ("gap", vec![("sqlite", &gap), ("postgres", &gap)], &gap),
        (
            "duplicate",
            vec![("sqlite", "0002_again.sql"), ("postgres", "0002_again.sql")],
            "0002_again.sql",
        ),
        ("one dialect", vec![("sqlite", &one_dialect)], &one_dialect),
    ];
    for (name, files, named) in cases {
        let tree = copy_tree();
        for (dialect, file) in &files {
            std::fs::write(
                tree.path().join("migrations").join(dialect).join(file),
                "SELECT 1;",
            )
            .unwrap();
        }
        let out = ledger(tree.path(), &["check-migrations"], &[]);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        assert!(text(&out).contains(named), "{name}: {}", text(&out));
    }
}

fn edited_applied_migration_is_refused(database_url: &str) {
    let tree = copy_tree();
    let env = [("DATABASE_URL", database_url)];
    let out = ledger(tree.path(), &["migrate"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let out = ledger(tree.path(), &["check-migrations"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied"), "{}", text(&out));

    let dialect = if database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let file = tree
        .path()
        .join("migrations")
        .join(dialect)
        .join("0001_event_log.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("\n-- an innocent-looking edit\n");
    std::fs::write(&file, sql).unwrap();
    let out = ledger(tree.path(), &["check-migrations"], &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0001_event_log.sql") && text(&out).contains("edited"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_migrations_refuses_an_edited_applied_migration_sqlite() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("applied.db").display());
    edited_applied_migration_is_refused(&url);
}

#[tokio::test]
async fn check_migrations_refuses_an_edited_applied_migration_postgres() {
    let url = crate::helpers::create_pg_database().await;
    tokio::task::spawn_blocking(move || edited_applied_migration_is_refused(&url))
        .await
        .unwrap();
}

#[test]
fn smoke_passes_on_embedded_sqlite_with_database_url_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger(dir.path(), &["smoke"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "smoke ok"));
    // Secrets were generated once, private to the owner.
    assert!(dir.path().join("klubz-ledger.secrets").exists());
}

#[test]
fn smoke_passes_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = admin_url();
    let out = ledger(dir.path(), &["smoke"], &[("DATABASE_URL", url.as_str())]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("postgres backend") && text(&out).contains("smoke ok"));
}

#[test]
fn production_without_secrets_refuses_to_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-jwt-secret-that-is-long-enough-to-pass";
    let out = ledger(
        dir.path(),
        &["migrate"],
        &[("ENVIRONMENT", "production"), ("JWT_SECRET", secret)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ENCRYPTION_KEY"), "{stderr}");
    assert!(!stderr.contains(secret));
    assert!(!dir.path().join("klubz-ledger.secrets").exists());
}
