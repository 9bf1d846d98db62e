//! Linearizability of the CAS registers, one register (volume) at a time.
//!
//! The model is the register's `(lsn, value)`: a read returns both, a CAS with `expected` takes
//! effect only at `lsn == expected`, moves the register to `(expected + 1, new)` and, when it was
//! acknowledged, must say it landed at `expected + 1`. The search is Wing and Gong's, with Lowe's
//! just-in-time ordering and a memo of visited `(linearized set, state)` pairs, as Porcupine and
//! Knossos do: walk the history's call and return events in order, linearize a pending call when
//! the model allows it, and back up when a return is reached whose operation is not yet
//! linearized. The history is linearizable when every acknowledged operation has been placed.
//!
//! - `fail` operations certainly did not happen and are left out.
//! - `info` operations (and ones that never completed) may have happened at any point after their
//!   invocation, or never: they have no return event, so the search may place them or leave them.
//! - The linearized set is kept as a 128-bit Zobrist hash (two random words per operation), so a
//!   memo entry is 32 bytes whatever the history's length; a collision could only make the
//!   search give up a branch it had not seen, and at 2^-128 per pair that never happens.
//! - The search is bounded in steps and memo size; past the bound the verdict is "unknown",
//!   never a pass.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::CheckResult;
use crate::history::{pairs, Body, Op, OpType};

/// Search steps allowed per register before the verdict is "unknown".
pub const STEP_LIMIT: u64 = 50_000_000;
/// Memo entries allowed per register (32 bytes each, plus the table's overhead).
pub const MEMO_LIMIT: usize = 4_000_000;

type State = (u64, u64);

#[derive(Clone, Copy, Debug)]
enum Call {
    Read {
        lsn: u64,
        value: u64,
    },
    Cas {
        expected: u64,
        new: u64,
        lsn: Option<u64>,
    },
}

impl Call {
    /// The state after this call from `s`, if the model allows it there.
    fn step(&self, s: State) -> Option<State> {
        match *self {
            Call::Read { lsn, value } => (s == (lsn, value)).then_some(s),
            Call::Cas { expected, new, lsn } => {
                let ok = s.0 == expected && lsn.is_none_or(|l| l == expected + 1);
                ok.then_some((expected + 1, new))
            }
        }
    }

    fn describe(&self) -> String {
        match *self {
            Call::Read { lsn, value } => format!("read of ({lsn}, {value})"),
            Call::Cas { expected, new, lsn } => match lsn {
                Some(l) => format!("cas {expected} -> {new}, acknowledged at {l}"),
                None => format!("cas {expected} -> {new}, outcome unknown"),
            },
        }
    }
}

/// One operation of a register's history.
struct LinOp {
    call: Call,
    /// History indexes of the invocation and the completion (the same for unfinished ones).
    invoke: usize,
    complete: usize,
    /// Acknowledged: it must be linearized before its return event.
    must: bool,
}

/// Checks every register in `history`; `initial` gives each register's LSN before the run (the
/// value there is 0, a page never written; registers not in it start at LSN 0).
pub fn check(history: &[Op], initial: &HashMap<u64, u64>) -> CheckResult {
    check_bounded(history, initial, STEP_LIMIT, MEMO_LIMIT)
}

pub fn check_bounded(
    history: &[Op],
    initial: &HashMap<u64, u64>,
    step_limit: u64,
    memo_limit: usize,
) -> CheckResult {
    let mut r = CheckResult::new("linearizable-register");
    let mut by_key: HashMap<u64, Vec<LinOp>> = HashMap::new();
    for p in pairs(history) {
        let kind = p.kind();
        if kind == OpType::Fail {
            continue;
        }
        let must = kind == OpType::Ok;
        let call = match (&p.invoke.body, &p.complete.body) {
            (Body::Read { .. }, Body::Read { lsn, value, .. }) if must => match (lsn, value) {
                (Some(lsn), Some(value)) => Call::Read {
                    lsn: *lsn,
                    value: *value,
                },
                _ => {
                    r.anomaly(
                        "malformed",
                        vec![p.complete.index],
                        "an acknowledged read without its LSN or value".into(),
                    );
                    continue;
                }
            },
            // A read that did not return changes nothing.
            (Body::Read { .. }, _) => continue,
            (Body::Cas { expected, new, .. }, complete) => {
                let lsn = match complete {
                    Body::Cas { lsn, .. } if must => *lsn,
                    _ => None,
                };
                Call::Cas {
                    expected: *expected,
                    new: *new,
                    lsn,
                }
            }
            _ => continue,
        };
        by_key.entry(p.invoke.body.key()).or_default().push(LinOp {
            call,
            invoke: p.invoke.index,
            complete: p.complete.index,
            must,
        });
    }
    let mut keys: Vec<u64> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let ops = &by_key[&key];
        r.stat("registers", 1);
        r.stat("operations", ops.len() as u64);
        let init = (initial.get(&key).copied().unwrap_or(0), 0);
        match search(ops, init, step_limit, memo_limit) {
            Verdict::Linearizable { steps } => r.stat("search-steps", steps),
            Verdict::Not {
                stuck,
                placed,
                state,
            } => {
                let op = &ops[stuck];
                r.anomaly(
                    "nonlinearizable",
                    vec![op.invoke, op.complete],
                    format!(
                        "register {key}: no order of its operations explains the {} (history {}..{}); \
                         the longest linearizable prefix places {placed} acknowledged operations \
                         and leaves the register at {state:?}",
                        op.call.describe(),
                        op.invoke,
                        op.complete,
                    ),
                );
            }
            Verdict::Unknown(why) => r.undecided(format!("register {key}: {why}")),
        }
    }
    r
}

enum Verdict {
    Linearizable {
        steps: u64,
    },
    Not {
        /// The operation whose return the deepest search could not get past.
        stuck: usize,
        placed: usize,
        state: State,
    },
    Unknown(String),
}

/// An event list with O(1) removal and reinsertion (dancing links); entry 0 is the head.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn remove(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `remove(e)`; removals must be undone in reverse order.
    fn restore(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }
}

fn search(ops: &[LinOp], init: State, step_limit: u64, memo_limit: usize) -> Verdict {
    // Events in history order: (history index, op, is_return). Entry ids start at 1.
    let mut evs: Vec<(usize, usize, bool)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        evs.push((op.invoke, i, false));
        if op.must {
            evs.push((op.complete, i, true));
        }
    }
    evs.sort_unstable();
    let m = evs.len();
    let mut list = Events {
        next: (1..=m + 1).map(|i| if i <= m { i } else { NIL }).collect(),
        prev: (0..=m).map(|i| i.saturating_sub(1)).collect(),
    };
    let mut call_of = vec![0usize; ops.len()];
    let mut ret_of = vec![NIL; ops.len()];
    for (e, (_, op, ret)) in evs.iter().enumerate() {
        if *ret {
            ret_of[*op] = e + 1;
        } else {
            call_of[*op] = e + 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(0x5EED_F011_0000_0001);
    let zobrist: Vec<(u64, u64)> = ops.iter().map(|_| (rng.random(), rng.random())).collect();

    let total = ops.iter().filter(|o| o.must).count();
    let mut remaining = total;
    let mut state = init;
    let mut hash = (0u64, 0u64);
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut memo: HashSet<(u64, u64, u64, u64)> = HashSet::new();
    let mut steps = 0u64;
    // The deepest point reached, for the report.
    let mut best = (0usize, 0usize, init);
    let mut entry = list.next[0];
    loop {
        if remaining == 0 {
            return Verdict::Linearizable { steps };
        }
        steps += 1;
        if steps > step_limit || memo.len() > memo_limit {
            return Verdict::Unknown(format!(
                "the search passed its bound ({steps} steps, {} memo entries) with {} of {} \
                 acknowledged operations placed",
                memo.len(),
                total - remaining,
                total,
            ));
        }
        let is_return = entry != NIL && evs[entry - 1].2;
        if entry != NIL && !is_return {
            let i = evs[entry - 1].1;
            if let Some(next) = ops[i].call.step(state) {
                let h = (hash.0 ^ zobrist[i].0, hash.1 ^ zobrist[i].1);
                if memo.insert((h.0, h.1, next.0, next.1)) {
                    stack.push((i, state));
                    state = next;
                    hash = h;
                    list.remove(call_of[i]);
                    if ops[i].must {
                        list.remove(ret_of[i]);
                        remaining -= 1;
                    }
                    entry = list.next[0];
                    continue;
                }
            }
            entry = list.next[entry];
            continue;
        }
        // A return whose operation is not placed (or the end): back up.
        if entry != NIL {
            let placed = total - remaining;
            if placed >= best.1 {
                best = (evs[entry - 1].1, placed, state);
            }
        }
        let Some((i, before)) = stack.pop() else {
            let (stuck, placed, state) = best;
            return Verdict::Not {
                stuck,
                placed,
                state,
            };
        };
        state = before;
        hash = (hash.0 ^ zobrist[i].0, hash.1 ^ zobrist[i].1);
        if ops[i].must {
            list.restore(ret_of[i]);
            remaining += 1;
        }
        list.restore(call_of[i]);
        entry = list.next[call_of[i]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a history from (process, type, body) events in order.
    fn history(events: Vec<(u64, OpType, Body)>) -> Vec<Op> {
        events
            .into_iter()
            .enumerate()
            .map(|(index, (process, kind, body))| Op {
                index,
                time: index as u64,
                process,
                kind,
                body,
                error: None,
            })
            .collect()
    }

    fn read(lsn: Option<u64>, value: Option<u64>) -> Body {
        Body::Read { key: 0, lsn, value }
    }

    fn cas(expected: u64, new: u64, lsn: Option<u64>) -> Body {
        Body::Cas {
            key: 0,
            expected,
            new,
            lsn,
        }
    }

    use OpType::{Fail, Info, Invoke, Ok as Done};

    fn verdict(h: &[Op]) -> CheckResult {
        check(h, &HashMap::new())
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = history(vec![
            (0, Invoke, read(None, None)),
            (0, Done, read(Some(0), Some(0))),
            (0, Invoke, cas(0, 7, None)),
            (0, Done, cas(0, 7, Some(1))),
            (1, Invoke, read(None, None)),
            (1, Done, read(Some(1), Some(7))),
            (1, Invoke, cas(1, 9, None)),
            (1, Done, cas(1, 9, Some(2))),
        ]);
        let r = verdict(&h);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.stats["operations"], 4);
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        // The read overlaps the write, so it may see the register before or after it.
        for seen in [(0, 0), (1, 5)] {
            let h = history(vec![
                (0, Invoke, cas(0, 5, None)),
                (1, Invoke, read(None, None)),
                (1, Done, read(Some(seen.0), Some(seen.1))),
                (0, Done, cas(0, 5, Some(1))),
            ]);
            assert!(verdict(&h).valid, "{seen:?}");
        }
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let h = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (0, Done, cas(0, 5, Some(1))),
            (1, Invoke, read(None, None)),
            (1, Done, read(Some(0), Some(0))),
        ]);
        let r = verdict(&h);
        assert!(!r.valid);
        assert_eq!(r.anomalies[0].kind, "nonlinearizable");
        assert_eq!(r.anomalies[0].ops, vec![2, 3]);
    }

    #[test]
    fn a_read_cannot_see_a_write_before_it_was_invoked() {
        let h = history(vec![
            (1, Invoke, read(None, None)),
            (1, Done, read(Some(1), Some(5))),
            (0, Invoke, cas(0, 5, None)),
            (0, Done, cas(0, 5, Some(1))),
        ]);
        assert!(!verdict(&h).valid);
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        // It happened: a later read sees it.
        let happened = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (0, Info, cas(0, 5, None)),
            (1, Invoke, read(None, None)),
            (1, Done, read(Some(0), Some(0))),
            (2, Invoke, read(None, None)),
            (2, Done, read(Some(1), Some(5))),
        ]);
        assert!(verdict(&happened).valid);
        // It never happened: another write took its place.
        let never = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (0, Info, cas(0, 5, None)),
            (1, Invoke, cas(0, 6, None)),
            (1, Done, cas(0, 6, Some(1))),
            (2, Invoke, read(None, None)),
            (2, Done, read(Some(1), Some(6))),
        ]);
        assert!(verdict(&never).valid);
        // Unfinished operations count as unknown too.
        let unfinished = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (2, Invoke, read(None, None)),
            (2, Done, read(Some(1), Some(5))),
        ]);
        assert!(verdict(&unfinished).valid);
    }

    #[test]
    fn a_failed_write_must_not_be_seen() {
        let h = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (0, Fail, cas(0, 5, None)),
            (1, Invoke, read(None, None)),
            (1, Done, read(Some(1), Some(5))),
        ]);
        assert!(!verdict(&h).valid);
    }

    #[test]
    fn two_writes_cannot_both_win_the_same_lsn() {
        let h = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (1, Invoke, cas(0, 6, None)),
            (0, Done, cas(0, 5, Some(1))),
            (1, Done, cas(0, 6, Some(1))),
        ]);
        assert!(!verdict(&h).valid);
        // Nor may a write report an LSN other than the one after what it expected.
        let h = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (0, Done, cas(0, 5, Some(2))),
        ]);
        assert!(!verdict(&h).valid);
    }

    #[test]
    fn registers_are_checked_apart_and_start_where_told() {
        let mut h = history(vec![
            (0, Invoke, read(None, None)),
            (0, Done, read(Some(4), Some(0))),
        ]);
        h.push(Op {
            index: 2,
            time: 2,
            process: 1,
            kind: Invoke,
            body: Body::Read {
                key: 1,
                lsn: None,
                value: None,
            },
            error: None,
        });
        h.push(Op {
            index: 3,
            time: 3,
            process: 1,
            kind: Done,
            body: Body::Read {
                key: 1,
                lsn: Some(0),
                value: Some(0),
            },
            error: None,
        });
        let initial = HashMap::from([(0, 4), (1, 0)]);
        let r = check(&h, &initial);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.stats["registers"], 2);
        assert!(!check(&h, &HashMap::new()).valid);
    }

    #[test]
    fn many_unknown_writes_do_not_blow_up_the_search() {
        // 40 writers time out on the same LSN; one of them won, and reads tell which.
        let mut ev = Vec::new();
        for p in 0..40u64 {
            ev.push((p, Invoke, cas(0, 100 + p, None)));
        }
        for p in 0..40u64 {
            ev.push((p, Info, cas(0, 100 + p, None)));
        }
        for p in 0..20u64 {
            ev.push((1000 + p, Invoke, read(None, None)));
            ev.push((1000 + p, Done, read(Some(1), Some(117))));
        }
        let r = verdict(&history(ev));
        assert!(r.valid, "{r:?}");
        assert!(r.stats["search-steps"] < 100_000, "{r:?}");
    }

    #[test]
    fn past_its_bound_the_verdict_is_unknown_not_a_pass() {
        let h = history(vec![
            (0, Invoke, cas(0, 5, None)),
            (1, Invoke, cas(1, 6, None)),
            (0, Done, cas(0, 5, Some(1))),
            (1, Done, cas(1, 6, Some(2))),
        ]);
        assert!(verdict(&h).valid);
        let r = check_bounded(&h, &HashMap::new(), 1, 100);
        assert!(!r.valid);
        assert!(r.unknown.is_some());
        assert!(r.anomalies.is_empty());
    }
}
