//! Fair share between keys: within a priority band, leases go to the keys with queued work
//! in proportion to their `weight`, by stride scheduling. Each key has a *pass* per band; a
//! lease of `n` jobs advances it by `n × STRIDE / weight`, and the key with the lowest pass
//! is served next. A key that starts queueing again joins at the band's *virtual time* (the
//! pass at which the band last served a key), so an idle spell earns it no burst, and a key
//! that arrives behind another's long backlog is served next, not after it.
//!
//! The counts (queued jobs per band, key, model and endpoint) live in memory: taken once from
//! the database when the store opens, then moved by every committed status change, as the
//! depth is. The passes are not stored: fairness starts afresh with the process. Nothing here
//! does I/O; `leases::lease` reads the jobs a [`Pick`] names.
//!
//! A lease also keeps each key's execution limits here: `max_concurrent_jobs` (a key at its
//! cap is passed over) and `tokens_per_minute` (a key out of tokens is passed over; the
//! buckets are `budget`'s). The per-key gauges of keys with a `metrics_label` read the same
//! counts.

use super::budget::TokenBudget;
use super::notify::Change;
use openbeepboop::{Endpoint, JobStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The jobs of one model and endpoint: what a node may or may not serve.
pub type Lane = (String, Endpoint);

/// The pass a lease advances a key of weight 1 by. Large, so that a weight up to 1000 still
/// advances its key by a whole number.
const STRIDE: u64 = 1 << 20;
/// Priorities 1 (first) to 5.
const BANDS: usize = 5;

#[derive(Debug, Default)]
pub struct Fair {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bands: [Band; BANDS],
    /// Keys whose weight is not 1.
    weights: HashMap<String, u32>,
    /// Keys with a `max_concurrent_jobs`.
    caps: HashMap<String, u32>,
    /// Keys with a `metrics_label`.
    labels: HashMap<String, String>,
    /// Keys with a `tokens_per_minute`, and what they have left.
    budgets: HashMap<String, TokenBudget>,
    /// Keys a lease passed over for want of tokens, until their budget returns.
    short_of_tokens: HashSet<String>,
    /// Jobs running, by key.
    running: HashMap<String, i64>,
    /// Keys, by band, whose queued jobs a lease found none of due (all backing off before a
    /// retry, or expired and not yet reaped): passed over until a job of theirs is queued in
    /// the band, or the reaper finds retries due. Without this, they would stay first in
    /// their band (a key is charged only for what it leases) and cost every lease a miss.
    asleep: HashSet<(usize, String)>,
}

/// Why a lease passed over keys with queued jobs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deferrals {
    /// A key at its `max_concurrent_jobs`.
    pub concurrency: bool,
    /// A key out of its `tokens_per_minute`.
    pub tokens: bool,
}

/// A key's share and cap, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShare {
    pub key: String,
    pub weight: u32,
    pub max_concurrent: Option<u32>,
    pub metrics_label: Option<String>,
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug, Default)]
struct Band {
    /// The pass at which the band last served a key.
    vtime: u64,
    /// Keys with queued jobs in the band.
    keys: HashMap<String, KeyQueue>,
    /// The same keys, lowest pass first: the order they are served in.
    order: BTreeSet<(u64, String)>,
}

#[derive(Debug, Default)]
struct KeyQueue {
    pass: u64,
    queued: i64,
    lanes: BTreeMap<Lane, i64>,
}

/// What a lease may take: the node's models (`*`: any) and endpoints.
pub struct Filter<'a> {
    pub models: &'a [String],
    pub endpoints: &'a [Endpoint],
}

impl Filter<'_> {
    fn serves(&self, (model, endpoint): &Lane) -> bool {
        self.endpoints.contains(endpoint) && self.models.iter().any(|m| m == "*" || m == model)
    }
}

/// The key a lease takes from next: the lanes of it the node serves that still hold jobs,
/// and how many jobs it may take before another key's turn (at least 1).
#[derive(Debug, PartialEq, Eq)]
pub struct Pick {
    pub key: String,
    pub lanes: Vec<Lane>,
    pub grant: u32,
}

/// Jobs a lease in progress took already, by band (priority), key and lane: the counts
/// learn of them only when the lease commits.
pub type Taken = HashMap<(u8, String, Lane), u32>;

fn band_of(priority: u8) -> usize {
    usize::from(priority.clamp(1, BANDS as u8) - 1)
}

impl Fair {
    /// Starts from the queued jobs counted in the database, as `(key, priority, model,
    /// endpoint, count)` rows, the running jobs by key, and the keys' shares.
    pub fn seeded(
        rows: Vec<(String, u8, Lane, i64)>,
        running: HashMap<String, i64>,
        shares: Vec<KeyShare>,
    ) -> Self {
        let mut state = State {
            running,
            ..State::default()
        };
        state.set_shares(shares);
        for (key, priority, lane, count) in rows {
            state.add(priority, &key, lane, count);
        }
        Self {
            state: Mutex::new(state),
        }
    }

    /// Sets the counts to a fresh count of the database (`rows` and `running` as
    /// [`Fair::seeded`] takes them): on PostgreSQL, where other gateways' commits move
    /// them too. Each key keeps its place in its band; weights, caps and budgets stay.
    /// Returns whether a lease may now find more than before: a lane holds more jobs, or a
    /// key runs fewer (a cap may have room).
    pub fn recount(
        &self,
        rows: Vec<(String, u8, Lane, i64)>,
        running: HashMap<String, i64>,
    ) -> bool {
        let mut state = self.state();
        let mut want: HashMap<(u8, String, Lane), i64> = HashMap::new();
        for (key, priority, lane, count) in rows {
            *want
                .entry((priority.clamp(1, BANDS as u8), key, lane))
                .or_default() += count;
        }
        let mut have = Vec::new();
        for (index, band) in state.bands.iter().enumerate() {
            for (key, queue) in &band.keys {
                for (lane, count) in &queue.lanes {
                    have.push((index as u8 + 1, key.clone(), lane.clone(), *count));
                }
            }
        }
        let mut more = false;
        for (priority, key, lane, count) in have {
            let wanted = want
                .remove(&(priority, key.clone(), lane.clone()))
                .unwrap_or(0);
            if wanted != count {
                more |= wanted > count;
                state.add(priority, &key, lane, wanted - count);
            }
        }
        for ((priority, key, lane), count) in want {
            more = true;
            state.add(priority, &key, lane, count);
        }
        more |= state
            .running
            .iter()
            .any(|(key, was)| running.get(key).copied().unwrap_or(0) < *was);
        state.running = running;
        // A key put to sleep here may have found its jobs leased or locked by another
        // gateway, which commits on its own: what is queued now is what the count says.
        state.asleep.clear();
        more
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the counts by the changes of one committed group. Returns whether a key held
    /// back by its `max_concurrent_jobs` has room again, so that waiting nodes are woken.
    pub fn apply(&self, changes: &[Change]) -> bool {
        let mut state = self.state();
        let mut room = false;
        for change in changes {
            let lane = || (change.model.clone(), change.endpoint);
            if change.from == Some(JobStatus::Queued) {
                let was = change.was_priority.unwrap_or(change.priority);
                state.add(was, &change.owner, lane(), -1);
            }
            if change.status == JobStatus::Queued {
                state.add(change.priority, &change.owner, lane(), 1);
                state
                    .asleep
                    .remove(&(band_of(change.priority), change.owner.clone()));
            }
            if change.from == Some(JobStatus::Processing) {
                let running = state.running.entry(change.owner.clone()).or_default();
                *running -= 1;
                let running = *running;
                if running <= 0 {
                    state.running.remove(&change.owner);
                }
                room |= state
                    .caps
                    .get(&change.owner)
                    .is_some_and(|cap| running < i64::from(*cap));
            }
            if change.status == JobStatus::Processing {
                *state.running.entry(change.owner.clone()).or_default() += 1;
            }
        }
        room
    }

    /// Jobs `key` has queued, in every band, as of the last commit.
    pub fn queued(&self, key: &str) -> i64 {
        self.state().queued(key)
    }

    /// Passes over `key` in band `priority` from now on: a lease found none of its queued
    /// jobs there due. It wakes when a job of its is queued in the band, or at
    /// [`Fair::wake_sleepers`].
    pub fn sleep(&self, priority: u8, key: &str) {
        self.state()
            .asleep
            .insert((band_of(priority), key.to_owned()));
    }

    /// Wakes every sleeping key: the reaper found retries that became due.
    pub fn wake_sleepers(&self) {
        self.state().asleep.clear();
    }

    /// Sets a key's weight (1 to 1000); its next leases advance it by the new stride.
    pub fn set_weight(&self, key: &str, weight: u32) {
        let mut state = self.state();
        if weight == 1 {
            state.weights.remove(key);
        } else {
            state.weights.insert(key.to_owned(), weight.clamp(1, 1000));
        }
    }

    /// Sets a key's `metrics_label` (none: it has no gauges of its own).
    pub fn set_label(&self, key: &str, label: Option<String>) {
        let mut state = self.state();
        match label {
            Some(label) => state.labels.insert(key.to_owned(), label),
            None => state.labels.remove(key),
        };
    }

    /// Queued and running jobs of each key with a `metrics_label`, by label, sorted.
    pub fn labelled(&self) -> Vec<super::LabelledKey> {
        let state = self.state();
        // Keys given the same label (a team's keys, say) share its gauges: summed.
        let mut by_label: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for (key, label) in &state.labels {
            let queued = state.queued(key);
            let running = state.running.get(key).copied().unwrap_or(0);
            let sums = by_label.entry(label).or_default();
            sums.0 += queued;
            sums.1 += running;
        }
        by_label
            .into_iter()
            .map(|(label, (queued, running))| super::LabelledKey {
                label: label.to_owned(),
                queued,
                running,
            })
            .collect()
    }

    /// Where a queued job of `key` in band `priority` stands: the jobs queued in earlier
    /// bands, and how many leases the band gives for each of the key's own (the weights of
    /// the keys with work in the band over the key's own; at least 1).
    pub fn standing(&self, priority: u8, key: &str) -> (i64, f64) {
        let state = self.state();
        let band = band_of(priority);
        let earlier: i64 = state.bands[..band]
            .iter()
            .flat_map(|band| band.keys.values())
            .map(|queue| queue.queued)
            .sum();
        let weight = |key: &str| f64::from(state.weights.get(key).copied().unwrap_or(1));
        let others: f64 = state.bands[band]
            .keys
            .keys()
            .filter(|other| other.as_str() != key)
            .map(|other| weight(other))
            .sum();
        (earlier, 1.0 + others / weight(key))
    }

    /// Sets a key's `max_concurrent_jobs` (none: no cap).
    pub fn set_cap(&self, key: &str, cap: Option<u32>) {
        let mut state = self.state();
        match cap {
            Some(cap) => state.caps.insert(key.to_owned(), cap),
            None => state.caps.remove(key),
        };
    }

    /// Takes every key's share anew, as stored: after a change made by another process.
    pub fn set_shares(&self, shares: Vec<KeyShare>) {
        self.state().set_shares(shares);
    }

    /// The key to lease from next in band `priority`: the lowest pass among keys with jobs
    /// in a lane `filter` serves, beyond those `taken` already, and not in `skip`. Its grant
    /// runs until its pass would pass the runner-up's, within `room` and what it has. A key
    /// passed over for its `max_concurrent_jobs` or its `tokens_per_minute` is noted in
    /// `deferred`.
    pub fn pick(
        &self,
        priority: u8,
        filter: &Filter<'_>,
        taken: &Taken,
        skip: &HashSet<String>,
        room: u32,
        deferred: &mut Deferrals,
    ) -> Option<Pick> {
        let mut state = self.state();
        state.refill_and_note(Instant::now());
        let state = &*state;
        let band = &state.bands[band_of(priority)];
        let band_index = band_of(priority);
        let mut eligible = band.order.iter().filter_map(|(pass, key)| {
            let asleep =
                !state.asleep.is_empty() && state.asleep.contains(&(band_index, key.clone()));
            if asleep || skip.contains(key) {
                return None;
            }
            let queue = band.keys.get(key)?;
            let room = state.allowance(key, taken, deferred);
            if room == 0 {
                return None;
            }
            let mut lanes = Vec::new();
            let mut available = 0u32;
            for (lane, count) in &queue.lanes {
                if !filter.serves(lane) {
                    continue;
                }
                let gone = taken
                    .get(&(priority, key.clone(), lane.clone()))
                    .copied()
                    .unwrap_or(0);
                let left = u32::try_from(*count).unwrap_or(0).saturating_sub(gone);
                if left > 0 {
                    available += left;
                    lanes.push(lane.clone());
                }
            }
            (available > 0).then_some((*pass, key, lanes, available.min(room)))
        });
        let (pass, key, lanes, available) = eligible.next()?;
        let stride = state.stride(key);
        let turn = match eligible.next() {
            Some((runner_up, ..)) => {
                u32::try_from((runner_up.saturating_sub(pass)) / stride + 1).unwrap_or(u32::MAX)
            }
            None => room,
        };
        Some(Pick {
            key: key.clone(),
            lanes,
            grant: turn.min(room).min(available).max(1),
        })
    }

    /// `key`'s token budget as OpenAI's `x-ratelimit-*-tokens` headers say it: its
    /// `tokens_per_minute`, what is left (none below zero), and how long until it is full.
    pub fn token_budget(&self, key: &str) -> Option<(u32, u64, std::time::Duration)> {
        let mut state = self.state();
        let budget = state.budgets.get_mut(key)?;
        budget.refill(Instant::now());
        let missing = i64::from(budget.per_minute).saturating_sub(budget.level);
        let reset_ms =
            (missing.max(0) as u64).saturating_mul(60_000) / u64::from(budget.per_minute.max(1));
        Some((
            budget.per_minute,
            budget.level.max(0) as u64,
            std::time::Duration::from_millis(reset_ms),
        ))
    }

    /// Charges `key`'s `tokens_per_minute` the estimate of the jobs just leased.
    pub fn spend(&self, key: &str, tokens: u64) {
        let mut state = self.state();
        let now = Instant::now();
        if let Some(budget) = state.budgets.get_mut(key) {
            budget.refill(now);
            budget.level = budget
                .level
                .saturating_sub(i64::try_from(tokens).unwrap_or(i64::MAX));
            if budget.level <= 0 {
                state.short_of_tokens.insert(key.to_owned());
            }
        }
    }

    /// Corrects `key`'s budget once a job's usage is known: what it was charged
    /// (`estimated`) comes back, what it used (`used`) is taken.
    pub fn settle(&self, key: &str, estimated: u64, used: u64) {
        let mut state = self.state();
        if let Some(budget) = state.budgets.get_mut(key) {
            let back = i64::try_from(estimated)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(used).unwrap_or(i64::MAX));
            budget.level = budget
                .level
                .saturating_add(back)
                .min(i64::from(budget.per_minute));
        }
    }

    /// Whether a key that a lease passed over for want of tokens has some again, so that
    /// waiting nodes are woken; asked on every reaper tick.
    pub fn tokens_returned(&self) -> bool {
        let mut state = self.state();
        if state.short_of_tokens.is_empty() {
            return false;
        }
        let now = Instant::now();
        let before = state.short_of_tokens.len();
        state.refill_and_note(now);
        state.short_of_tokens.len() < before
    }

    /// Whether one more of `key`'s jobs may be leased now, beyond those `taken`: the
    /// lease's queue-order fallback asks this of each job, so that it too keeps the key's
    /// `max_concurrent_jobs` and `tokens_per_minute`.
    pub fn may_take(&self, key: &str, taken: &Taken, deferred: &mut Deferrals) -> bool {
        let mut state = self.state();
        state.refill_and_note(Instant::now());
        state.allowance(key, taken, deferred) > 0
    }

    /// Sets a key's `tokens_per_minute` (none: no limit); a new rate starts full.
    pub fn set_tokens(&self, key: &str, per_minute: Option<u32>) {
        let mut state = self.state();
        match per_minute {
            Some(per_minute) => {
                let same = state
                    .budgets
                    .get(key)
                    .is_some_and(|budget| budget.per_minute == per_minute);
                if !same {
                    state
                        .budgets
                        .insert(key.to_owned(), TokenBudget::new(per_minute, Instant::now()));
                }
            }
            None => {
                state.budgets.remove(key);
                state.short_of_tokens.remove(key);
            }
        }
    }

    /// Advances `key`'s pass in band `priority` by `leased` jobs.
    pub fn charge(&self, priority: u8, key: &str, leased: u32) {
        let mut state = self.state();
        let stride = state.stride(key);
        let band = &mut state.bands[band_of(priority)];
        let Some(queue) = band.keys.get_mut(key) else {
            return;
        };
        band.order.remove(&(queue.pass, key.to_owned()));
        band.vtime = band.vtime.max(queue.pass);
        queue.pass += u64::from(leased) * stride;
        band.order.insert((queue.pass, key.to_owned()));
    }

    /// The queued counts by band, key and lane, for tests that compare them with a fresh
    /// count from the database.
    #[cfg(test)]
    pub fn counts(&self) -> BTreeMap<(u8, String, Lane), i64> {
        let state = self.state();
        let mut counts = BTreeMap::new();
        for (index, band) in state.bands.iter().enumerate() {
            for (key, queue) in &band.keys {
                for (lane, count) in &queue.lanes {
                    counts.insert((index as u8 + 1, key.clone(), lane.clone()), *count);
                }
            }
        }
        counts
    }
}

impl State {
    /// Refills every budget to `now`; keys whose budget is back above zero are no longer
    /// short of tokens.
    fn refill_and_note(&mut self, now: Instant) {
        for budget in self.budgets.values_mut() {
            budget.refill(now);
        }
        let budgets = &self.budgets;
        self.short_of_tokens
            .retain(|key| budgets.get(key).is_some_and(|budget| budget.level <= 0));
    }

    /// Jobs `key` has queued, in every band.
    fn queued(&self, key: &str) -> i64 {
        self.bands
            .iter()
            .filter_map(|band| band.keys.get(key))
            .map(|queue| queue.queued)
            .sum()
    }

    /// How many more of `key`'s jobs may run now, beyond those `taken`: `u32::MAX` without
    /// a cap.
    fn room(&self, key: &str, taken: &Taken) -> u32 {
        let Some(cap) = self.caps.get(key) else {
            return u32::MAX;
        };
        let taken: u32 = taken
            .iter()
            .filter(|((_, owner, _), _)| owner == key)
            .map(|(_, n)| *n)
            .sum();
        let running = u32::try_from(self.running.get(key).copied().unwrap_or(0)).unwrap_or(0);
        cap.saturating_sub(running + taken)
    }

    /// How many of `key`'s jobs one grant may lease now: none for a key at its
    /// `max_concurrent_jobs` or out of its `tokens_per_minute` (it waits, queued, not
    /// refused; noted in `deferred`), one at a time for a key with a token budget (each
    /// job's estimate is charged before the next is granted), else its room.
    fn allowance(&self, key: &str, taken: &Taken, deferred: &mut Deferrals) -> u32 {
        let room = self.room(key, taken);
        if room == 0 {
            deferred.concurrency = true;
            return 0;
        }
        match self.budgets.get(key) {
            Some(budget) if budget.level <= 0 => {
                deferred.tokens = true;
                0
            }
            Some(_) => room.min(1),
            None => room,
        }
    }

    fn set_shares(&mut self, shares: Vec<KeyShare>) {
        self.weights.clear();
        self.caps.clear();
        self.labels.clear();
        let now = Instant::now();
        let mut budgets = HashMap::new();
        for share in &shares {
            if let Some(per_minute) = share.tokens_per_minute {
                // A key keeps what it has left; a new or changed rate starts full.
                let budget = match self.budgets.remove(&share.key) {
                    Some(budget) if budget.per_minute == per_minute => budget,
                    _ => TokenBudget::new(per_minute, now),
                };
                budgets.insert(share.key.clone(), budget);
            }
        }
        self.budgets = budgets;
        for share in shares {
            if let Some(label) = share.metrics_label.clone() {
                self.labels.insert(share.key.clone(), label);
            }
            if share.weight != 1 {
                self.weights
                    .insert(share.key.clone(), share.weight.clamp(1, 1000));
            }
            if let Some(cap) = share.max_concurrent {
                self.caps.insert(share.key, cap);
            }
        }
    }

    fn stride(&self, key: &str) -> u64 {
        STRIDE / u64::from(self.weights.get(key).copied().unwrap_or(1).max(1))
    }

    /// Moves `key`'s count of `lane` in band `priority` by `by`. A key that had nothing
    /// queued joins at the band's virtual time; one left with nothing leaves the band.
    fn add(&mut self, priority: u8, key: &str, lane: Lane, by: i64) {
        let band = &mut self.bands[band_of(priority)];
        if by < 0 && !band.keys.contains_key(key) {
            return;
        }
        let queue = band.keys.entry(key.to_owned()).or_default();
        if queue.queued <= 0 && by > 0 {
            band.order.remove(&(queue.pass, key.to_owned()));
            queue.pass = queue.pass.max(band.vtime);
            band.order.insert((queue.pass, key.to_owned()));
        }
        queue.queued += by;
        let count = queue.lanes.entry(lane.clone()).or_default();
        *count += by;
        if *count <= 0 {
            queue.lanes.remove(&lane);
        }
        if queue.queued <= 0 {
            band.order.remove(&(queue.pass, key.to_owned()));
            band.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: Endpoint = Endpoint::ChatCompletions;

    fn lane(model: &str) -> Lane {
        (model.to_owned(), CHAT)
    }

    fn fair(rows: &[(&str, u8, &str, i64)]) -> Fair {
        let rows = rows
            .iter()
            .map(|(key, priority, model, count)| {
                ((*key).to_owned(), *priority, lane(model), *count)
            })
            .collect();
        Fair::seeded(rows, HashMap::new(), Vec::new())
    }

    fn any() -> Vec<String> {
        vec!["*".to_owned()]
    }

    fn change(key: &str, from: Option<JobStatus>, status: JobStatus) -> Change {
        Change {
            was_priority: None,
            batch_id: None,
            record: None,
            job_id: "j".into(),
            status,
            from,
            model: "m".into(),
            priority: 3,
            owner: key.into(),
            endpoint: CHAT,
        }
    }

    /// A pick with nothing taken or skipped yet, and its deferrals dropped.
    fn fresh_pick(fair: &Fair, priority: u8, filter: &Filter<'_>, room: u32) -> Option<Pick> {
        fair.pick(
            priority,
            filter,
            &Taken::new(),
            &HashSet::new(),
            room,
            &mut Deferrals::default(),
        )
    }

    /// Leases one job at a time, `n` times, each committed before the next: the key picked,
    /// charged, and its job moved to processing. Returns the keys in order.
    fn serve(fair: &Fair, priority: u8, n: usize) -> Vec<String> {
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let mut order = Vec::new();
        for _ in 0..n {
            let Some(pick) = fresh_pick(fair, priority, &filter, 1) else {
                break;
            };
            fair.charge(priority, &pick.key, 1);
            let mut leased = change(&pick.key, Some(JobStatus::Queued), JobStatus::Processing);
            leased.priority = priority;
            fair.apply(&[leased]);
            order.push(pick.key);
        }
        order
    }

    #[test]
    fn a_key_alone_is_granted_every_slot_it_has_jobs_for() {
        let fair = fair(&[("a", 3, "m", 10)]);
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let pick = fresh_pick(&fair, 3, &filter, 8).unwrap();
        assert_eq!((pick.key.as_str(), pick.grant), ("a", 8));
        let pick = fresh_pick(&fair, 3, &filter, 64).unwrap();
        assert_eq!(pick.grant, 10, "no more than it has");
        assert_eq!(fresh_pick(&fair, 2, &filter, 8), None);
    }

    #[test]
    fn keys_of_equal_weight_alternate_and_a_weight_of_3_gets_3_for_1() {
        let fair = fair(&[("a", 3, "m", 100), ("b", 3, "m", 100)]);
        let order = serve(&fair, 3, 6);
        assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
        fair.set_weight("a", 3);
        let order = serve(&fair, 3, 40);
        let a = order.iter().filter(|k| *k == "a").count();
        assert_eq!((a, 40 - a), (30, 10), "{order:?}");
    }

    #[test]
    fn a_key_that_arrives_behind_a_backlog_is_served_next_without_banked_credit() {
        let fair = fair(&[("a", 3, "m", 400)]);
        assert_eq!(serve(&fair, 3, 20), vec!["a"; 20]);
        // B's jobs arrive: it joins at the band's time, not behind A's 380.
        let queued = |key: &str| change(key, None, JobStatus::Queued);
        fair.apply(&[queued("b"), queued("b")]);
        let order = serve(&fair, 3, 4);
        assert_eq!(order, ["b", "a", "b", "a"]);
        // Its two jobs done, B has nothing queued and leaves; back later, it has no credit
        // for the time it was away: it alternates with A again, no burst.
        assert_eq!(serve(&fair, 3, 3), ["a", "a", "a"]);
        fair.apply(&[queued("b"), queued("b"), queued("b")]);
        let order = serve(&fair, 3, 4);
        assert_eq!(order.iter().filter(|k| *k == "b").count(), 2, "{order:?}");
    }

    #[test]
    fn a_lane_the_node_does_not_serve_does_not_block_another_key() {
        let fair = fair(&[("a", 3, "x", 5), ("b", 3, "y", 5)]);
        let models = vec!["y".to_owned()];
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let pick = fresh_pick(&fair, 3, &filter, 4).unwrap();
        assert_eq!(
            (pick.key.as_str(), pick.lanes.clone()),
            ("b", vec![lane("y")])
        );
        let embeddings_only = Filter {
            models: &any(),
            endpoints: &[Endpoint::Embeddings],
        };
        assert_eq!(
            fair.pick(
                3,
                &embeddings_only,
                &Taken::new(),
                &HashSet::new(),
                4,
                &mut Deferrals::default()
            ),
            None
        );
    }

    #[test]
    fn the_grant_stops_where_the_runner_up_would_go_first() {
        let fair = fair(&[("a", 3, "m", 50), ("b", 3, "m", 50)]);
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        // Tied: one each in turn.
        let pick = fresh_pick(&fair, 3, &filter, 8).unwrap();
        assert_eq!(pick.grant, 1);
        // B three strides ahead: A may take 4 before B's turn (ties go to the lower name).
        fair.charge(3, "b", 3);
        let pick = fresh_pick(&fair, 3, &filter, 8).unwrap();
        assert_eq!((pick.key.as_str(), pick.grant), ("a", 4));
    }

    #[test]
    fn a_key_at_its_cap_waits_and_a_finished_job_makes_room() {
        let fair = fair(&[("a", 3, "m", 5), ("b", 3, "m", 5)]);
        fair.set_cap("a", Some(1));
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let pick = |taken: &Taken| {
            fair.pick(
                3,
                &filter,
                taken,
                &HashSet::new(),
                8,
                &mut Deferrals::default(),
            )
            .unwrap()
        };
        // Tied at the start: A is served first, but no more than one of its jobs at once.
        let first = pick(&Taken::new());
        assert_eq!((first.key.as_str(), first.grant), ("a", 1));
        let mut taken = Taken::new();
        taken.insert((3, "a".to_owned(), lane("m")), 1);
        assert_eq!(pick(&taken).key, "b", "A waits at its cap; B does not");
        // Committed: A's job runs; when it ends, there is room, and nodes are to be woken.
        assert!(!fair.apply(&[change("a", Some(JobStatus::Queued), JobStatus::Processing)]));
        assert_eq!(pick(&Taken::new()).key, "b");
        assert!(fair.apply(&[change(
            "a",
            Some(JobStatus::Processing),
            JobStatus::Completed
        )]));
        fair.set_cap("a", None);
        assert_eq!(pick(&Taken::new()).grant, 1, "tied again: one each");
    }

    #[test]
    fn a_key_with_nothing_due_sleeps_until_a_job_is_queued_or_retries_come_due() {
        let fair = fair(&[("a", 3, "m", 5), ("b", 3, "m", 5)]);
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let pick = || fresh_pick(&fair, 3, &filter, 1).map(|pick| pick.key);
        assert_eq!(pick().as_deref(), Some("a"));
        fair.sleep(3, "a");
        assert_eq!(
            pick().as_deref(),
            Some("b"),
            "a sleeping key is passed over"
        );
        fair.sleep(3, "b");
        assert_eq!(pick(), None);
        fair.apply(&[change("b", None, JobStatus::Queued)]);
        assert_eq!(
            pick().as_deref(),
            Some("b"),
            "a job queued in the band wakes it"
        );
        fair.sleep(3, "b");
        fair.wake_sleepers();
        assert_eq!(pick().as_deref(), Some("a"));
    }

    #[test]
    fn keys_sharing_a_metrics_label_share_its_gauges() {
        let fair = fair(&[("a", 3, "m", 2), ("b", 1, "m", 3), ("c", 3, "m", 7)]);
        fair.set_label("a", Some("team".into()));
        fair.set_label("b", Some("team".into()));
        fair.set_label("c", Some("solo".into()));
        let labelled: Vec<(String, i64)> = fair
            .labelled()
            .into_iter()
            .map(|key| (key.label, key.queued))
            .collect();
        assert_eq!(labelled, [("solo".into(), 7), ("team".into(), 5)]);
    }

    #[test]
    fn a_key_out_of_tokens_waits_until_its_usage_gives_some_back() {
        let fair = fair(&[("a", 3, "m", 5), ("b", 3, "m", 5)]);
        fair.set_tokens("a", Some(100));
        let models = any();
        let filter = Filter {
            models: &models,
            endpoints: &[CHAT],
        };
        let mut deferred = Deferrals::default();
        let mut pick = || {
            fair.pick(3, &filter, &Taken::new(), &HashSet::new(), 1, &mut deferred)
                .unwrap()
                .key
        };
        assert_eq!(pick(), "a");
        fair.spend("a", 150);
        fair.charge(3, "a", 1);
        assert_eq!(pick(), "b");
        fair.charge(3, "b", 1);
        assert_eq!(pick(), "b", "A is out of tokens, though its turn");
        assert!(deferred.tokens);
        assert!(!fair.tokens_returned());
        // Its job used 20 of the 150 it was charged: 130 come back, and so does its turn.
        fair.settle("a", 150, 20);
        assert!(fair.tokens_returned(), "nodes are to be woken");
        let pick = fresh_pick(&fair, 3, &filter, 1).unwrap();
        assert_eq!(pick.key, "a");
    }

    #[test]
    fn changes_move_the_counts_and_an_emptied_key_leaves_its_band() {
        let fair = fair(&[("a", 1, "m", 1)]);
        let mut leased = change("a", Some(JobStatus::Queued), JobStatus::Processing);
        leased.priority = 1;
        fair.apply(std::slice::from_ref(&leased));
        assert!(fair.counts().is_empty());
        let requeued = Change {
            was_priority: None,
            batch_id: None,
            record: None,
            status: JobStatus::Queued,
            from: Some(JobStatus::Processing),
            ..leased
        };
        fair.apply(&[requeued]);
        assert_eq!(
            fair.counts().into_iter().collect::<Vec<_>>(),
            vec![((1, "a".to_owned(), lane("m")), 1)]
        );
    }
}
