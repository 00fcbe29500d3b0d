//! The Postgres hooks hoop installs, one file per hook. Each saves the hook
//! that was installed before it and always calls it (or the `standard_*`
//! function) so other extensions keep working.

pub(crate) mod analyze;
pub(crate) mod executor;
pub(crate) mod log;
pub(crate) mod next;
pub(crate) mod planner;
pub(crate) mod utility;

/// Installs every hook; called once from `_PG_init`.
pub(crate) fn install() {
    unsafe {
        analyze::install();
        planner::install();
        executor::install();
        utility::install();
        log::install();
    }
}
