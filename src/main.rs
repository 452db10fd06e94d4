//! `sluice`: the one binary. `serve` runs everything in one process; `gateway` and
//! `compactor` run the two halves of a distributed cluster; `topic` manages topics on a
//! running broker; `compact` asks a running compactor to compact now.

mod admin;
mod config;

/// mimalloc rather than the system allocator: the message paths allocate and free many
/// small buffers across threads, where glibc's malloc spent a third of the CPU time of an
/// MQTT QoS 0 run (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_cache::{CacheConfig, RangeCache};
use sluice_compactor::CompactorConfig;
use sluice_gateway::acl::AclConfig;
use sluice_gateway::config::KafkaListener;
use sluice_gateway::tls::TlsSettings;
use sluice_gateway::{CompactorProcess, Gateway, GatewayConfig, Services};
use sluice_metadata::{EmbeddedStore, EtcdStore, SharedStore};
use sluice_protocols::kafka::scram::Mechanism;
use sluice_storage::faults::{Faults, FaultyStore};
use sluice_storage::segment::SegmentOptions;
use sluice_storage::{ObjectStoreUrl, open_object_store};

use crate::config::{Command, MetadataUrl, ServeArgs, TopicCommand, UserCommand};

/// The disk tier of the cache in front of a remote object store.
const DEFAULT_CACHE_DISK: u64 = 1 << 30;

fn main() -> Result<()> {
    // Where transparent huge pages are always on, the allocator's arenas fault in 2 MiB
    // pages: an idle server held 20 MiB more than it used. Small pages from here on.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("could not turn transparent huge pages off: {e}");
    }
    let cli = config::parse().map_err(|e| anyhow::anyhow!(e))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: log collectors (containers, systemd) get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args, Role::All).await,
            Command::Gateway(args) => serve(args, Role::Gateway).await,
            Command::Compactor(args) => serve(args, Role::Compactor).await,
            Command::Ready { server } => ready(&server).await,
            Command::Topic { action } => topic(action).await,
            Command::User { action } => user(action).await,
            Command::Compact {
                server,
                topic,
                admin_token_file,
            } => {
                let token = admin_token_file.as_deref().map(read_secret).transpose()?;
                compact(&server, topic.as_deref(), token.as_deref()).await
            }
            Command::MqttPassword { iterations } => {
                let mut password = String::new();
                std::io::stdin().read_line(&mut password)?;
                let password = password.trim_end_matches(['\r', '\n']);
                println!(
                    "{}",
                    sluice_gateway::mqtt::auth::hash_password(password.as_bytes(), iterations)
                );
                Ok(())
            }
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

/// Which parts of Sluice a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    All,
    Gateway,
    Compactor,
}

fn compactor_config(args: &ServeArgs, node: String) -> CompactorConfig {
    CompactorConfig {
        node,
        max_age: args.compaction_max_age,
        max_entries: args.compaction_max_entries,
        target_bytes: args.segment_target_bytes,
        max_wal_bytes: args.compaction_max_wal_bytes,
        interval: args.compaction_interval,
        checkpoint_interval: args.checkpoint_interval,
        orphan_age: args.orphan_age,
        delete_delay: args.delete_delay,
        lease_ttl: args.lease_ttl,
        segment: SegmentOptions {
            row_group_bytes: args.segment_row_group_bytes as usize,
            ..SegmentOptions::default()
        },
    }
}

async fn serve(args: ServeArgs, role: Role) -> Result<()> {
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
    // A disk tier in front of a local directory only writes every object a second time
    // to the same kind of disk it could be read from.
    let cache_disk = args.cache_disk.unwrap_or(match &url {
        ObjectStoreUrl::File(_) => 0,
        ObjectStoreUrl::Memory | ObjectStoreUrl::S3 { .. } => DEFAULT_CACHE_DISK,
    });
    let cache = RangeCache::open(
        &CacheConfig {
            memory_bytes: args.cache_memory as usize,
            disk: (cache_disk > 0).then_some((cache_dir, cache_disk as usize)),
        },
        objects.clone(),
    )
    .await
    .context("opening the cache")?;
    let advertised = match &args.advertise {
        None => vec![None; args.kafka_listen.0.len()],
        Some(a) => a.resolve(&args.kafka_listen).map_err(anyhow::Error::msg)?,
    };
    let kafka_listeners: Vec<KafkaListener> = args
        .kafka_listen
        .0
        .iter()
        .zip(advertised)
        .map(|((protocol, addr), advertise)| KafkaListener {
            protocol: *protocol,
            addr: *addr,
            advertise,
        })
        .collect();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            client_auth: args.tls_client_auth,
            principal: args.tls_principal,
            peer_ca: args.tls_peer_ca.clone(),
        }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let services = Services {
        store,
        objects,
        cache: Arc::new(cache),
        faults,
        metadata_url: args.metadata.clone(),
        object_store_url: url.to_string(),
    };
    let admin_token = args
        .admin_token_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    if role == Role::Compactor {
        let node = uuid::Uuid::new_v4().simple().to_string();
        let starting = CompactorProcess::start(
            compactor_config(&args, node.clone()),
            args.http_listen.addr,
            tls.clone().filter(|_| args.http_listen.tls),
            admin_token,
            services,
        );
        // Startup waits for metadata and the object store; a stop signal ends the wait.
        let process = tokio::select! {
            p = starting => p?,
            _ = shutdown_signal() => return Ok(()),
        };
        println!("compactor {node}");
        println!("http listening on {}", process.http_addr);
        println!("ready");
        shutdown_signal().await;
        tracing::info!("shutting down");
        process.shutdown();
        process.wait().await;
        return Ok(());
    }
    let config = GatewayConfig {
        kafka_listeners,
        http_listen: args.http_listen.addr,
        http_tls: args.http_listen.tls,
        tls,
        node_id: args.node_id,
        zone: args.zone.clone().filter(|z| !z.is_empty()),
        rebalance_connections: args.rebalance_connections,
        rebalance_interval: args
            .rebalance_interval
            .max(std::time::Duration::from_millis(100)),
        flush_max_delay: args.flush_max_delay,
        flush_min_delay: args.flush_min_delay.min(args.flush_max_delay),
        flush_target_bytes: args.flush_target_bytes as usize,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions.max(1),
        fault_injection: args.fault_injection,
        max_connections_per_ip: args.max_connections_per_ip,
        admin_user: match &args.admin_user {
            None => None,
            Some(name) => {
                let password = match (
                    &args.admin_password_file,
                    std::env::var("SLUICE_ADMIN_PASSWORD"),
                ) {
                    (Some(path), _) => read_secret(path)?.to_string(),
                    (None, Ok(p)) if !p.is_empty() => p,
                    _ => anyhow::bail!(
                        "--admin-user needs a password: SLUICE_ADMIN_PASSWORD or --admin-password-file"
                    ),
                };
                Some((name.clone(), password))
            }
        },
        admin_token,
        cluster_secret: args
            .cluster_secret_file
            .as_deref()
            .map(read_cluster_secret)
            .transpose()?,
        group_initial_rebalance_delay: args.group_initial_rebalance_delay,
        group_min_session_timeout: args.group_min_session_timeout,
        lease_ttl: args.lease_ttl,
        mqtt_listeners: args.mqtt_listen.0.clone(),
        mqtt_topic_map: args.mqtt_topic_map.clone(),
        mqtt_default_topic: Some(args.mqtt_default_topic.clone()).filter(|t| !t.is_empty()),
        mqtt_auth: args.mqtt_auth.clone(),
        mqtt_forward: args.mqtt_forward,
        mqtt_drain_will_delay: args.mqtt_drain_will_delay,
        mqtt_server_reference: args.mqtt_server_reference.clone(),
        mqtt_user_store: args.mqtt_user_store,
        sasl_session_lifetime: Some(args.connections_max_reauth).filter(|d| !d.is_zero()),
        peer_listener: args.peer_listener,
        oauth: args
            .oauth_jwks
            .clone()
            .map(|jwks| sluice_gateway::oauth::OAuthSettings {
                jwks,
                issuer: args.oauth_issuer.clone(),
                audience: args.oauth_audience.clone(),
                principal_claim: args.oauth_principal_claim.clone(),
            }),
        acl: AclConfig {
            enabled: args.authorizer == "acl",
            super_users: args
                .super_users
                .split(';')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .chain(args.admin_user.iter().map(|a| format!("User:{a}")))
                .collect(),
            allow_everyone_if_no_acl: args.allow_everyone_if_no_acl,
        },
        compactor: (role == Role::All)
            .then(|| compactor_config(&args, uuid::Uuid::new_v4().simple().to_string())),
        ..GatewayConfig::default()
    };
    let gateway = tokio::select! {
        g = Gateway::start(config, services) => g?,
        _ = shutdown_signal() => return Ok(()),
    };
    // Tests and scripts read the bound addresses from here (ports may be 0).
    println!("node id {}", gateway.node_id);
    for (protocol, addr) in &gateway.kafka_addrs {
        println!("kafka listening on {addr} {}", protocol.name());
    }
    println!("http listening on {}", gateway.http_addr);
    for (tls, addr) in &gateway.mqtt_addrs {
        println!(
            "mqtt listening on {addr} {}",
            if *tls { "mqtts" } else { "mqtt" }
        );
    }
    println!("ready");
    shutdown_signal().await;
    tracing::info!(timeout = ?args.drain_timeout, "shutting down: draining connections and the write buffer");
    // A second signal abandons the drain.
    gateway.drain(args.drain_timeout, shutdown_signal()).await;
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

/// `sluice compact`: POST /admin/compact and print the answer.
/// A secret in a file (surrounding white space ignored); an empty file is an error.
fn read_secret(path: &std::path::Path) -> Result<Arc<str>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading a secret from {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the secret file {} is empty",
        path.display()
    );
    Ok(Arc::from(token))
}

/// The cluster secret in a file (surrounding white space ignored); at least 16 bytes.
fn read_cluster_secret(path: &std::path::Path) -> Result<Arc<[u8]>> {
    let secret = read_secret(path)?;
    anyhow::ensure!(
        secret.len() >= 16,
        "the cluster secret in {} is shorter than 16 bytes",
        path.display()
    );
    Ok(Arc::from(secret.as_bytes()))
}

async fn compact(server: &str, topic: Option<&str>, token: Option<&str>) -> Result<()> {
    let path = match topic {
        Some(t) => format!("/admin/compact?topic={t}"),
        None => "/admin/compact".to_string(),
    };
    let (status, body) = admin::http_request(hyper::Method::POST, server, &path, token)
        .await
        .with_context(|| format!("asking {server} to compact"))?;
    if status != 200 {
        anyhow::bail!("{server} answered {status}: {}", body.trim());
    }
    print!("{body}");
    Ok(())
}

async fn ready(server: &str) -> Result<()> {
    let server = server.strip_prefix("http://").unwrap_or(server);
    if server.starts_with("https://") {
        anyhow::bail!(
            "{server}: `sluice ready` asks plain HTTP; probe an HTTPS listener with a client that trusts its certificate"
        );
    }
    let server = match server.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => match server.strip_prefix("[::]:") {
            Some(port) => format!("[::1]:{port}"),
            None => server.to_string(),
        },
    };
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        admin::http_request(hyper::Method::GET, &server, "/readyz", None),
    )
    .await
    .with_context(|| format!("{server} did not answer within 5 s"))??;
    if status != 200 {
        anyhow::bail!("not ready ({status}): {}", body.trim());
    }
    Ok(())
}

fn mechanisms(names: &[String]) -> Result<Vec<Mechanism>> {
    names
        .iter()
        .map(|n| {
            Mechanism::from_name(n).with_context(|| format!("{n}: SCRAM-SHA-256 or SCRAM-SHA-512"))
        })
        .collect()
}

async fn user(action: UserCommand) -> Result<()> {
    match action {
        UserCommand::Set {
            name,
            mechanisms: names,
            iterations,
            conn,
        } => {
            let mut chosen = mechanisms(&names)?;
            if chosen.is_empty() {
                chosen = vec![Mechanism::Sha256, Mechanism::Sha512];
            }
            let password = match std::env::var("SLUICE_USER_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                anyhow::bail!("no password: set SLUICE_USER_PASSWORD or give it on stdin");
            }
            let mut client = admin::Client::connect(&conn).await?;
            client
                .set_user(&name, &password, &chosen, iterations)
                .await?;
            let names: Vec<&str> = chosen.iter().map(|m| m.name()).collect();
            println!("user {name} set ({})", names.join(", "));
        }
        UserCommand::Delete {
            name,
            mechanisms: names,
            conn,
        } => {
            let chosen = mechanisms(&names)?;
            let mut client = admin::Client::connect(&conn).await?;
            client.delete_user(&name, &chosen).await?;
            println!("user {name} deleted");
        }
        UserCommand::List { conn } => {
            let mut client = admin::Client::connect(&conn).await?;
            for (name, creds) in client.list_users(None).await? {
                let creds: Vec<String> = creds.iter().map(|(m, i)| format!("{m}:{i}")).collect();
                println!("{name}\t{}", creds.join(","));
            }
        }
    }
    Ok(())
}

async fn topic(action: TopicCommand) -> Result<()> {
    match action {
        TopicCommand::Create {
            name,
            partitions,
            configs,
            conn,
        } => {
            let mut pairs = Vec::new();
            for c in configs {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("--config {c}: expected KEY=VALUE"))?;
                pairs.push((k.to_string(), v.to_string()));
            }
            let mut client = admin::Client::connect(&conn).await?;
            let id = client.create_topic(&name, partitions, &pairs).await?;
            println!("created topic {name} ({id}) with {partitions} partitions");
        }
        TopicCommand::List { conn } => {
            let mut client = admin::Client::connect(&conn).await?;
            for (name, partitions, id) in client.list_topics().await? {
                println!("{name}\t{partitions}\t{id}");
            }
        }
        TopicCommand::Describe { name, conn } => {
            let mut client = admin::Client::connect(&conn).await?;
            print!("{}", client.describe_topic(&name).await?);
        }
        TopicCommand::Delete { name, conn } => {
            let mut client = admin::Client::connect(&conn).await?;
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
