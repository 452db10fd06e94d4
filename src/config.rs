//! Command line, environment (`SLUICE_*`) and config file, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sluice_gateway::config::{MqttListener, SecurityProtocol};
use sluice_gateway::tls::{ClientAuth, PrincipalFrom};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka- and MQTT-compatible message broker on object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway and compactor. With no flags: data under
    /// ./sluice-data, embedded metadata, Kafka on :9092, HTTP on :8080.
    Serve(ServeArgs),
    /// Run a stateless gateway (point it at etcd and a bucket for a distributed cluster).
    Gateway(ServeArgs),
    /// Run a compactor (point it at the same etcd and bucket as the gateways); serves HTTP
    /// (metrics, health, /admin/compact) on --http-listen.
    Compactor(ServeArgs),
    /// Print a password hash for the --mqtt-auth file (the password is read from stdin).
    MqttPassword {
        #[arg(long, default_value_t = 100_000)]
        iterations: u32,
    },
    /// Ask a running server or compactor to compact everything committed so far, and wait
    /// until it is done.
    Compact {
        /// The HTTP address of `sluice serve` or `sluice compactor`.
        #[arg(long, default_value = "127.0.0.1:8080")]
        server: String,
        /// A file holding the server's admin token (see `serve --admin-token-file`).
        #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Exit 0 when the server at this HTTP address is ready (`/readyz` answers 200), else
    /// print why not and exit 1: a health check for images without a shell.
    Ready {
        /// The HTTP listener: by default the one the server in this environment listens on
        /// (SLUICE_HTTP_LISTEN; 0.0.0.0 is asked on 127.0.0.1).
        #[arg(long, env = "SLUICE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
        server: String,
    },
    /// Manage topics on a running broker.
    Topic {
        #[command(subcommand)]
        action: TopicCommand,
    },
    /// Manage the users Kafka and MQTT clients authenticate as, on a running broker.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

/// How `sluice topic` and `sluice user` reach a running broker: any Kafka listener, with
/// TLS and SASL SCRAM as the listener asks (the password in SLUICE_SASL_PASSWORD).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// A Kafka listener's HOST:PORT.
    #[arg(
        long,
        visible_alias = "bootstrap",
        env = "SLUICE_SERVER",
        default_value = "127.0.0.1:9092"
    )]
    pub server: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, as the listener is.
    #[arg(long, env = "SLUICE_SECURITY_PROTOCOL", default_value = "PLAINTEXT")]
    pub security_protocol: SecurityProtocol,
    /// CA certificates (PEM) the broker's certificate chain ends in (SSL, SASL_SSL).
    #[arg(long, env = "SLUICE_CA")]
    pub ca: Option<PathBuf>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "SLUICE_SASL_MECHANISM", default_value = "SCRAM-SHA-512")]
    pub sasl_mechanism: String,
    /// The user to authenticate as (SASL listeners); its password in SLUICE_SASL_PASSWORD.
    #[arg(long, env = "SLUICE_SASL_USER")]
    pub sasl_user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Topic config as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    List {
        #[command(flatten)]
        conn: Connection,
    },
    Describe {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    Delete {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user or changes its password (read from SLUICE_USER_PASSWORD, or the
    /// first line of stdin), with a fresh salt per mechanism.
    Set {
        name: String,
        /// SCRAM-SHA-256 and/or SCRAM-SHA-512 (repeatable; default both).
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations, 4096 to 16384.
        #[arg(long, default_value_t = 4096)]
        iterations: i32,
        #[command(flatten)]
        conn: Connection,
    },
    /// Removes a user's credentials (of the given mechanisms; default all).
    Delete {
        name: String,
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Lists the users and their mechanisms.
    List {
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the options below (names with '_' or '-').
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where local state lives: objects, metadata and cache, unless set separately.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// file://PATH, memory:// or s3://BUCKET/PREFIX (AWS_* variables configure S3).
    #[arg(long, env = "SLUICE_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// `embedded` (in the data directory) or etcd://HOST:PORT[,HOST:PORT]/PREFIX.
    #[arg(long, env = "SLUICE_METADATA", default_value = "embedded")]
    pub metadata: String,
    /// Kafka listeners, comma-separated: `PROTOCOL://HOST:PORT` with PROTOCOL as Kafka names
    /// it, `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` (clients authenticate against the user
    /// store) or `SASL_SSL`, at most one of each; a bare `HOST:PORT` is `PLAINTEXT`. Other
    /// gateways call the one --peer-listener names.
    #[arg(long, env = "SLUICE_KAFKA_LISTEN", default_value = "0.0.0.0:9092")]
    pub kafka_listen: KafkaListeners,
    /// The Kafka listener other gateways call this one on (signed gRPC: MQTT forwarding),
    /// by protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Default: the first listener
    /// without TLS, else the first. Over TLS, callers check this gateway's certificate
    /// against --tls-peer-ca.
    #[arg(long, env = "SLUICE_PEER_LISTENER")]
    pub peer_listener: Option<sluice_gateway::config::SecurityProtocol>,
    /// `HOST:PORT`, or `https://HOST:PORT` for HTTPS (MQTT over WebSocket is then `wss://`).
    #[arg(long, env = "SLUICE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: HttpListen,
    /// Listeners for MQTT devices, comma-separated: `mqtt://HOST:PORT` (or a bare
    /// `HOST:PORT`) and `mqtts://HOST:PORT` (TLS; 8883 is usual). MQTT is also served on the
    /// Kafka listeners.
    #[arg(long, env = "SLUICE_MQTT_LISTEN", default_value = "0.0.0.0:1883")]
    pub mqtt_listen: MqttListeners,
    /// The server certificate of TLS listeners: PEM, the full chain. Read again when it
    /// changes on disk.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) client certificates must chain to, for mutual TLS.
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// The CA certificates (PEM) other gateways' certificates chain to, for
    /// gateway-to-gateway calls over TLS (see --peer-listener); by default the issuers in
    /// --tls-cert's own chain.
    #[arg(long, env = "SLUICE_TLS_PEER_CA")]
    pub tls_peer_ca: Option<PathBuf>,
    /// Whether TLS clients present a certificate: none, optional or required.
    #[arg(long, env = "SLUICE_TLS_CLIENT_AUTH", default_value = "none")]
    pub tls_client_auth: ClientAuth,
    /// A client certificate's principal: its whole subject (`dn`, as Kafka:
    /// `CN=device-42,O=Acme`) or its common name (`cn`).
    #[arg(long, env = "SLUICE_TLS_PRINCIPAL", default_value = "dn")]
    pub tls_principal: PrincipalFrom,
    /// MQTT topic filters to log topics, first match wins: FILTER=TOPIC[,FILTER=TOPIC...].
    #[arg(long, env = "SLUICE_MQTT_TOPIC_MAP", default_value = "")]
    pub mqtt_topic_map: String,
    /// The log topic of MQTT messages no rule of --mqtt-topic-map maps.
    #[arg(long, env = "SLUICE_MQTT_DEFAULT_TOPIC", default_value = "mqtt")]
    pub mqtt_default_topic: String,
    /// A TOML file of MQTT users, password hashes and topic rules (see docs/mqtt.md);
    /// without it, MQTT clients are not authenticated.
    #[arg(long, env = "SLUICE_MQTT_AUTH")]
    pub mqtt_auth: Option<String>,
    /// Check MQTT user names and passwords against the user store (users the --mqtt-auth
    /// file lists keep its passwords and rules), accept a verified TLS client certificate
    /// in place of a user name, and refuse clients with neither unless the file lets
    /// anonymous clients in. Always so for MQTT on a SASL Kafka listener.
    #[arg(long, env = "SLUICE_MQTT_USER_STORE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub mqtt_user_store: bool,
    /// Forward WAL objects holding MQTT data to the gateways that deliver MQTT messages
    /// (gRPC on their Kafka listener), so their delivery need not read the object store.
    #[arg(long, env = "SLUICE_MQTT_FORWARD", default_value_t = true, action = clap::ArgAction::Set)]
    pub mqtt_forward: bool,
    /// When a drain (SIGTERM) closes an MQTT connection, its will waits at least this long
    /// for the client to connect again (to any gateway) before it is published; 0: it is
    /// published at once, as on any other server-side close.
    #[arg(long, env = "SLUICE_MQTT_DRAIN_WILL_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub mqtt_drain_will_delay: Duration,
    /// Where MQTT 5.0 clients are to reconnect when a drain closes their connection (the
    /// load-balanced address, for example): sent as the Server Reference of DISCONNECT
    /// 0x9C (Use another server); without it, DISCONNECT 0x8B (Server shutting down).
    #[arg(long, env = "SLUICE_MQTT_SERVER_REFERENCE")]
    pub mqtt_server_reference: Option<String>,
    /// Addresses given to clients in metadata responses, one per Kafka listener:
    /// `HOST:PORT,...` in the order of --kafka-listen, or `PROTOCOL://HOST:PORT,...`.
    #[arg(long, env = "SLUICE_ADVERTISE")]
    pub advertise: Option<Advertised>,
    /// Node id given to clients (default: derived from the advertised address).
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// The zone (availability zone, rack) this gateway runs in: Kafka clients that name
    /// theirs (`client.rack`, or `zone=NAME` in `client.id`) are kept in their zone.
    #[arg(long, env = "SLUICE_ZONE")]
    pub zone: Option<String>,
    /// Ask connections above this gateway's fair share (the gateways' total, divided
    /// evenly) to reconnect elsewhere, a few at a time: MQTT 5.0 DISCONNECT 0x9C, Kafka
    /// connections closed between requests.
    #[arg(long, env = "SLUICE_REBALANCE_CONNECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rebalance_connections: bool,
    /// The longest a gateway drains on SIGTERM (answering requests in flight, flushing,
    /// handing groups over, holding MQTT wills back) before it abandons what is left.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How often connection counts are published and, when rebalancing, connections shed
    /// (at most a twentieth of this gateway's per round).
    #[arg(long, env = "SLUICE_REBALANCE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub rebalance_interval: Duration,
    /// Longest time a record waits in the write buffer (e.g. 5ms).
    #[arg(long, env = "SLUICE_FLUSH_MAX_DELAY", default_value = "5ms", value_parser = parse_duration)]
    pub flush_max_delay: Duration,
    /// Shortest time a record waits before a flush when none is in flight (e.g. 20ms):
    /// 0 flushes at once; more means fewer, larger WAL objects (fewer object store requests).
    #[arg(long, env = "SLUICE_FLUSH_MIN_DELAY", default_value = "0ms", value_parser = parse_duration)]
    pub flush_min_delay: Duration,
    /// Buffer size that triggers a flush (e.g. 4MiB).
    #[arg(long, env = "SLUICE_FLUSH_TARGET_BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub flush_target_bytes: u64,
    /// Local directory of the SSD cache (default: DATA_DIR/cache).
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, env = "SLUICE_CACHE_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub cache_memory: u64,
    /// Size of the SSD cache; 0 keeps the cache in memory only. Default: 1GiB, or none when
    /// the object store is a local directory (the disk tier would copy the same disk).
    #[arg(long, env = "SLUICE_CACHE_DISK", value_parser = parse_size)]
    pub cache_disk: Option<u64>,
    /// Create topics on first use.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: u32,
    /// How long a new consumer group waits for more members before its first generation.
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY", default_value = "3s", value_parser = parse_duration)]
    pub group_initial_rebalance_delay: Duration,
    /// Smallest session timeout a group member may ask for.
    #[arg(long, env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub group_min_session_timeout: Duration,
    /// TTL of the gateway's metadata lease: how long its consumer groups wait before moving
    /// to another gateway when it dies.
    #[arg(long, env = "SLUICE_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How often the compactor looks for work.
    #[arg(long, env = "SLUICE_COMPACTION_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub compaction_interval: Duration,
    /// Compact data once it is this old even if a segment is not full (a topic's
    /// segment.ms can make it shorter).
    #[arg(long, env = "SLUICE_COMPACTION_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub compaction_max_age: Duration,
    /// Compact a partition once this many WAL commits (index entries) wait for it.
    #[arg(long, env = "SLUICE_COMPACTION_MAX_ENTRIES", default_value_t = 10_000)]
    pub compaction_max_entries: usize,
    /// WAL bytes a compactor's partitions may hold before everything waiting is compacted
    /// at once (keep it within half the gateways' cache, which then serves all reads of
    /// data not yet in segments).
    #[arg(long, env = "SLUICE_COMPACTION_MAX_WAL_BYTES", default_value = "128MiB", value_parser = parse_size)]
    pub compaction_max_wal_bytes: u64,
    /// WAL bytes per segment (default: each topic's segment.bytes, 128 MiB). Segments
    /// under an eighth of it are merged with their neighbours.
    #[arg(long, env = "SLUICE_SEGMENT_TARGET_BYTES", value_parser = parse_size)]
    pub segment_target_bytes: Option<u64>,
    /// Record bytes per Parquet row group: what one fetch of compacted data decodes.
    #[arg(long, env = "SLUICE_SEGMENT_ROW_GROUP_BYTES", default_value = "8MiB", value_parser = parse_size)]
    pub segment_row_group_bytes: u64,
    /// How often the log state is checkpointed (and old commit records removed).
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Objects written but never committed are deleted once this old.
    #[arg(long, env = "SLUICE_ORPHAN_AGE", default_value = "15m", value_parser = parse_duration)]
    pub orphan_age: Duration,
    /// Compacted or expired objects are deleted this long after nothing references them.
    #[arg(long, env = "SLUICE_DELETE_DELAY", default_value = "60s", value_parser = parse_duration)]
    pub delete_delay: Duration,
    /// A file holding the token `/admin/*` requires (`Authorization: Bearer TOKEN`); without
    /// one, `/admin` is served to callers on this host only.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The first administrator, created in the user store at start if absent, with SCRAM
    /// credentials for the password in SLUICE_ADMIN_PASSWORD or --admin-password-file.
    #[arg(long, env = "SLUICE_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// A file holding the first administrator's password.
    #[arg(long, env = "SLUICE_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// How long an authenticated Kafka session lasts before the client must authenticate
    /// again on its connection (KIP-368, Kafka's connections.max.reauth.ms); 0: as long as
    /// the connection.
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_REAUTH", default_value = "0", value_parser = parse_duration)]
    pub connections_max_reauth: Duration,
    /// A JSON Web Key Set file: OAUTHBEARER is offered on the SASL listeners, and its
    /// tokens (JWTs, RS256 or ES256) must be signed by one of these keys. Read again when it
    /// changes on disk.
    #[arg(long, env = "SLUICE_OAUTH_JWKS")]
    pub oauth_jwks: Option<PathBuf>,
    /// The issuer (`iss`) OAUTHBEARER tokens must name.
    #[arg(long, env = "SLUICE_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// An audience (`aud`) OAUTHBEARER tokens must hold.
    #[arg(long, env = "SLUICE_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,
    /// The token claim that names the principal (Kafka's sasl.oauthbearer.sub.claim.name).
    #[arg(long, env = "SLUICE_OAUTH_PRINCIPAL_CLAIM", default_value = "sub")]
    pub oauth_principal_claim: String,
    /// `none` (every client may do everything, as Kafka without an authorizer) or `acl`
    /// (Kafka's ACLs, made with CreateAcls from any admin client).
    #[arg(long, env = "SLUICE_AUTHORIZER", default_value = "none", value_parser = ["none", "acl"])]
    pub authorizer: String,
    /// Principals allowed everything, `User:NAME`, separated by `;` (as Kafka's
    /// super.users); --admin-user is one of them.
    #[arg(long, env = "SLUICE_SUPER_USERS", default_value = "")]
    pub super_users: String,
    /// With --authorizer acl, resources no ACL names are open to everyone (Kafka's
    /// allow.everyone.if.no.acl.found).
    #[arg(long, env = "SLUICE_ALLOW_EVERYONE_IF_NO_ACL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_everyone_if_no_acl: bool,
    /// Open Kafka and MQTT connections allowed from one source address (0: no limit), as
    /// Kafka's max.connections.per.ip.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// A file holding the secret every gateway of the cluster shares, which signs their
    /// calls to each other (at least 16 bytes); without it gateways do not forward WAL
    /// objects to each other.
    #[arg(long, env = "SLUICE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Expose /admin/faults to make object store PUTs fail (tests only).
    #[arg(long, env = "SLUICE_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,
}

/// `--kafka-listen`: each listener's protocol and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListeners(pub Vec<(SecurityProtocol, SocketAddr)>);

impl std::str::FromStr for KafkaListeners {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<(SecurityProtocol, SocketAddr)> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (protocol, addr) = item.split_once("://").unwrap_or(("PLAINTEXT", item));
            let protocol: SecurityProtocol = protocol.parse()?;
            let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            if out.iter().any(|(p, _)| *p == protocol) {
                return Err(format!(
                    "two {} listeners; one per protocol",
                    protocol.name()
                ));
            }
            out.push((protocol, addr));
        }
        if out.is_empty() {
            return Err("no Kafka listener".into());
        }
        Ok(Self(out))
    }
}

/// `--advertise`: addresses in listener order, or by listener name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised(pub Vec<(Option<SecurityProtocol>, String, u16)>);

impl std::str::FromStr for Advertised {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, addr) = match item.split_once("://") {
                Some((n, a)) => (Some(n.parse::<SecurityProtocol>()?), a),
                None => (None, item),
            };
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("{addr}: expected HOST:PORT"))?;
            let port = port.parse().map_err(|_| format!("{addr}: bad port"))?;
            out.push((name, host.to_string(), port));
        }
        Ok(Self(out))
    }
}

impl Advertised {
    /// The advertised address of each listener, in `listeners`' order.
    pub fn resolve(
        &self,
        listeners: &KafkaListeners,
    ) -> Result<Vec<Option<(String, u16)>>, String> {
        let named = self.0.iter().filter(|(n, _, _)| n.is_some()).count();
        if named == 0 {
            if self.0.len() != listeners.0.len() {
                return Err(format!(
                    "--advertise has {} addresses for {} Kafka listeners",
                    self.0.len(),
                    listeners.0.len()
                ));
            }
            return Ok(self
                .0
                .iter()
                .map(|(_, h, p)| Some((h.clone(), *p)))
                .collect());
        }
        if named != self.0.len() {
            return Err("--advertise: name every address (PROTOCOL://HOST:PORT) or none".into());
        }
        for (name, _, _) in &self.0 {
            if !listeners.0.iter().any(|(p, _)| Some(*p) == *name) {
                return Err(format!(
                    "--advertise names {}, which is not a --kafka-listen listener",
                    name.map_or("", SecurityProtocol::name)
                ));
            }
        }
        Ok(listeners
            .0
            .iter()
            .map(|(p, _)| {
                self.0
                    .iter()
                    .find(|(n, _, _)| *n == Some(*p))
                    .map(|(_, h, port)| (h.clone(), *port))
            })
            .collect())
    }
}

/// `--mqtt-listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttListeners(pub Vec<MqttListener>);

impl std::str::FromStr for MqttListeners {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (tls, addr) = match item.split_once("://") {
                Some(("mqtt", a)) => (false, a),
                Some(("mqtts", a)) => (true, a),
                Some((other, _)) => return Err(format!("{other}://: mqtt:// or mqtts://")),
                None => (false, item),
            };
            let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            out.push(MqttListener { addr, tls });
        }
        Ok(Self(out))
    }
}

/// `--http-listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, addr) = match s.split_once("://") {
            Some(("http", a)) => (false, a),
            Some(("https", a)) => (true, a),
            Some((other, _)) => return Err(format!("{other}://: http:// or https://")),
            None => (false, s),
        };
        let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        Ok(Self { addr, tls })
    }
}

/// `5ms`, `2s`, `1m`, `250us`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 5ms or 2s"))?;
    Ok(match unit.trim() {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        u => {
            return Err(format!(
                "unknown duration unit '{u}' (use us, ms, s, m or h)"
            ));
        }
    })
}

/// `4MiB`, `1GiB`, `512KiB`, `10MB`, or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 64MiB"))?;
    let m: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit '{u}' (use KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(m)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses the command line, then fills every option left at its default from the config
/// file, if one is given.
pub fn parse() -> Result<Cli, String> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if let Command::Serve(args) | Command::Gateway(args) | Command::Compactor(args) =
        &mut cli.command
        && let Some(path) = args.config.clone()
    {
        let sub = matches
            .subcommand()
            .map(|(_, m)| m)
            .ok_or("missing subcommand")?;
        apply_file(args, sub, &path)?;
    }
    Ok(cli)
}

fn apply_file(args: &mut ServeArgs, m: &ArgMatches, path: &PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let defaulted = |id: &str| matches!(m.value_source(id), Some(ValueSource::DefaultValue) | None);
    for (key, value) in table {
        let id = key.replace('-', "_");
        if !defaulted(&id) {
            continue;
        }
        let text = match &value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let bad = |e: String| format!("{}: {key}: {e}", path.display());
        match id.as_str() {
            "data_dir" => args.data_dir = text.into(),
            "object_store" => args.object_store = Some(text),
            "metadata" => args.metadata = text,
            "kafka_listen" => args.kafka_listen = text.parse().map_err(bad)?,
            "http_listen" => args.http_listen = text.parse().map_err(bad)?,
            "mqtt_listen" => args.mqtt_listen = text.parse().map_err(bad)?,
            "tls_cert" => args.tls_cert = Some(PathBuf::from(text)),
            "tls_key" => args.tls_key = Some(PathBuf::from(text)),
            "tls_client_ca" => args.tls_client_ca = Some(PathBuf::from(text)),
            "tls_client_auth" => args.tls_client_auth = text.parse().map_err(bad)?,
            "tls_peer_ca" => args.tls_peer_ca = Some(PathBuf::from(text)),
            "peer_listener" => args.peer_listener = Some(text.parse().map_err(bad)?),
            "tls_principal" => args.tls_principal = text.parse().map_err(bad)?,
            "mqtt_topic_map" => args.mqtt_topic_map = text,
            "mqtt_default_topic" => args.mqtt_default_topic = text,
            "mqtt_auth" => args.mqtt_auth = Some(text),
            "mqtt_user_store" => {
                args.mqtt_user_store = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "mqtt_forward" => args.mqtt_forward = text.parse().map_err(|e| bad(format!("{e}")))?,
            "mqtt_server_reference" => args.mqtt_server_reference = Some(text),
            "mqtt_drain_will_delay" => {
                args.mqtt_drain_will_delay = parse_duration(&text).map_err(bad)?
            }
            "advertise" => args.advertise = Some(text.parse().map_err(bad)?),
            "node_id" => args.node_id = Some(text.parse().map_err(|e| bad(format!("{e}")))?),
            "zone" => args.zone = Some(text).filter(|z| !z.is_empty()),
            "drain_timeout" => args.drain_timeout = parse_duration(&text).map_err(bad)?,
            "rebalance_interval" => args.rebalance_interval = parse_duration(&text).map_err(bad)?,
            "rebalance_connections" => {
                args.rebalance_connections = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "flush_max_delay" => args.flush_max_delay = parse_duration(&text).map_err(bad)?,
            "flush_min_delay" => args.flush_min_delay = parse_duration(&text).map_err(bad)?,
            "flush_target_bytes" => args.flush_target_bytes = parse_size(&text).map_err(bad)?,
            "cache_dir" => args.cache_dir = Some(text.into()),
            "cache_memory" => args.cache_memory = parse_size(&text).map_err(bad)?,
            "cache_disk" => args.cache_disk = Some(parse_size(&text).map_err(bad)?),
            "auto_create_topics" => {
                args.auto_create_topics = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "default_partitions" => {
                args.default_partitions = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "group_initial_rebalance_delay" => {
                args.group_initial_rebalance_delay = parse_duration(&text).map_err(bad)?
            }
            "group_min_session_timeout" => {
                args.group_min_session_timeout = parse_duration(&text).map_err(bad)?
            }
            "lease_ttl" => args.lease_ttl = parse_duration(&text).map_err(bad)?,
            "compaction_interval" => {
                args.compaction_interval = parse_duration(&text).map_err(bad)?
            }
            "compaction_max_age" => args.compaction_max_age = parse_duration(&text).map_err(bad)?,
            "compaction_max_entries" => {
                args.compaction_max_entries = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "compaction_max_wal_bytes" => {
                args.compaction_max_wal_bytes = parse_size(&text).map_err(bad)?
            }
            "segment_target_bytes" => {
                args.segment_target_bytes = Some(parse_size(&text).map_err(bad)?)
            }
            "segment_row_group_bytes" => {
                args.segment_row_group_bytes = parse_size(&text).map_err(bad)?
            }
            "checkpoint_interval" => {
                args.checkpoint_interval = parse_duration(&text).map_err(bad)?
            }
            "orphan_age" => args.orphan_age = parse_duration(&text).map_err(bad)?,
            "delete_delay" => args.delete_delay = parse_duration(&text).map_err(bad)?,
            "admin_token_file" => args.admin_token_file = Some(PathBuf::from(text)),
            "cluster_secret_file" => args.cluster_secret_file = Some(PathBuf::from(text)),
            "admin_user" => args.admin_user = Some(text),
            "admin_password_file" => args.admin_password_file = Some(PathBuf::from(text)),
            "authorizer" => args.authorizer = text,
            "oauth_jwks" => args.oauth_jwks = Some(PathBuf::from(text)),
            "oauth_issuer" => args.oauth_issuer = Some(text),
            "oauth_audience" => args.oauth_audience = Some(text),
            "oauth_principal_claim" => args.oauth_principal_claim = text,
            "connections_max_reauth" => {
                args.connections_max_reauth = parse_duration(&text).map_err(bad)?
            }
            "super_users" => args.super_users = text,
            "allow_everyone_if_no_acl" => {
                args.allow_everyone_if_no_acl = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            "max_connections_per_ip" => {
                args.max_connections_per_ip = text.parse().map_err(|e| bad(format!("{e}")))?
            }
            _ => return Err(format!("{}: unknown option '{key}'", path.display())),
        }
    }
    Ok(())
}

/// A parsed `--metadata` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataUrl {
    Embedded,
    Memory,
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

pub fn parse_metadata(s: &str) -> Result<MetadataUrl, String> {
    match s {
        "embedded" => return Ok(MetadataUrl::Embedded),
        "memory" | "memory://" => return Ok(MetadataUrl::Memory),
        _ => {}
    }
    let rest = s.strip_prefix("etcd://").ok_or_else(|| {
        format!("unsupported metadata '{s}': use embedded or etcd://HOST:PORT[,HOST:PORT]/PREFIX")
    })?;
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "sluice"));
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        return Err(format!("no etcd endpoint in '{s}'"));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { "sluice" } else { prefix };
    Ok(MetadataUrl::Etcd {
        endpoints,
        prefix: format!("/{prefix}/"),
    })
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn kafka_listeners_are_named_as_kafka_names_them() {
        use SecurityProtocol::*;
        let addr = |a: &str| a.parse::<SocketAddr>().expect("addr");
        let l: KafkaListeners = "127.0.0.1:9092".parse().expect("bare");
        assert_eq!(l.0, [(Plaintext, addr("127.0.0.1:9092"))]);
        let l: KafkaListeners =
            "SASL_SSL://0.0.0.0:9093, PLAINTEXT://127.0.0.1:9092,ssl://[::1]:9094"
                .parse()
                .expect("list");
        assert_eq!(
            l.0,
            [
                (SaslSsl, addr("0.0.0.0:9093")),
                (Plaintext, addr("127.0.0.1:9092")),
                (Ssl, addr("[::1]:9094"))
            ]
        );
        assert!(
            "SSL://0.0.0.0:1,SSL://0.0.0.0:2"
                .parse::<KafkaListeners>()
                .is_err()
        );
        assert!("FOO://0.0.0.0:1".parse::<KafkaListeners>().is_err());
        assert!("SASL_PLAINTEXT://nohost".parse::<KafkaListeners>().is_err());
        assert!("".parse::<KafkaListeners>().is_err());
    }

    #[test]
    fn advertised_addresses_match_listeners_by_order_or_name() {
        let l: KafkaListeners = "PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9093"
            .parse()
            .expect("list");
        let a: Advertised = "10.0.0.1:9092,kafka.example.com:443"
            .parse()
            .expect("ordered");
        assert_eq!(
            a.resolve(&l).expect("resolve"),
            [
                Some(("10.0.0.1".into(), 9092)),
                Some(("kafka.example.com".into(), 443))
            ]
        );
        let a: Advertised = "SASL_SSL://kafka.example.com:443".parse().expect("named");
        assert_eq!(
            a.resolve(&l).expect("resolve"),
            [None, Some(("kafka.example.com".into(), 443))]
        );
        let one: Advertised = "10.0.0.1:9092".parse().expect("one");
        assert!(one.resolve(&l).is_err(), "one address for two listeners");
        let ssl: Advertised = "SSL://h:1".parse().expect("ssl");
        assert!(ssl.resolve(&l).is_err(), "no SSL listener");
        let mixed: Advertised = "SSL://h:1,h:2".parse().expect("mixed");
        assert!(mixed.resolve(&l).is_err());
        assert!("h".parse::<Advertised>().is_err());
    }

    #[test]
    fn mqtt_and_http_listeners() {
        let m: MqttListeners = "0.0.0.0:1883,mqtts://0.0.0.0:8883".parse().expect("mqtt");
        assert_eq!(m.0.iter().map(|l| l.tls).collect::<Vec<_>>(), [false, true]);
        assert!("ws://0.0.0.0:1".parse::<MqttListeners>().is_err());
        let h: HttpListen = "https://127.0.0.1:8443".parse().expect("https");
        assert!(h.tls && h.addr.port() == 8443);
        assert!(!"127.0.0.1:8080".parse::<HttpListen>().expect("bare").tls);
        assert!("ftp://127.0.0.1:1".parse::<HttpListen>().is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1XB").is_err());
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn metadata_urls() {
        assert_eq!(parse_metadata("embedded"), Ok(MetadataUrl::Embedded));
        assert_eq!(
            parse_metadata("etcd://a:1,b:2/cluster1"),
            Ok(MetadataUrl::Etcd {
                endpoints: vec!["a:1".into(), "b:2".into()],
                prefix: "/cluster1/".into()
            })
        );
        assert!(parse_metadata("zk://x").is_err());
        assert!(parse_metadata("etcd:///p").is_err());
    }

    #[test]
    fn config_file_fills_defaults_but_not_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "flush-max-delay = \"20ms\"\ndefault_partitions = 4\nkafka_listen = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let argv = [
            "sluice",
            "serve",
            "--config",
            file.to_str().expect("utf8"),
            "--kafka-listen",
            "127.0.0.1:9999",
        ];
        let matches = Cli::command().get_matches_from(argv);
        let mut cli = Cli::from_arg_matches(&matches).expect("parse");
        let Command::Serve(args) = &mut cli.command else {
            panic!("serve")
        };
        let sub = matches.subcommand().expect("sub").1;
        apply_file(args, sub, &file).expect("apply");
        assert_eq!(args.flush_max_delay, Duration::from_millis(20));
        assert_eq!(args.default_partitions, 4);
        assert_eq!(
            args.kafka_listen.0[0].1,
            "127.0.0.1:9999".parse::<SocketAddr>().expect("addr"),
            "the flag wins"
        );
    }
}
