//! Agents renew at the server's spread times: `autoenroll bench fleet` issues certificates to a
//! fleet at the same moment from a real RA, each device checks in and decides its renewal time
//! with the agent's own code; the busiest minute must stay within 1.5x the mean, where the
//! template's rule alone puts the whole cohort into a minute or two.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::bin;

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn ratio(out: &str, prefix: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {out}"));
    let at = line.find("peak ").expect("peak") + 5;
    line[at..].split('x').next().unwrap().parse().unwrap()
}

#[test]
fn a_cohort_issued_together_renews_spread_over_the_window() {
    // 1,200 devices over a 120-minute half window: 10 renewals per minute on average.
    let out = bin::run(BIN, &["bench", "fleet", "--devices", "1200", "--concurrency", "8"], &[], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    let following = ratio(&text, "agents following the server");
    let alone = ratio(&text, "agents on the template's rule alone");
    assert!(following <= 1.5, "busiest minute {following}x the mean:\n{text}");
    assert!(alone >= 30.0, "without the server's times the cohort renews together ({alone}x):\n{text}");
}
