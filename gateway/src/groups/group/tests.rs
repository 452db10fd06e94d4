use super::*;

const LIMITS: Limits = Limits {
    min_session_timeout: Duration::from_millis(10),
    max_session_timeout: Duration::from_secs(600),
    initial_rebalance_delay: Duration::ZERO,
};

fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
    JoinArgs {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn now_result<T>(r: Reply<T>) -> T {
    match r {
        Reply::Now(t) => t,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

/// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its id and the wait.
fn join_new(
    g: &mut Group,
    protocols: &[&str],
    now: Instant,
) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_result(g.join(args("", protocols), &LIMITS, now));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    let id = first.member_id.clone();
    (
        id.clone(),
        later(g.join(args(&id, protocols), &LIMITS, now)),
    )
}

#[tokio::test]
async fn two_members_join_sync_and_rebalance_on_leave() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let (a, ja) = join_new(&mut g, &["range", "roundrobin"], now);
    // With a zero initial delay, a lone member completes at once.
    let ra = ja.await.expect("join");
    assert_eq!(
        (ra.generation, ra.leader.as_str(), ra.members.len()),
        (1, a.as_str(), 1)
    );
    assert_eq!(ra.protocol.as_deref(), Some("range"));
    let sa = now_result(g.sync(
        &a,
        None,
        1,
        vec![(a.clone(), Bytes::from_static(b"all"))],
        now,
    ));
    assert_eq!(sa.assignment, Bytes::from_static(b"all"));
    assert_eq!(g.state, State::Stable);

    // A second member (supporting only roundrobin) triggers a rebalance; the first learns of
    // it from its heartbeat and rejoins.
    let (b, jb) = join_new(&mut g, &["roundrobin"], now);
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 1, now),
        Some(ResponseError::RebalanceInProgress)
    );
    let ja = later(g.join(args(&a, &["range", "roundrobin"]), &LIMITS, now));
    let (ra, rb) = (ja.await.expect("join"), jb.await.expect("join"));
    assert_eq!((ra.generation, rb.generation), (2, 2));
    assert_eq!(
        ra.protocol.as_deref(),
        Some("roundrobin"),
        "the only common protocol"
    );
    assert_eq!(ra.members.len(), 2, "the leader sees every member");
    assert!(rb.members.is_empty());
    let sb = later(g.sync(&b, None, 2, vec![], now));
    let sa = now_result(g.sync(
        &a,
        None,
        2,
        vec![
            (a.clone(), Bytes::from_static(b"p0")),
            (b.clone(), Bytes::from_static(b"p1")),
        ],
        now,
    ));
    assert_eq!(sa.assignment, Bytes::from_static(b"p0"));
    assert_eq!(
        sb.await.expect("sync").assignment,
        Bytes::from_static(b"p1")
    );
    assert_eq!(g.heartbeat(&b, None, 2, now), None);
    assert_eq!(
        g.heartbeat(&b, None, 1, now),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("nobody", None, 2, now),
        Some(ResponseError::UnknownMemberId)
    );

    // b leaves: a rejoins alone and becomes generation 3.
    assert_eq!(g.leave(&b, None, &LIMITS, now), None);
    let ja = later(g.join(args(&a, &["range", "roundrobin"]), &LIMITS, now));
    let ra = ja.await.expect("join");
    assert_eq!((ra.generation, ra.protocol.as_deref()), (3, Some("range")));
}

#[tokio::test]
async fn expired_sessions_leave_and_missing_rejoins_are_dropped() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let (a, ja) = join_new(&mut g, &["range"], now);
    ja.await.expect("join");
    now_result(g.sync(&a, None, 1, vec![], now));
    let (_b, jb) = join_new(&mut g, &["range"], now);
    // a never rejoins: at the rebalance deadline it is dropped and b forms generation 2.
    g.tick(&LIMITS, now + Duration::from_secs(5));
    assert_eq!(g.state, State::PreparingRebalance);
    g.tick(&LIMITS, now + Duration::from_secs(31));
    let rb = jb.await.expect("join");
    assert_eq!((rb.generation, rb.members.len()), (2, 1));
    assert!(!g.members.contains_key(&a));
    // b's session then runs out.
    g.tick(&LIMITS, now + Duration::from_secs(60));
    assert_eq!(g.state, State::Empty);
    assert!(g.members.is_empty());
}

#[tokio::test]
async fn static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let mut s = args("", &["range"]);
    s.instance_id = Some("i-1".into());
    let r = g.join(s, &LIMITS, now);
    let r = later(r).await.expect("join");
    let old = r.member_id.clone();
    now_result(g.sync(
        &old,
        Some("i-1"),
        1,
        vec![(old.clone(), Bytes::from_static(b"mine"))],
        now,
    ));
    let mut again = args("", &["range"]);
    again.instance_id = Some("i-1".into());
    let r = now_result(g.join(again, &LIMITS, now));
    assert_eq!(r.error, None);
    assert_eq!(r.generation, 1, "no rebalance");
    assert_ne!(r.member_id, old);
    assert_eq!(
        g.heartbeat(&old, Some("i-1"), 1, now),
        Some(ResponseError::FencedInstanceId)
    );
    let s = now_result(g.sync(&r.member_id, Some("i-1"), 1, vec![], now));
    assert_eq!(s.assignment, Bytes::from_static(b"mine"));
}

#[test]
fn bad_joins_are_refused() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let mut a = args("", &["range"]);
    a.session_timeout = Duration::from_millis(1);
    assert_eq!(
        now_result(g.join(a, &LIMITS, now)).error,
        Some(ResponseError::InvalidSessionTimeout)
    );
    assert_eq!(
        now_result(g.join(args("who", &["range"]), &LIMITS, now)).error,
        Some(ResponseError::UnknownMemberId)
    );
    let (_a, _ja) = join_new(&mut g, &["range"], now);
    let mut other = args("", &["sticky"]);
    other.require_known_member_id = false;
    assert_eq!(
        now_result(g.join(other, &LIMITS, now)).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[tokio::test]
async fn a_session_runs_out_exactly_at_its_timeout() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let mut s = args("", &["range"]);
    s.instance_id = Some("i-1".into());
    s.session_timeout = Duration::from_secs(5);
    let r = later(g.join(s, &LIMITS, now)).await.expect("join");
    now_result(g.sync(&r.member_id, Some("i-1"), r.generation, vec![], now));
    let seen = now + Duration::from_millis(1500);
    assert_eq!(
        g.heartbeat(&r.member_id, Some("i-1"), r.generation, seen),
        None
    );
    // The tick loop sleeps until this moment, not a polling period past it.
    assert_eq!(g.next_deadline(), Some(seen + Duration::from_secs(5)));
    g.tick(&LIMITS, seen + Duration::from_millis(4999));
    assert!(g.members.contains_key(&r.member_id));
    g.tick(&LIMITS, seen + Duration::from_secs(5));
    assert!(g.members.is_empty());
    assert_eq!(g.state, State::Empty);
    assert_eq!(g.next_deadline(), None);
}

#[tokio::test]
async fn an_abandoned_group_answers_waiting_and_later_requests_not_coordinator() {
    let now = Instant::now();
    let mut g = Group::new("g".into());
    let (a, ja) = join_new(&mut g, &["range"], now);
    let ra = ja.await.expect("join");
    now_result(g.sync(&a, None, ra.generation, vec![], now));
    // A second member waits for the first to rejoin when the gateway gives the group up.
    let (b, jb) = join_new(&mut g, &["range"], now);
    g.abandon();
    assert_eq!(
        jb.await.expect("answered").error,
        Some(ResponseError::NotCoordinator)
    );
    // A request that reached the group after it was given up does not wait either.
    let rejoin = now_result(g.join(args(&a, &["range"]), &LIMITS, now));
    assert_eq!(rejoin.error, Some(ResponseError::NotCoordinator));
    let sync = now_result(g.sync(&b, None, ra.generation, vec![], now));
    assert_eq!(sync.error, Some(ResponseError::NotCoordinator));
    assert_eq!(
        g.heartbeat(&a, None, ra.generation, now),
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(
        g.check_commit(&a, None, ra.generation),
        Some(ResponseError::NotCoordinator)
    );
}
