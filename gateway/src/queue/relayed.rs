//! The store's side of a live relay (issue 18): whether a node's stream still belongs to
//! the job's current run, and the mark that the run's first chunk reached a client, after
//! which `results` never retries the run. The chunks themselves are never stored; they live
//! in the gateway's memory (`crate::relay`) and the node submits the assembled result.

use super::StoreError;
use super::db::{Conn, OptionalExtension, params};
use super::writer::WriteCtx;

/// Where a relayed stream's lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayLease {
    /// The job is processing under this lease.
    Current,
    /// The job was cancelled.
    Cancelled,
    /// The job was leased again, ended, or does not exist.
    Stale,
}

fn judge(row: Option<(String, Option<String>)>, lease_id: &str) -> RelayLease {
    match row {
        Some((status, _)) if status == "cancelled" => RelayLease::Cancelled,
        Some((status, lease)) if status == "processing" && lease.as_deref() == Some(lease_id) => {
            RelayLease::Current
        }
        _ => RelayLease::Stale,
    }
}

/// The lease's standing, read from any connection.
pub fn lease(conn: &Conn, job_id: &str, lease_id: &str) -> Result<RelayLease, StoreError> {
    let row = conn
        .prepare_cached("SELECT status, lease_id FROM jobs WHERE id = ?1")?
        .query_row([job_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(judge(row, lease_id))
}

/// Marks the run of `lease_id` as having relayed a chunk (once; later calls change nothing).
/// Answers the lease's standing: only a `Current` run is marked.
pub fn mark(
    ctx: &mut WriteCtx<'_>,
    job_id: &str,
    lease_id: &str,
) -> Result<RelayLease, StoreError> {
    let marked = ctx
        .conn
        .prepare_cached(
            "UPDATE jobs SET first_relayed_at = COALESCE(first_relayed_at, ?3)
             WHERE id = ?1 AND lease_id = ?2 AND status = 'processing'",
        )?
        .execute(params![job_id, lease_id, ctx.now])?;
    if marked == 1 {
        return Ok(RelayLease::Current);
    }
    lease(ctx.conn, job_id, lease_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_lease_of_a_processing_job_is_current() {
        let row =
            |status: &str, lease: Option<&str>| Some((status.to_owned(), lease.map(str::to_owned)));
        assert_eq!(
            judge(row("processing", Some("l1")), "l1"),
            RelayLease::Current
        );
        assert_eq!(
            judge(row("processing", Some("l2")), "l1"),
            RelayLease::Stale
        );
        assert_eq!(judge(row("completed", Some("l1")), "l1"), RelayLease::Stale);
        assert_eq!(
            judge(row("cancelled", Some("l1")), "l1"),
            RelayLease::Cancelled
        );
        assert_eq!(judge(None, "l1"), RelayLease::Stale);
    }
}
