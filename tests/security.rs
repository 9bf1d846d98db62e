//! Security end to end, against a 3-node group whose members have `[tls]` certificates from one
//! CA and `[auth]` verification keys: a plaintext client is refused, forged Raft messages (no
//! client certificate, another group's certificate, a member speaking for another member) are
//! refused and the group keeps its leader and term, and every kind of bad token is told apart
//! from a good one without the scope.

mod secure;

use std::time::Duration;

use bytes::Bytes;
use folio_auth::scope::parse_scopes;
use folio_auth::token::{generate_key, Signer};
use folio_core::PAGE_SIZE;
use folio_proto::admin::v1::admin_service_client::AdminServiceClient;
use folio_proto::admin::v1::StatusRequest;
use folio_proto::raft::v1::raft_service_client::RaftServiceClient;
use folio_proto::raft::v1::RaftMessage;
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use folio_system_tests::folio_bin;
use secure::{bearer, hex, issue, member_cert, msg, now, Secured, GROUP};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// A Vote in the name of `candidate` with a term far above the group's: were it accepted, the
/// receiver would step down and the group's term would jump.
fn forged_vote(target: u64, candidate: u64, term: u64) -> RaftMessage {
    let vote =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term + 1000, candidate), None);
    RaftMessage {
        group_id: GROUP,
        target_node_id: target,
        payload: Bytes::from(folio_raft::codec::encode(&vote)),
        data: Bytes::new(),
    }
}

/// The status a forged vote (see [`forged_vote`]) gets on `ch`, which must refuse it.
async fn refused_vote(ch: Channel, target: u64, candidate: u64, term: u64) -> Code {
    let st = RaftServiceClient::new(ch)
        .vote(forged_vote(target, candidate, term))
        .await
        .expect_err("a forged vote was answered");
    st.code()
}

#[tokio::test]
async fn plaintext_clients_and_forged_raft_messages_are_refused() -> anyhow::Result<()> {
    let s = Secured::start(3)?;
    let admin = s.token("admin");
    let (leader, term) = s.agreed(&admin).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");

    // A plaintext client gets no answer from a TLS listener.
    let plain = async {
        let ch = Endpoint::from_shared(format!("http://{}", s.cluster.node(leader).addr))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        AdminServiceClient::new(ch)
            .status(bearer(StatusRequest {}, Some(&admin)))
            .await?;
        anyhow::Ok(())
    };
    assert!(plain.await.is_err(), "a plaintext call was answered");

    // No client certificate: refused before the message is even decoded.
    let vote = |ch| refused_vote(ch, follower, leader, term);
    let code = vote(s.channel(follower, None).await?).await;
    assert_eq!(code, Code::Unauthenticated);
    // A token does not make a peer either.
    let st = RaftServiceClient::new(s.channel(follower, None).await?)
        .append_entries(bearer(forged_vote(follower, leader, term), Some(&admin)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    // A certificate from the same CA, but for a node of another group.
    let stranger = member_cert(&s.ca, GROUP + 1, leader)?;
    let code = vote(s.channel(follower, Some(&stranger)).await?).await;
    assert_eq!(code, Code::PermissionDenied);

    // A member's own certificate, campaigning in another member's name.
    let third = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("three nodes");
    let member = member_cert(&s.ca, GROUP, third)?;
    let code = vote(s.channel(follower, Some(&member)).await?).await;
    assert_eq!(code, Code::PermissionDenied);

    // The group never saw any of it: same leader, same term, on every node.
    assert_eq!(s.agreed(&admin).await?, (leader, term));
    Ok(())
}

/// With `peer_listen_addr`, Raft traffic has its own listener: the group forms and fails over
/// through it; it requires a client certificate at the handshake and serves nothing else; the
/// client listener serves no Raft.
#[tokio::test(flavor = "multi_thread")]
async fn peer_traffic_has_its_own_listener() -> anyhow::Result<()> {
    let mut s = Secured::start_with(3, true)?;
    let admin = s.token("admin");
    let (leader, term) = s.agreed(&admin).await?;
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");
    let member = member_cert(&s.ca, GROUP, leader)?;
    let peer_addr = |s: &Secured, id: u64| {
        s.cluster
            .node(id)
            .peer_addr
            .clone()
            .expect("the cluster has peer listeners")
    };

    // Each node's status lists every member with its peer address.
    let st = AdminServiceClient::new(s.channel(follower, None).await?)
        .status(bearer(StatusRequest {}, Some(&admin)))
        .await?
        .into_inner();
    for m in &st.members {
        assert_eq!(m.peer_addr, peer_addr(&s, m.node_id), "{:?}", st.members);
    }

    // The client listener serves no Raft, even to a member's certificate.
    let vote = |ch| refused_vote(ch, follower, leader, term);
    let code = vote(s.channel(follower, Some(&member)).await?).await;
    assert_eq!(code, Code::Unimplemented);

    // The peer listener serves nothing but Raft, and checks the sender as the shared one did.
    let to_peer = s
        .channel_to(&peer_addr(&s, follower), Some(&member))
        .await?;
    let st = AdminServiceClient::new(to_peer.clone())
        .status(bearer(StatusRequest {}, Some(&admin)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented, "{st:?}");
    let stranger = member_cert(&s.ca, GROUP + 1, leader)?;
    let to_peer_as_stranger = s
        .channel_to(&peer_addr(&s, follower), Some(&stranger))
        .await?;
    assert_eq!(vote(to_peer_as_stranger).await, Code::PermissionDenied);

    // Without a client certificate the handshake itself fails: no call is answered.
    let bare = async {
        let ch = s.channel_to(&peer_addr(&s, follower), None).await?;
        RaftServiceClient::new(ch)
            .vote(forged_vote(follower, leader, term))
            .await
            .map_err(anyhow::Error::from)
    };
    let refused = tokio::time::timeout(Duration::from_secs(20), bare).await?;
    assert!(
        refused.is_err(),
        "a peer without a certificate got an answer"
    );
    assert_eq!(s.agreed(&admin).await?, (leader, term));

    // Writes replicate through the peer listeners, and the group fails over through them.
    let volume = s.create_volume(leader, &admin).await?;
    s.cluster.kill(leader);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let ch = s.channel(follower, None).await?;
        let st = AdminServiceClient::new(ch)
            .status(bearer(StatusRequest {}, Some(&admin)))
            .await?
            .into_inner();
        if st.leader_id != 0 && st.leader_id != leader {
            break st.leader_id;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no new leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut api = VolumeServiceClient::new(s.channel(new_leader, None).await?);
    let snap = api
        .get_snapshot(bearer(
            pb::GetSnapshotRequest {
                volume_id: volume.clone(),
            },
            Some(&admin),
        ))
        .await?
        .into_inner();
    assert_eq!(snap.volume_id, volume);
    Ok(())
}

#[tokio::test]
async fn tokens_are_checked_on_every_call() -> anyhow::Result<()> {
    let s = Secured::start(3)?;
    let admin = s.token("admin");
    let (leader, _) = s.agreed(&admin).await?;
    let v = s.create_volume(leader, &admin).await?;
    let api = VolumeServiceClient::new(s.channel(leader, None).await?);
    let vhex = hex(&v);
    let other = "0123456789abcdef0123456789abcdef";
    assert_ne!(vhex, other);

    let read = |token: Option<String>| {
        let mut api = api.clone();
        let v = v.clone();
        async move {
            api.get_snapshot(bearer(
                pb::GetSnapshotRequest { volume_id: v },
                token.as_deref(),
            ))
            .await
            .map(|_| ())
            .map_err(|st| {
                assert!(!st.message().is_empty(), "{st:?} says why");
                st.code()
            })
        }
    };
    let write = |token: Option<String>, expected: u64| {
        let mut api = api.clone();
        let v = v.clone();
        async move {
            api.commit(bearer(
                pb::CommitRequest {
                    volume_id: v,
                    expected_lsn: expected,
                    idempotency_key: Bytes::from(format!("k{expected}")),
                    durability: 0,
                    pages: vec![pb::PageWrite {
                        page_idx: 0,
                        data: Bytes::from(vec![expected as u8; PAGE_SIZE]),
                    }],
                    refs: vec![],
                },
                token.as_deref(),
            ))
            .await
            .map(|_| ())
            .map_err(|st| st.code())
        }
    };

    // Not a credential: UNAUTHENTICATED.
    assert_eq!(read(None).await, Err(Code::Unauthenticated));
    assert_eq!(
        read(Some("not-a-token".into())).await,
        Err(Code::Unauthenticated)
    );
    let (forger, _) = generate_key().map_err(msg)?;
    let forged = Signer::from_pem("k1", &forger).map_err(msg)?;
    assert_eq!(
        read(Some(issue(&forged, "admin", now(), 600))).await,
        Err(Code::Unauthenticated),
        "a token with k1's id, signed by another key"
    );
    assert_eq!(
        read(Some(issue(&s.k1, "admin", now() - 3600, 600))).await,
        Err(Code::Unauthenticated),
        "expired an hour ago"
    );
    let (retired, _) = generate_key().map_err(msg)?;
    let retired = Signer::from_pem("k0", &retired).map_err(msg)?;
    assert_eq!(
        read(Some(issue(&retired, "admin", now(), 600))).await,
        Err(Code::Unauthenticated),
        "signed with a key the nodes no longer list"
    );
    let scopes = parse_scopes("admin").expect("scope");
    assert_eq!(
        read(Some(s.k1.issue_for(
            None,
            "someone-else",
            &scopes,
            now(),
            600
        )))
        .await,
        Err(Code::Unauthenticated),
        "for another audience"
    );

    // A valid token without the scope: PERMISSION_DENIED.
    assert_eq!(
        read(Some(s.token(&format!("read:volume/{other}")))).await,
        Err(Code::PermissionDenied)
    );
    let read_only = s.token(&format!("read:volume/{vhex}"));
    assert_eq!(read(Some(read_only.clone())).await, Ok(()));
    assert_eq!(write(Some(read_only), 0).await, Err(Code::PermissionDenied));
    assert_eq!(
        write(Some(s.token("read:* create:*")), 0).await,
        Err(Code::PermissionDenied)
    );

    // Scopes that cover the call, by id, by prefix and by every volume; and the second key.
    assert_eq!(
        write(Some(s.token(&format!("write:volume/{vhex}"))), 0).await,
        Ok(())
    );
    assert_eq!(
        write(Some(s.token(&format!("write:volume/{}*", &vhex[..6]))), 1).await,
        Ok(())
    );
    assert_eq!(read(Some(issue(&s.k2, "read:*", now(), 600))).await, Ok(()));

    // A follower forwards the caller's token to the leader, which checks it again.
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");
    let mut via = VolumeServiceClient::new(s.channel(follower, None).await?);
    let denied = via
        .commit(bearer(
            pb::CommitRequest {
                volume_id: v.clone(),
                expected_lsn: 2,
                idempotency_key: Bytes::from_static(b"via"),
                durability: 0,
                pages: vec![],
                refs: vec![],
            },
            Some(&s.token(&format!("read:volume/{vhex}"))),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    Ok(())
}

/// grpcurl from `FOLIO_GRPCURL`, else where `scripts/setup.sh` puts it, else PATH.
fn grpcurl() -> std::path::PathBuf {
    folio_testkit::tool("grpcurl", "FOLIO_GRPCURL")
}

#[tokio::test]
async fn grpcurl_lists_and_calls_over_tls_with_a_token() -> anyhow::Result<()> {
    let s = Secured::start(1)?;
    let admin = s.token("admin");
    s.agreed(&admin).await?;
    let addr = s.cluster.node(1).addr.clone();
    let grpcurl = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(std::process::Command::new(grpcurl())
            .args(["-max-time", "10"])
            .args(args)
            .output()?)
    };
    let ca = s.ca_path.to_string_lossy().into_owned();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Reflection needs no token; grpcurl 1.8 asks for it only as grpc.reflection.v1alpha.
    let list = grpcurl(&["-cacert", &ca, &addr, "list"])?;
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains("folio.volume.v1.VolumeService"),
        "{}",
        text(&list)
    );

    let create = "folio.volume.v1.VolumeService/CreateVolume";
    let bare = grpcurl(&["-cacert", &ca, "-d", "{}", &addr, create])?;
    assert!(!bare.status.success(), "{}", text(&bare));
    assert!(text(&bare).contains("Unauthenticated"), "{}", text(&bare));

    let header = format!("authorization: Bearer {admin}");
    let made = grpcurl(&["-cacert", &ca, "-H", &header, "-d", "{}", &addr, create])?;
    assert!(made.status.success(), "{}", text(&made));
    assert!(text(&made).contains("volumeId"), "{}", text(&made));

    // Plaintext gets nothing from a TLS listener.
    let plain = grpcurl(&["-plaintext", &addr, "list"])?;
    assert!(!plain.status.success(), "{}", text(&plain));
    Ok(())
}

/// `/metrics` is HTTPS with the node's certificate and needs the `metrics` (or `admin`) scope;
/// the probes stay open so that an orchestrator needs no token; plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_a_scoped_token_and_the_probes_stay_open() -> anyhow::Result<()> {
    let s = Secured::start(1)?;
    let admin = s.token("admin");
    s.agreed(&admin).await?;
    let metrics = s.cluster.node(1).metrics_addr.clone();
    let ca = s.ca_path.to_string_lossy().into_owned();
    // (HTTP status, body); status 0 when curl could not get an HTTP answer at all.
    let get = |scheme: &str, path: &str, token: Option<&str>| -> anyhow::Result<(u16, String)> {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            &ca,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        let out = c.arg(format!("{scheme}://{metrics}{path}")).output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    };

    let (code, body) = get("https", "/metrics", None)?;
    assert_eq!(code, 401, "no token: {body}");
    let (code, body) = get("https", "/metrics", Some("not-a-token"))?;
    assert_eq!(code, 401, "garbage token: {body}");
    let (code, body) = get("https", "/metrics", Some(&s.token("read:*")))?;
    assert_eq!(code, 403, "a token without the metrics scope: {body}");
    for scope in ["metrics", "admin"] {
        let (code, body) = get("https", "/metrics", Some(&s.token(scope)))?;
        assert_eq!(code, 200, "{scope}: {body}");
        assert!(
            body.contains("folio_"),
            "{scope}: no folio metrics in {body}"
        );
    }
    let (code, body) = get("https", "/livez", None)?;
    assert_eq!((code, body.trim()), (200, "live"));
    let (code, _) = get("http", "/metrics", Some(&admin))?;
    assert_ne!(code, 200, "plain HTTP must not be served");

    // `folio probe`, as a container health check runs it: HTTPS with or without the CA; plain
    // HTTP is told what to do; a CA that did not sign the node's certificate is refused.
    let probe = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = std::process::Command::new(folio_bin())
            .args(["probe", "--addr", &metrics])
            .args(args)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), said))
    };
    for args in [&["--https"][..], &["--ca", &ca], &["--https", "--live"]] {
        let (ok, said) = probe(args)?;
        assert!(ok, "probe {args:?}: {said}");
        assert!(said.contains("ready") || said.contains("live"), "{said}");
    }
    let (ok, said) = probe(&[])?;
    assert!(
        !ok && said.contains("--https"),
        "plain probe of a TLS node: {said}"
    );
    let other = secure::write(
        s.ca_path
            .parent()
            .expect("the CA file is in the test's directory"),
        "other-ca.pem",
        &folio_auth::dev::Ca::new("another CA")
            .map_err(msg)?
            .cert_pem(),
    )?;
    let (ok, said) = probe(&["--ca", &other.to_string_lossy()])?;
    assert!(!ok, "a CA that did not sign the node's certificate: {said}");
    Ok(())
}
