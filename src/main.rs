//! `sluice`: the one binary. `serve` runs everything in one process; `gateway` runs a
//! stateless gateway for a distributed cluster; `topic` manages topics on a running broker.

mod admin;
mod config;

use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_cache::{CacheConfig, RangeCache};
use sluice_gateway::{Gateway, GatewayConfig, Services};
use sluice_metadata::{EmbeddedStore, EtcdStore, SharedStore};
use sluice_storage::faults::{Faults, FaultyStore};
use sluice_storage::{ObjectStoreUrl, open_object_store};

use crate::config::{Command, MetadataUrl, ServeArgs, TopicCommand};

fn main() -> Result<()> {
    let cli = config::parse().map_err(|e| anyhow::anyhow!(e))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) | Command::Gateway(args) => serve(args).await,
            Command::Topic { action } => topic(action).await,
        }
    })
}

async fn open_metadata(args: &ServeArgs) -> Result<SharedStore> {
    let url = config::parse_metadata(&args.metadata).map_err(|e| anyhow::anyhow!(e))?;
    Ok(match url {
        MetadataUrl::Embedded => {
            let dir = args.data_dir.join("metadata");
            Arc::new(
                EmbeddedStore::open(&dir)
                    .with_context(|| format!("opening embedded metadata in {}", dir.display()))?,
            )
        }
        MetadataUrl::Memory => Arc::new(EmbeddedStore::in_memory()),
        MetadataUrl::Etcd { endpoints, prefix } => Arc::new(
            EtcdStore::connect(&endpoints, &prefix)
                .await
                .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?,
        ),
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let url: ObjectStoreUrl = match &args.object_store {
        Some(u) => u.parse()?,
        None => ObjectStoreUrl::File(args.data_dir.join("objects")),
    };
    let mut objects = open_object_store(&url).context("opening the object store")?;
    let faults = args.fault_injection.then(|| Arc::new(Faults::default()));
    if let Some(f) = &faults {
        tracing::warn!(
            "fault injection is enabled: /admin/faults can make object store writes fail"
        );
        objects = Arc::new(FaultyStore::new(objects, f.clone()));
    }
    let store = open_metadata(&args).await?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("cache"));
    let cache = RangeCache::open(
        &CacheConfig {
            memory_bytes: args.cache_memory as usize,
            disk: (args.cache_disk > 0).then_some((cache_dir, args.cache_disk as usize)),
        },
        objects.clone(),
    )
    .await
    .context("opening the cache")?;
    let advertise = match &args.advertise {
        None => None,
        Some(a) => {
            let (host, port) = a
                .rsplit_once(':')
                .with_context(|| format!("--advertise {a}: expected HOST:PORT"))?;
            Some((
                host.to_string(),
                port.parse()
                    .with_context(|| format!("--advertise {a}: bad port"))?,
            ))
        }
    };
    let config = GatewayConfig {
        kafka_listen: args.kafka_listen,
        http_listen: args.http_listen,
        advertise,
        node_id: args.node_id,
        flush_max_delay: args.flush_max_delay,
        flush_target_bytes: args.flush_target_bytes as usize,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions.max(1),
        fault_injection: args.fault_injection,
        group_initial_rebalance_delay: args.group_initial_rebalance_delay,
        group_min_session_timeout: args.group_min_session_timeout,
        lease_ttl: args.lease_ttl,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::start(
        config,
        Services {
            store,
            objects,
            cache: Arc::new(cache),
            faults,
        },
    )
    .await?;
    // Tests and scripts read the bound addresses from here (ports may be 0).
    println!("node id {}", gateway.node_id);
    println!("kafka listening on {}", gateway.kafka_addr);
    println!("http listening on {}", gateway.http_addr);
    shutdown_signal().await;
    tracing::info!("shutting down: draining connections and the write buffer");
    gateway.shutdown();
    gateway.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn topic(action: TopicCommand) -> Result<()> {
    match action {
        TopicCommand::Create {
            name,
            partitions,
            configs,
            bootstrap,
        } => {
            let mut pairs = Vec::new();
            for c in configs {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("--config {c}: expected KEY=VALUE"))?;
                pairs.push((k.to_string(), v.to_string()));
            }
            let mut client = admin::Client::connect(&bootstrap).await?;
            let id = client.create_topic(&name, partitions, &pairs).await?;
            println!("created topic {name} ({id}) with {partitions} partitions");
        }
        TopicCommand::List { bootstrap } => {
            let mut client = admin::Client::connect(&bootstrap).await?;
            for (name, partitions, id) in client.list_topics().await? {
                println!("{name}\t{partitions}\t{id}");
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let mut client = admin::Client::connect(&bootstrap).await?;
            print!("{}", client.describe_topic(&name).await?);
        }
        TopicCommand::Delete { name, bootstrap } => {
            let mut client = admin::Client::connect(&bootstrap).await?;
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
