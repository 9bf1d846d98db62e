//! The conformance suite against a real S3-compatible server: moto (`moto[server]` from PyPI),
//! started on 127.0.0.1 by this test. moto enforces `If-None-Match: *` atomically, also under
//! concurrent racers, which the suite checks. `scripts/test.sh` installs moto when missing.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use folio_objstore::{conformance, S3Config, S3Store};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_moto() -> (Moto, String) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "start python3 -m moto.server (install with: python3 -m pip install 'moto[server]')",
        );
    let moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (moto, endpoint);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto did not listen on {endpoint} within 10 s; is moto[server] installed?");
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
    let (_moto, endpoint) = start_moto().await;
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
    let (_moto, endpoint) = start_moto().await;
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
