//! The Helm chart, offline: `helm lint --strict`, `helm template` over a matrix of values, each
//! manifest validated strictly against the Kubernetes schemas, assertions on what was rendered,
//! and every rendered node config loaded by this build's `folio` as each pod would load it. The
//! checks live in `charts/folio/tests/check_chart.py`; `scripts/setup.sh` installs helm (from a
//! PyPI wheel) and kubernetes-validate.

use folio_system_tests::folio_bin;
use std::path::PathBuf;
use std::process::Command;

/// helm from `FOLIO_HELM`, else where `scripts/setup.sh` puts it, else PATH.
fn helm() -> PathBuf {
    folio_testkit::tool("helm", "FOLIO_HELM")
}

#[test]
fn the_chart_renders_valid_manifests_and_configs_folio_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("charts/folio/tests/check_chart.py"))
        .arg(helm())
        .arg(folio_bin())
        .output()
        .expect("run python3 charts/folio/tests/check_chart.py");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chart checks failed:\n{said}");
    assert!(said.contains("chart: ok"), "{said}");
}
