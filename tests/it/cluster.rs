//! Redis Cluster mode: three real `redis-server` processes in cluster mode on loopback, a Node
//! producer on ioredis' Cluster client, and `design-render worker` given `REDIS_CLUSTER_NODES`.
//! The cluster belongs to the test alone and is shut down when it ends.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use design_render::config::RedisConfig;
use design_render::store::DesignStatus;
use serde_json::json;

use super::helpers::queue::{PublishedEvents, QueueSetup, asset_server, payload};
use super::helpers::{PgSchema, node, unique};

/// How long the nodes get to come up and agree on the slot map.
const STARTUP: Duration = Duration::from_secs(30);

struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `count` master nodes (no replicas) and assigns all slots among them.
    fn start(count: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_cluster_ports(count);
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).expect("node dir");
                // A short node timeout also shortens the delay before a new master reports
                // `cluster_state:ok` (five seconds at the default).
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server starts")
            })
            .collect();
        let cluster = Self {
            ports,
            nodes,
            _dir: dir,
        };
        for port in &cluster.ports {
            cluster.wait_until(*port, &["PING"], "PONG");
        }
        // What `redis-cli --cluster create` does, without its one-second polls: each node takes
        // an equal range of the 16384 slots, and the first one introduces the others.
        let count = cluster.ports.len();
        for (index, port) in cluster.ports.iter().enumerate() {
            let first = index * 16384 / count;
            let last = (index + 1) * 16384 / count - 1;
            cluster.run(
                *port,
                &["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()],
            );
        }
        for port in &cluster.ports[1..] {
            cluster.run(cluster.ports[0], &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        }
        for port in &cluster.ports {
            cluster.wait_until(*port, &["CLUSTER", "INFO"], "cluster_state:ok");
        }
        cluster
    }

    /// Runs one command on a node; it must answer OK.
    fn run(&self, port: u16, command: &[&str]) {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(command)
            .output()
            .expect("redis-cli runs");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert_eq!(answer.trim(), "OK", "node {port} answered {command:?} with {answer}");
    }

    /// Polls a node until `command` answers with text containing `wanted` (a node's readiness
    /// has no event to wait for).
    fn wait_until(&self, port: u16, command: &[&str], wanted: &str) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let output = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(command)
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&output.stdout).contains(wanted) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {port} never answered {command:?} with {wanted}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn node_list(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Ports whose cluster bus port (port + 10000) is free too, spread by process id so parallel
/// test runs rarely probe the same ones.
fn free_cluster_ports(count: usize) -> Vec<u16> {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    let ports: Vec<u16> = (start..start + 10_000)
        .filter(|port| free(*port) && free(port + 10_000))
        .take(count)
        .collect();
    assert_eq!(ports.len(), count, "no free ports for the cluster");
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_a_node_producer_on_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let schema = PgSchema::new().await;
    let mut setup = QueueSetup::new("cluster");
    // Every key of a queue must live in one hash slot: the prefix carries a hash tag.
    setup.prefix = format!("{{{}}}", unique("drcluster"));
    let assets = asset_server(Duration::ZERO).await;
    let design = unique("cluster");
    schema.insert_design(&design, "tenant-k").await;
    let mut published = PublishedEvents::subscribe_at(&format!("redis://127.0.0.1:{}", cluster.ports[2])).await;

    // REDIS_URL (the stand-alone test Redis) is also set; the cluster nodes must win.
    // A short drain delay: the stopping worker waits for its blocking fetch to return.
    let worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("REDIS_CLUSTER_NODES", &cluster.node_list()),
            ("QUEUE_DRAIN_DELAY_SECONDS", "1"),
        ],
    );
    let outcome = node(
        "scenario.mjs",
        json!({
            "clusterPorts": cluster.ports,
            "queue": setup.queue,
            "prefix": setup.prefix,
            "jobs": [{
                "data": payload(&design, "tenant-k", &format!("{}/base.png", assets.uri())),
                "opts": {"attempts": 2, "backoff": {"type": "exponential", "delay": 200}}
            }],
        }),
    )
    .await;
    let result = &outcome["results"][0];
    assert_eq!(result["state"], "completed", "{outcome}");
    assert_eq!(result["returnvalue"]["designId"], design.as_str(), "{result}");
    assert!(result["returnvalue"]["compositeTextureUrl"].is_string(), "{result}");

    let row = schema.design(&design).await;
    assert_eq!(row.status, DesignStatus::Completed);
    let event = published.wait_for(&design, "design.render.completed").await;
    assert_eq!(event["jobId"], result["id"]);

    // The tenant lease lived on the cluster, in the queue's slot, and was released.
    let redis = RedisConfig {
        cluster_nodes: vec![format!("redis://127.0.0.1:{}", cluster.ports[0])],
        ..RedisConfig::default()
    };
    let mut connection = design_render::queue::redis_connection(&redis)
        .await
        .expect("cluster connection");
    let lease_key = format!("{}:{}:tenant-slots:tenant-k", setup.prefix, setup.queue);
    let held: u64 = redis::cmd("ZCARD")
        .arg(&lease_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(held, 0, "slot released");
    let jobs_on_cluster: u64 = redis::cmd("ZCARD")
        .arg(format!("{}:{}:completed", setup.prefix, setup.queue))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(jobs_on_cluster, 1, "the job finished on the cluster");

    let status = worker.terminate().await;
    assert!(status.success(), "worker exit status {status:?}");
}
