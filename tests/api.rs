//! The client API against live `folio server` processes: CAS conflicts, idempotent retries,
//! follower forwarding and redirects, membership changes, and a clear status for each kind of bad
//! input (with the node still serving afterwards).

use std::time::Duration;

use bytes::Bytes;
use folio_client::Error;
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::meta;
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;
use tonic::transport::Channel;
use tonic::Code;

fn page(fill: u8) -> Bytes {
    Bytes::from(vec![fill; PAGE_SIZE])
}

async fn raw(addr: &str) -> VolumeServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    VolumeServiceClient::new(ch)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

/// Sends `path` a body that no protobuf message decodes from (a field tag cut short) and returns
/// the status it answers.
async fn undecodable(addr: &str, path: &'static str) -> anyhow::Result<tonic::Status> {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Sends and receives raw bytes.
    #[derive(Clone, Copy)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining())))
        }
    }

    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await?;
    let uri = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let body = Bytes::from_static(&[0xff, 0xff, 0xff]);
    match grpc.unary(tonic::Request::new(body), uri, Raw).await {
        Ok(_) => anyhow::bail!("{path} accepted an undecodable body"),
        Err(s) => Ok(s),
    }
}

fn commit_req(
    v: VolumeId,
    expected: u64,
    key: &str,
    pages: Vec<(u32, Bytes)>,
) -> pb::CommitRequest {
    pb::CommitRequest {
        volume_id: Bytes::copy_from_slice(v.as_bytes()),
        expected_lsn: expected,
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        durability: 0,
        pages: pages
            .into_iter()
            .map(|(page_idx, data)| pb::PageWrite { page_idx, data })
            .collect(),
        refs: vec![],
    }
}

#[tokio::test]
async fn cas_conflict_carries_the_current_lsn() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    assert_eq!(client.snapshot(v).await?, Lsn(0));
    assert_eq!(
        client.commit(v, Lsn(0), vec![(0, page(1))], "a").await?.lsn,
        Lsn(1)
    );
    assert_eq!(
        client.commit(v, Lsn(1), vec![(0, page(2))], "b").await?.lsn,
        Lsn(2)
    );
    // A stale base is refused with ABORTED and the current LSN, in metadata and in the client error.
    let mut r = raw(&c.node(1).addr).await;
    let s = r
        .commit(commit_req(v, 1, "c", vec![(0, page(3))]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Aborted);
    assert_eq!(s.metadata().get(meta::CURRENT_LSN).unwrap().to_str()?, "2");
    match client.commit(v, Lsn(0), vec![], "d").await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current, Lsn(2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        client.snapshot(v).await?,
        Lsn(2),
        "refused commits leave no trace"
    );
    Ok(())
}

#[tokio::test]
async fn retried_commit_returns_the_original_result() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    let first = client.commit(v, Lsn(0), vec![(4, page(1))], "once").await?;
    assert!(!first.deduplicated);
    // The reply was "lost": the same request again returns the original result.
    let again = client.commit(v, Lsn(0), vec![(4, page(1))], "once").await?;
    assert_eq!(
        (again.lsn, &again.pages, again.deduplicated),
        (first.lsn, &first.pages, true)
    );
    assert_eq!(client.snapshot(v).await?, Lsn(1), "committed once");
    // Reusing the key for other pages is a caller bug.
    match client.commit(v, Lsn(1), vec![(4, page(2))], "once").await {
        Err(Error::Invalid {
            code: Code::InvalidArgument,
            message,
        }) => assert!(message.contains("idempotency key")),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert_eq!(client.all_commits(v).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn followers_forward_and_redirect() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 3)?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // A client that knows only a follower: every call works, forwarded to the leader.
    let via_follower = c.client_for(follower);
    let v = via_follower.create_volume(None).await?;
    let r = via_follower
        .commit(v, Lsn(0), vec![(1, page(1))], "f1")
        .await?;
    assert_eq!(r.lsn, Lsn(1));
    assert_eq!(via_follower.snapshot(v).await?, Lsn(1));
    assert_eq!(via_follower.all_commits(v).await?.len(), 1);
    // Bad input is refused by the follower itself, with its own status, not forwarded.
    let bad = commit_req(v, 1, "bad", vec![(0, Bytes::from_static(b"short"))]);
    let s = raw(&c.node(follower).addr)
        .await
        .commit(bad)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // A call that was already forwarded once is not forwarded again: the follower answers
    // UNAVAILABLE with the leader's address.
    let mut req = tonic::Request::new(commit_req(v, 1, "f2", vec![]));
    req.metadata_mut().insert(meta::FORWARDED, "1".parse()?);
    let s = raw(&c.node(follower).addr)
        .await
        .commit(req)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(
        s.metadata().get(meta::LEADER_ADDR).unwrap().to_str()?,
        c.node(leader).addr
    );
    Ok(())
}

#[tokio::test]
async fn members_are_added_and_removed() -> anyhow::Result<()> {
    let mut c = Cluster::start(folio_bin(), 3)?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    client
        .commit(v, Lsn(0), vec![(0, page(1))], "before")
        .await?;

    let addr4 = c.spawn_extra(4)?;
    let res = client.add_member(4, &addr4).await?;
    assert!(
        res.members.iter().any(|m| m.node_id == 4 && m.voter),
        "node 4 is a voter: {:?}",
        res.members
    );
    client
        .commit(v, Lsn(1), vec![(0, page(2))], "with-4")
        .await?;
    let s = folio_client::Client::node_status(&c.node(leader).addr, Duration::from_secs(2)).await?;
    c.wait_applied(4, s.applied_index, Duration::from_secs(20))
        .await?;
    // Adding it again is a no-op; adding another node under its id is refused.
    client.add_member(4, &addr4).await?;
    assert!(matches!(
        client.add_member(4, "127.0.0.1:1").await,
        Err(Error::AlreadyExists(_))
    ));

    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let res = client.remove_member(follower).await?;
    assert!(!res.members.iter().any(|m| m.node_id == follower));
    assert_eq!(res.members.iter().filter(|m| m.voter).count(), 3);
    client.commit(v, Lsn(2), vec![], "after-remove").await?;
    assert!(matches!(
        client.remove_member(99).await,
        Err(Error::NotFound(_))
    ));
    let status = folio_client::Client::node_status(&c.node(4).addr, Duration::from_secs(2)).await?;
    assert!(status.members.iter().all(|m| m.node_id != follower));
    Ok(())
}

/// A group whose members have their own peer listeners: Raft goes there (the client port serves
/// none, the peer port serves nothing else), a member added with its peer address catches up
/// through it, and the group fails over.
#[tokio::test]
async fn peer_listeners_carry_raft_and_members_join_with_them() -> anyhow::Result<()> {
    use folio_proto::raft::v1::raft_service_client::RaftServiceClient;
    use folio_proto::raft::v1::RaftMessage;
    let opts = folio_testkit::Options {
        peer_listeners: true,
        ..Default::default()
    };
    let mut c = Cluster::start_opts(folio_bin(), 3, opts)?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    client
        .commit(v, Lsn(0), vec![(0, page(1))], "first")
        .await?;

    let nothing = RaftMessage {
        group_id: 7,
        target_node_id: leader,
        payload: Bytes::new(),
        data: Bytes::new(),
    };
    let mut raft = RaftServiceClient::connect(format!("http://{}", c.node(leader).addr)).await?;
    let st = raft.vote(nothing).await.unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented, "{st:?}");
    let peer = c.node(leader).peer_addr.clone().expect("peer listener");
    let st = folio_client::Client::node_status(&peer, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Some(Code::Unimplemented), "{st}");

    let addr4 = c.spawn_extra(4)?;
    let peer4 = c.node(4).peer_addr.clone().expect("peer listener");
    let res = client.add_member_with_peer(4, &addr4, Some(&peer4)).await?;
    assert!(
        res.members
            .iter()
            .any(|m| m.node_id == 4 && m.voter && m.peer_addr == peer4),
        "node 4 is a voter with its peer address: {:?}",
        res.members
    );
    // The same node with another peer address is another member: refused.
    assert!(matches!(
        client
            .add_member_with_peer(4, &addr4, Some("127.0.0.1:1"))
            .await,
        Err(Error::AlreadyExists(_))
    ));
    client
        .commit(v, Lsn(1), vec![(0, page(2))], "with-4")
        .await?;
    let s = folio_client::Client::node_status(&c.node(leader).addr, Duration::from_secs(2)).await?;
    c.wait_applied(4, s.applied_index, Duration::from_secs(20))
        .await?;

    c.kill(leader);
    let next = c.wait_leader(Duration::from_secs(20)).await?;
    assert_ne!(next, leader);
    client
        .commit(v, Lsn(2), vec![(0, page(3))], "after")
        .await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_status() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    let mut r = raw(&c.node(1).addr).await;
    let code =
        |res: Result<tonic::Response<pb::CommitResponse>, tonic::Status>| res.unwrap_err().code();

    let short = commit_req(v, 0, "k", vec![(0, Bytes::from(vec![0u8; 4095]))]);
    assert_eq!(code(r.commit(short).await), Code::InvalidArgument);
    let long = commit_req(v, 0, "k", vec![(0, Bytes::from(vec![0u8; 4097]))]);
    assert_eq!(code(r.commit(long).await), Code::InvalidArgument);
    assert_eq!(
        code(
            r.commit(commit_req(v, 0, "k", vec![(u32::MAX, page(0))]))
                .await
        ),
        Code::OutOfRange
    );
    assert_eq!(
        code(
            r.commit(commit_req(v, 0, "k", vec![(1, page(0)), (1, page(0))]))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(r.commit(commit_req(v, 0, "", vec![])).await),
        Code::InvalidArgument
    );
    let too_many: Vec<_> = (0..1025).map(|i| (i, Bytes::new())).collect();
    assert_eq!(
        code(r.commit(commit_req(v, 0, "k", too_many)).await),
        Code::ResourceExhausted
    );
    // Over the 8 MiB message limit: refused by the transport before decoding (tonic's decoder
    // answers OUT_OF_RANGE, naming the size and the limit).
    let huge: Vec<_> = (0..2100).map(|i| (i, page(0))).collect();
    let s = r.commit(commit_req(v, 0, "k", huge)).await.unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange);
    assert!(s.message().contains("too large"), "{}", s.message());
    let unknown = VolumeId::new_random();
    assert_eq!(
        code(r.commit(commit_req(unknown, 0, "k", vec![])).await),
        Code::NotFound
    );
    let mut bad_id = commit_req(v, 0, "k", vec![]);
    bad_id.volume_id = Bytes::from_static(b"nope");
    assert_eq!(code(r.commit(bad_id).await), Code::InvalidArgument);
    let mut bad_ref = commit_req(v, 0, "k", vec![]);
    bad_ref.refs.push(pb::PageRef {
        page_idx: 0,
        segment_id: Bytes::from(vec![0u8; 16]),
        offset: 0,
    });
    assert_eq!(code(r.commit(bad_ref).await), Code::InvalidArgument);
    let mut bad_dur = commit_req(v, 0, "k", vec![]);
    bad_dur.durability = 42;
    assert_eq!(code(r.commit(bad_dur).await), Code::InvalidArgument);

    let exists = r
        .create_volume(pb::CreateVolumeRequest {
            volume_id: Bytes::copy_from_slice(v.as_bytes()),
        })
        .await;
    assert_eq!(exists.unwrap_err().code(), Code::AlreadyExists);
    let snap = r
        .get_snapshot(pb::GetSnapshotRequest {
            volume_id: Bytes::copy_from_slice(unknown.as_bytes()),
        })
        .await;
    assert_eq!(snap.unwrap_err().code(), Code::NotFound);
    let wp = r
        .write_pages(pb::WritePagesRequest {
            volume_id: Bytes::copy_from_slice(v.as_bytes()),
            pages: vec![pb::PageWrite {
                page_idx: 0,
                data: Bytes::from_static(b"x"),
            }],
        })
        .await;
    assert_eq!(wp.unwrap_err().code(), Code::InvalidArgument);

    // A body that is not a CommitRequest at all: the caller's fault, not the server's.
    let garbage = undecodable(&c.node(1).addr, "/folio.volume.v1.VolumeService/Commit").await?;
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    assert!(
        garbage.message().contains("CommitRequest"),
        "{}",
        garbage.message()
    );

    // None of that hurt the node: a valid commit still lands at LSN 1.
    assert_eq!(
        client
            .commit(v, Lsn(0), vec![(0, page(9))], "ok")
            .await?
            .lsn,
        Lsn(1)
    );
    Ok(())
}

#[tokio::test]
async fn two_step_write_then_commit() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    let w = client.create_volume(None).await?;
    let refs = client
        .write_pages(v, vec![(10, page(1)), (11, page(2))])
        .await?;
    assert_eq!(refs.len(), 2);
    // The uploaded pages are not part of the volume until committed.
    assert_eq!(client.snapshot(v).await?, Lsn(0));
    let req = |vol: VolumeId, refs: Vec<pb::PageRef>, key: &str| pb::CommitRequest {
        volume_id: Bytes::copy_from_slice(vol.as_bytes()),
        expected_lsn: 0,
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        durability: 0,
        pages: vec![(12, page(3))]
            .into_iter()
            .map(|(page_idx, data)| pb::PageWrite { page_idx, data })
            .collect(),
        refs,
    };
    assert!(matches!(
        client.commit_request(req(w, refs.clone(), "x")).await,
        Err(Error::Invalid { .. })
    ));
    let done = client.commit_request(req(v, refs.clone(), "y")).await?;
    assert_eq!(done.lsn, Lsn(1));
    assert_eq!(done.pages.len(), 3);
    assert_eq!(&done.pages[1..], &refs[..], "refs keep their locations");
    let log = client.all_commits(v).await?;
    assert_eq!(
        log[0].pages.iter().map(|p| p.page_idx).collect::<Vec<_>>(),
        vec![12, 10, 11]
    );
    Ok(())
}
