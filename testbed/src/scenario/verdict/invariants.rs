//! The invariants a run must keep, checked against what it recorded. Pure.
//!
//! The evidence: every action's outcome (the acks), the union of every event
//! any client received ([`SeenEvents`]), each client's final mirror, and the
//! origin's committed state of each room.
//!
//! 1. **every action resolved** — no action is left without an outcome and
//!    none failed without one (an action whose fate is unknown would make
//!    the gift sums below meaningless).
//! 2. **no acknowledged gift lost, none counted twice** — per room, the
//!    origin's `gift_count` and `gift_value` equal the sums over gifts acked
//!    `Applied`; an acked gift's seq holds that gift; no action produced two
//!    gift events; no gift acked `Rejected` was counted.
//! 3. **every client converges to the origin** — each mirror equals the
//!    origin's state, and no two clients received different events at the
//!    same seq.
//! 4. **seats consistent** — a user sits on at most one seat of a room, and
//!    every client shows the origin's seats.
//! 5. **battles settled, scores = counted gifts** — every battle started was
//!    settled, and each side's final score is the sum of the gifts credited
//!    to it. A battle whose events did not all reach some client cannot be
//!    summed; that is reported, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use protocol::{ActionId, BattleId, EventKind, RoomId, RoomState, Seq};

use crate::scenario::run::record::{
    ActionRecord, ActionResult, BattleRecord, MirrorState, SeenEvents,
};

/// The verdict on one invariant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Which invariant.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found (the figures when it holds, the violation when not).
    pub detail: String,
}

/// The evidence of one run.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Every action and its outcome.
    pub actions: &'a [ActionRecord],
    /// Every event any client received.
    pub seen: &'a SeenEvents,
    /// The origin's state of each room at the end.
    pub origin: &'a BTreeMap<RoomId, RoomState>,
    /// Each client's final mirror.
    pub mirrors: &'a [MirrorState],
    /// Why waiting for convergence failed, if it did.
    pub converge_error: Option<&'a str>,
    /// The battles the run started.
    pub battles: &'a [BattleRecord],
}

/// Cluster mode: no room ever had two writers (every log's stretch after a
/// fence is the fencing node's, epochs grow, no action applied twice),
/// judged from the room logs read back after the run.
pub fn one_writer(c: &crate::cluster::ClusterEvidence) -> Check {
    let w = &c.writers;
    let (ok, detail) = match (&c.read_error, w.violations.first()) {
        (Some(e), _) => (false, format!("the room logs could not be read: {e}")),
        (None, Some(v)) => (
            false,
            format!(
                "{} violations; first: room {} seq {}: {}",
                w.violations.len(),
                v.room.0,
                v.seq,
                v.what
            ),
        ),
        (None, None) => (
            true,
            format!(
                "{} rooms, {} messages, {} fences, {} rooms moved, {} stray appends set aside (accepted by JetStream past another writer's, acknowledged by no one, read by no rebuild)",
                w.rooms, w.messages, w.fences, w.moved_rooms, w.strays
            ),
        ),
    };
    Check {
        name: "no room ever had two writers",
        ok,
        detail,
    }
}

/// Most rooms a passing check's detail names one by one.
const LISTED: usize = 12;

/// `items` joined by commas, the first [`LISTED`] of them and a count of
/// the rest (a cluster scenario has 200 rooms).
fn list(items: &[String]) -> String {
    let mut out = items[..items.len().min(LISTED)].join(", ");
    if items.len() > LISTED {
        out.push_str(&format!(", … {} more", items.len() - LISTED));
    }
    out
}

/// Check every invariant.
pub fn check(f: &Facts<'_>) -> Vec<Check> {
    vec![resolved(f), gifts(f), converged(f), seats(f), battles(f)]
}

fn resolved(f: &Facts<'_>) -> Check {
    let mut applied = 0usize;
    let mut rejected = 0usize;
    let mut busy = 0usize;
    let mut unresolved: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for a in f.actions {
        match &a.result {
            ActionResult::Applied { .. } => applied += 1,
            ActionResult::Rejected { .. } => rejected += 1,
            ActionResult::Busy => busy += 1,
            ActionResult::Failed(why) => *failed.entry(why.clone()).or_default() += 1,
            ActionResult::Unresolved => *unresolved.entry(a.name).or_default() += 1,
        }
    }
    let ok = unresolved.is_empty() && failed.is_empty();
    let mut detail = format!(
        "{} actions: {applied} applied, {rejected} rejected",
        f.actions.len()
    );
    if busy > 0 {
        let _ = write!(detail, ", {busy} not sent (too many in flight)");
    }
    if !unresolved.is_empty() {
        let n: usize = unresolved.values().sum();
        let what: Vec<String> = unresolved
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect();
        let _ = write!(detail, "; {n} NEVER RESOLVED ({})", what.join(", "));
    }
    if !failed.is_empty() {
        let n: usize = failed.values().sum();
        let what: Vec<String> = failed.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let _ = write!(
            detail,
            "; {n} FAILED without an outcome ({})",
            what.join(", ")
        );
    }
    Check {
        name: "every action resolved",
        ok,
        detail,
    }
}

fn gifts(f: &Facts<'_>) -> Check {
    let mut problems = Vec::new();
    // Sums of applied gifts per room.
    let mut acked: BTreeMap<RoomId, (u64, u64)> = BTreeMap::new();
    let mut by_id: BTreeMap<ActionId, &ActionRecord> = BTreeMap::new();
    for a in f.actions {
        match a.result {
            ActionResult::Applied { id, .. } | ActionResult::Rejected { id, .. } => {
                by_id.insert(id, a);
            }
            _ => {}
        }
        if let (ActionResult::Applied { .. }, Some(g)) = (&a.result, a.gift) {
            let e = acked.entry(a.room).or_default();
            e.0 += u64::from(g.count);
            e.1 += g.value;
        }
    }
    let rooms: BTreeSet<RoomId> = f.origin.keys().chain(acked.keys()).copied().collect();
    let (mut total_count, mut total_value) = (0u64, 0u64);
    for room in &rooms {
        let (count, value) = acked.get(room).copied().unwrap_or_default();
        total_count += count;
        total_value += value;
        match f.origin.get(room) {
            Some(o) if o.gift_count == count && o.gift_value == value => {}
            Some(o) => problems.push(format!(
                "{room}: the origin counts {} gifts worth {}, the acks say {count} worth {value}",
                o.gift_count, o.gift_value
            )),
            None => problems.push(format!("{room}: unknown to the origin")),
        }
    }
    // What the clients saw: each acked gift at its seq, each action once.
    let mut causes: BTreeMap<ActionId, Vec<(RoomId, Seq)>> = BTreeMap::new();
    for (room, events) in &f.seen.rooms {
        for e in events.values() {
            if let (EventKind::Gift { .. }, Some(cause)) = (&e.kind, e.cause) {
                causes.entry(cause).or_default().push((*room, e.seq));
            }
        }
    }
    for (id, at) in &causes {
        if at.len() > 1 {
            let places: Vec<String> = at.iter().map(|(r, s)| format!("{r}@{}", s.0)).collect();
            problems.push(format!("gift {id:?} counted twice ({})", places.join(", ")));
        }
        if let Some(a) = by_id.get(id) {
            if let ActionResult::Rejected { reason, .. } = a.result {
                problems.push(format!(
                    "gift {id:?} was acked Rejected ({reason}) but counted at {}@{}",
                    at[0].0, at[0].1 .0
                ));
            }
        }
    }
    for a in f.actions {
        let (ActionResult::Applied { id, seq }, Some(_)) = (&a.result, a.gift) else {
            continue;
        };
        let Some(e) = f.seen.rooms.get(&a.room).and_then(|m| m.get(seq)) else {
            continue;
        };
        if e.cause != Some(*id) || !matches!(e.kind, EventKind::Gift { .. }) {
            problems.push(format!(
                "gift {id:?} was acked at {}@{} but that event is {:?} caused by {:?}",
                a.room, seq.0, e.kind, e.cause
            ));
        }
    }
    let ok = problems.is_empty();
    let detail = if ok {
        format!(
            "{total_count} gifts worth {total_value} acked, and exactly those counted at the origin"
        )
    } else {
        problems.join("; ")
    };
    Check {
        name: "no acked gift lost or counted twice",
        ok,
        detail,
    }
}

fn converged(f: &Facts<'_>) -> Check {
    let mut problems = Vec::new();
    if let Some(e) = f.converge_error {
        problems.push(e.to_owned());
    }
    let mut differ = 0usize;
    for m in f.mirrors {
        match f.origin.get(&m.state.room) {
            Some(o) if *o == m.state => {}
            Some(o) => {
                differ += 1;
                if differ <= 3 {
                    problems.push(format!(
                        "client {} shows {} at seq {}, the origin is at seq {}",
                        m.client, m.state.room, m.state.seq.0, o.seq.0
                    ));
                }
            }
            None => problems.push(format!(
                "client {} follows {}, unknown to the origin",
                m.client, m.state.room
            )),
        }
    }
    if differ > 3 {
        problems.push(format!("{differ} clients differ in all"));
    }
    for (room, seq) in &f.seen.conflicts {
        problems.push(format!(
            "two clients received different events at {room} seq {}",
            seq.0
        ));
    }
    let ok = problems.is_empty();
    let detail = if ok {
        let heads: Vec<String> = f
            .origin
            .values()
            .map(|s| format!("{} at seq {}", s.room, s.seq.0))
            .collect();
        format!(
            "{} clients match the origin ({})",
            f.mirrors.len(),
            list(&heads)
        )
    } else {
        problems.join("; ")
    };
    Check {
        name: "every client converges to the origin",
        ok,
        detail,
    }
}

fn seats(f: &Facts<'_>) -> Check {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    for (room, state) in f.origin {
        let mut users = BTreeSet::new();
        for s in &state.seats.seats {
            if let Some(u) = s.user {
                if !users.insert(u) {
                    problems.push(format!("{room}: {u} sits on two seats"));
                }
            }
        }
        if !state.seats.seats.is_empty() {
            summary.push(format!(
                "{room}: {} of {} seats taken",
                users.len(),
                state.seats.seats.len()
            ));
        }
    }
    let mut differ = 0usize;
    for m in f.mirrors {
        if let Some(o) = f.origin.get(&m.state.room) {
            if o.seats != m.state.seats {
                differ += 1;
            }
        }
    }
    if differ > 0 {
        problems.push(format!(
            "{differ} clients show seats that differ from the origin's"
        ));
    }
    let ok = problems.is_empty();
    Check {
        name: "seats consistent",
        ok,
        detail: if ok {
            format!(
                "one seat per user; every client agrees ({})",
                list(&summary)
            )
        } else {
            problems.join("; ")
        },
    }
}

fn battles(f: &Facts<'_>) -> Check {
    if f.battles.is_empty() {
        return Check {
            name: "battles settled, scores = counted gifts",
            ok: true,
            detail: "no battle in this run".into(),
        };
    }
    let mut problems = Vec::new();
    let mut verified = Vec::new();
    let mut unverifiable = Vec::new();
    for b in f.battles {
        let Some((result, settled)) = settlement(f, b.id, b.rooms) else {
            problems.push(format!("{} never settled", b.id));
            continue;
        };
        // Sum the credited gifts of each side, if every event of the battle
        // reached some client.
        let mut sums = [0u64; 2];
        let mut missing = Vec::new();
        for (side, room) in b.rooms.iter().enumerate() {
            let events = f.seen.rooms.get(room);
            let started = events.and_then(|m| {
                m.values()
                    .find(|e| matches!(&e.kind, EventKind::PkStarted(x) if x.id == b.id))
                    .map(|e| e.seq)
            });
            let end = settled.get(side).copied().flatten();
            match (events, started, end) {
                (Some(m), Some(from), Some(to)) => {
                    let have = m.range(from..=to).count() as u64;
                    let want = to.0 - from.0 + 1;
                    if have < want {
                        missing.push(format!("{room}: {} of {want} events", want - have));
                    }
                    for e in m.range(from..=to).map(|(_, e)| e) {
                        if let EventKind::Gift {
                            value,
                            pk: Some((id, _)),
                            ..
                        } = e.kind
                        {
                            if id == b.id {
                                sums[side] += value;
                            }
                        }
                    }
                }
                _ => missing.push(format!("{room}: start or settlement unseen")),
            }
        }
        if !missing.is_empty() {
            unverifiable.push(format!(
                "{} settled {}:{} (not summed: {} reached no client)",
                b.id,
                result[0],
                result[1],
                missing.join(", ")
            ));
        } else if sums != result {
            problems.push(format!(
                "{} settled {}:{} but the gifts credited to it sum to {}:{}",
                b.id, result[0], result[1], sums[0], sums[1]
            ));
        } else {
            verified.push(format!("{} {}:{}", b.id, result[0], result[1]));
        }
    }
    let ok = problems.is_empty();
    let mut detail = if ok {
        if verified.is_empty() {
            String::from("every battle settled")
        } else {
            format!("settled, scores = credited gifts: {}", verified.join(", "))
        }
    } else {
        problems.join("; ")
    };
    if !unverifiable.is_empty() {
        let _ = write!(detail, "; {}", unverifiable.join("; "));
    }
    Check {
        name: "battles settled, scores = counted gifts",
        ok,
        detail,
    }
}

/// A battle's final scores, and the seq of its settlement in each of its
/// rooms (when a client saw it).
fn settlement(
    f: &Facts<'_>,
    id: BattleId,
    rooms: [RoomId; 2],
) -> Option<([u64; 2], [Option<Seq>; 2])> {
    let mut scores = None;
    let mut seqs = [None, None];
    for (side, room) in rooms.iter().enumerate() {
        if let Some(m) = f.seen.rooms.get(room) {
            for e in m.values() {
                if let EventKind::PkSettled { result, .. } = &e.kind {
                    if result.battle == id {
                        scores = Some(result.scores);
                        seqs[side] = Some(e.seq);
                    }
                }
            }
        }
    }
    if scores.is_none() {
        // No client saw the settlement: the origin's state may still hold it.
        for room in rooms {
            let s = f.origin.get(&room)?;
            let r = s
                .battle
                .as_ref()
                .and_then(|b| b.result.as_ref())
                .into_iter()
                .chain(s.last_result.as_ref())
                .find(|r| r.battle == id);
            if let Some(r) = r {
                scores = Some(r.scores);
            }
        }
    }
    scores.map(|s| (s, seqs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::run::record::GiftSent;
    use protocol::room::{Battle, BattlePhase, BattleResult};
    use protocol::{Class, Event, GiftId, ServerTime, SessionId, UserId};

    const ROOM: RoomId = RoomId(1);

    fn id(n: u64) -> ActionId {
        ActionId {
            session: SessionId(7),
            n,
        }
    }

    fn gift_ack(n: u64, seq: u64, value: u64) -> ActionRecord {
        ActionRecord {
            client: 0,
            room: ROOM,
            class: Class::Gift,
            name: "gift",
            sent_us: n,
            latency_us: 1_000,
            result: ActionResult::Applied {
                id: id(n),
                seq: Seq(seq),
            },
            gift: Some(GiftSent {
                gift: GiftId(1),
                count: 1,
                value,
            }),
        }
    }

    fn gift_event(seq: u64, cause: u64, value: u64, total: u64) -> Event {
        Event {
            seq: Seq(seq),
            at: ServerTime(seq),
            cause: Some(id(cause)),
            kind: EventKind::Gift {
                from: UserId(5),
                gift: GiftId(1),
                count: 1,
                value,
                room_total: total,
                pk: None,
            },
        }
    }

    fn origin(count: u64, value: u64, seq: u64) -> BTreeMap<RoomId, RoomState> {
        let mut s = RoomState::new(ROOM);
        s.gift_count = count;
        s.gift_value = value;
        s.seq = Seq(seq);
        BTreeMap::from([(ROOM, s)])
    }

    fn run(
        actions: &[ActionRecord],
        seen: &SeenEvents,
        origin: &BTreeMap<RoomId, RoomState>,
        battles: &[BattleRecord],
    ) -> Vec<Check> {
        let mirrors = vec![MirrorState {
            client: 0,
            state: origin[&ROOM].clone(),
        }];
        check(&Facts {
            actions,
            seen,
            origin,
            mirrors: &mirrors,
            converge_error: None,
            battles,
        })
    }

    fn failed(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    #[test]
    fn a_clean_run_holds() {
        let actions = [gift_ack(1, 2, 5), gift_ack(2, 3, 1)];
        let mut seen = SeenEvents::default();
        seen.handle(ROOM, &gift_event(2, 1, 5, 5));
        seen.handle(ROOM, &gift_event(3, 2, 1, 6));
        let checks = run(&actions, &seen, &origin(2, 6, 3), &[]);
        assert!(failed(&checks).is_empty(), "{checks:#?}");
        assert_eq!(checks.len(), 5);
    }

    #[test]
    fn a_planted_double_count_is_caught() {
        // One gift acked once, but counted twice by the origin.
        let actions = [gift_ack(1, 2, 5)];
        let mut seen = SeenEvents::default();
        seen.handle(ROOM, &gift_event(2, 1, 5, 5));
        seen.handle(ROOM, &gift_event(3, 1, 5, 10));
        let checks = run(&actions, &seen, &origin(2, 10, 3), &[]);
        assert_eq!(failed(&checks), vec!["no acked gift lost or counted twice"]);
        let detail = &checks[1].detail;
        assert!(detail.contains("counted twice"), "{detail}");
        assert!(detail.contains("the acks say 1 worth 5"), "{detail}");
    }

    #[test]
    fn a_lost_gift_and_an_unresolved_action_are_caught() {
        let mut lost = gift_ack(2, 3, 1);
        lost.result = ActionResult::Unresolved;
        let actions = [gift_ack(1, 2, 5), gift_ack(3, 4, 1), lost];
        let checks = run(&actions, &SeenEvents::default(), &origin(1, 5, 4), &[]);
        assert_eq!(
            failed(&checks),
            vec![
                "every action resolved",
                "no acked gift lost or counted twice"
            ]
        );
        assert!(checks[0].detail.contains("NEVER RESOLVED (gift ×1)"));
    }

    #[test]
    fn a_mirror_that_differs_is_caught() {
        let o = origin(0, 0, 9);
        let mut stale = o[&ROOM].clone();
        stale.seq = Seq(8);
        let mirrors = [MirrorState {
            client: 4,
            state: stale,
        }];
        let checks = check(&Facts {
            actions: &[],
            seen: &SeenEvents::default(),
            origin: &o,
            mirrors: &mirrors,
            converge_error: None,
            battles: &[],
        });
        assert_eq!(
            failed(&checks),
            vec!["every client converges to the origin"]
        );
        assert!(
            checks[2].detail.contains("client 4"),
            "{}",
            checks[2].detail
        );
    }

    #[test]
    fn battle_scores_must_equal_the_credited_gifts() {
        let b = BattleId(1);
        let other = RoomId(2);
        let battle = Battle {
            id: b,
            rooms: [ROOM, other],
            scores: [0, 0],
            started_at: ServerTime(0),
            ends_at: ServerTime(100),
            settles_at: ServerTime(200),
            phase: BattlePhase::Running,
            result: None,
        };
        let ev = |seq: u64, kind: EventKind| Event {
            seq: Seq(seq),
            at: ServerTime(seq),
            cause: None,
            kind,
        };
        let settled = |scores: [u64; 2]| EventKind::PkSettled {
            result: BattleResult {
                battle: b,
                rooms: [ROOM, other],
                scores,
                winner: Some(ROOM),
                forfeited_by: None,
            },
            punishment_until: ServerTime(300),
        };
        let mut gift = gift_event(3, 1, 100, 100);
        if let EventKind::Gift { pk, .. } = &mut gift.kind {
            *pk = Some((b, [100, 0]));
        }
        let record = BattleRecord {
            id: b,
            rooms: [ROOM, other],
            ends_at: ServerTime(100),
            started_us: 0,
            ends_us: 100,
        };
        let mut o = origin(1, 100, 4);
        o.insert(other, RoomState::new(other));
        for (claimed, ok) in [([100, 0], true), ([150, 0], false)] {
            let mut seen = SeenEvents::default();
            seen.handle(ROOM, &ev(2, EventKind::PkStarted(battle.clone())));
            seen.handle(ROOM, &gift);
            seen.handle(ROOM, &ev(4, settled(claimed)));
            seen.handle(other, &ev(1, EventKind::PkStarted(battle.clone())));
            seen.handle(other, &ev(2, settled(claimed)));
            let checks = check(&Facts {
                actions: &[gift_ack(1, 3, 100)],
                seen: &seen,
                origin: &o,
                mirrors: &[],
                converge_error: None,
                battles: std::slice::from_ref(&record),
            });
            assert_eq!(checks[4].ok, ok, "{:?}", checks[4]);
        }
        // Never settled.
        let checks = check(&Facts {
            actions: &[],
            seen: &SeenEvents::default(),
            origin: &o,
            mirrors: &[],
            converge_error: None,
            battles: std::slice::from_ref(&record),
        });
        assert!(!checks[4].ok);
        assert!(checks[4].detail.contains("never settled"));
    }
}
