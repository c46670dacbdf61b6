use super::*;

fn chunk(n: u64) -> Bytes {
    Bytes::from(format!("{{\"n\":{n}}}"))
}

fn seqs(read: Read) -> Vec<u64> {
    match read {
        Read::Chunks(chunks) => chunks.into_iter().map(|(seq, _)| seq).collect(),
        other => panic!("expected chunks, read {other:?}"),
    }
}

#[test]
fn a_subscriber_gets_every_chunk_after_its_cursor_in_order() {
    let relays = Relays::new(RelayLimits::default());
    let mut early = relays.subscribe("job", None);
    let ingest = relays.open("job", "lease-1");
    assert_eq!(early.read(), Read::Pending);
    assert_eq!(
        ingest.append(0, chunk(0)),
        Appended::Kept { unmarked: true }
    );
    // Until the store has the mark, every chunk asks for it.
    assert_eq!(
        ingest.append(1, chunk(1)),
        Appended::Kept { unmarked: true }
    );
    ingest.marked();
    assert!(!ingest.needs_mark());
    assert_eq!(seqs(early.read()), vec![0, 1]);
    let mut late = relays.subscribe("job", Some(0));
    ingest.append(2, chunk(2));
    assert_eq!(seqs(late.read()), vec![1, 2]);
    assert_eq!(seqs(early.read()), vec![2]);
    ingest.finish(RelayEnd::Complete);
    assert_eq!(early.read(), Read::End(RelayEnd::Complete));
    assert_eq!(early.end(), (RelayEnd::Complete, true));
}

#[tokio::test]
async fn an_append_wakes_a_waiting_subscriber() {
    let relays = Relays::new(RelayLimits::default());
    let mut cursor = relays.subscribe("job", None);
    let ingest = relays.open("job", "lease-1");
    let waiting = tokio::spawn(async move {
        cursor.changed().await;
        cursor.read()
    });
    ingest.append(0, chunk(0));
    let read = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the subscriber woke")
        .unwrap();
    assert_eq!(seqs(read), vec![0]);
}

#[test]
fn a_full_buffer_evicts_oldest_and_a_cursor_behind_it_reads_behind() {
    let limits = RelayLimits {
        chunks: 3,
        ..RelayLimits::default()
    };
    let relays = Relays::new(limits);
    let mut cursor = relays.subscribe("job", None);
    let ingest = relays.open("job", "lease-1");
    for n in 0..5 {
        ingest.append(n, chunk(n));
    }
    assert_eq!(cursor.read(), Read::Behind { oldest: 2 });
    let mut resumed = relays.subscribe("job", Some(1));
    assert_eq!(seqs(resumed.read()), vec![2, 3, 4]);
    assert_eq!(relays.stats().bytes, 3 * chunk(0).len());
}

#[test]
fn the_byte_bounds_evict_from_the_appending_relay() {
    let limits = RelayLimits {
        bytes: 3 * chunk(0).len(),
        total_bytes: 4 * chunk(0).len(),
        ..RelayLimits::default()
    };
    let relays = Relays::new(limits);
    let quiet = relays.open("quiet", "lease-q");
    quiet.append(0, chunk(0));
    let busy = relays.open("busy", "lease-b");
    for n in 0..6 {
        busy.append(n, chunk(n));
    }
    // The busy relay kept what the total left it; the quiet one kept its chunk.
    assert_eq!(seqs(relays.subscribe("quiet", None).read()), vec![0]);
    assert_eq!(
        seqs(relays.subscribe("busy", Some(2)).read()),
        vec![3, 4, 5]
    );
    assert_eq!(relays.stats().bytes, 4 * chunk(0).len());
}

#[test]
fn a_newer_lease_makes_the_old_ingest_stale() {
    let relays = Relays::new(RelayLimits::default());
    let old = relays.open("job", "lease-1");
    let new = relays.open("job", "lease-2");
    assert!(old.is_stale());
    assert_eq!(old.append(0, chunk(0)), Appended::Stale);
    assert_eq!(new.append(0, chunk(0)), Appended::Kept { unmarked: true });
    // The same lease opening again continues where it was.
    let again = relays.open("job", "lease-2");
    assert_eq!(again.next_seq(), 1);
    again.marked();
    assert_eq!(
        again.append(1, chunk(1)),
        Appended::Kept { unmarked: false }
    );
}

#[test]
fn duplicates_are_dropped_and_gaps_answer_next_seq() {
    let relays = Relays::new(RelayLimits::default());
    let ingest = relays.open("job", "lease-1");
    ingest.append(0, chunk(0));
    assert_eq!(ingest.append(0, chunk(0)), Appended::Duplicate);
    assert_eq!(ingest.append(5, chunk(5)), Appended::Gap(1));
    assert_eq!(ingest.next_seq(), 1);
}

#[test]
fn the_sweep_forgets_ended_relays_after_the_linger_and_keeps_open_ones() {
    let relays = Relays::new(RelayLimits {
        linger: Duration::from_secs(30),
        ..RelayLimits::default()
    });
    let ended = relays.open("ended", "lease-1");
    ended.append(0, chunk(0));
    ended.finish(RelayEnd::Complete);
    let open = relays.open("open", "lease-2");
    open.append(0, chunk(0));
    relays.sweep(Instant::now());
    assert_eq!(
        relays.stats().relays,
        2,
        "nothing is swept within the linger"
    );
    relays.sweep(Instant::now() + Duration::from_secs(31));
    assert_eq!(relays.stats().relays, 1);
    assert_eq!(relays.stats().bytes, chunk(0).len());
    // An ended relay with a subscriber stays as long as it is read.
    let held = relays.open("held", "lease-3");
    held.finish(RelayEnd::Abandoned);
    let cursor = relays.subscribe("held", None);
    relays.sweep(Instant::now() + Duration::from_secs(61));
    assert_eq!((relays.stats().relays, relays.stats().subscribers), (2, 1));
    drop(cursor);
    relays.sweep(Instant::now() + Duration::from_secs(61));
    assert_eq!(relays.stats().relays, 1, "only the open relay is left");
    // An open relay whose node vanished without closing its connection goes in the end.
    relays.sweep(Instant::now() + Duration::from_secs(601));
    assert_eq!(relays.stats(), RelayStats::default());
}

#[test]
fn a_cursor_that_read_one_run_does_not_read_the_next_runs_chunks() {
    let relays = Relays::new(RelayLimits::default());
    let mut reader = relays.subscribe("job", None);
    let mut late = relays.subscribe("job", None);
    let first = relays.open("job", "lease-1");
    first.append(0, chunk(0));
    assert_eq!(seqs(reader.read()), vec![0]);
    // Run 1's chunk came after its lease lapsed; run 2 takes the relay over.
    let second = relays.open("job", "lease-2");
    second.append(0, chunk(10));
    second.append(1, chunk(11));
    assert!(
        matches!(reader.read(), Read::Behind { .. }),
        "no splice of two runs"
    );
    // A cursor that had read nothing follows the new run from its start.
    assert_eq!(seqs(late.read()), vec![0, 1]);
}

#[test]
fn a_late_break_does_not_undo_a_complete_stream_and_a_read_relay_is_never_swept() {
    let relays = Relays::new(RelayLimits::default());
    let ingest = relays.open("job", "lease-1");
    ingest.append(0, chunk(0));
    ingest.finish(RelayEnd::Complete);
    ingest.finish(RelayEnd::Abandoned);
    let mut cursor = relays.subscribe("job", None);
    assert_eq!(seqs(cursor.read()), vec![0]);
    assert_eq!(cursor.end(), (RelayEnd::Complete, true));
    // A queued job's stream waits for longer than any linger: its relay stays.
    let _waiting = relays.subscribe("queued", None);
    relays.sweep(Instant::now() + Duration::from_secs(3600));
    assert_eq!(relays.stats().relays, 2);
}
