//! A member's books kept in memory, moved only by planned postings: every posting must
//! pass its own check, and after each one the simulated lots must still hold exactly
//! the balances (spendable lots the available balance, pending lots the pending one,
//! active holds the held one), with no lot ever negative.
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::{
    OrderLot, ReturnLine, ReturnPolicy, ReturnState,
    ledger::{Balances, Credit, LotOp, Posting},
    plan_release, plan_return,
};

#[derive(Debug, Clone)]
struct Lot {
    id: i64,
    original: i64,
    remaining: i64,
    expired: i64,
    reversed: i64,
    pending: bool,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Hold {
    id: String,
    points: i64,
    /// (lot id, points still out)
    allocations: Vec<(i64, i64)>,
    active: bool,
}

#[derive(Debug, Clone)]
struct Order {
    id: String,
    lot_id: Option<i64>,
    line: ReturnLine,
    spent: i64,
    refunded: i64,
    shortfall: i64,
}

#[derive(Debug, Clone, Default)]
struct Books {
    balances: Balances,
    lots: Vec<Lot>,
    holds: Vec<Hold>,
    orders: Vec<Order>,
    next_lot: i64,
    clock: i64,
}

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
        .single()
        .expect("date")
        + Duration::days(n)
}

impl Books {
    fn start(&mut self) -> Posting {
        self.clock += 1;
        Posting::new(
            "m",
            format!("t{}", self.clock),
            self.balances,
            day(self.clock),
        )
    }

    fn spendable(&self) -> Vec<LotRemainder> {
        self.lots
            .iter()
            .filter(|l| !l.pending && l.remaining > 0)
            .map(|l| LotRemainder {
                lot_id: l.id,
                remaining: l.remaining,
                expires_at: l.expires_at,
            })
            .collect()
    }

    fn credit(&self, points: i64, pending: bool, order_id: Option<String>) -> Credit {
        Credit {
            points,
            source: LotSource::Bonus,
            pending,
            counts_as_earned: false,
            order_id,
            available_at: day(self.clock + 14),
            expires_at: Some(day(self.clock + 30 + points % 7)),
        }
    }

    fn lot(&mut self, id: i64) -> &mut Lot {
        self.lots
            .iter_mut()
            .find(|l| l.id == id)
            .expect("known lot")
    }

    /// Writes the posting the way the store does; returns the ids of the lots it made.
    fn post(&mut self, p: &Posting) -> Result<Vec<i64>, TestCaseError> {
        if let Err(e) = p.check() {
            return Err(TestCaseError::fail(format!("{e}\n{p:#?}")));
        }
        let mut created = Vec::new();
        for op in &p.lots {
            match op {
                LotOp::Create(n) => {
                    self.next_lot += 1;
                    created.push(self.next_lot);
                    self.lots.push(Lot {
                        id: self.next_lot,
                        original: n.points,
                        remaining: n.remaining,
                        expired: 0,
                        reversed: 0,
                        pending: n.pending,
                        expires_at: n.expires_at,
                    });
                }
                LotOp::Burn { takes, hold_id } => {
                    for &(id, take) in takes {
                        self.lot(id).remaining -= take;
                        if let Some(h) = hold_id {
                            let hold = self.holds.iter_mut().find(|x| &x.id == h).expect("hold");
                            hold.allocations.push((id, take));
                        }
                    }
                }
                LotOp::ReleaseHold { hold_id, points } => {
                    let hold = self.holds.iter().find(|h| &h.id == hold_id).expect("hold");
                    let out: Vec<(i64, Option<DateTime<Utc>>, i64)> = hold
                        .allocations
                        .iter()
                        .enumerate()
                        .map(|(i, &(lot, n))| {
                            let at = self
                                .lots
                                .iter()
                                .find(|l| l.id == lot)
                                .and_then(|l| l.expires_at);
                            (i as i64, at, n)
                        })
                        .collect();
                    for (i, back) in plan_release(&out, *points) {
                        let lot = self
                            .holds
                            .iter()
                            .find(|h| &h.id == hold_id)
                            .expect("hold")
                            .allocations[i as usize]
                            .0;
                        self.lot(lot).remaining += back;
                    }
                }
                LotOp::MakeAvailable {
                    lot_id, remaining, ..
                } => {
                    let lot = self.lot(*lot_id);
                    lot.pending = false;
                    lot.remaining = *remaining;
                }
                LotOp::Expire { lot_id, points } => {
                    let lot = self.lot(*lot_id);
                    lot.remaining -= points;
                    lot.expired += points;
                }
                LotOp::Reverse {
                    lot_id,
                    from_remaining,
                    charged,
                    ..
                } => {
                    let lot = self.lot(*lot_id);
                    lot.remaining -= from_remaining;
                    lot.reversed += from_remaining + charged;
                }
            }
        }
        self.balances = p.after();
        self.agree()?;
        Ok(created)
    }

    fn agree(&self) -> Result<(), TestCaseError> {
        let b = &self.balances;
        prop_assert!(
            self.lots.iter().all(|l| l.remaining >= 0),
            "a negative lot: {:?}",
            self.lots
        );
        let spendable: i64 = self
            .lots
            .iter()
            .filter(|l| !l.pending)
            .map(|l| l.remaining)
            .sum();
        let pending: i64 = self
            .lots
            .iter()
            .filter(|l| l.pending)
            .map(|l| l.remaining)
            .sum();
        let held: i64 = self
            .holds
            .iter()
            .filter(|h| h.active)
            .map(|h| h.points)
            .sum();
        prop_assert_eq!(spendable, b.available.max(0));
        prop_assert_eq!(pending, b.pending);
        prop_assert_eq!(held, b.held);
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Accrue {
        points: i64,
        pending: bool,
        quantity: i64,
    },
    Bonus(i64),
    Adjust(i64),
    Redeem {
        points: i64,
        order: usize,
    },
    Hold(i64),
    Settle {
        hold: usize,
        captured_pct: i64,
    },
    Release(usize),
    Expire(usize),
    Return {
        order: usize,
        units: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..1_000, any::<bool>(), 1i64..5).prop_map(|(points, pending, quantity)| Op::Accrue {
            points,
            pending,
            quantity
        }),
        (1i64..300).prop_map(Op::Bonus),
        (-400i64..400)
            .prop_filter("non-zero", |p| *p != 0)
            .prop_map(Op::Adjust),
        (1i64..600, 0usize..8).prop_map(|(points, order)| Op::Redeem { points, order }),
        (1i64..500).prop_map(Op::Hold),
        (0usize..6, 0i64..=100).prop_map(|(hold, captured_pct)| Op::Settle { hold, captured_pct }),
        (0usize..8).prop_map(Op::Release),
        (0usize..12).prop_map(Op::Expire),
        (0usize..8, 1i64..4).prop_map(|(order, units)| Op::Return { order, units }),
    ]
}

fn step(books: &mut Books, op: &Op, policy: ReturnPolicy) -> Result<(), TestCaseError> {
    let p = books.start();
    match op.clone() {
        Op::Accrue {
            points,
            pending,
            quantity,
        } => {
            let order_id = format!("o{}", books.orders.len());
            let plan = plan_accrual(
                p,
                AccrualInput {
                    points,
                    spend: points * 10,
                    credit: books.credit(points, pending, Some(order_id.clone())),
                    store_id: "s".into(),
                    offer_codes: false,
                    capped_promotion: false,
                    referral_pending: false,
                    tier: None,
                },
            );
            prop_assert_eq!(plan.runs_alone, None);
            let created = books.post(&plan.posting)?;
            books.orders.push(Order {
                id: order_id,
                lot_id: created.first().copied(),
                line: ReturnLine {
                    quantity,
                    returned_quantity: 0,
                    points,
                    points_reversed: 0,
                    eligible_minor: points * 10 + 1,
                },
                spent: 0,
                refunded: 0,
                shortfall: 0,
            });
        }
        Op::Bonus(points) => {
            let credit = books.credit(points, false, None);
            books.post(&plan_bonus(p, credit, "BIRTHDAY"))?;
        }
        Op::Adjust(points) => {
            let credit = books.credit(points, false, None);
            let spendable = books.spendable();
            match plan_adjust(p, credit, "CORRECTION", None, &spendable) {
                Ok(posting) => {
                    books.post(&posting)?;
                }
                Err(_) => prop_assert!(books.balances.available < -points),
            }
        }
        Op::Redeem { points, order } => {
            let order_id = books.orders.get(order).map(|o| o.id.clone());
            let spendable = books.spendable();
            match plan_redeem(p, points, order_id, None, &spendable) {
                Ok(posting) => {
                    books.post(&posting)?;
                    if let Some(o) = books.orders.get_mut(order) {
                        o.spent += points;
                    }
                }
                Err(_) => prop_assert!(books.balances.available < points),
            }
        }
        Op::Hold(points) => {
            let hold = HeldPoints {
                hold_id: format!("h{}", books.holds.len()),
                points,
                order_id: None,
                store_id: None,
            };
            let spendable = books.spendable();
            if let Ok(posting) = plan_hold(p, &hold, &spendable) {
                books.holds.push(Hold {
                    id: hold.hold_id,
                    points,
                    allocations: Vec::new(),
                    active: true,
                });
                books.post(&posting)?;
            } else {
                prop_assert!(books.balances.available < points);
            }
        }
        Op::Settle { hold, captured_pct } => {
            let Some(h) = books.holds.get(hold).filter(|h| h.active).cloned() else {
                return Ok(());
            };
            let held = HeldPoints {
                hold_id: h.id.clone(),
                points: h.points,
                order_id: None,
                store_id: None,
            };
            books.holds[hold].active = false;
            books.post(&plan_settle(
                p,
                &held,
                h.points * captured_pct / 100,
                "CAPTURED",
            ))?;
        }
        Op::Release(order) => {
            let Some(lot_id) = books.orders.get(order).and_then(|o| o.lot_id) else {
                return Ok(());
            };
            let lot = books.lot(lot_id).clone();
            if lot.pending {
                let pending = PendingLot {
                    lot_id,
                    points: lot.remaining,
                    order_id: None,
                };
                books.post(&plan_pending_release(p, &pending))?;
            }
        }
        Op::Expire(i) => {
            let Some(lot) = books
                .lots
                .get(i)
                .filter(|l| !l.pending && l.remaining > 0)
                .cloned()
            else {
                return Ok(());
            };
            books.post(&plan_expiry(p, lot.id, lot.remaining, None))?;
        }
        Op::Return { order, units } => return_units(books, p, order, units, policy)?,
    }
    Ok(())
}

fn return_units(
    books: &mut Books,
    p: Posting,
    order: usize,
    units: i64,
    policy: ReturnPolicy,
) -> Result<(), TestCaseError> {
    let Some(o) = books.orders.get(order).cloned() else {
        return Ok(());
    };
    let after = (o.line.returned_quantity + units).min(o.line.quantity);
    if after == o.line.returned_quantity {
        return Ok(());
    }
    let lot = o.lot_id.map(|id| books.lot(id).clone());
    let state = ReturnState {
        lines: &[o.line],
        returned_after: &[after],
        spent: o.spent,
        refunded_before: o.refunded,
        lot: match &lot {
            None => OrderLot::None,
            Some(l) if l.pending => OrderLot::Pending {
                remaining: l.remaining,
            },
            Some(l) => OrderLot::Active {
                remaining: l.remaining,
                consumed: l.original - l.remaining - l.expired - l.reversed,
            },
        },
        outstanding_shortfall: o.shortfall,
        available: books.balances.available,
        policy,
    };
    let plan = plan_return(&state);
    plan.check(&state).map_err(TestCaseError::fail)?;
    let refund = books.credit(plan.refund, false, Some(o.id.clone()));
    let spendable = books.spendable();
    let posting = plan_return_posting(
        p,
        &plan,
        lot.map(|l| ReturnedLot {
            lot_id: l.id,
            pending: l.pending,
        }),
        refund,
        &spendable,
        ReturnIds {
            order_id: o.id.clone(),
            store_id: "s".into(),
            return_id: "r".into(),
        },
    );
    books.post(&posting)?;
    let o = &mut books.orders[order];
    o.line.returned_quantity = plan.lines_after[0].0;
    o.line.points_reversed = plan.lines_after[0].1;
    o.refunded += plan.refund;
    o.shortfall += plan.shortfall - plan.recovered;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_planned_posting_keeps_the_books(
        ops in prop::collection::vec(op(), 1..40),
        allow_negative in any::<bool>(),
    ) {
        let policy = if allow_negative { ReturnPolicy::AllowNegative } else { ReturnPolicy::Clamp };
        let mut books = Books::default();
        for op in &ops {
            step(&mut books, op, policy)?;
        }
    }
}

#[test]
fn a_posting_whose_entries_disagree_with_its_deltas_is_refused() {
    let mut p = Posting::new("m", "t", Balances::default(), day(0));
    p.push(EntryKind::Bonus, 10, 0, 0);
    assert!(p.check().is_err(), "a credit without its lot");
    p.lots.push(LotOp::Expire {
        lot_id: 1,
        points: 3,
    });
    assert!(p.check().is_err());
    let mut q = plan_bonus(
        Posting::new("m", "t", Balances::default(), day(0)),
        Books::default().credit(10, false, None),
        "BIRTHDAY",
    );
    assert_eq!(q.check(), Ok(()));
    q.delta.available += 1;
    assert!(q.check().expect_err("refused").contains("entries sum"));
}

#[test]
fn a_credit_on_a_negative_balance_pays_the_debt_before_its_lot_keeps_anything() {
    let before = Balances {
        available: -30,
        ..Balances::default()
    };
    let p = plan_bonus(
        Posting::new("m", "t", before, day(0)),
        Books::default().credit(50, false, None),
        "BIRTHDAY",
    );
    assert_eq!(p.check(), Ok(()));
    assert!(matches!(&p.lots[..], [LotOp::Create(lot)] if lot.points == 50 && lot.remaining == 20));
    assert_eq!(p.entries[0].balance_after, 20);
}

#[test]
fn accruals_say_why_they_must_run_alone() {
    let input = |offer_codes, capped_promotion, referral_pending| AccrualInput {
        points: 10,
        spend: 100,
        credit: Books::default().credit(10, false, Some("o".into())),
        store_id: "s".into(),
        offer_codes,
        capped_promotion,
        referral_pending,
        tier: None,
    };
    let start = || Posting::new("m", "t", Balances::default(), day(0));
    assert_eq!(
        plan_accrual(start(), input(false, false, false)).runs_alone,
        None
    );
    assert_eq!(
        plan_accrual(start(), input(true, true, true)).runs_alone,
        Some(RunsAlone::OfferCodes)
    );
    assert_eq!(
        plan_accrual(start(), input(false, true, false)).runs_alone,
        Some(RunsAlone::CappedPromotion)
    );
    assert_eq!(
        plan_accrual(start(), input(false, false, true)).runs_alone,
        Some(RunsAlone::ReferralPayout)
    );
}
