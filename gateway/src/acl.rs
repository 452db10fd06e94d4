//! Kafka's ACL model (`--authorizer acl`): bindings of a resource pattern (Topic, Group,
//! Cluster or TransactionalId; LITERAL or PREFIXED; `*` for every name) to a principal
//! (`User:NAME`, `User:*`), a host (`*` or an address), an operation and Allow or Deny.
//! They live in metadata under `acls/` and every gateway follows them, so a binding made
//! through one gateway applies on all of them at once.
//!
//! A request is authorized as Kafka's `AclAuthorizer` does it: super users may do
//! anything; a resource no binding matches is open only with `allow_everyone_if_no_acl`;
//! otherwise a matching Deny wins, and an Allow is needed. Allowing Read, Write, Delete or
//! Alter implies Describe; allowing AlterConfigs implies DescribeConfigs; `All` covers every
//! operation.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use sha2::Digest;
use sluice_metadata::keys;
use sluice_metadata::records::{ACL_VERSION, AclRecord};

/// The anonymous principal: clients of listeners without authentication.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Who sent a request: `User:NAME` (SASL), `User:<certificate subject>` (mutual TLS) or
/// [`ANONYMOUS`], and from where.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub host: Option<IpAddr>,
}

impl Principal {
    pub fn user(name: &str, host: Option<IpAddr>) -> Self {
        Self {
            name: format!("User:{name}").into(),
            host,
        }
    }

    pub fn anonymous(host: Option<IpAddr>) -> Self {
        Self {
            name: ANONYMOUS.into(),
            host,
        }
    }
}

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }

            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),* }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}

kafka_enum!(
    /// Kafka's resource types that ACLs here can name.
    ResourceType {
        Topic = 2,
        Group = 3,
        Cluster = 4,
        TransactionalId = 5,
    }
);

kafka_enum!(
    /// Kafka's pattern types of a stored binding.
    PatternType { Literal = 3, Prefixed = 4 }
);

kafka_enum!(
    /// Kafka's ACL operations.
    Operation {
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
    }
);

kafka_enum!(
    /// Kafka's ACL permission types.
    Permission { Deny = 2, Allow = 3 }
);

/// Kafka's name for the cluster resource.
pub const CLUSTER: &str = "kafka-cluster";

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Binding {
    pub fn record(&self) -> AclRecord {
        AclRecord {
            v: ACL_VERSION,
            resource_type: self.resource_type.name().into(),
            resource_name: self.resource_name.clone(),
            pattern: self.pattern.name().into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.name().into(),
            permission: self.permission.name().into(),
        }
    }

    pub fn from_record(r: &AclRecord) -> Option<Self> {
        Some(Self {
            resource_type: ResourceType::from_name(&r.resource_type)?,
            resource_name: r.resource_name.clone(),
            pattern: PatternType::from_name(&r.pattern)?,
            principal: r.principal.clone(),
            host: r.host.clone(),
            operation: Operation::from_name(&r.operation)?,
            permission: Permission::from_name(&r.permission)?,
        })
    }

    /// The binding's key in metadata: a digest of the binding, so it is stored once.
    pub fn key(&self) -> String {
        let digest = sha2::Sha256::digest(self.record().encode());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        keys::acl(&hex)
    }

    /// Whether this binding's pattern covers resource `name`.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.resource_name == name || self.resource_name == "*",
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }

    fn applies_to(&self, principal: &str, host: Option<IpAddr>) -> bool {
        let principal_ok = self.principal == principal || self.principal == "User:*";
        let host_ok = self.host == "*"
            || host.is_some_and(|h| self.host.parse::<IpAddr>().is_ok_and(|a| a == h));
        principal_ok && host_ok
    }
}

/// A filter of DescribeAcls and DeleteAcls, as Kafka's: `None` matches anything; the
/// pattern filter `Any` matches both types, `Match` what would apply to a resource of that
/// name.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PatternFilter {
    #[default]
    Any,
    Match,
    Exactly(PatternType),
}

impl Filter {
    pub fn matches(&self, b: &Binding) -> bool {
        let name_ok = match (&self.resource_name, self.pattern) {
            (None, PatternFilter::Exactly(p)) => b.pattern == p,
            (None, _) => true,
            (Some(n), PatternFilter::Any) => &b.resource_name == n,
            (Some(n), PatternFilter::Exactly(p)) => &b.resource_name == n && b.pattern == p,
            (Some(n), PatternFilter::Match) => b.covers(n),
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| p == &b.principal)
            && self.host.as_ref().is_none_or(|h| h == &b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// How the gateway authorizes requests.
#[derive(Debug, Clone, Default)]
pub struct AclConfig {
    /// `--authorizer acl`: without it every request is allowed, as Kafka without one.
    pub enabled: bool,
    /// Principals allowed everything (`User:admin`).
    pub super_users: HashSet<String>,
    /// Resources no binding matches are open to everyone.
    pub allow_everyone_if_no_acl: bool,
}

/// The bindings this gateway knows, kept current from metadata.
#[derive(Debug)]
pub struct Authorizer {
    config: AclConfig,
    bindings: RwLock<Arc<BTreeMap<String, Binding>>>,
}

impl Authorizer {
    pub fn new(config: AclConfig) -> Self {
        Self {
            config,
            bindings: RwLock::new(Arc::new(BTreeMap::new())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Whether `principal`, connected from `host`, may do `op` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: Option<IpAddr>,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.config.enabled || self.config.super_users.contains(principal) {
            return true;
        }
        let bindings = self.snapshot();
        let mut matching = bindings
            .values()
            .filter(|b| b.resource_type == resource_type && b.covers(name))
            .peekable();
        if matching.peek().is_none() {
            return self.config.allow_everyone_if_no_acl;
        }
        let matching: Vec<&Binding> = matching.filter(|b| b.applies_to(principal, host)).collect();
        let denied = matching.iter().any(|b| {
            b.permission == Permission::Deny && (b.operation == op || b.operation == Operation::All)
        });
        if denied {
            return false;
        }
        let implied: &[Operation] = match op {
            Operation::Describe => &[
                Operation::Describe,
                Operation::Read,
                Operation::Write,
                Operation::Delete,
                Operation::Alter,
            ],
            Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
            _ => std::slice::from_ref(&op),
        };
        matching.iter().any(|b| {
            b.permission == Permission::Allow
                && (b.operation == Operation::All || implied.contains(&b.operation))
        })
    }

    /// [`Authorizer::authorize`] for a request's principal.
    pub fn allows(&self, p: &Principal, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.authorize(&p.name, p.host, op, rt, name)
    }

    /// Whether `p` may write to some topic (Kafka's authorization by resource type, which
    /// InitProducerId accepts in place of IdempotentWrite on the cluster): an Allow of
    /// Write (or All) on any topic pattern applies to it, and no Deny on every topic.
    pub fn may_write_some_topic(&self, p: &Principal) -> bool {
        if !self.config.enabled || self.config.super_users.contains(&*p.name) {
            return true;
        }
        let bindings = self.snapshot();
        let topics: Vec<&Binding> = bindings
            .values()
            .filter(|b| b.resource_type == ResourceType::Topic)
            .collect();
        if topics.is_empty() {
            return self.config.allow_everyone_if_no_acl;
        }
        let writes = |b: &&&Binding| {
            b.applies_to(&p.name, p.host)
                && matches!(b.operation, Operation::Write | Operation::All)
        };
        let denied_everywhere = topics.iter().filter(writes).any(|b| {
            b.permission == Permission::Deny
                && b.pattern == PatternType::Literal
                && b.resource_name == "*"
        });
        !denied_everywhere
            && topics
                .iter()
                .filter(writes)
                .any(|b| b.permission == Permission::Allow)
    }

    /// The operations `principal` may do on a resource, as Kafka's authorized-operations
    /// bit fields carry them (bit = operation code); `ops` are the ones that apply.
    pub fn authorized_operations(
        &self,
        principal: &str,
        host: Option<IpAddr>,
        resource_type: ResourceType,
        name: &str,
        ops: &[Operation],
    ) -> i32 {
        ops.iter()
            .filter(|op| self.authorize(principal, host, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    pub fn snapshot(&self) -> Arc<BTreeMap<String, Binding>> {
        self.bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, Binding>)) {
        let mut guard = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.as_ref().clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Applies a change under `acls/`.
    pub fn written(&self, key: &[u8], value: &[u8], present: bool) {
        let key = String::from_utf8_lossy(key).into_owned();
        if !present {
            self.update(|m| {
                m.remove(&key);
            });
            return;
        }
        match AclRecord::decode(value)
            .ok()
            .as_ref()
            .and_then(Binding::from_record)
        {
            Some(b) => self.update(|m| {
                m.insert(key, b);
            }),
            None => tracing::warn!(key, "unreadable ACL binding; ignored"),
        }
    }

    pub fn reset(&self) {
        self.update(BTreeMap::clear);
    }

    /// Follows `acls/` until `cancel`.
    pub(crate) async fn watch(
        ctx: Arc<crate::server::Ctx>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let reset: fn(&crate::server::Ctx) = |c| c.acl.reset();
        let apply = |c: &crate::server::Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            c.acl.written(&kv.key, &kv.value, put);
        };
        crate::watch::follow(&ctx, keys::ACLS_PREFIX, Some(reset), &cancel, apply).await;
    }
}

#[cfg(test)]
mod tests;
