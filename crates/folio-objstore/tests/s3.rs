//! The conformance suite against a real S3-compatible server: moto (`moto[server]` from PyPI),
//! started on 127.0.0.1 by this test. moto enforces `If-None-Match: *` atomically, also under
//! concurrent racers, which the suite checks. `scripts/test.sh` installs moto when missing.

use std::sync::Arc;

use folio_objstore::{conformance, S3Config, S3Store};
use folio_testkit::moto::Moto;

fn start_moto() -> (Moto, String) {
    let moto = Moto::start().expect("start moto (install: python3 -m pip install 'moto[server]')");
    let endpoint = moto.endpoint();
    (moto, endpoint)
}

fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        path_style: true,
        credentials: Some(("test".into(), "test".into())),
    }
}

async fn create_bucket(endpoint: &str, bucket: &str) {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_moto() {
    let (_moto, endpoint) = start_moto();
    create_bucket(&endpoint, "folio-test").await;
    // Under a prefix, as a shared bucket would be used, and at the bucket root.
    conformance::run_all(Arc::new(
        S3Store::connect(config(&endpoint, "folio-test", "cluster-a"))
            .await
            .unwrap(),
    ))
    .await;
    conformance::run_all(Arc::new(
        S3Store::connect(config(&endpoint, "folio-test", ""))
            .await
            .unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_reports_a_missing_bucket() {
    let (_moto, endpoint) = start_moto();
    let s = S3Store::connect(config(&endpoint, "no-such-bucket", ""))
        .await
        .unwrap();
    let k = folio_objstore::ObjectKey::Group {
        group: folio_core::GroupId(1),
        name: "x",
    };
    let err = folio_objstore::ObjectStore::put_if_absent(&s, &k, bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-bucket") || err.to_string().contains("NoSuchBucket"),
        "{err}"
    );
}
