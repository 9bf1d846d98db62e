//! List-append transactions checked the way Elle checks them: infer each list's version order
//! from the reads, derive write-write, write-read and read-write (anti-)dependencies between
//! transactions plus real-time order, and look for cycles in that graph.
//!
//! Every appended element is unique in a run, so a read of a list names exactly which
//! transactions wrote before it, and the longest read of a list (the final read, after healing)
//! is its version order, which every other read must be a prefix of. Then, per list:
//!
//! - `ww`: the writer of element i precedes the writer of element i + 1;
//! - `wr`: the writer of a read's last element precedes the reader;
//! - `rw`: a reader precedes the writer of the element that follows what it read;
//! - `rt`: a transaction acknowledged before another was invoked precedes it (kept small the way
//!   Elle does: each transaction links from the acknowledged ones no later transaction covers).
//!
//! Cycles are found per strongly connected component and named by the worst edges they need, as
//! Adya and Elle name them: G0 (only ww), G1c (ww and wr), G-single (exactly one rw), G2 (more);
//! a `-realtime` suffix when the cycle needs real-time edges (a strict-serializability violation,
//! not a serializability one). Besides cycles: G1a (a read saw an element of a transaction that
//! failed), lost-update (two committed transactions appended to a list on top of the same read
//! of it), lost (an acknowledged append missing from a read invoked after it was acknowledged),
//! incompatible-order (two reads of a list where neither is a prefix of the other), duplicate
//! (an element twice in a list) and garbage (an element no transaction appended).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::CheckResult;
use crate::history::{pairs, Body, Mop, Op, OpType};

/// Anomalies of one kind reported in full before the rest are only counted.
const REPORT_LIMIT: usize = 20;
/// rw edges tried as the single one of a G-single cycle, per component.
const G_SINGLE_TRIES: usize = 2_000;

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;

/// A list: (volume, page).
type ListKey = (u64, u64);

/// One transaction that took (or may have taken) effect.
struct Txn {
    invoke: usize,
    complete: usize,
    ok: bool,
    reads: Vec<(ListKey, Vec<u64>)>,
    appends: Vec<(ListKey, u64)>,
}

/// The dependency graph: edges with the kinds that justify them, and one list each for the
/// explanation.
#[derive(Default)]
struct Graph {
    out: Vec<BTreeMap<usize, (u8, Option<ListKey>)>>,
}

impl Graph {
    fn new(n: usize) -> Graph {
        Graph {
            out: (0..n).map(|_| BTreeMap::new()).collect(),
        }
    }

    fn link(&mut self, a: usize, b: usize, kind: u8, list: Option<ListKey>) {
        if a == b {
            return;
        }
        let e = self.out[a].entry(b).or_insert((0, list));
        e.0 |= kind;
        if e.1.is_none() {
            e.1 = list;
        }
    }
}

pub fn check(history: &[Op]) -> CheckResult {
    let mut r = CheckResult::new("list-append");
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut report = |r: &mut CheckResult, kind: &'static str, ops: Vec<usize>, why: String| {
        let n = counts.entry(kind).or_default();
        *n += 1;
        if *n <= REPORT_LIMIT {
            r.anomaly(kind, ops, why);
        } else {
            r.valid = false;
            r.stat(&format!("unreported-{kind}"), 1);
        }
    };

    // The transactions, and who appended each element.
    let mut txns: Vec<Txn> = Vec::new();
    let mut failed_elems: HashMap<u64, usize> = HashMap::new();
    let mut writer: HashMap<u64, usize> = HashMap::new();
    let mut appended: HashSet<u64> = HashSet::new();
    for p in pairs(history) {
        let Body::Txn { key: vol, mops, .. } = &p.invoke.body else {
            continue;
        };
        let appends: Vec<(ListKey, u64)> = mops
            .iter()
            .filter_map(|m| match m {
                Mop::Append { key, elem } => Some(((*vol, *key), *elem)),
                Mop::Read { .. } => None,
            })
            .collect();
        for (_, e) in &appends {
            if !appended.insert(*e) {
                report(
                    &mut r,
                    "duplicate",
                    vec![p.invoke.index],
                    format!("element {e} is appended by two transactions"),
                );
            }
        }
        match p.kind() {
            OpType::Fail => {
                for (_, e) in appends {
                    failed_elems.insert(e, p.invoke.index);
                }
            }
            OpType::Ok => {
                let Body::Txn { mops: done, .. } = &p.complete.body else {
                    continue;
                };
                let reads = done
                    .iter()
                    .filter_map(|m| match m {
                        Mop::Read { key, list } => {
                            Some(((*vol, *key), list.clone().unwrap_or_default()))
                        }
                        Mop::Append { .. } => None,
                    })
                    .collect();
                for (_, e) in &appends {
                    writer.insert(*e, txns.len());
                }
                txns.push(Txn {
                    invoke: p.invoke.index,
                    complete: p.complete.index,
                    ok: true,
                    reads,
                    appends,
                });
            }
            // Unknown: a node only if something it appended was read (it then happened).
            OpType::Info | OpType::Invoke => {
                if appends.is_empty() {
                    continue;
                }
                for (_, e) in &appends {
                    writer.insert(*e, txns.len());
                }
                txns.push(Txn {
                    invoke: p.invoke.index,
                    complete: usize::MAX,
                    ok: false,
                    reads: Vec::new(),
                    appends,
                });
            }
        }
    }
    r.stat("transactions", txns.iter().filter(|t| t.ok).count() as u64);

    // Every read: duplicates, garbage and aborted reads; then the version order of each list.
    let mut longest: HashMap<ListKey, (usize, &[u64])> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        for (k, list) in &txn.reads {
            let mut seen = HashSet::new();
            for e in list {
                if !seen.insert(*e) {
                    report(
                        &mut r,
                        "duplicate",
                        vec![txn.complete],
                        format!("list {k:?} holds element {e} twice: {list:?}"),
                    );
                }
                if let Some(f) = failed_elems.get(e) {
                    report(
                        &mut r,
                        "G1a",
                        vec![txn.complete, *f],
                        format!(
                            "a read of list {k:?} saw element {e}, appended by a transaction that failed"
                        ),
                    );
                } else if !writer.contains_key(e) {
                    report(
                        &mut r,
                        "garbage",
                        vec![txn.complete],
                        format!("a read of list {k:?} saw element {e}, which nothing appended"),
                    );
                }
            }
            let l = longest.entry(*k).or_insert((t, list));
            if list.len() > l.1.len() {
                *l = (t, list);
            }
        }
    }
    let mut keys: Vec<ListKey> = longest.keys().copied().collect();
    keys.sort_unstable();
    let mut position: HashMap<u64, (ListKey, usize)> = HashMap::new();
    for k in &keys {
        let (lt, order) = longest[k];
        for (i, e) in order.iter().enumerate() {
            position.entry(*e).or_insert((*k, i));
        }
        for txn in &txns {
            for (rk, list) in &txn.reads {
                if rk == k && !order.starts_with(list) {
                    report(
                        &mut r,
                        "incompatible-order",
                        vec![txn.complete, txns[lt].complete],
                        format!("list {k:?} was read as {list:?} and as {order:?}"),
                    );
                }
            }
        }
    }
    r.stat("lists", keys.len() as u64);

    // Lost updates: two committed transactions appended to a list on top of the same read.
    let mut on_top: HashMap<(ListKey, usize), Vec<usize>> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        for (k, _) in &txn.appends {
            if let Some((_, list)) = txn.reads.iter().find(|(rk, _)| rk == k) {
                on_top.entry((*k, list.len())).or_default().push(t);
            }
        }
    }
    let mut lost_updates: Vec<_> = on_top.into_iter().filter(|(_, t)| t.len() > 1).collect();
    lost_updates.sort_unstable();
    for ((k, len), ts) in lost_updates {
        report(
            &mut r,
            "lost-update",
            ts.iter().map(|t| txns[*t].invoke).collect(),
            format!(
                "{} committed transactions appended to list {k:?} after reading the same {len} elements",
                ts.len()
            ),
        );
    }

    // Lost appends: acknowledged, yet missing from a read invoked after the acknowledgement.
    // Reads of a list are prefixes of its order (else incompatible-order above), so a read lacks
    // an element exactly when it is no longer than the element's position: per list, the
    // shortest read invoked after each point answers for every append at once.
    let mut reads_of: HashMap<ListKey, Vec<(usize, usize, usize)>> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        for (k, list) in &txn.reads {
            reads_of
                .entry(*k)
                .or_default()
                .push((txn.invoke, list.len(), t));
        }
    }
    // Per list: the invocation indexes of its reads in order, and for each the shortest read
    // (length, transaction) from there on.
    type Suffix = (Vec<usize>, Vec<(usize, usize)>);
    let mut shortest_after: HashMap<ListKey, Suffix> = HashMap::new();
    for (k, mut reads) in reads_of {
        reads.sort_unstable();
        let mut min = Vec::with_capacity(reads.len());
        let mut best = (usize::MAX, usize::MAX);
        for (_, len, t) in reads.iter().rev() {
            if *len <= best.0 {
                best = (*len, *t);
            }
            min.push(best);
        }
        min.reverse();
        shortest_after.insert(k, (reads.iter().map(|(i, _, _)| *i).collect(), min));
    }
    for txn in txns.iter().filter(|t| t.ok) {
        for (k, e) in &txn.appends {
            let Some((invokes, min)) = shortest_after.get(k) else {
                continue;
            };
            let from = invokes.partition_point(|i| *i < txn.complete);
            let Some((len, later)) = min.get(from) else {
                continue;
            };
            let pos = position.get(e).map(|(_, p)| *p).unwrap_or(usize::MAX);
            if *len <= pos {
                report(
                    &mut r,
                    "lost",
                    vec![txn.invoke, txn.complete, txns[*later].complete],
                    format!(
                        "element {e} of list {k:?} was acknowledged, then a later read of the list lacks it"
                    ),
                );
            }
        }
    }

    // The dependency graph.
    let mut g = Graph::new(txns.len());
    for k in &keys {
        let order = longest[k].1;
        for w in order.windows(2) {
            if let (Some(a), Some(b)) = (writer.get(&w[0]), writer.get(&w[1])) {
                g.link(*a, *b, WW, Some(*k));
            }
        }
    }
    for (t, txn) in txns.iter().enumerate() {
        for (k, list) in &txn.reads {
            if let Some(w) = list.last().and_then(|e| writer.get(e)) {
                g.link(*w, t, WR, Some(*k));
            }
            let order = longest[k].1;
            if order.starts_with(list) {
                if let Some(w) = order.get(list.len()).and_then(|e| writer.get(e)) {
                    g.link(t, *w, RW, Some(*k));
                }
            }
        }
    }
    // Real time, over the events in history order.
    let mut events: Vec<(usize, bool, usize)> = Vec::new();
    for (t, txn) in txns.iter().enumerate() {
        events.push((txn.invoke, false, t));
        if txn.ok {
            events.push((txn.complete, true, t));
        }
    }
    events.sort_unstable();
    let mut frontier: HashSet<usize> = HashSet::new();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); txns.len()];
    for (_, done, t) in events {
        if done {
            for p in &preds[t] {
                frontier.remove(p);
            }
            frontier.insert(t);
        } else {
            preds[t] = frontier.iter().copied().collect();
            preds[t].sort_unstable();
            for p in &preds[t] {
                g.link(*p, t, RT, None);
            }
        }
    }

    // Cycles.
    let all = (0..txns.len()).collect::<Vec<_>>();
    let mut cycles = 0u64;
    for scc in components(&g, &all, WW | WR | RW | RT) {
        cycles += 1;
        let Some((name, cycle)) = worst_cycle(&g, &scc) else {
            continue;
        };
        let ops = cycle.iter().map(|t| txns[*t].invoke).collect();
        report(&mut r, name, ops, explain(&g, &txns, &cycle));
    }
    r.stat("cyclic-components", cycles);
    r
}

/// The strongly connected components with more than one transaction among `nodes`, over the
/// edges whose kinds meet `mask` (Tarjan's algorithm, without recursion).
fn components(g: &Graph, nodes: &[usize], mask: u8) -> Vec<Vec<usize>> {
    let inside: HashSet<usize> = nodes.iter().copied().collect();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut low: HashMap<usize, usize> = HashMap::new();
    let mut on_stack: HashSet<usize> = HashSet::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize;
    for &root in nodes {
        if index.contains_key(&root) {
            continue;
        }
        // (node, its successors, how many were visited)
        let mut work: Vec<(usize, Vec<usize>, usize)> = Vec::new();
        let succ = |v: usize| -> Vec<usize> {
            g.out[v]
                .iter()
                .filter(|(w, (k, _))| k & mask != 0 && inside.contains(w))
                .map(|(w, _)| *w)
                .collect()
        };
        index.insert(root, next);
        low.insert(root, next);
        next += 1;
        stack.push(root);
        on_stack.insert(root);
        work.push((root, succ(root), 0));
        while let Some((v, ws, i)) = work.last_mut() {
            let v = *v;
            if *i < ws.len() {
                let w = ws[*i];
                *i += 1;
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(w) {
                    slot.insert(next);
                    low.insert(w, next);
                    next += 1;
                    stack.push(w);
                    on_stack.insert(w);
                    work.push((w, succ(w), 0));
                } else if on_stack.contains(&w) {
                    let lw = index[&w];
                    let lv = low.get_mut(&v).expect("visited");
                    *lv = (*lv).min(lw);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _, _)) = work.last() {
                let lv = low[&v];
                let lp = low.get_mut(parent).expect("visited");
                *lp = (*lp).min(lv);
            }
            if low[&v] == index[&v] {
                let mut scc = Vec::new();
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack.remove(&w);
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort_unstable();
                    out.push(scc);
                }
            }
        }
    }
    out
}

/// A shortest path from `from` to `to` inside `nodes` over edges meeting `mask`.
fn path(g: &Graph, nodes: &HashSet<usize>, mask: u8, from: usize, to: usize) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    parent.insert(from, from);
    while let Some(v) = queue.pop_front() {
        for (w, (k, _)) in &g.out[v] {
            if k & mask == 0 || !nodes.contains(w) {
                continue;
            }
            if *w == to {
                let mut p = vec![v];
                let mut at = v;
                while at != from {
                    at = parent[&at];
                    p.push(at);
                }
                p.reverse();
                return Some(p);
            }
            if !parent.contains_key(w) {
                parent.insert(*w, v);
                queue.push_back(*w);
            }
        }
    }
    None
}

/// A cycle inside `nodes` over edges meeting `mask`, if there is one.
fn cycle_over(g: &Graph, nodes: &[usize], mask: u8) -> Option<Vec<usize>> {
    let scc = components(g, nodes, mask).into_iter().next()?;
    let set: HashSet<usize> = scc.iter().copied().collect();
    path(g, &set, mask, scc[0], scc[0])
}

/// The worst cycle in a component and its name.
fn worst_cycle(g: &Graph, scc: &[usize]) -> Option<(&'static str, Vec<usize>)> {
    let set: HashSet<usize> = scc.iter().copied().collect();
    for (rt, suffix) in [(0, false), (RT, true)] {
        let name = |n: &'static str, r: &'static str| if suffix { r } else { n };
        if let Some(c) = cycle_over(g, scc, WW | rt) {
            return Some((name("G0", "G0-realtime"), c));
        }
        if let Some(c) = cycle_over(g, scc, WW | WR | rt) {
            return Some((name("G1c", "G1c-realtime"), c));
        }
        // Exactly one rw edge, closed by a path without one.
        let mut tries = 0;
        for &a in scc {
            for (b, (k, _)) in &g.out[a] {
                if k & RW == 0 || !set.contains(b) {
                    continue;
                }
                tries += 1;
                if tries > G_SINGLE_TRIES {
                    break;
                }
                if let Some(mut p) = path(g, &set, WW | WR | rt, *b, a) {
                    // The rw edge first: [a, b, .., back to a].
                    p.insert(0, a);
                    return Some((name("G-single", "G-single-realtime"), p));
                }
            }
        }
        if let Some(c) = cycle_over(g, scc, WW | WR | RW | rt) {
            return Some((name("G2", "G2-realtime"), c));
        }
    }
    None
}

fn explain(g: &Graph, txns: &[Txn], cycle: &[usize]) -> String {
    let mut s = String::new();
    for (i, a) in cycle.iter().enumerate() {
        let b = cycle[(i + 1) % cycle.len()];
        let (k, list) = g.out[*a].get(&b).copied().unwrap_or((0, None));
        let kind = [(WW, "ww"), (WR, "wr"), (RW, "rw"), (RT, "rt")]
            .iter()
            .find(|(m, _)| k & m != 0)
            .map(|(_, n)| *n)
            .unwrap_or("?");
        s.push_str(&format!("T{} -{kind}", txns[*a].invoke));
        if let Some(l) = list.filter(|_| kind != "rt") {
            s.push_str(&format!("{l:?}"));
        }
        s.push_str("-> ");
    }
    s.push_str(&format!("T{}", txns[cycle[0]].invoke));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    enum M {
        R(u64, &'static [u64]),
        A(u64, u64),
    }

    /// A history of transactions on volume 0, each given as (process, type, mops) in the
    /// order of its events: an invocation with `Some` type runs to that completion at once;
    /// use `inv`/`done` for overlapping ones.
    struct H(Vec<Op>);

    impl H {
        fn new() -> H {
            H(Vec::new())
        }

        fn push(&mut self, process: u64, kind: OpType, mops: &[M]) {
            let mops = mops
                .iter()
                .map(|m| match m {
                    M::R(k, l) => Mop::Read {
                        key: *k,
                        list: (kind == OpType::Ok).then(|| l.to_vec()),
                    },
                    M::A(k, e) => Mop::Append { key: *k, elem: *e },
                })
                .collect();
            let index = self.0.len();
            self.0.push(Op {
                index,
                time: index as u64,
                process,
                kind,
                body: Body::Txn {
                    key: 0,
                    mops,
                    lsn: None,
                },
                error: None,
            });
        }

        fn inv(&mut self, process: u64, mops: &[M]) -> &mut H {
            self.push(process, OpType::Invoke, mops);
            self
        }

        fn done(&mut self, process: u64, kind: OpType, mops: &[M]) -> &mut H {
            self.push(process, kind, mops);
            self
        }

        /// An operation that runs alone to completion.
        fn txn(&mut self, process: u64, kind: OpType, mops: &[M]) -> &mut H {
            self.inv(process, mops).done(process, kind, mops)
        }

        fn check(&self) -> CheckResult {
            check(&self.0)
        }
    }

    use OpType::{Fail, Info, Ok as Done};
    use M::{A, R};

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn a_serial_history_is_valid() {
        let r = H::new()
            .txn(0, Done, &[R(1, &[]), A(1, 10)])
            .txn(1, Done, &[R(1, &[10]), A(1, 11), A(2, 20)])
            .txn(0, Done, &[R(1, &[10, 11]), R(2, &[20])])
            .check();
        assert!(r.valid, "{r:?}");
        assert_eq!(r.stats["transactions"], 3);
        assert_eq!(r.stats["lists"], 2);
    }

    #[test]
    fn concurrent_transactions_may_commit_in_either_order() {
        let r = H::new()
            .inv(0, &[A(1, 10)])
            .inv(1, &[A(1, 11)])
            .done(1, Done, &[A(1, 11)])
            .done(0, Done, &[A(1, 10)])
            .txn(2, Done, &[R(1, &[11, 10])])
            .check();
        assert!(r.valid, "{r:?}");
    }

    #[test]
    fn write_cycles_are_g0() {
        let r = H::new()
            .inv(0, &[A(1, 10), A(2, 20)])
            .inv(1, &[A(1, 11), A(2, 21)])
            .done(0, Done, &[A(1, 10), A(2, 20)])
            .done(1, Done, &[A(1, 11), A(2, 21)])
            .txn(2, Done, &[R(1, &[10, 11]), R(2, &[21, 20])])
            .check();
        assert_eq!(kinds(&r), ["G0"], "{r:?}");
    }

    #[test]
    fn circular_information_flow_is_g1c() {
        let r = H::new()
            .inv(0, &[A(1, 10), R(2, &[])])
            .inv(1, &[A(2, 20), R(1, &[])])
            .done(0, Done, &[A(1, 10), R(2, &[20])])
            .done(1, Done, &[A(2, 20), R(1, &[10])])
            .check();
        assert_eq!(kinds(&r), ["G1c"], "{r:?}");
    }

    #[test]
    fn two_appends_on_the_same_read_are_a_lost_update_and_g_single() {
        let r = H::new()
            .inv(0, &[R(1, &[]), A(1, 10)])
            .inv(1, &[R(1, &[]), A(1, 11)])
            .done(0, Done, &[R(1, &[]), A(1, 10)])
            .done(1, Done, &[R(1, &[]), A(1, 11)])
            .txn(2, Done, &[R(1, &[10, 11])])
            .check();
        let k = kinds(&r);
        assert!(k.contains(&"lost-update"), "{r:?}");
        assert!(k.contains(&"G-single"), "{r:?}");
    }

    #[test]
    fn write_skew_is_g2() {
        let r = H::new()
            .inv(0, &[R(1, &[]), A(2, 20)])
            .inv(1, &[R(2, &[]), A(1, 10)])
            .done(0, Done, &[R(1, &[]), A(2, 20)])
            .done(1, Done, &[R(2, &[]), A(1, 10)])
            .txn(2, Done, &[R(1, &[10]), R(2, &[20])])
            .check();
        assert_eq!(kinds(&r), ["G2"], "{r:?}");
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_append_breaks_real_time() {
        let r = H::new()
            .txn(0, Done, &[A(1, 10)])
            .txn(1, Done, &[R(1, &[])])
            .txn(2, Done, &[R(1, &[10])])
            .check();
        let k = kinds(&r);
        assert!(k.contains(&"G-single-realtime"), "{r:?}");
        assert!(k.contains(&"lost"), "{r:?}");
    }

    #[test]
    fn an_acknowledged_append_nobody_sees_later_is_lost() {
        let r = H::new()
            .txn(0, Done, &[A(1, 10)])
            .txn(1, Done, &[R(1, &[])])
            .check();
        assert!(kinds(&r).contains(&"lost"), "{r:?}");
    }

    #[test]
    fn reading_a_failed_append_is_g1a_and_unknown_ones_may_show() {
        let r = H::new()
            .txn(0, Fail, &[A(1, 10)])
            .txn(1, Info, &[A(1, 11)])
            .txn(2, Done, &[R(1, &[11])])
            .check();
        assert!(r.valid, "{r:?}");
        let r = H::new()
            .txn(0, Fail, &[A(1, 10)])
            .txn(2, Done, &[R(1, &[10])])
            .check();
        assert_eq!(kinds(&r), ["G1a"], "{r:?}");
    }

    #[test]
    fn diverging_reads_duplicates_and_garbage_are_caught() {
        let r = H::new()
            .txn(0, Done, &[A(1, 10)])
            .txn(0, Done, &[A(1, 11)])
            .txn(1, Done, &[R(1, &[10, 11])])
            .txn(2, Done, &[R(1, &[11])])
            .check();
        assert!(kinds(&r).contains(&"incompatible-order"), "{r:?}");
        let r = H::new()
            .txn(0, Done, &[A(1, 10)])
            .txn(1, Done, &[R(1, &[10, 10])])
            .check();
        assert!(kinds(&r).contains(&"duplicate"), "{r:?}");
        let r = H::new().txn(1, Done, &[R(1, &[99])]).check();
        assert_eq!(kinds(&r), ["garbage"], "{r:?}");
    }

    #[test]
    fn reports_are_bounded() {
        let mut h = H::new();
        for i in 0..100 {
            h.txn(0, Fail, &[A(1, i)]);
        }
        let all: Vec<u64> = (0..100).collect();
        let all: &'static [u64] = Box::leak(all.into_boxed_slice());
        h.txn(1, Done, &[R(1, all)]);
        let r = h.check();
        assert_eq!(r.anomalies.len(), REPORT_LIMIT);
        assert_eq!(r.stats["unreported-G1a"], 80);
        assert!(!r.valid);
    }
}
