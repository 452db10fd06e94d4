use super::*;

fn binding(
    rt: ResourceType,
    name: &str,
    pattern: PatternType,
    principal: &str,
    op: Operation,
    permission: Permission,
) -> Binding {
    Binding {
        resource_type: rt,
        resource_name: name.into(),
        pattern,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission,
    }
}

fn authorizer(bindings: &[Binding], allow_if_none: bool) -> Authorizer {
    let a = Authorizer::new(AclConfig {
        enabled: true,
        super_users: ["User:admin".to_string()].into(),
        allow_everyone_if_no_acl: allow_if_none,
    });
    for b in bindings {
        a.written(b.key().as_bytes(), &b.record().encode(), true);
    }
    a
}

use Operation::*;
use PatternType::*;
use Permission::*;
use ResourceType::*;

#[test]
fn kafka_semantics() {
    let a = authorizer(
        &[
            binding(Topic, "orders", Literal, "User:alice", Write, Allow),
            binding(Topic, "logs-", Prefixed, "User:*", Read, Allow),
            binding(Topic, "logs-secret", Literal, "User:bob", Read, Deny),
            binding(Group, "*", Literal, "User:bob", All, Allow),
            binding(Cluster, CLUSTER, Literal, "User:alice", AlterConfigs, Allow),
        ],
        false,
    );
    let ok = |p: &str, op, rt, name: &str| a.authorize(p, None, op, rt, name);
    assert!(ok("User:alice", Write, Topic, "orders"));
    assert!(!ok("User:alice", Read, Topic, "orders"));
    // Write implies Describe; AlterConfigs implies DescribeConfigs.
    assert!(ok("User:alice", Describe, Topic, "orders"));
    assert!(ok("User:alice", DescribeConfigs, Cluster, CLUSTER));
    assert!(!ok("User:alice", Alter, Cluster, CLUSTER));
    // Prefixed and the User:* wildcard.
    assert!(ok("User:carol", Read, Topic, "logs-app"));
    assert!(!ok("User:carol", Write, Topic, "logs-app"));
    // Deny wins, for its operation only.
    assert!(!ok("User:bob", Read, Topic, "logs-secret"));
    assert!(ok("User:bob", Describe, Topic, "logs-secret"));
    assert!(ok("User:carol", Read, Topic, "logs-secret"));
    // The literal * and All.
    assert!(ok("User:bob", Delete, Group, "any-group"));
    assert!(!ok("User:alice", Read, Group, "any-group"));
    // No binding: closed, unless allow_everyone_if_no_acl; super users always.
    assert!(!ok("User:alice", Read, Topic, "unbound"));
    assert!(ok("User:admin", Delete, Topic, "unbound"));
    let open = authorizer(&[binding(Topic, "x", Literal, "User:a", Read, Allow)], true);
    assert!(open.authorize("User:b", None, Write, Topic, "unbound",));
    assert!(!open.authorize("User:b", None, Read, Topic, "x"));
    // Disabled: everything.
    assert!(
        Authorizer::new(AclConfig::default()).authorize("User:x", None, Delete, Cluster, CLUSTER)
    );
}

#[test]
fn hosts_and_removal() {
    let mut b = binding(Topic, "t", Literal, "User:alice", Read, Allow);
    b.host = "10.0.0.1".into();
    let a = authorizer(std::slice::from_ref(&b), false);
    let here: IpAddr = "10.0.0.1".parse().expect("ip");
    let there: IpAddr = "10.0.0.2".parse().expect("ip");
    assert!(a.authorize("User:alice", Some(here), Read, Topic, "t"));
    assert!(!a.authorize("User:alice", Some(there), Read, Topic, "t"));
    a.written(b.key().as_bytes(), b"", false);
    assert!(a.snapshot().is_empty());
    assert_eq!(
        a.authorized_operations("User:admin", None, Topic, "t", &[Read, Write]),
        (1 << 3) | (1 << 4)
    );
}

#[test]
fn filters_as_describe_and_delete_use_them() {
    let lit = binding(Topic, "orders", Literal, "User:a", Read, Allow);
    let pre = binding(Topic, "ord", Prefixed, "User:a", Read, Allow);
    let star = binding(Topic, "*", Literal, "User:a", Read, Allow);
    let f = |name: Option<&str>, pattern| Filter {
        resource_type: Some(Topic),
        resource_name: name.map(String::from),
        pattern,
        ..Filter::default()
    };
    let hits = |f: &Filter| [&lit, &pre, &star].iter().filter(|b| f.matches(b)).count();
    assert_eq!(hits(&f(None, PatternFilter::Any)), 3);
    assert_eq!(hits(&f(Some("orders"), PatternFilter::Any)), 1);
    assert_eq!(hits(&f(Some("orders"), PatternFilter::Match)), 3);
    assert_eq!(hits(&f(None, PatternFilter::Exactly(Prefixed))), 1);
    assert_eq!(hits(&f(Some("ord"), PatternFilter::Exactly(Prefixed))), 1);
    // Distinct bindings get distinct keys; the same binding the same key.
    assert_ne!(lit.key(), pre.key());
    assert_eq!(lit.key(), lit.clone().key());
}
