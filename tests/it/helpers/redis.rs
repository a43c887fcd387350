//! Redis fixtures: a key prefix of one test, whose keys are deleted when the fixture is dropped,
//! including when the test panics.
//!
//! Only `<prefix>:*` is ever deleted, found with SCAN (never KEYS, which blocks the shared
//! server), and nothing is flushed.

use super::unique;

/// The stand-alone Redis the tests use.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A unique prefix; every key under `<prefix>:` is deleted on drop.
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(label: &str) -> Self {
        Self { prefix: unique(label) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys under this prefix now.
    pub fn keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut connection = redis::Client::open(REDIS_URL)?.get_connection()?;
        let keys = redis::Commands::scan_match::<_, String>(&mut connection, format!("{}:*", self.prefix))?;
        keys.collect()
    }

    fn delete_all(&self) -> redis::RedisResult<()> {
        let keys = self.keys()?;
        let mut connection = redis::Client::open(REDIS_URL)?.get_connection()?;
        for batch in keys.chunks(500) {
            let _: () = redis::cmd("DEL").arg(batch).query(&mut connection)?;
        }
        Ok(())
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        // The sync client needs no runtime, so this works inside and outside async tests.
        // Reported, not panicked: a panic here during a failing test would abort the binary.
        if let Err(error) = self.delete_all() {
            eprintln!("could not delete Redis keys {}:*: {error}", self.prefix);
        }
    }
}
