//! Postings: one money movement of one member, planned as a value before anything is
//! written. A posting carries the change of each balance, the ledger entries that
//! explain it and what happens to the member's lots, and checks that these agree
//! ([`Posting::check`]). The planners here build postings from what the use case read
//! under the member's lock; `service::ledger` is the one writer of postings.
use chrono::{DateTime, Utc};

use super::{EntryKind, LotRemainder, LotSource, MAX_BALANCE, plan_burn};

/// A member's balances, or a signed change of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balances {
    pub available: i64,
    pub pending: i64,
    pub held: i64,
    pub lifetime: i64,
}

impl Balances {
    /// `self` changed by `delta`; `None` when a sum overflows.
    pub fn plus(&self, delta: &Balances) -> Option<Balances> {
        Some(Balances {
            available: self.available.checked_add(delta.available)?,
            pending: self.pending.checked_add(delta.pending)?,
            held: self.held.checked_add(delta.held)?,
            lifetime: self.lifetime.checked_add(delta.lifetime)?,
        })
    }

    fn within_bounds(&self) -> bool {
        [self.available, self.pending, self.held, self.lifetime]
            .iter()
            .all(|b| b.abs() <= MAX_BALANCE)
    }
}

/// A ledger entry: the signed change of each balance and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub member_id: String,
    pub transaction_id: String,
    pub kind: EntryKind,
    /// Change of the available balance.
    pub points: i64,
    pub pending_delta: i64,
    pub held_delta: i64,
    /// Available balance right after the entry.
    pub balance_after: i64,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub reason_code: Option<&'static str>,
    pub note: Option<String>,
    pub hold_id: Option<String>,
    pub return_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Entry {
    /// An entry of `kind` that moves nothing yet; the caller sets what it moves.
    pub fn of(kind: EntryKind) -> Self {
        Self {
            member_id: String::new(),
            transaction_id: String::new(),
            kind,
            points: 0,
            pending_delta: 0,
            held_delta: 0,
            balance_after: 0,
            order_id: None,
            store_id: None,
            reason_code: None,
            note: None,
            hold_id: None,
            return_id: None,
            created_at: DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// A lot to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLot {
    pub member_id: String,
    pub transaction_id: String,
    pub order_id: Option<String>,
    pub source: LotSource,
    pub pending: bool,
    pub points: i64,
    /// Less than `points` when the credit first paid off a negative balance, or when the
    /// posting spent some of it at once.
    pub remaining: i64,
    pub earned_at: DateTime<Utc>,
    pub available_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a posting does to the member's lots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LotOp {
    Create(NewLot),
    /// Points taken out of spendable lots, `(lot id, points)` each, recorded as
    /// allocations (of the hold, when there is one).
    Burn {
        takes: Vec<(i64, i64)>,
        hold_id: Option<String>,
    },
    /// Points a hold had taken, given back to the lots they came from.
    ReleaseHold {
        hold_id: String,
        points: i64,
    },
    /// A pending lot made spendable with `remaining` of its `points` left.
    MakeAvailable {
        lot_id: i64,
        points: i64,
        remaining: i64,
    },
    /// A lot's remainder expired.
    Expire {
        lot_id: i64,
        points: i64,
    },
    /// A return took `from_remaining` points out of the order's lot (pending or spendable)
    /// and counts `charged` more as reversed.
    Reverse {
        lot_id: i64,
        pending: bool,
        from_remaining: i64,
        charged: i64,
    },
}

/// The available balance was short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insufficient;

/// Lots to give a new credit.
#[derive(Debug, Clone)]
pub struct Credit {
    pub points: i64,
    pub source: LotSource,
    /// Pending for the return window, or spendable at once.
    pub pending: bool,
    /// Counts toward the member's lifetime earned points.
    pub counts_as_earned: bool,
    pub order_id: Option<String>,
    pub available_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Ids of a new lot not yet written (a posting that spends points it has just credited
/// takes them out of the new lot directly).
const NEW_LOT_IDS: i64 = i64::MAX - 1_000;

/// One money movement of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub member_id: String,
    pub transaction_id: String,
    pub at: DateTime<Utc>,
    /// The member's balances, read under the member's lock.
    pub before: Balances,
    pub delta: Balances,
    pub entries: Vec<Entry>,
    pub lots: Vec<LotOp>,
}

impl Posting {
    pub fn new(
        member_id: impl Into<String>,
        transaction_id: impl Into<String>,
        before: Balances,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            member_id: member_id.into(),
            transaction_id: transaction_id.into(),
            at,
            before,
            delta: Balances::default(),
            entries: Vec::new(),
            lots: Vec::new(),
        }
    }

    /// The balances once the posting is written (saturated on overflow, which
    /// [`Self::check`] refuses).
    pub fn after(&self) -> Balances {
        self.before.plus(&self.delta).unwrap_or(Balances {
            available: i64::MAX,
            ..self.before
        })
    }

    /// The balances after the posting stay within their bounds (else the caller asked
    /// for too much: OUT_OF_RANGE, not a bug).
    pub fn in_range(&self) -> bool {
        self.before
            .plus(&self.delta)
            .is_some_and(|after| after.within_bounds())
    }

    /// Appends an entry moving `points` of the available balance and the given pending
    /// and held deltas; the posting's deltas and the entry's balance follow.
    pub fn push(
        &mut self,
        kind: EntryKind,
        points: i64,
        pending_delta: i64,
        held_delta: i64,
    ) -> &mut Entry {
        self.delta.available = self.delta.available.saturating_add(points);
        self.delta.pending = self.delta.pending.saturating_add(pending_delta);
        self.delta.held = self.delta.held.saturating_add(held_delta);
        let entry = Entry {
            member_id: self.member_id.clone(),
            transaction_id: self.transaction_id.clone(),
            points,
            pending_delta,
            held_delta,
            balance_after: self.available_now(),
            created_at: self.at,
            ..Entry::of(kind)
        };
        self.entries.push(entry);
        let last = self.entries.len() - 1;
        &mut self.entries[last]
    }

    /// The available balance after the entries so far.
    fn available_now(&self) -> i64 {
        self.before.available.saturating_add(self.delta.available)
    }

    /// Of `credited` points that the last entry brought to the available balance, those
    /// that paid off a negative balance: no lot holds them.
    pub fn debt_paid(&self, credited: i64) -> i64 {
        (credited - self.available_now().max(0)).clamp(0, credited)
    }

    /// Credits new points with an entry of `kind`, and a lot that holds them (less what
    /// paid off a debt).
    pub fn credit(&mut self, kind: EntryKind, c: Credit) -> &mut Entry {
        let p = c.points;
        if c.counts_as_earned {
            self.delta.lifetime = self.delta.lifetime.saturating_add(p);
        }
        let (available, pending) = if c.pending { (0, p) } else { (p, 0) };
        self.push(kind, available, pending, 0);
        if p > 0 {
            let remaining = if c.pending { p } else { p - self.debt_paid(p) };
            self.lots.push(LotOp::Create(NewLot {
                member_id: self.member_id.clone(),
                transaction_id: self.transaction_id.clone(),
                order_id: c.order_id,
                source: c.source,
                pending: c.pending,
                points: p,
                remaining,
                earned_at: self.at,
                available_at: if c.pending { c.available_at } else { self.at },
                expires_at: c.expires_at,
            }));
        }
        let last = self.entries.len() - 1;
        &mut self.entries[last]
    }

    /// Spends `points` of the available balance (into held, for a hold) with an entry of
    /// `kind`, burning them from `spendable` first-expiring first.
    pub fn spend(
        &mut self,
        kind: EntryKind,
        points: i64,
        hold_id: Option<&str>,
        spendable: &[LotRemainder],
    ) -> Result<&mut Entry, Insufficient> {
        if points < 0 || self.available_now() < points {
            return Err(Insufficient);
        }
        self.take_from_lots(points, spendable, hold_id.map(str::to_owned));
        let held = if hold_id.is_some() { points } else { 0 };
        let entry = self.push(kind, -points, 0, held);
        entry.hold_id = hold_id.map(str::to_owned);
        Ok(entry)
    }

    /// Takes `points` out of the lots: `spendable` as read, less what this posting already
    /// took, plus the lots it created (which expire last; not for a hold). Takes what there is; a posting
    /// whose lots then disagree with its balance fails [`Self::check`].
    pub fn take_from_lots(
        &mut self,
        points: i64,
        spendable: &[LotRemainder],
        hold_id: Option<String>,
    ) {
        if points <= 0 {
            return;
        }
        let mut lots: Vec<LotRemainder> = spendable.to_vec();
        for op in &self.lots {
            let (lot_id, taken) = match op {
                LotOp::Burn { takes, .. } => {
                    for &(id, take) in takes {
                        reduce(&mut lots, id, take);
                    }
                    continue;
                }
                LotOp::Reverse {
                    lot_id,
                    pending: false,
                    from_remaining,
                    ..
                } => (*lot_id, *from_remaining),
                LotOp::Expire { lot_id, points } => (*lot_id, *points),
                _ => continue,
            };
            reduce(&mut lots, lot_id, taken);
        }
        for (i, op) in self.lots.iter().enumerate() {
            // A hold's points must come from lots with ids, which its allocations name
            // (a void gives them back there).
            if let LotOp::Create(lot) = op
                && !lot.pending
                && hold_id.is_none()
            {
                lots.push(LotRemainder {
                    lot_id: NEW_LOT_IDS + i as i64,
                    remaining: lot.remaining,
                    expires_at: lot.expires_at,
                });
            }
        }
        let mut takes = Vec::new();
        for (lot_id, take) in plan_burn(&lots, points) {
            match usize::try_from(lot_id - NEW_LOT_IDS)
                .ok()
                .filter(|_| lot_id >= NEW_LOT_IDS)
            {
                Some(i) => {
                    if let Some(LotOp::Create(lot)) = self.lots.get_mut(i) {
                        lot.remaining -= take;
                    }
                }
                None => takes.push((lot_id, take)),
            }
        }
        if !takes.is_empty() {
            self.lots.push(LotOp::Burn { takes, hold_id });
        }
    }

    /// Checks that the posting agrees with itself; an `Err` is a bug in its planner.
    /// - the entries sum to the deltas, and each shows the balance right after it;
    /// - every entry belongs to the posting's member and transaction;
    /// - the balances after stay within their bounds, pending and held never negative;
    /// - lots never go negative: every amount is positive, a new lot keeps at most what
    ///   it was credited;
    /// - what the lots gain equals what the balances gain: spendable lots hold the
    ///   available balance (none of it while negative), pending lots the pending one.
    pub fn check(&self) -> Result<(), String> {
        let mut sum = Balances::default();
        for e in &self.entries {
            if e.member_id != self.member_id || e.transaction_id != self.transaction_id {
                return Err(format!("entry {e:?} is another member's or transaction's"));
            }
            sum.available = add(sum.available, e.points)?;
            sum.pending = add(sum.pending, e.pending_delta)?;
            sum.held = add(sum.held, e.held_delta)?;
            if e.balance_after != add(self.before.available, sum.available)? {
                return Err(format!("entry {e:?} shows the wrong balance"));
            }
        }
        let d = &self.delta;
        if (sum.available, sum.pending, sum.held) != (d.available, d.pending, d.held) {
            return Err(format!("entries sum to {sum:?}, the deltas are {d:?}"));
        }
        if !self.in_range() {
            return Err(format!("balances out of range: {:?} + {d:?}", self.before));
        }
        let after = self.after();
        if after.pending < 0 || after.held < 0 {
            return Err(format!("negative pending or held balance: {after:?}"));
        }
        let (mut spendable, mut pending) = (0i64, 0i64);
        for op in &self.lots {
            let (s, p) = lot_change(op)?;
            spendable = add(spendable, s)?;
            pending = add(pending, p)?;
        }
        let expected = after.available.max(0) - self.before.available.max(0);
        if spendable != expected {
            return Err(format!(
                "spendable lots change by {spendable}, the available balance by {expected}"
            ));
        }
        if pending != d.pending {
            return Err(format!(
                "pending lots change by {pending}, the pending balance by {}",
                d.pending
            ));
        }
        Ok(())
    }
}

fn add(a: i64, b: i64) -> Result<i64, String> {
    a.checked_add(b).ok_or_else(|| "a sum overflows".to_owned())
}

fn reduce(lots: &mut [LotRemainder], lot_id: i64, taken: i64) {
    if let Some(l) = lots.iter_mut().find(|l| l.lot_id == lot_id) {
        l.remaining -= taken;
    }
}

/// What one lot operation changes: (spendable lots, pending lots).
fn lot_change(op: &LotOp) -> Result<(i64, i64), String> {
    let positive = |amounts: &[i64]| {
        if amounts.iter().all(|a| *a >= 0) {
            Ok(())
        } else {
            Err(format!("negative amount in {op:?}"))
        }
    };
    Ok(match op {
        LotOp::Create(lot) => {
            if lot.points <= 0 || !(0..=lot.points).contains(&lot.remaining) {
                return Err(format!("lot {lot:?} keeps more than it was given"));
            }
            if lot.pending {
                (0, lot.remaining)
            } else {
                (lot.remaining, 0)
            }
        }
        LotOp::Burn { takes, .. } => {
            if takes.iter().any(|(_, t)| *t <= 0) {
                return Err(format!("empty take in {op:?}"));
            }
            (-takes.iter().map(|(_, t)| t).sum::<i64>(), 0)
        }
        LotOp::ReleaseHold { points, .. } => {
            positive(&[*points])?;
            (*points, 0)
        }
        LotOp::MakeAvailable {
            points, remaining, ..
        } => {
            if !(0..=*points).contains(remaining) {
                return Err(format!("{op:?} makes more available than the lot held"));
            }
            (*remaining, -points)
        }
        LotOp::Expire { points, .. } => {
            positive(&[*points])?;
            (-points, 0)
        }
        LotOp::Reverse {
            pending,
            from_remaining,
            charged,
            ..
        } => {
            positive(&[*from_remaining, *charged])?;
            if *pending {
                (0, -from_remaining)
            } else {
                (-from_remaining, 0)
            }
        }
    })
}
