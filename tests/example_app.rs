//! The collaborative example (`examples/collab-kv`) against a live 3-node group: concurrent
//! edits of different keys merge by rebase; concurrent edits of one key report a conflict on
//! that key's page, and the re-applied edit wins.

use std::time::Duration;

use collab_kv::{bucket, Outcome};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collaborative_map_merges_disjoint_edits_and_reports_conflicts() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 3)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let r = collab_kv::demo(c.addrs()).await?;
    assert!(
        matches!(r.disjoint.0, Outcome::Committed { rebases: 0, .. }),
        "{r:?}"
    );
    assert!(
        matches!(r.disjoint.1, Outcome::Committed { rebases: 1, .. }),
        "{r:?}"
    );
    assert!(
        matches!(r.overlapping.0, Outcome::Committed { .. }),
        "{r:?}"
    );
    assert_eq!(
        r.overlapping.1,
        Outcome::Conflict {
            pages: vec![bucket("title")]
        }
    );
    assert_eq!(
        r.final_title.as_deref(),
        Some("Bob's title (after Alice's)")
    );
    assert_eq!(r.final_color.as_deref(), Some("blue"));
    Ok(())
}
