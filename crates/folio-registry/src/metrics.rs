//! Registry metrics, registered in the process-wide default registry (`folio registry` serves
//! them at `metrics_addr`; `folio dev` with the group's).

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};

pub static GROUPS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_registry_groups",
        "Groups registered with the registry"
    )
    .expect("metric registers once")
});

pub static VOLUMES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("folio_registry_volumes", "Volumes placed by the registry")
        .expect("metric registers once")
});

pub static PLACEMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_registry_placements_total",
        "CreateVolume and ForkVolume outcomes on this registry leader: placed, retried (an \
         earlier placement answered), refused (no such region or no healthy group), forked",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static FORWARDS_REROUTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_registry_forwards_rerouted_total",
        "Forwarded calls sent on (or run here) because registry leadership moved while they \
         waited at the old leader"
    )
    .expect("metric registers once")
});

pub static HEARTBEATS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_registry_heartbeats_total",
        "Group heartbeats handled by this registry leader: seen, or registered (the group was new \
         or its members changed)",
        &["event"]
    )
    .expect("metric registers once")
});

pub static RESOLVES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_registry_resolves_total",
        "ResolveVolume answers from this node: local, confirmed (a miss checked on the leader \
         and found), not_found",
        &["answer"]
    )
    .expect("metric registers once")
});

/// Registers every registry metric, so each appears before its first observation.
pub fn register() {
    LazyLock::force(&GROUPS);
    LazyLock::force(&VOLUMES);
    LazyLock::force(&PLACEMENTS);
    LazyLock::force(&HEARTBEATS);
    LazyLock::force(&RESOLVES);
    LazyLock::force(&FORWARDS_REROUTED);
}
