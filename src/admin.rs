//! A small Kafka admin client for `sluice topic` and `sluice user`: it speaks the Kafka
//! protocol (over TLS and with SASL SCRAM when asked), so it works against any Sluice
//! gateway (and any Kafka broker).

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_protocols::kafka::scram::{ClientExchange, Mechanism};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Connection;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Client {
    stream: Box<dyn Stream>,
    correlation: i32,
}

fn check(code: i16, what: &str, message: Option<&StrBytes>) -> Result<()> {
    if let Some(e) = ResponseError::try_from_code(code) {
        match message {
            Some(m) => bail!("{what}: {e}: {}", m.as_str()),
            None => bail!("{what}: {e}"),
        }
    }
    Ok(())
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Client {
    /// Connects as `c` says: TLS on SSL and SASL_SSL, then SASL SCRAM on SASL_PLAINTEXT and
    /// SASL_SSL.
    pub async fn connect(c: &Connection) -> Result<Self> {
        let addr = &c.server;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if c.security_protocol.tls() {
            Box::new(tls(c, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let mut client = Self {
            stream,
            correlation: 0,
        };
        if c.security_protocol.sasl() {
            client.authenticate(c).await?;
        }
        Ok(client)
    }

    async fn authenticate(&mut self, c: &Connection) -> Result<()> {
        let m = Mechanism::from_name(&c.sasl_mechanism)
            .with_context(|| format!("{}: SCRAM-SHA-256 or SCRAM-SHA-512", c.sasl_mechanism))?;
        let user = c
            .sasl_user
            .as_deref()
            .context("--sasl-user is needed on a SASL listener")?;
        let password = std::env::var("SLUICE_SASL_PASSWORD")
            .context("SLUICE_SASL_PASSWORD holds the password on a SASL listener")?;
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(m.name()));
        let resp: SaslHandshakeResponse = self.call(ApiKey::SaslHandshake, 1, &req).await?;
        check(resp.error_code, "SASL handshake", None)?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut exchange = ClientExchange::new(m, user, password.as_bytes(), &nonce);
        let server_first = self.sasl_step(exchange.first()).await?;
        let last = exchange.respond(&server_first)?;
        let server_final = self.sasl_step(last).await?;
        exchange.verify(&server_final)?;
        Ok(())
    }

    async fn sasl_step(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(bytes.into());
        let resp: SaslAuthenticateResponse = self.call(ApiKey::SaslAuthenticate, 1, &req).await?;
        check(
            resp.error_code,
            "SASL authentication",
            resp.error_message.as_ref(),
        )?;
        Ok(resp.auth_bytes.to_vec())
    }

    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-admin")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        let size = self
            .stream
            .read_i32()
            .await
            .context("reading the response")?;
        let mut buf = vec![0u8; usize::try_from(size).context("bad response size")?];
        self.stream.read_exact(&mut buf).await?;
        let mut buf = bytes::Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!(
                "response to request {} arrived for {}",
                header.correlation_id,
                self.correlation
            );
        }
        let resp = Resp::decode(&mut buf, version)?;
        if buf.has_remaining() {
            bail!("{} unexpected bytes after the response", buf.remaining());
        }
        Ok(resp)
    }

    pub async fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        configs: &[(String, String)],
    ) -> Result<uuid::Uuid> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                            })
                            .collect(),
                    ),
            ]);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 7, &req).await?;
        let t = resp.topics.first().context("empty CreateTopics response")?;
        check(t.error_code, "create topic", t.error_message.as_ref())?;
        Ok(t.topic_id)
    }

    pub async fn delete_topic(&mut self, topic: &str) -> Result<()> {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(topic))),
            ]);
        let resp: DeleteTopicsResponse = self.call(ApiKey::DeleteTopics, 6, &req).await?;
        let t = resp
            .responses
            .first()
            .context("empty DeleteTopics response")?;
        check(t.error_code, "delete topic", t.error_message.as_ref())
    }

    async fn metadata(&mut self, topics: Option<Vec<&str>>) -> Result<MetadataResponse> {
        let req = MetadataRequest::default().with_topics(topics.map(|ts| {
            ts.into_iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect()
        }));
        self.call(ApiKey::Metadata, 12, &req).await
    }

    pub async fn list_topics(&mut self) -> Result<Vec<(String, usize, uuid::Uuid)>> {
        let resp = self.metadata(None).await?;
        let mut out: Vec<_> = resp
            .topics
            .into_iter()
            .filter_map(|t| Some((t.name?.0.to_string(), t.partitions.len(), t.topic_id)))
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn describe_topic(&mut self, topic: &str) -> Result<String> {
        let meta = self.metadata(Some(vec![topic])).await?;
        let t = meta.topics.first().context("empty Metadata response")?;
        check(t.error_code, "describe topic", None)?;
        let partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        let mut out = String::new();
        writeln!(
            out,
            "topic: {topic}\nid: {}\npartitions: {}",
            t.topic_id,
            partitions.len()
        )?;
        let offsets = |ts: i64| {
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name(topic))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_timestamp(ts)
                                })
                                .collect(),
                        ),
                ])
        };
        let earliest: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 7, &offsets(-2)).await?;
        let latest: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 7, &offsets(-1)).await?;
        let first = earliest
            .topics
            .first()
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        let last = latest
            .topics
            .first()
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        for (e, l) in first.iter().zip(&last) {
            writeln!(
                out,
                "  partition {}: offsets {}..{}",
                e.partition_index, e.offset, l.offset
            )?;
        }
        let configs: DescribeConfigsResponse = self
            .call(
                ApiKey::DescribeConfigs,
                4,
                &DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_string(topic.to_string())),
                ]),
            )
            .await?;
        writeln!(out, "configs:")?;
        for r in configs.results {
            check(r.error_code, "describe configs", r.error_message.as_ref())?;
            for c in r.configs {
                let v = c.value.as_ref().map_or("", |v| v.as_str());
                let source = if c.config_source == 1 { " (set)" } else { "" };
                writeln!(out, "  {}={v}{source}", c.name.as_str())?;
            }
        }
        Ok(out)
    }
}

/// TLS to the broker, trusting `--ca` (or the system's roots without it).
async fn tls(c: &Connection, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    match &c.ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                roots.add(cert?)?;
            }
        }
        None => bail!("--ca is needed for TLS (the CA certificates the broker's chain ends in)"),
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = c
        .server
        .rsplit_once(':')
        .map_or(c.server.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    Ok(connector.connect(name, tcp).await?)
}

/// What `sluice user list` prints for a user: its mechanisms and their iterations.
pub type UserCredentials = (String, Vec<(String, i32)>);

impl Client {
    /// Sets `user`'s password for each of `mechanisms`, with fresh random salts (the
    /// salted password is computed here, as Kafka's admin clients do).
    pub async fn set_user(
        &mut self,
        user: &str,
        password: &str,
        mechanisms: &[Mechanism],
        iterations: i32,
    ) -> Result<()> {
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
        let upsertions = mechanisms
            .iter()
            .map(|m| {
                let salt: [u8; 32] = rand::random();
                let salted = m.salted_password(password.as_bytes(), &salt, iterations as u32);
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_string(user.to_string()))
                    .with_mechanism(m.code())
                    .with_iterations(iterations)
                    .with_salt(salt.to_vec().into())
                    .with_salted_password(salted.into())
            })
            .collect();
        let req = AlterUserScramCredentialsRequest::default().with_upsertions(upsertions);
        self.alter_users(req).await
    }

    /// Removes `user`'s credentials of `mechanisms` (all it has when empty).
    pub async fn delete_user(&mut self, user: &str, mechanisms: &[Mechanism]) -> Result<()> {
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialDeletion;
        let mechanisms: Vec<Mechanism> = if mechanisms.is_empty() {
            let users = self.list_users(Some(user)).await?;
            let (_, creds) = users.first().context("no such user")?;
            creds
                .iter()
                .filter_map(|(m, _)| Mechanism::from_name(m))
                .collect()
        } else {
            mechanisms.to_vec()
        };
        let deletions = mechanisms
            .iter()
            .map(|m| {
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(user.to_string()))
                    .with_mechanism(m.code())
            })
            .collect();
        let req = AlterUserScramCredentialsRequest::default().with_deletions(deletions);
        self.alter_users(req).await
    }

    async fn alter_users(&mut self, req: AlterUserScramCredentialsRequest) -> Result<()> {
        let resp: AlterUserScramCredentialsResponse = self
            .call(ApiKey::AlterUserScramCredentials, 0, &req)
            .await?;
        for r in &resp.results {
            check(
                r.error_code,
                &format!("user {}", r.user.as_str()),
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Every user (or only `user`) with its mechanisms and iterations, sorted by name.
    pub async fn list_users(&mut self, user: Option<&str>) -> Result<Vec<UserCredentials>> {
        use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
        let req =
            DescribeUserScramCredentialsRequest::default().with_users(user.map(|u| {
                vec![UserName::default().with_name(StrBytes::from_string(u.to_string()))]
            }));
        let resp: DescribeUserScramCredentialsResponse = self
            .call(ApiKey::DescribeUserScramCredentials, 0, &req)
            .await?;
        check(
            resp.error_code,
            "describe users",
            resp.error_message.as_ref(),
        )?;
        let mut out = Vec::new();
        for r in resp.results {
            check(
                r.error_code,
                &format!("user {}", r.user.as_str()),
                r.error_message.as_ref(),
            )?;
            let creds = r
                .credential_infos
                .iter()
                .map(|c| {
                    let name = Mechanism::from_code(c.mechanism).map_or_else(
                        || format!("mechanism {}", c.mechanism),
                        |m| m.name().to_string(),
                    );
                    (name, c.iterations)
                })
                .collect();
            out.push((r.user.to_string(), creds));
        }
        out.sort();
        Ok(out)
    }
}

/// Sends a `method` request for `path` to the HTTP server at `server` (HOST:PORT) and
/// returns the status and body. Compaction may take long: no timeout.
pub async fn http_request(
    method: hyper::Method,
    server: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http connection ended");
        }
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, server);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
