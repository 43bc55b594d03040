use super::*;

fn names() -> Vec<String> {
    vec!["m".into()]
}

#[test]
fn pair_bitset_counts_dups_and_reorders_and_grows_both_ways() {
    let mut p = PairRx::default();
    for s in [100, 101, 103, 102, 102, 5, 200] {
        assert!(p.insert(s));
    }
    assert_eq!(p.dups, 1);
    assert_eq!(p.reorders, 2); // 102 after 103, 5 after 103
    assert_eq!(
        p.iter().collect::<Vec<_>>(),
        vec![5, 100, 101, 102, 103, 200]
    );
    assert!(p.contains(5) && p.contains(200) && !p.contains(104));
    assert_eq!(p.distinct(), 6);
    assert!(!p.insert(u32::MAX));
}

/// Publisher 0 sends at 10,20,…,90 ms (all acked); receiver 1 subscribes at 25 ms
/// and leaves at 100 ms; grace 20 ms → expected seqs 2..=7 (sent 30..70? 80 < 100-20).
fn two_peers() -> Vec<PeerLog> {
    let publishes: Vec<u64> = (1..=9).map(|i| pack(i * 10_000, ACKED)).collect();
    let pubber = PeerLog {
        global: 0,
        channel: Some(0),
        publishes,
        sessions: vec![SessionLog {
            welcomed_us: 1,
            subscribe_sent_us: 2,
            subscribed_us: 3,
            left_us: 200_000,
            ..Default::default()
        }],
        ..Default::default()
    };
    let rcv = PeerLog {
        global: 1,
        channel: Some(0),
        sessions: vec![SessionLog {
            welcomed_us: 20_000,
            subscribe_sent_us: 21_000,
            subscribed_us: 25_000,
            left_us: 100_000,
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![pubber, rcv]
}

fn rx(seqs: &[u32]) -> Vec<(u32, PairRx)> {
    let mut p = PairRx::default();
    for s in seqs {
        p.insert(*s);
    }
    vec![(0, p)]
}

#[test]
fn expected_window_follows_the_membership_timeline() {
    let mut logs = two_peers();
    // seqs 2..=7 are sent at 30..80 ms: inside (25 ms, 100 − 20 = 80 ms) → 2..=6 expected
    logs[1].sessions[0].rx = rx(&[2, 3, 4, 5, 6]);
    let c = account(&logs, &names(), 20_000).channel;
    let d = c["m"];
    assert_eq!((d.expected, d.delivered, d.lost), (5, 5, 0));
    assert_eq!((d.unexpected, d.unaccounted, d.duplicated), (0, 0, 0));
}

#[test]
fn losses_duplicates_margins_and_strangers() {
    let mut logs = two_peers();
    // 3 lost; 4 twice; 7 (sent 80 ms, leaving margin) unaccounted;
    // 1 (sent 20 ms, after subscribe_sent − grace = 1 ms) unaccounted.
    logs[1].sessions[0].rx = rx(&[1, 2, 4, 4, 5, 6, 7]);
    let mut stranger = PairRx::default();
    stranger.insert(0);
    logs[1].sessions[0].rx.push((9, stranger));
    let c = account(&logs, &names(), 20_000).channel;
    let d = c["m"];
    assert_eq!((d.expected, d.delivered, d.lost), (5, 4, 1));
    assert_eq!(d.duplicated, 1);
    assert_eq!(d.unaccounted, 2);
    assert_eq!(d.unexpected, 1);
}

#[test]
fn refused_and_unconfirmed_publishes_are_not_expected() {
    let mut logs = two_peers();
    logs[0].publishes[3] = with_status(logs[0].publishes[3], REJECTED);
    logs[0].publishes[4] = with_status(logs[0].publishes[4], UNCONFIRMED);
    logs[1].sessions[0].rx = rx(&[2, 3, 4, 5, 6]);
    let c = account(&logs, &names(), 20_000).channel;
    let d = c["m"];
    assert_eq!((d.expected, d.delivered, d.lost), (3, 3, 0));
    assert_eq!((d.unexpected, d.unaccounted), (1, 1));
}

#[test]
fn unacked_subscribe_means_nothing_is_expected() {
    let mut logs = two_peers();
    logs[1].sessions[0].subscribed_us = 0;
    logs[1].sessions[0].rx = rx(&[3]);
    let c = account(&logs, &names(), 20_000).channel;
    assert_eq!(c["m"].expected, 0);
    assert_eq!(c["m"].unaccounted, 1);
}

#[test]
fn directs_are_expected_while_the_target_is_connected() {
    let mut logs = two_peers();
    logs[0].directs = vec![
        DirectRec {
            target: 1,
            status: ACKED,
            sent_rel_us: 30_000,
        },
        DirectRec {
            target: 1,
            status: ACKED,
            sent_rel_us: 40_000,
        },
        DirectRec {
            target: 1,
            status: REJECTED,
            sent_rel_us: 50_000,
        },
        DirectRec {
            target: 1,
            status: ACKED,
            sent_rel_us: 90_000,
        }, // leaving margin
        DirectRec {
            target: 1,
            status: ACKED,
            sent_rel_us: 60_000,
        },
    ];
    logs[1].sessions[0].direct_rx = vec![(0, 1), (0, 0), (0, 1), (0, 3), (0, 7)];
    let dm = account(&logs, &names(), 20_000).direct;
    let d = dm["m"];
    assert_eq!((d.expected, d.delivered, d.lost), (3, 2, 1)); // 0,1 delivered; 4 lost
    assert_eq!(d.duplicated, 1);
    assert_eq!(d.reordered, 1); // 0 after 1
    assert_eq!(d.unaccounted, 1); // 3 in the margin
    assert_eq!(d.unexpected, 1); // 7 was never sent
}
