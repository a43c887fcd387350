//! The dependency rules of ARCHITECTURE.md, checked on every test run.

use std::path::{Path, PathBuf};

fn rust_files(roots: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = roots.iter().map(|root| super::helpers::project_file(root)).collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("readable dir") {
                pending.push(entry.expect("entry").path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    assert!(!files.is_empty(), "no files under {roots:?}");
    files
}

fn assert_free_of(files: &[PathBuf], banned: &[&str]) {
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for needle in banned {
            assert!(!text.contains(needle), "{} must not mention `{needle}`", file.display());
        }
    }
}

#[test]
fn core_modules_stay_free_of_infrastructure() {
    let core = rust_files(&["src/pipeline", "src/imaging", "src/job.rs", "src/safety"]);
    assert_free_of(
        &core,
        &[
            "redis::",
            "sqlx::",
            "reqwest::",
            "crate::app",
            "crate::cli",
            "std::env::var",
            "store::sqlite",
            "store::postgres",
            "storage::local",
        ],
    );
}

#[test]
fn only_config_reads_the_environment() {
    let all = rust_files(&["src"]);
    let readers: Vec<&PathBuf> = all
        .iter()
        .filter(|file| {
            std::fs::read_to_string(file)
                .expect("readable")
                .contains("std::env::var")
        })
        .collect();
    assert_eq!(
        readers,
        vec![&super::helpers::project_file("src/config/mod.rs")],
        "env readers: {readers:?}"
    );
}

#[test]
fn only_the_store_module_contains_sql() {
    let outside: Vec<PathBuf> = rust_files(&["src"])
        .into_iter()
        .filter(|f| !f.starts_with(super::helpers::project_file("src/store")))
        .collect();
    assert_free_of(&outside, &["UPDATE \"Design\"", "INSERT INTO", "sqlx::query"]);
    assert!(Path::new(&super::helpers::project_file("src/store/postgres.rs")).exists());
}
