//! Redis connection options for the queue, the tenant leases and event publishing, from our
//! configuration: a single server (`REDIS_URL` or host/port/password) or a Redis Cluster.

use bullmq::options::RedisConnectionOptions;
use bullmq::redis_connection::{AnyConnection, RedisConnection};

use crate::config::RedisConfig;

/// Connection options: `REDIS_CLUSTER_NODES` selects a Redis Cluster; otherwise `REDIS_URL`
/// (may be `rediss://`) wins over host/port/password.
pub fn connection_options(redis: &RedisConfig, max_connections: usize) -> RedisConnectionOptions {
    let options = match (&redis.url, redis.cluster_nodes.is_empty()) {
        // A `REDIS_URL` carries its own credentials.
        (Some(url), true) => RedisConnectionOptions::new().url(url.expose()),
        (None, true) => with_password(
            RedisConnectionOptions::new().host(redis.host.clone()).port(redis.port),
            redis,
        ),
        (_, false) => with_password(
            RedisConnectionOptions::new()
                .cluster_nodes(redis.cluster_nodes.iter().cloned())
                .tls(redis.cluster_nodes.iter().any(|node| node.starts_with("rediss://"))),
            redis,
        ),
    };
    options.max_connections(max_connections.max(1))
}

fn with_password(options: RedisConnectionOptions, redis: &RedisConfig) -> RedisConnectionOptions {
    match &redis.password {
        Some(password) => options.password(password.expose()),
        None => options,
    }
}

/// A connection to the same Redis (or Redis Cluster) as the queue, for tenant leases and event
/// publishing. It reconnects on its own; on a cluster, commands go to the node owning their key.
pub async fn redis_connection(redis: &RedisConfig) -> Result<AnyConnection, bullmq::Error> {
    Ok(RedisConnection::new_managed_only(&connection_options(redis, 1))
        .await?
        .connection())
}

/// The readiness check of a Redis connection: `PING` answers `PONG`.
pub fn redis_probe(connection: AnyConnection) -> crate::admin::Probe {
    crate::admin::Probe {
        name: "redis",
        check: Box::new(move || {
            let mut connection = connection.clone();
            Box::pin(async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            })
        }),
    }
}

/// The queues' own metrics for `/metrics`, in the names Node BullMQ exports
/// (`bullmq_job_count{queue,state}`, `bullmq_job_completed_total`, `bullmq_job_failed_total`),
/// so dashboards built for Node fleets read ours too. The queue handles are opened here, once.
pub async fn queue_metrics(
    queues: &[crate::config::QueueConfig],
    redis: &crate::config::RedisConfig,
) -> Result<crate::admin::MetricsText, bullmq::Error> {
    let mut handles = Vec::with_capacity(queues.len());
    for queue in queues {
        handles.push(
            bullmq::Queue::with_options(
                &queue.name,
                bullmq::QueueOptions::new()
                    .connection(connection_options(redis, 1))
                    .prefix(queue.prefix.clone()),
            )
            .await?,
        );
    }
    let handles = std::sync::Arc::new(handles);
    Ok(Box::new(move || {
        let handles = std::sync::Arc::clone(&handles);
        Box::pin(async move {
            let mut exports = Vec::with_capacity(handles.len());
            for handle in handles.iter() {
                exports.push(
                    handle
                        .export_prometheus_metrics(&[])
                        .await
                        .map_err(|error| error.to_string())?,
                );
            }
            Ok(merge_families(&exports))
        })
    }))
}

/// Prometheus text of several exports with the same metric families, each family once: its
/// `# HELP`/`# TYPE` lines, then the samples of every export (the format wants a family's lines
/// together and its type declared once).
fn merge_families(exports: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::HashMap<&str, (Vec<&str>, Vec<&str>)> = std::collections::HashMap::new();
    for line in exports.iter().flat_map(|export| export.lines()) {
        let (name, comment) = match line.strip_prefix("# ") {
            Some(rest) => (rest.split_whitespace().nth(1).unwrap_or_default(), true),
            None => (line.split(['{', ' ']).next().unwrap_or_default(), false),
        };
        if name.is_empty() {
            continue;
        }
        let entry = families.entry(name).or_insert_with(|| {
            order.push(name);
            (Vec::new(), Vec::new())
        });
        if comment {
            if !entry.0.contains(&line) {
                entry.0.push(line);
            }
        } else {
            entry.1.push(line);
        }
    }
    let mut text: Vec<&str> = Vec::new();
    for name in order {
        if let Some((comments, samples)) = families.get(name) {
            text.extend(comments.iter().chain(samples));
        }
    }
    text.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn exports_of_several_queues_declare_each_family_once_with_its_samples_together() {
        let export = |queue: &str| {
            format!(
                "# HELP bullmq_job_count Jobs\n# TYPE bullmq_job_count gauge\nbullmq_job_count{{queue=\"{queue}\", state=\"waiting\"}} 1\n# TYPE bullmq_job_completed_total counter\nbullmq_job_completed_total{{queue=\"{queue}\"}} 2"
            )
        };
        let merged = super::merge_families(&[export("a"), export("b")]);
        assert_eq!(
            merged,
            "# HELP bullmq_job_count Jobs\n# TYPE bullmq_job_count gauge\n\
             bullmq_job_count{queue=\"a\", state=\"waiting\"} 1\nbullmq_job_count{queue=\"b\", state=\"waiting\"} 1\n\
             # TYPE bullmq_job_completed_total counter\n\
             bullmq_job_completed_total{queue=\"a\"} 2\nbullmq_job_completed_total{queue=\"b\"} 2"
        );
    }

    use super::*;

    #[test]
    fn redis_url_wins_over_host_and_port() {
        let redis = RedisConfig {
            url: Some(crate::config::Secret::new("rediss://:pw@cache.example:6380/2")),
            ..RedisConfig::default()
        };
        assert_eq!(
            connection_options(&redis, 1).effective_url(),
            "rediss://:pw@cache.example:6380/2"
        );
        let redis = RedisConfig {
            host: "10.0.0.5".into(),
            port: 6390,
            ..RedisConfig::default()
        };
        assert!(connection_options(&redis, 1).effective_url().contains("10.0.0.5:6390"));
    }

    #[test]
    fn cluster_nodes_win_and_take_the_password() {
        let redis = RedisConfig {
            url: Some(crate::config::Secret::new("redis://127.0.0.1:6379")),
            password: Some(crate::config::Secret::new("pw")),
            cluster_nodes: vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()],
            ..RedisConfig::default()
        };
        let options = connection_options(&redis, 1);
        assert!(options.is_cluster());
        assert_eq!(
            options.cluster_nodes,
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(options.password.as_deref(), Some("pw"));
    }
}
