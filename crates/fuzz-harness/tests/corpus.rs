//! Replays every stored fuzz input (fuzz/corpus/<target>/ and fuzz/regressions/<target>/)
//! through its target: the CI smoke of the fuzzing, and every crash ever found stays fixed.
use std::path::PathBuf;

#[test]
fn every_stored_input_is_handled_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (name, target) in autoenroll_fuzz_harness::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
            for e in entries.filter_map(Result::ok) {
                let data = std::fs::read(e.path()).unwrap_or_default();
                target(&data);
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no stored inputs for fuzz target {name} under {}", root.display());
        replayed += inputs;
    }
    assert!(replayed > 50, "{replayed} inputs");
}
