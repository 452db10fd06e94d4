use std::net::SocketAddr;
use std::time::Duration;

/// A Kafka listener's security protocol, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [Self; 4] = [
        Self::Plaintext,
        Self::Ssl,
        Self::SaslPlaintext,
        Self::SaslSsl,
    ];

    /// The name Kafka gives it, which is also the listener's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Clients authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown listener protocol {s}; PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
            })
    }
}

/// One Kafka listener: where it binds, how clients connect to it, and the address
/// Metadata gives clients that came through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListener {
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    /// Host and port put in metadata responses; the bound address if `None`.
    pub advertise: Option<(String, u16)>,
}

/// One MQTT listener (`mqtt://` or `mqtts://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttListener {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Everything a gateway needs to know besides its services.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// At least one; one per protocol. The first is the one other gateways call and the
    /// one whose advertised address names this gateway (and derives its node id).
    pub kafka_listeners: Vec<KafkaListener>,
    pub http_listen: SocketAddr,
    /// HTTPS (and MQTT over `wss://`) instead of HTTP.
    pub http_tls: bool,
    /// The certificate and key of every TLS listener; required when one is TLS.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Node id reported to clients; derived from the advertised address if `None`, so that
    /// gateways behind one load-balanced address agree.
    pub node_id: Option<i32>,
    /// The zone this gateway runs in (`--zone`).
    pub zone: Option<String>,
    /// Whether connections above this gateway's fair share are asked to go elsewhere.
    pub rebalance_connections: bool,
    /// How often connection counts are published and connections shed.
    pub rebalance_interval: Duration,
    /// A WAL object is flushed once its oldest record has waited this long...
    pub flush_max_delay: Duration,
    /// ...or once it holds this many bytes, whichever comes first (and, when no flush is
    /// in flight, as soon as its oldest record has waited `flush_min_delay`).
    pub flush_target_bytes: usize,
    /// How long a record waits at least before an idle batcher flushes it: 0 flushes at
    /// once (lowest latency); more makes fewer, larger WAL objects (fewer PUTs, and fewer
    /// GETs for readers catching up).
    pub flush_min_delay: Duration,
    /// Flushes in flight at once; beyond this, the buffer grows instead.
    pub max_inflight_flushes: usize,
    /// Create unknown topics when a client's Metadata request allows it.
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// The largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// How long a produce waits for its commit to be applied before timing out.
    pub commit_timeout: Duration,
    /// A WAL object not committed this long after its flush began is given up (its
    /// producers get an error and retry). Must stay well below the compactor's orphan age,
    /// after which uncommitted objects are deleted.
    pub max_commit_delay: Duration,
    /// Expose `/admin/faults` to inject object store failures (tests only).
    pub fault_injection: bool,
    /// A new consumer group waits this long for more members before its first generation
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay: Duration,
    pub group_min_session_timeout: Duration,
    pub group_max_session_timeout: Duration,
    /// TTL of the gateway's lease: how long its groups stay with it after it dies.
    pub lease_ttl: Duration,
    /// Listeners for MQTT only (MQTT is also served on the Kafka listeners).
    pub mqtt_listeners: Vec<MqttListener>,
    /// MQTT topic filters to log topics: `FILTER=TOPIC,...`, first match wins.
    pub mqtt_topic_map: String,
    /// The log topic of MQTT messages no rule maps; `None` refuses them.
    pub mqtt_default_topic: Option<String>,
    /// A TOML file of MQTT users and what they may do; `None`: no authentication.
    pub mqtt_auth: Option<String>,
    /// How long an authenticated Kafka session lasts before the client must re-authenticate
    /// (KIP-368, Kafka's `connections.max.reauth.ms`); `None`: as long as the connection.
    pub sasl_session_lifetime: Option<Duration>,
    /// The Kafka listener other gateways call this one on; `None`: the first without TLS,
    /// else the first.
    pub peer_listener: Option<SecurityProtocol>,
    /// OAUTHBEARER on the SASL listeners, with tokens checked against a JWKS file.
    pub oauth: Option<crate::oauth::OAuthSettings>,
    /// Kafka ACLs (`--authorizer acl`); disabled by default, as Kafka without an authorizer.
    pub acl: crate::acl::AclConfig,
    /// Check MQTT user names and passwords against the user store too, and refuse clients
    /// with neither a user name nor a client certificate (unless the file allows them).
    pub mqtt_user_store: bool,
    /// Forward WAL objects holding MQTT data to the gateways that deliver MQTT messages.
    pub mqtt_forward: bool,
    /// How long, at least, the will of a client whose connection a drain closed waits for
    /// the client to connect again before it is published; zero: published at once.
    pub mqtt_drain_will_delay: Duration,
    /// The Server Reference a drain gives MQTT 5.0 clients (DISCONNECT 0x9C, Use another
    /// server): the load-balanced address, say; `None`: DISCONNECT 0x8B.
    pub mqtt_server_reference: Option<String>,
    /// Run a compactor in the gateway's process (`sluice serve`).
    pub compactor: Option<sluice_compactor::CompactorConfig>,
    /// The bearer token `/admin/*` requires; `None`: loopback callers only.
    pub admin_token: Option<std::sync::Arc<str>>,
    /// The first administrator `(name, password)`, created in the user store at start if
    /// absent.
    pub admin_user: Option<(String, String)>,
    /// Open Kafka and MQTT connections allowed per source address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Signs and checks gateway-to-gateway calls; `None`: no such calls either way.
    pub cluster_secret: Option<std::sync::Arc<[u8]>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            kafka_listeners: vec![KafkaListener {
                protocol: SecurityProtocol::Plaintext,
                addr: SocketAddr::from(([0, 0, 0, 0], 9092)),
                advertise: None,
            }],
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            http_tls: false,
            tls: None,
            node_id: None,
            zone: None,
            rebalance_connections: true,
            rebalance_interval: Duration::from_secs(5),
            flush_max_delay: Duration::from_millis(5),
            flush_target_bytes: 4 << 20,
            flush_min_delay: Duration::ZERO,
            max_inflight_flushes: 4,
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 << 20,
            commit_timeout: Duration::from_secs(30),
            max_commit_delay: Duration::from_secs(120),
            fault_injection: false,
            group_initial_rebalance_delay: Duration::from_secs(3),
            group_min_session_timeout: Duration::from_secs(6),
            group_max_session_timeout: Duration::from_secs(1800),
            lease_ttl: Duration::from_secs(10),
            mqtt_listeners: Vec::new(),
            mqtt_topic_map: String::new(),
            mqtt_default_topic: Some("mqtt".into()),
            mqtt_auth: None,
            mqtt_user_store: false,
            acl: crate::acl::AclConfig::default(),
            sasl_session_lifetime: None,
            oauth: None,
            peer_listener: None,
            mqtt_forward: true,
            mqtt_drain_will_delay: Duration::from_secs(30),
            mqtt_server_reference: None,
            compactor: None,
            admin_token: None,
            cluster_secret: None,
            max_connections_per_ip: 0,
            admin_user: None,
        }
    }
}
