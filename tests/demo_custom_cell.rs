//! Runs `examples/custom_cell.rs` (the code `docs/custom-cell.md` quotes) and checks what the
//! guide says about it.

#[path = "../examples/custom_cell.rs"]
#[allow(dead_code)]
mod custom_cell;

#[test]
fn the_custom_cell_tour_does_what_the_guide_says() {
    let report = custom_cell::run(60, false);
    // Both gradient checks passed inside `run` (it asserts); their worst errors are tiny.
    assert!(report.gradcheck_error < 1e-6, "{report:?}");
    // The hand-written backward is the composed cell's, up to rounding.
    assert!(report.fused_vs_composed < 1e-12, "{report:?}");
    let (first, last) = (
        report.train_loss[0],
        *report.train_loss.last().expect("epochs"),
    );
    assert!(last < 0.5 * first, "training did not learn: {report:?}");
    assert!(
        report.test_rmse < report.persistence_rmse,
        "the trained cell should beat persistence: {report:?}"
    );
}
