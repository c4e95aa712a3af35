//! Load spreading for server-side renewal times: every certificate gets a minute inside the
//! first half of its renewal window (the second half is left for retries). The preferred minute
//! comes from a hash of device and serial, so the placement is deterministic; a minute that
//! already holds `capacity` renewals passes the certificate on to the next one (open
//! addressing), so certificates issued in the same hour do not all renew in the same minutes.
use crate::model::UnixTime;

/// The minutes a certificate may renew in, in the order to try them: the hashed preferred
/// minute first, then the following ones, wrapping inside the first half of the window.
pub fn candidates(window_opens: UnixTime, not_after: UnixTime, key: &[u8]) -> impl Iterator<Item = UnixTime> {
    let span_minutes = ((not_after.0 - window_opens.0) / 2 / 60).max(1);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut h = [0u8; 8];
    h.copy_from_slice(&digest.as_ref()[..8]);
    let preferred = (u64::from_be_bytes(h) % span_minutes as u64) as i64;
    let base = window_opens.0 - window_opens.0.rem_euclid(60);
    (0..span_minutes).map(move |probe| UnixTime(base + ((preferred + probe) % span_minutes) * 60).max(window_opens))
}

/// The minute-aligned slot a certificate renews in. `load(minute_start)` says how many
/// renewals that minute already holds.
pub fn place_renewal(
    window_opens: UnixTime,
    not_after: UnixTime,
    key: &[u8],
    capacity: u32,
    load: impl Fn(UnixTime) -> u32,
) -> UnixTime {
    let mut all = candidates(window_opens, not_after, key);
    let first = all.next().unwrap_or(window_opens);
    if load(first) < capacity.max(1) {
        return first;
    }
    all.find(|m| load(*m) < capacity.max(1)).unwrap_or(first)
}

/// A second inside a renewal slot (the rest of the minute the server placed a renewal in),
/// picked by a hash of `key` (device and serial): agents sharing a slot do not all call at its
/// first second, the time stays inside the slot's minute (so slots keep their load), and the
/// same agent always picks the same second (it can sleep until it, restart, and agree).
pub fn within_slot(slot: UnixTime, key: &[u8]) -> UnixTime {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut h = [0u8; 8];
    h.copy_from_slice(&digest.as_ref()[..8]);
    let rest_of_minute = (60 - slot.0.rem_euclid(60)) as u64;
    slot.plus_secs((u64::from_be_bytes(h) % rest_of_minute) as i64)
}

/// The per-minute capacity that spreads `population` renewals over `span_minutes` with at most
/// `peak_over_mean` times the mean in any minute.
pub fn capacity(population: u64, span_minutes: u64, peak_over_mean: f64) -> u32 {
    let mean = population as f64 / span_minutes.max(1) as f64;
    ((mean * peak_over_mean).floor() as u32).max(mean.ceil() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// 10,000 certificates issued within one hour (30-day lifetimes, 7-day renewal period):
    /// without spreading they would all come back within the same hour; placed, the busiest
    /// minute holds at most 1.5x the mean.
    #[test]
    fn ten_thousand_certificates_issued_in_one_hour_renew_evenly() {
        let n = 10_000u64;
        let start = 1_800_000_000i64;
        let lifetime = 30 * 86_400;
        let period = 7 * 86_400;
        let span_minutes = (period / 2 / 60) as u64;
        let cap = capacity(n, span_minutes, 1.5);
        let mut load: HashMap<i64, u32> = HashMap::new();
        let mut unspread: HashMap<i64, u32> = HashMap::new();
        // Deterministic pseudo-random issuance times within the hour.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let issued = start + (x % 3600) as i64;
            let not_after = UnixTime(issued + lifetime);
            let opens = UnixTime(not_after.0 - period);
            *unspread.entry(opens.0 / 60).or_default() += 1;
            let key = format!("device-{i}/serial-{x:016x}");
            let at = place_renewal(opens, not_after, key.as_bytes(), cap, |m| load.get(&m.0).copied().unwrap_or(0));
            assert!(at >= opens && at.0 < opens.0 + period / 2 + 60, "inside the first half of the window");
            *load.entry(at.0).or_default() += 1;
        }
        let busiest = *load.values().max().unwrap() as f64;
        // The mean over the minutes renewals can fall in (the span of all windows' first halves).
        let first = *load.keys().min().unwrap();
        let last = *load.keys().max().unwrap();
        let minutes = ((last - first) / 60 + 1) as f64;
        let mean = n as f64 / minutes;
        let ratio = busiest / mean;
        let unspread_peak = *unspread.values().max().unwrap();
        println!(
            "10,000 renewals over {minutes} minutes: mean {mean:.2}/min, busiest {busiest} ({ratio:.2}x); \
             without spreading the busiest minute held {unspread_peak}"
        );
        assert!(ratio <= 1.5, "busiest minute {busiest} is {ratio:.2}x the mean {mean:.2}");
        assert!(unspread_peak as f64 > 10.0 * busiest, "spreading must matter: {unspread_peak} vs {busiest}");
    }

    #[test]
    fn seconds_within_a_slot_are_stable_and_spread() {
        let slot = UnixTime(1_800_000_000);
        assert_eq!(within_slot(slot, b"dev/1"), within_slot(slot, b"dev/1"));
        let seconds: std::collections::BTreeSet<i64> =
            (0..200).map(|i| within_slot(slot, format!("dev{i}/serial").as_bytes()).0 - slot.0).collect();
        assert!(seconds.iter().all(|s| (0..60).contains(s)));
        assert!(seconds.len() > 40, "{} distinct seconds", seconds.len());
        // A slot that starts mid-minute (a window opening at :37) stays in its minute.
        let late = UnixTime(1_800_000_037);
        for i in 0..200 {
            let at = within_slot(late, format!("dev{i}").as_bytes());
            assert!(at >= late && at.0 / 60 == late.0 / 60, "{at:?}");
        }
    }

    #[test]
    fn placement_is_deterministic_and_stays_in_the_window() {
        let opens = UnixTime(1_800_000_000);
        let not_after = UnixTime(opens.0 + 86_400);
        let a = place_renewal(opens, not_after, b"dev/1", 5, |_| 0);
        assert_eq!(a, place_renewal(opens, not_after, b"dev/1", 5, |_| 0));
        assert!(a >= opens && a.0 <= opens.0 + 43_200);
        // A full preferred minute moves it on; a full window falls back to the preferred one.
        let b = place_renewal(opens, not_after, b"dev/1", 5, |m| if m == a { 5 } else { 0 });
        assert_eq!(b.0, a.0 + 60);
        assert_eq!(place_renewal(opens, not_after, b"dev/1", 5, |_| 9), a);
        // A window shorter than two minutes still gives a time inside it.
        let tiny = place_renewal(opens, UnixTime(opens.0 + 30), b"x", 1, |_| 0);
        assert!(tiny >= opens);
    }
}
