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

/// The text of a source file without its unit-test module (tests may use any adapter).
fn production_text(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("readable source");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[test]
fn core_modules_stay_free_of_infrastructure() {
    let core = rust_files(&[
        "src/pipeline",
        "src/imaging",
        "src/job.rs",
        "src/safety",
        "src/budget.rs",
    ]);
    assert_free_of(
        &core,
        &[
            "redis::",
            "sqlx::",
            "reqwest::",
            "bullmq",
            "crate::app",
            "crate::cli",
            "crate::queue",
            "crate::worker",
            "std::env::var",
            "store::sqlite",
            "store::postgres",
            "storage::local",
            "storage::cloudinary",
            "storage::s3",
            "object_store",
        ],
    );
}

#[test]
fn pure_modules_do_no_io() {
    let pure = rust_files(&[
        "src/imaging",
        "src/job.rs",
        "src/safety",
        "src/budget.rs",
        "src/failure.rs",
    ]);
    assert_free_of(&pure, &["tokio::", "std::fs", "std::net", "async fn"]);
}

#[test]
fn only_the_queue_adapter_names_bullmq() {
    let outside: Vec<PathBuf> = rust_files(&["src"])
        .into_iter()
        .filter(|f| !f.starts_with(super::helpers::project_file("src/queue")))
        .filter(|f| !f.ends_with("src/lib.rs"))
        .collect();
    for file in outside {
        let text = production_text(&file);
        assert!(
            !text.contains("bullmq::") && !text.contains("use bullmq"),
            "{} names the bullmq crate; only src/queue/ may",
            file.display()
        );
    }
    // The worker's policy is expressed in plain deliveries and outcomes; it may only name the
    // `bullmq.*` attributes of its job span (the names Node BullMQ's telemetry uses).
    let worker = production_text(&super::helpers::project_file("src/worker.rs")).replace("bullmq.", "");
    assert!(!worker.contains("bullmq") && !worker.contains("crate::queue"));
}

/// Adapter types and the module (file or directory) that defines each. Outside its module and
/// the parent's `mod.rs` (which declares and may re-export it), only the composition root names
/// an adapter.
const ADAPTERS: &[(&str, &str)] = &[
    ("PgDesignStore", "src/store/postgres.rs"),
    ("SqliteDesignStore", "src/store/sqlite.rs"),
    ("MemoryDesignStore", "src/store/memory.rs"),
    ("LocalStore", "src/storage/local.rs"),
    ("MemoryBlobStore", "src/storage/memory.rs"),
    ("FlakyBlobStore", "src/storage/flaky.rs"),
    ("CloudinaryStore", "src/storage/cloudinary.rs"),
    ("S3Store", "src/storage/s3.rs"),
    ("LocalFallback", "src/storage/fallback.rs"),
    ("RedisTenantLimiter", "src/tenancy/redis.rs"),
    ("RedisCacheIndex", "src/cache/redis.rs"),
    ("MemoryCacheIndex", "src/cache/memory.rs"),
    ("QueueOperations", "src/queue/operations.rs"),
    ("MemoryTenantLimiter", "src/tenancy/memory.rs"),
    ("HttpAssets", "src/assets/http.rs"),
    ("LocalFiles", "src/assets/local.rs"),
    ("MemoryAssets", "src/assets/memory.rs"),
    ("OpenAiEditor", "src/providers/openai"),
    ("LocalDiffusionEditor", "src/providers/local_diffusion.rs"),
    ("BuiltinFill", "src/providers/builtin.rs"),
    ("DryRunEditor", "src/providers/dry_run.rs"),
    ("ScriptedEditor", "src/providers/scripted.rs"),
    ("RedisPublisher", "src/events/redis_pubsub.rs"),
    ("WebhookOutbox", "src/webhooks/mod.rs"),
    ("WebhookDeliverer", "src/webhooks/deliver.rs"),
    ("BullmqDeliveries", "src/queue/webhooks.rs"),
    ("RenderJobStates", "src/queue/webhooks.rs"),
];

#[test]
fn only_the_composition_root_names_adapters() {
    let root = super::helpers::project_file("src/app.rs");
    let files = rust_files(&["src"]);
    for (adapter, home) in ADAPTERS {
        let home = super::helpers::project_file(home);
        assert!(home.exists(), "{} moved: update ADAPTERS", home.display());
        let declaring = home.parent().expect("inside src").join("mod.rs");
        for file in &files {
            if *file == root || file.starts_with(&home) || *file == declaring {
                continue;
            }
            let text = production_text(file);
            let named = text
                .match_indices(adapter)
                .any(|(at, _)| !text[at + adapter.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
            assert!(
                !named,
                "{} names the adapter {adapter}; only src/app.rs may",
                file.display()
            );
        }
    }
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

/// The `unreachable_pub` discipline for a library whose modules are all public (so the lint
/// itself finds nothing): a `pub` function, constant or static must be named in some other file
/// of the project (another module, `main.rs`, the tests, benches or examples); one used only in
/// its own file is private, and one named nowhere else at all is dead. Types are left out: a
/// type used only in its own file may still be part of a public signature.
#[test]
fn public_functions_and_constants_are_used_outside_their_file() {
    let declaration =
        regex::Regex::new(r"(?m)^\s*pub\s+(?:async\s+)?(?:const\s+fn|fn|const|static)\s+([A-Za-z_][A-Za-z0-9_]*)")
            .expect("pattern");
    let files = rust_files(&["src", "tests", "benches", "examples"]);
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("readable source");
            (file, text)
        })
        .collect();
    let src = super::helpers::project_file("src");
    let mut private = Vec::new();
    for (file, _) in texts.iter().filter(|(file, _)| file.starts_with(&src)) {
        for name in declaration
            .captures_iter(&production_text(file))
            .map(|c| c[1].to_owned())
        {
            let word = regex::Regex::new(&format!(r"\b{name}\b")).expect("pattern");
            if !texts.iter().any(|(other, text)| other != file && word.is_match(text)) {
                private.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(
        private.is_empty(),
        "public but used only in their own file (make them private or delete them):\n{}",
        private.join("\n")
    );
}
