//! The pool's growth signal ([`Growth`](super::Growth)).

use super::*;

fn window(growth: &mut Growth, seconds: f64) {
    for _ in 0..WINDOW {
        growth.record(seconds);
    }
}

#[test]
fn a_contended_window_closes_growth_until_enough_calm_ones_in_a_row() {
    let mut growth = Growth::new();
    assert!(growth.open, "open before any verdict: slow calls grow at once");
    window(&mut growth, 0.001);
    assert!(growth.open);
    window(&mut growth, 0.001 * (CONTENDED + 0.5));
    assert!(!growth.open, "a median past CONTENDED x the fastest is contention");
    for _ in 1..REOPEN {
        window(&mut growth, 0.001);
    }
    assert!(!growth.open, "one calm window short");
    window(&mut growth, 0.001);
    assert!(growth.open);
}

#[test]
fn a_slow_tail_is_not_contention() {
    let mut growth = Growth::new();
    // A third of the calls take 50x the fastest: the median stays at the fastest.
    for i in 0..WINDOW * 4 {
        growth.record(if i % 3 == 0 { 0.05 } else { 0.001 });
    }
    assert!(growth.open);
}

#[test]
fn growth_stops_once_a_doubling_did_not_pay_off() {
    let mut growth = Growth::new();
    // 1000 calls/s at the first size, then 2000/s: that doubling paid off.
    growth.calls = 1000;
    assert!(growth.paid_off(1.0));
    growth.calls += 2000;
    assert!(growth.paid_off(2.0));
    // Then 2100/s: under GAIN x 2000/s, so the pool stays as it is for good.
    growth.calls += 2100;
    assert!(!growth.paid_off(3.0));
    growth.calls += 9000;
    assert!(!growth.paid_off(4.0));
}

#[test]
fn too_few_calls_to_tell_do_not_stop_growth() {
    let mut growth = Growth::new();
    growth.calls = 1000;
    assert!(growth.paid_off(1.0));
    growth.calls += WINDOW as u64 - 1;
    assert!(growth.paid_off(2.0), "slow calls: not enough of them in a period to judge");
}
