//! Several gateways on one PostgreSQL database: how each hears the others' commits.
//!
//! Each gateway keeps counts and wake-ups in memory, moved by its own commits (see
//! `writer`). On PostgreSQL the others commit too, so every group commit that changed jobs
//! or batches also sends one `NOTIFY obb` (in its transaction: delivered at commit, and never
//! for a rolled-back group) whose payload carries only ids ([`payload`]): the sending
//! gateway, the jobs it changed, `q` when work was queued, `b` when batches changed. Each
//! gateway listens on one connection of its own ([`listen`]), and hands what it heard to its
//! writer, which between two groups wakes the local waiters of the jobs named, its
//! long-polling nodes when work was queued, and reads the running batches again
//! ([`resync`]). The counts (depth, fair share, drains) are read again each second, not at
//! each notification: a count reads the whole queue's index. Meanwhile a lease takes what
//! the counts do not know of yet in plain queue order (`leases`). A lost listening
//! connection, or a payload that would not fit, ends in a re-count with every local waiter
//! woken to read its job.

use super::db::{Conn, Param, pg};
use super::depth::Depth;
use super::fair::Fair;
use super::live_batches::LiveBatches;
use super::nodes::{self, Drained};
use super::notify::{Change, Notifier};
use super::writer::Writer;
use super::{StoreError, reads};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The channel every gateway of a database listens on.
pub const CHANNEL: &str = "obb";

/// PostgreSQL's limit on a payload is 8,000 bytes; past this, `*` says "everything".
const MAX_PAYLOAD: usize = 7_000;

/// How long the listener gathers notifications before handing them over: a burst of
/// commits elsewhere is heard at once.
const GATHER: Duration = Duration::from_millis(5);

/// How often the queue is re-counted whatever was heard: a notification can be lost with
/// its connection.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// The least time between two hand-overs to the writer, each a read of the named jobs and
/// perhaps of the running batches: a gateway busy elsewhere would otherwise ask after
/// nearly every group of its own.
const RECOUNT_SPACING: Duration = Duration::from_millis(10);

/// What a gateway heard of the others' commits since its last re-count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Heard {
    pub jobs: BTreeSet<String>,
    /// Work was queued: waiting nodes look again.
    pub queued: bool,
    /// Batches changed: the running ones are read again.
    pub batches: bool,
    /// Anything may have changed: every local waiter reads its job again.
    pub everything: bool,
    /// Time to count the queue again (each second): the depth, the fair share's counts and
    /// the drains. Not at each notification: a count reads the whole queue's index, which
    /// gateways busy elsewhere would otherwise have each one do many times a second.
    pub recount: bool,
}

impl Heard {
    pub fn add(&mut self, other: Heard) {
        self.jobs.extend(other.jobs);
        self.queued |= other.queued;
        self.batches |= other.batches;
        self.everything |= other.everything;
        self.recount |= other.recount;
    }
}

/// The payload of one group's `NOTIFY`: `<gateway> [q] [b] j<id>…`, or `<gateway> *` when
/// the ids would not fit.
pub fn payload(gateway: &str, changes: &[Change], batches: bool) -> String {
    let mut out = gateway.to_owned();
    if changes
        .iter()
        .any(|c| c.status == openbeepboop::JobStatus::Queued)
    {
        out.push_str(" q");
    }
    if batches {
        out.push_str(" b");
    }
    for change in changes {
        out.push_str(" j");
        out.push_str(&change.job_id);
        if out.len() > MAX_PAYLOAD {
            return format!("{gateway} *");
        }
    }
    out
}

/// `SELECT pg_notify('obb', '<payload>')` as a simple query, which takes no parameters: the
/// payload quoted as a literal (its ids hold no quote, but one would be doubled).
pub fn notify_statement(payload: &str) -> String {
    format!(
        "SELECT pg_notify('{CHANNEL}', '{}')",
        payload.replace('\'', "''")
    )
}

/// What a payload says, unless `gateway` sent it.
pub fn parse(gateway: &str, payload: &str) -> Option<Heard> {
    let mut words = payload.split(' ');
    if words.next()? == gateway {
        return None;
    }
    let mut heard = Heard::default();
    for word in words {
        match word {
            "q" => heard.queued = true,
            "b" => heard.batches = true,
            "*" => heard.everything = true,
            id => {
                if let Some(id) = id.strip_prefix('j') {
                    heard.jobs.insert(id.to_owned());
                }
            }
        }
    }
    Some(heard)
}

/// What the writer's re-count moves.
pub struct Counted<'a> {
    pub depth: &'a Depth,
    pub fair: &'a Fair,
    pub batches: &'a LiveBatches,
    pub notifier: &'a Notifier,
    pub drained: &'a Drained,
}

/// Wakes the local waiters of what was heard and, when `recount` or `everything` says so,
/// counts the queue again from the database. Runs on the writer's connection between two
/// groups, so no commit of this gateway is half counted.
pub fn resync(conn: &Conn, counted: &Counted<'_>, heard: &Heard) -> Result<(), StoreError> {
    let mut more = false;
    if heard.recount || heard.everything {
        counted.depth.recount(reads::depth(conn)?);
        let (rows, running) = reads::fair_counts(conn)?;
        more = counted.fair.recount(rows, running);
        counted.drained.replace(nodes::draining(conn)?);
    }
    if heard.batches || heard.everything {
        counted.batches.reload(conn);
    }
    let ids: Vec<String> = if heard.everything {
        counted.notifier.watched_ids()
    } else {
        let everyone = counted.notifier.has_feed();
        heard
            .jobs
            .iter()
            .filter(|id| everyone || counted.notifier.is_watched(id))
            .cloned()
            .collect()
    };
    let mut changes = Vec::new();
    for chunk in ids.chunks(100) {
        changes.extend(reads::changes_of(conn, chunk)?);
    }
    counted.notifier.publish(&changes);
    if more || heard.queued || heard.everything {
        counted.notifier.wake_nodes();
    }
    Ok(())
}

/// Listens for the other gateways' commits until the store is dropped, handing what it
/// hears to `writer`; reconnects after a lost connection. Runs on the store's runtime.
pub fn listen(runtime: &Arc<pg::Runtime>, gateway: String, writer: Writer) {
    let listener = Arc::clone(runtime);
    runtime.handle().spawn(async move {
        // What was committed between the store's first counts and the first `LISTEN` is
        // heard by reading everything again once listening.
        let mut lost = true;
        loop {
            let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
            let connection = match listener.listen(CHANNEL, sender).await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(error = %error.detail(), "cannot listen for other gateways; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    lost = true;
                    continue;
                }
            };
            if std::mem::take(&mut lost) {
                // What was sent while no one listened is lost: read everything again.
                let everything = Heard {
                    everything: true,
                    ..Heard::default()
                };
                if writer.resync(everything).is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(RECOUNT_EVERY);
            let mut last = tokio::time::Instant::now();
            loop {
                let heard = tokio::select! {
                    note = received.recv() => match note {
                        Some(note) => {
                            let mut heard = parse(&gateway, &note).unwrap_or_default();
                            let until = (tokio::time::Instant::now() + GATHER)
                                .max(last + RECOUNT_SPACING);
                            while let Ok(Some(more)) =
                                tokio::time::timeout_at(until, received.recv()).await
                            {
                                heard.add(parse(&gateway, &more).unwrap_or_default());
                            }
                            if heard == Heard::default() {
                                continue;
                            }
                            heard
                        }
                        None => break,
                    },
                    _ = tick.tick() => Heard {
                        recount: true,
                        ..Heard::default()
                    },
                };
                last = tokio::time::Instant::now();
                if writer.resync(heard).is_err() {
                    connection.abort();
                    return;
                }
            }
            tracing::warn!("lost the connection that listens for other gateways; reconnecting");
            lost = true;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// `IN (?1, ?2, …)` for `count` values.
pub fn placeholders(count: usize) -> String {
    (1..=count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ids as parameters.
pub fn id_params(ids: &[String]) -> Vec<&dyn Param> {
    ids.iter().map(|id| id as &dyn Param).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openbeepboop::{Endpoint, JobStatus};

    fn change(id: &str, status: JobStatus) -> Change {
        Change {
            job_id: id.into(),
            status,
            from: None,
            model: "m".into(),
            priority: 3,
            owner: "k".into(),
            endpoint: Endpoint::ChatCompletions,
            record: None,
            was_priority: None,
            batch_id: None,
        }
    }

    #[test]
    fn a_payload_names_its_jobs_and_kinds_and_its_sender_does_not_hear_it() {
        let sent = payload(
            "gw1",
            &[
                change("job_a", JobStatus::Queued),
                change("job_b", JobStatus::Completed),
            ],
            true,
        );
        assert_eq!(sent, "gw1 q b jjob_a jjob_b");
        assert_eq!(parse("gw1", &sent), None);
        let heard = parse("gw2", &sent).unwrap();
        assert!(heard.queued && heard.batches && !heard.everything);
        assert_eq!(
            heard.jobs.into_iter().collect::<Vec<_>>(),
            ["job_a", "job_b"]
        );
    }

    #[test]
    fn a_payload_too_long_for_postgresql_says_everything() {
        let many: Vec<Change> = (0..1000)
            .map(|i| change(&format!("job_{i:030}"), JobStatus::Completed))
            .collect();
        let sent = payload("gw1", &many, false);
        assert_eq!(sent, "gw1 *");
        assert!(parse("gw2", &sent).unwrap().everything);
    }
}
