//! The SQL of claims (see `Claim`) that both backends run as written: the
//! append's own claim writes live with each backend's batch insert.

/// Values inserted per statement while filling: far below both databases'
/// limits on parameters in one statement.
pub(crate) const FILL_ROWS_PER_STATEMENT: usize = 400;

pub(crate) const HOLDER: &str = "SELECT stream_id FROM claims WHERE claim = $1";

pub(crate) const UNFILLED: &str = "SELECT COUNT(*) FROM claims_unfilled";

/// The fill replaces every claim: what it was folded from covers the whole
/// log, appends that claimed values since it began included.
pub(crate) const FILL_CLEAR: &str = "DELETE FROM claims";

/// Followed by `FILL_ROWS_PER_STATEMENT` or fewer `($n, $n+1)` pairs.
pub(crate) const FILL_START: &str = "INSERT INTO claims (claim, stream_id) ";

pub(crate) const FILLED: &str = "DELETE FROM claims_unfilled";
