//! A linearizability search in the style of Wing & Gong with Lowe's memoization (the
//! algorithm of Knossos and Porcupine), generic over a sequential model.
//!
//! The history is a list of operations with a call time and a return time; an
//! operation that never returned (an unknown outcome) has no return time: it may be
//! linearized at any point after its call, or never take effect at all (Jepsen's
//! indeterminate operations). The search walks a doubly linked list of call and return events,
//! linearizing pending calls whose model step succeeds and backtracking at the first
//! return whose operation is not yet linearized; a set of (linearized operations, model
//! state) pairs already explored cuts repeated work.
//!
//! Never-returned operations that are interchangeable (same effect from every state,
//! e.g. blind writes of values nobody read) can share an *exchange class*: the search
//! then only linearizes them in call order, which avoids exploring every subset of them.
//! This is exact: they stay pending until the end, so the earliest-called one can stand
//! in for any other.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// An operation with its observed result.
    type Op;
    /// The initial state.
    fn init(&self) -> Self::State;
    /// The state after `op` if `op` (with its result) is legal in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Entry<O> {
    /// Call time.
    pub call: u64,
    /// Return time; `None` if it never returned (unknown outcome).
    pub ret: Option<u64>,
    /// Exchange class of a never-returned operation (see the module docs).
    pub class: Option<u32>,
    pub op: O,
}

/// Where the search got stuck, for a history that is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// Most operations linearized on any path.
    pub linearized: usize,
    /// Index (into the input) of the operation that could not be linearized before
    /// its return on that deepest path.
    pub stuck_op: usize,
}

/// Result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Witness),
    /// The deadline passed first: no verdict (never a pass).
    Timeout {
        explored: u64,
    },
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For node k >= 1: (op index, is_call).
    what: Vec<(usize, bool)>,
    call_node: Vec<usize>,
    ret_node: Vec<usize>,
}

impl Events {
    fn new<O>(ops: &[Entry<O>]) -> Events {
        let mut evs: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, e) in ops.iter().enumerate() {
            evs.push((e.call, 0, i));
            // Calls sort before returns at equal times: ties count as concurrent.
            evs.push((e.ret.unwrap_or(u64::MAX), 1, i));
        }
        evs.sort_unstable();
        let len = evs.len() + 1;
        let mut ev = Events {
            next: vec![NIL; len],
            prev: vec![NIL; len],
            what: vec![(0, false); len],
            call_node: vec![0; ops.len()],
            ret_node: vec![0; ops.len()],
        };
        for (k, (_, kind, i)) in evs.iter().enumerate() {
            let node = k + 1;
            ev.prev[node] = node - 1;
            ev.next[node - 1] = node;
            ev.what[node] = (*i, *kind == 0);
            if *kind == 0 {
                ev.call_node[*i] = node;
            } else {
                ev.ret_node[*i] = node;
            }
        }
        ev
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.ret_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_node[op]);
        self.relink(self.call_node[op]);
    }
}

/// Explored configurations that failed: for each (linearized ops outside exchange
/// classes, state), the minimal vectors of per-class counts that failed. A
/// configuration with the same ops and state and at least those counts fails too: the
/// extra class members it used could have been linearized at the end instead.
struct Failed<S> {
    map: HashMap<(Vec<u64>, S), Vec<Vec<u32>>>,
}

impl<S: Clone + Eq + Hash> Failed<S> {
    fn dominated(&self, bits: &[u64], state: &S, counts: &[u32]) -> bool {
        // Borrowing lookups with a tuple key need an owned key; the clone is cheap.
        self.map
            .get(&(bits.to_vec(), state.clone()))
            .is_some_and(|vs| vs.iter().any(|v| v.iter().zip(counts).all(|(a, b)| a <= b)))
    }

    fn insert(&mut self, bits: Vec<u64>, state: S, counts: Vec<u32>) {
        let vs = self.map.entry((bits, state)).or_default();
        vs.retain(|v| !v.iter().zip(&counts).all(|(a, b)| a >= b));
        vs.push(counts);
    }
}

/// One level of the depth-first search: the operation linearized to get here, the
/// state before it, and which candidate it was.
struct Frame<S> {
    op: usize,
    prev: S,
    candidate: usize,
}

/// Checks whether `ops` is linearizable with respect to `model`, giving up at `deadline`.
///
/// Depth first; at each configuration the candidates are the pending calls before the
/// first pending return, operations outside exchange classes first (so configurations
/// with few class members linearized are explored, and remembered, first). A class
/// member whose step would not change the state is not tried: it never returned, so it
/// may as well never take effect.
pub fn check<M: Model>(model: &M, ops: &[Entry<M::Op>], deadline: Instant) -> Verdict {
    let n = ops.len();
    let mut ev = Events::new(ops);
    // Exchange classes, numbered densely; members in call order.
    let mut class_index: HashMap<u32, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut class_of: Vec<Option<usize>> = vec![None; n];
    for (i, e) in ops.iter().enumerate() {
        if let (Some(c), None) = (e.class, e.ret) {
            let k = *class_index.entry(c).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[k].push(i);
            class_of[i] = Some(k);
        }
    }
    let mut class_pos: Vec<u32> = vec![0; n];
    for m in &mut members {
        m.sort_by_key(|&i| (ops[i].call, i));
        for (pos, &i) in m.iter().enumerate() {
            class_pos[i] = pos as u32;
        }
    }
    let mut counts: Vec<u32> = vec![0; members.len()];
    let words = n.div_ceil(64).max(1);
    let mut bits = vec![0u64; words];
    let mut state = model.init();
    let mut failed = Failed {
        map: HashMap::new(),
    };
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut deepest = Witness {
        linearized: 0,
        stuck_op: 0,
    };
    let mut explored: u64 = 0;
    let mut start = 0;
    // Operations that returned and are not linearized yet: when none is left, the
    // history is linearizable (operations that never returned may never take effect).
    let mut pending_returned = ops.iter().filter(|e| e.ret.is_some()).count();
    loop {
        if pending_returned == 0 {
            return Verdict::Linearizable;
        }
        explored += 1;
        if explored.is_multiple_of(1024) && Instant::now() >= deadline {
            return Verdict::Timeout { explored };
        }
        // Candidates: pending calls before the first pending return.
        let mut normal = Vec::new();
        let mut classed = Vec::new();
        let mut blocker = None;
        let mut cur = ev.next[HEAD];
        while cur != NIL {
            let (i, is_call) = ev.what[cur];
            if !is_call {
                blocker = Some(i);
                break;
            }
            match class_of[i] {
                None => normal.push(i),
                Some(k) if class_pos[i] == counts[k] => classed.push(i),
                Some(_) => {}
            }
            cur = ev.next[cur];
        }
        normal.extend(classed);
        let mut advanced = false;
        for (k, &i) in normal.iter().enumerate().skip(start) {
            let Some(next_state) = model.step(&state, &ops[i].op) else {
                continue;
            };
            if class_of[i].is_some() && next_state == state {
                // A class member that changes nothing now might as well never happen.
                continue;
            }
            match class_of[i] {
                Some(c) => counts[c] += 1,
                None => bits[i / 64] |= 1 << (i % 64),
            }
            if failed.dominated(&bits, &next_state, &counts) {
                match class_of[i] {
                    Some(c) => counts[c] -= 1,
                    None => bits[i / 64] &= !(1 << (i % 64)),
                }
                continue;
            }
            stack.push(Frame {
                op: i,
                prev: std::mem::replace(&mut state, next_state),
                candidate: k,
            });
            ev.lift(i);
            if ops[i].ret.is_some() {
                pending_returned -= 1;
            }
            advanced = true;
            break;
        }
        if advanced {
            start = 0;
            continue;
        }
        // Dead end: remember it, and backtrack.
        if stack.len() >= deepest.linearized {
            deepest = Witness {
                linearized: stack.len(),
                stuck_op: blocker.unwrap_or(0),
            };
        }
        let Some(frame) = stack.pop() else {
            return Verdict::NotLinearizable(deepest);
        };
        failed.insert(bits.clone(), state.clone(), counts.clone());
        ev.unlift(frame.op);
        if ops[frame.op].ret.is_some() {
            pending_returned += 1;
        }
        match class_of[frame.op] {
            Some(c) => counts[c] -= 1,
            None => bits[frame.op / 64] &= !(1 << (frame.op % 64)),
        }
        state = frame.prev;
        start = frame.candidate + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A plain register of small integers, for testing the search itself.
    struct Reg;
    #[derive(Clone, Debug)]
    enum RegOp {
        Write(u32),
        Read(u32),
    }
    impl Model for Reg {
        type State = u32;
        type Op = RegOp;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, s: &u32, op: &RegOp) -> Option<u32> {
            match op {
                RegOp::Write(v) => Some(*v),
                RegOp::Read(v) => (v == s).then_some(*s),
            }
        }
    }

    fn e(call: u64, ret: Option<u64>, op: RegOp) -> Entry<RegOp> {
        Entry {
            call,
            ret,
            class: None,
            op,
        }
    }

    fn run(ops: &[Entry<RegOp>]) -> Verdict {
        check(&Reg, ops, Instant::now() + Duration::from_secs(10))
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        use RegOp::*;
        assert_eq!(run(&[]), Verdict::Linearizable);
        let ok = [
            e(0, Some(10), Write(1)),
            e(20, Some(30), Read(1)),
            e(25, Some(40), Write(2)),
            // Concurrent with the write of 2: may see either value.
            e(26, Some(35), Read(1)),
            e(50, Some(60), Read(2)),
        ];
        assert_eq!(run(&ok), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_rejected() {
        use RegOp::*;
        let h = [
            e(0, Some(10), Write(1)),
            e(20, Some(30), Write(2)),
            e(40, Some(50), Read(1)),
        ];
        match run(&h) {
            Verdict::NotLinearizable(w) => assert_eq!(w.stuck_op, 2),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        use RegOp::*;
        // The unknown write of 5 is seen long after its call: fine.
        let late = [
            e(0, None, Write(5)),
            e(10, Some(20), Read(0)),
            e(100, Some(110), Read(5)),
        ];
        assert_eq!(run(&late), Verdict::Linearizable);
        // Never seen: fine too.
        let never = [e(0, None, Write(5)), e(10, Some(20), Read(0))];
        assert_eq!(run(&never), Verdict::Linearizable);
        // But not before it was called.
        let early = [e(0, Some(5), Read(5)), e(10, None, Write(5))];
        assert!(matches!(run(&early), Verdict::NotLinearizable(_)));
        // And once overwritten by a later acknowledged write, it cannot come back
        // unless it took effect after that write.
        let back = [
            e(0, None, Write(5)),
            e(1, Some(2), Read(5)),
            e(10, Some(20), Write(6)),
            e(30, Some(40), Read(5)),
        ];
        assert!(matches!(run(&back), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn exchange_classes_keep_many_unknown_writes_cheap() {
        use RegOp::*;
        // 60 blind unknown writes nobody reads, then a non-linearizable tail: without
        // classes the search would explore 2^60 subsets before giving up.
        let mut h: Vec<Entry<RegOp>> = (0..60)
            .map(|k| Entry {
                call: k,
                ret: None,
                class: Some(1),
                op: Write(1000),
            })
            .collect();
        h.push(e(100, Some(110), Write(1)));
        h.push(e(120, Some(130), Write(2)));
        h.push(e(140, Some(150), Read(1)));
        let started = Instant::now();
        assert!(matches!(run(&h), Verdict::NotLinearizable(_)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn unknown_operations_need_not_take_effect_at_the_end() {
        use RegOp::*;
        // Several identical-effect unknown writes after the last read: the search must
        // not require them to be linearized (once one is, the others change nothing).
        let mut h = vec![e(0, Some(10), Write(1))];
        for k in 0..4 {
            h.push(Entry {
                call: 20 + k,
                ret: None,
                class: Some(1),
                op: Write(9),
            });
        }
        h.push(e(30, Some(40), Read(1)));
        assert_eq!(run(&h), Verdict::Linearizable);
    }

    #[test]
    fn deadline_gives_timeout_not_pass() {
        use RegOp::*;
        let mut h: Vec<Entry<RegOp>> = (0..40).map(|k| e(k, None, Write(k as u32 + 7))).collect();
        h.push(e(100, Some(110), Write(1)));
        h.push(e(120, Some(130), Write(2)));
        h.push(e(140, Some(150), Read(1)));
        let v = check(&Reg, &h, Instant::now());
        assert!(matches!(v, Verdict::Timeout { .. }), "{v:?}");
    }
}
