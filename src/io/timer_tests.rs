use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use super::*;

/// A waker that counts its wake-ups.
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Advances and wakes, as the runtime loop does; returns how many fired.
fn advance(w: &mut Wheel, now: Instant) -> usize {
    let mut wake = Vec::new();
    let n = w.advance(now, &mut wake);
    assert_eq!(n, wake.len());
    wake.into_iter().for_each(Waker::wake);
    n
}

#[test]
fn fires_at_its_deadline_and_never_before() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (c, waker) = counting();
    let key = w.insert(t0 + ms(250), &waker).expect("armed");
    assert_eq!(w.armed(), 1);
    assert_eq!(advance(&mut w, t0 + ms(249)), 0);
    assert_eq!(w.poll(key, &waker), Poll::Pending);
    // Half a millisecond early still counts as early.
    assert_eq!(advance(&mut w, t0 + Duration::from_micros(249_900)), 0);
    assert_eq!(c.0.load(Ordering::SeqCst), 0);
    assert_eq!(advance(&mut w, t0 + ms(250)), 1);
    assert_eq!(c.0.load(Ordering::SeqCst), 1);
    assert_eq!(w.poll(key, &waker), Poll::Ready(()));
    assert_eq!(w.armed(), 0);
    w.remove(key);
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn a_deadline_in_between_ticks_is_rounded_up() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (_c, waker) = counting();
    let key = w
        .insert(t0 + Duration::from_micros(10_100), &waker)
        .unwrap();
    assert_eq!(w.next_deadline(), Some(t0 + ms(11)));
    assert_eq!(advance(&mut w, t0 + Duration::from_micros(10_999)), 0);
    assert_eq!(advance(&mut w, t0 + ms(11)), 1);
    assert_eq!(w.poll(key, &waker), Poll::Ready(()));
}

#[test]
fn a_past_deadline_is_ready_at_once() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (_c, waker) = counting();
    advance(&mut w, t0 + ms(100));
    assert!(w.insert(t0 + ms(100), &waker).is_none());
    assert!(w.insert(t0 + ms(3), &waker).is_none());
    assert!(w.insert(t0 + ms(101), &waker).is_some());
}

#[test]
fn a_cancelled_timer_never_fires_and_its_key_goes_stale() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (c, waker) = counting();
    let a = w.insert(t0 + ms(5), &waker).unwrap();
    let b = w.insert(t0 + ms(5), &waker).unwrap();
    w.remove(a);
    assert_eq!(w.armed(), 1);
    // The slab entry is reused; the old key must not see the new timer.
    let c2 = w.insert(t0 + ms(7), &waker).unwrap();
    assert_eq!(c2.idx, a.idx);
    assert_ne!(c2.generation, a.generation);
    assert_eq!(w.poll(a, &waker), Poll::Ready(()));
    w.remove(a);
    assert_eq!(w.armed(), 2);
    assert_eq!(advance(&mut w, t0 + ms(6)), 1);
    assert_eq!(c.0.load(Ordering::SeqCst), 1);
    assert_eq!(w.poll(b, &waker), Poll::Ready(()));
    assert_eq!(w.poll(c2, &waker), Poll::Pending);
    w.remove(c2);
    assert_eq!(advance(&mut w, t0 + ms(60_000)), 0);
    assert_eq!(c.0.load(Ordering::SeqCst), 1);
}

#[test]
fn the_latest_waker_is_the_one_woken() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (first, w1) = counting();
    let (second, w2) = counting();
    let key = w.insert(t0 + ms(3), &w1).unwrap();
    assert_eq!(w.poll(key, &w2), Poll::Pending);
    advance(&mut w, t0 + ms(3));
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
}

#[test]
fn long_timers_cascade_down_and_fire_on_time() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (_c, waker) = counting();
    let hour = w.insert(t0 + Duration::from_secs(3600), &waker).unwrap();
    let minute = w.insert(t0 + Duration::from_secs(60), &waker).unwrap();
    // Advance in uneven steps, as a busy loop would.
    let mut t = 0;
    while t < 59_999 {
        t = (t + 7_919).min(59_999);
        assert_eq!(advance(&mut w, t0 + ms(t)), 0, "at {t} ms");
    }
    assert_eq!(advance(&mut w, t0 + ms(60_000)), 1);
    assert_eq!(w.poll(minute, &waker), Poll::Ready(()));
    assert_eq!(
        w.next_deadline().map(|d| d <= t0 + ms(3_600_000)),
        Some(true)
    );
    assert_eq!(advance(&mut w, t0 + ms(3_599_999)), 0);
    assert_eq!(w.poll(hour, &waker), Poll::Pending);
    assert_eq!(advance(&mut w, t0 + ms(3_600_000)), 1);
    assert_eq!(w.poll(hour, &waker), Poll::Ready(()));
}

#[test]
fn a_timer_years_away_fires_at_its_deadline_not_one_wheel_turn_early() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (_c, waker) = counting();
    let year = Duration::from_secs(365 * 86_400);
    let key = w.insert(t0 + 10 * year, &waker).unwrap();
    assert!(w.next_deadline().is_some());
    assert_eq!(advance(&mut w, t0 + Duration::from_secs(86_400)), 0);
    // Past one turn of the top level (about 2.2 years): filed again, not fired.
    assert_eq!(advance(&mut w, t0 + 3 * year), 0);
    assert_eq!(w.poll(key, &waker), Poll::Pending);
    assert_eq!(advance(&mut w, t0 + 10 * year - ms(1)), 0);
    assert_eq!(advance(&mut w, t0 + 10 * year), 1);
    assert_eq!(w.poll(key, &waker), Poll::Ready(()));
    w.remove(key);
    assert_eq!(w.armed(), 0);
    assert_eq!(w.next_deadline(), None);
}

/// A timer filed in the next turn of the top level's current slot must not hide a short timer
/// filed in a later slot of this turn (the wheel is just before a 2^30 ms boundary).
#[test]
fn a_next_turn_timer_does_not_hide_a_short_one() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (_c, waker) = counting();
    let near_boundary = (1u64 << 30) - 1000;
    advance(&mut w, t0 + ms(near_boundary));
    let far = w
        .insert(t0 + Duration::from_secs(10 * 365 * 86_400), &waker)
        .unwrap();
    let short = w.insert(t0 + ms(near_boundary + 2000), &waker).unwrap();
    assert_eq!(w.next_deadline(), Some(t0 + ms(1 << 30)));
    assert_eq!(advance(&mut w, t0 + ms(near_boundary + 1999)), 0);
    assert_eq!(advance(&mut w, t0 + ms(near_boundary + 2000)), 1);
    assert_eq!(w.poll(short, &waker), Poll::Ready(()));
    assert_eq!(w.poll(far, &waker), Poll::Pending);
}

/// Random arms, cancels and advances against a plain list: every timer fires exactly once, at the
/// first advance at or after its deadline, and the next deadline is never after the earliest one.
#[test]
fn matches_a_brute_force_model() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (_c, waker) = counting();
    // (key, deadline in µs since t0)
    let mut live: Vec<(TimerKey, u64)> = Vec::new();
    let mut now_us = 0u64;
    for step in 0..20_000 {
        match rand(10) {
            0..=4 => {
                // Spans from sub-millisecond to about 5 minutes, skewed short.
                let span = match rand(4) {
                    0 => rand(2_000),
                    1 => rand(100_000),
                    2 => rand(5_000_000),
                    _ => rand(300_000_000),
                };
                let at = now_us + span;
                match w.insert(t0 + Duration::from_micros(at), &waker) {
                    Some(k) => live.push((k, at)),
                    None => assert!(at.div_ceil(1000) <= now_us / 1000, "step {step}"),
                }
            }
            5 | 6 if !live.is_empty() => {
                let (k, _) = live.swap_remove(rand(live.len() as u64) as usize);
                w.remove(k);
            }
            7..=9 => {
                let max = if rand(50) == 0 { 60_000_000 } else { 3_000 };
                now_us += rand(max);
                let now = t0 + Duration::from_micros(now_us);
                if let (Some(next), Some(earliest)) =
                    (w.next_deadline(), live.iter().map(|&(_, at)| at).min())
                {
                    assert!(
                        next <= t0 + Duration::from_micros(earliest.div_ceil(1000) * 1000),
                        "step {step}: next deadline after the earliest timer"
                    );
                }
                let due = live
                    .iter()
                    .filter(|&&(_, at)| at.div_ceil(1000) * 1000 <= now_us / 1000 * 1000)
                    .count();
                assert_eq!(advance(&mut w, now), due, "step {step}");
                live.retain(|&(k, at)| {
                    let fired = w.poll(k, &waker).is_ready();
                    let should = at.div_ceil(1000) * 1000 <= now_us / 1000 * 1000;
                    assert_eq!(fired, should, "step {step}: timer at {at} µs, now {now_us}");
                    if fired {
                        w.remove(k);
                    }
                    !fired
                });
            }
            _ => {}
        }
        assert_eq!(w.armed(), live.len());
    }
}
