//! Migrations: the embedded sets sqlx's migrator applies, and the checks of
//! `klubz-ledger check-migrations` (numbering of the tree on disk, and
//! whether an applied migration was edited since).

use sha2::{Digest, Sha384};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// `0001_event_log.sql` → (1, "event_log").
pub fn parse_file_name(name: &str) -> Option<(i64, String)> {
    let stem = name.strip_suffix(".sql")?;
    let (number, label) = stem.split_once('_')?;
    if number.len() < 4 || !number.bytes().all(|b| b.is_ascii_digit()) || label.is_empty() {
        return None;
    }
    Some((number.parse().ok()?, label.to_string()))
}

/// The migrator for a dialect, from the migrations compiled in.
pub fn migrator(dialect: Dialect) -> Migrator {
    let files = match dialect {
        Dialect::Sqlite => embedded::SQLITE,
        Dialect::Postgres => embedded::POSTGRES,
    };
    let migrations: Vec<Migration> = files
        .iter()
        .filter_map(|(name, sql)| {
            let (version, label) = parse_file_name(name)?;
            Some(Migration::new(
                version,
                Cow::Owned(label.replace('_', " ")),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            ))
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// One migration file on disk.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    pub version: i64,
    pub path: PathBuf,
    pub sql: String,
}

impl MigrationFile {
    /// sqlx's checksum of the file (SHA-384 of its text).
    pub fn checksum(&self) -> Vec<u8> {
        Sha384::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Reads `<dir>/<dialect>/*.sql` and checks numbering: names `NNNN_name.sql`,
/// numbers 1..n without gaps or duplicates, the same set in both dialects.
/// Returns the files per dialect, or every problem found, each naming a file.
pub fn check_tree(dir: &Path) -> Result<BTreeMap<&'static str, Vec<MigrationFile>>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    let mut versions: BTreeMap<&'static str, BTreeMap<i64, PathBuf>> = BTreeMap::new();
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let sub = dir.join(dialect.dir_name());
        let entries = match std::fs::read_dir(&sub) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: cannot read directory: {e}", sub.display()));
                continue;
            }
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        let mut files = Vec::new();
        let mut seen: BTreeMap<i64, PathBuf> = BTreeMap::new();
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if !name.ends_with(".sql") {
                continue;
            }
            let Some((version, _)) = parse_file_name(&name) else {
                problems.push(format!("{}: name is not NNNN_name.sql", path.display()));
                continue;
            };
            if let Some(first) = seen.get(&version) {
                problems.push(format!(
                    "{}: duplicate number {version:04} (also {})",
                    path.display(),
                    first.display()
                ));
                continue;
            }
            let sql = std::fs::read_to_string(&path).unwrap_or_default();
            seen.insert(version, path.clone());
            files.push(MigrationFile { version, path, sql });
        }
        for (expected, (version, path)) in (1_i64..).zip(seen.iter()) {
            if *version != expected {
                problems.push(format!(
                    "{}: numbering gap, {expected:04} is missing before {version:04}",
                    path.display()
                ));
                break;
            }
        }
        versions.insert(dialect.dir_name(), seen);
        out.insert(dialect.dir_name(), files);
    }
    if let (Some(a), Some(b)) = (versions.get("sqlite"), versions.get("postgres")) {
        let a_set: BTreeSet<&i64> = a.keys().collect();
        let b_set: BTreeSet<&i64> = b.keys().collect();
        for v in a_set.difference(&b_set) {
            problems.push(format!(
                "{}: no postgres migration with this number",
                a[*v].display()
            ));
        }
        for v in b_set.difference(&a_set) {
            problems.push(format!(
                "{}: no sqlite migration with this number",
                b[*v].display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Compares applied migrations (version, checksum) with the files: an
/// applied migration whose file changed or disappeared is a problem.
pub fn check_applied(applied: &[(i64, Vec<u8>)], files: &[MigrationFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for (version, checksum) in applied {
        match files.iter().find(|f| f.version == *version) {
            None => problems.push(format!("applied migration {version:04} has no file in the tree")),
            Some(f) if f.checksum() != *checksum => problems.push(format!(
                "{}: edited after it was applied (checksum differs); fix forward with a new migration",
                f.path.display()
            )),
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("0001_event_log.sql"),
            Some((1, "event_log".into()))
        );
        assert_eq!(parse_file_name("1_x.sql"), None);
        assert_eq!(parse_file_name("0002.sql"), None);
        assert_eq!(parse_file_name("00a2_x.sql"), None);
    }

    #[test]
    fn the_real_tree_is_consistent_and_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let files = check_tree(&dir).unwrap_or_else(|p| panic!("{p:?}"));
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let embedded = migrator(dialect);
            let on_disk = &files[dialect.dir_name()];
            assert_eq!(embedded.migrations.len(), on_disk.len());
            for (m, f) in embedded.migrations.iter().zip(on_disk) {
                assert_eq!(m.version, f.version);
                assert_eq!(m.checksum.as_ref(), f.checksum().as_slice());
            }
        }
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for d in ["sqlite", "postgres"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap_or_else(|e| panic!("{e}"));
        }
        for (dialect, name) in files {
            std::fs::write(dir.path().join(dialect).join(name), "SELECT 1;")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        dir
    }

    fn problems(files: &[(&str, &str)]) -> Vec<String> {
        let dir = tree(files);
        check_tree(dir.path()).err().unwrap_or_default()
    }

    #[test]
    fn detects_gap_duplicate_and_one_dialect() {
        let gap = problems(&[
            ("sqlite", "0001_a.sql"),
            ("sqlite", "0003_c.sql"),
            ("postgres", "0001_a.sql"),
            ("postgres", "0003_c.sql"),
        ]);
        assert!(
            gap.iter()
                .any(|p| p.contains("0003_c.sql") && p.contains("gap")),
            "{gap:?}"
        );

        let dup = problems(&[
            ("sqlite", "0001_a.sql"),
            ("sqlite", "0001_b.sql"),
            ("postgres", "0001_a.sql"),
        ]);
        assert!(
            dup.iter()
                .any(|p| p.contains("0001_b.sql") && p.contains("duplicate")),
            "{dup:?}"
        );

        let one = problems(&[
            ("sqlite", "0001_a.sql"),
            ("sqlite", "0002_b.sql"),
            ("postgres", "0001_a.sql"),
        ]);
        assert!(
            one.iter()
                .any(|p| p.contains("0002_b.sql") && p.contains("no postgres")),
            "{one:?}"
        );

        assert!(problems(&[("sqlite", "0001_a.sql"), ("postgres", "0001_a.sql")]).is_empty());
    }

    #[test]
    fn detects_an_edited_applied_migration() {
        let file = MigrationFile {
            version: 1,
            path: PathBuf::from("migrations/sqlite/0001_a.sql"),
            sql: "SELECT 2;".into(),
        };
        let applied_checksum = Sha384::digest(b"SELECT 1;").to_vec();
        let problems = check_applied(&[(1, applied_checksum)], std::slice::from_ref(&file));
        assert!(problems
            .iter()
            .any(|p| p.contains("0001_a.sql") && p.contains("edited")));
        assert!(check_applied(&[(1, file.checksum())], &[file]).is_empty());
    }
}
