import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from station.scoring import figures_at, roc_auc, zero_miss_threshold


def test_figures_count_each_cell():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.1, 0.7, 0.3, 0.0])
    f = figures_at(labels, scores, 0.5)
    assert f.confusion == {"true_reject": 2, "false_reject": 1, "true_pass": 3, "missed_defect": 1}
    assert f.missed_defects == 1 and f.false_rejects == 1 and f.n == 7
    assert f.accuracy == 5 / 7
    assert f.precision == 2 / 3 and f.recall == 2 / 3


def test_threshold_sits_in_the_gap_below_the_lowest_defect():
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.8, 0.4, 0.1, 0.2, 0.95])
    t = zero_miss_threshold(labels, scores)
    assert 0.2 < t <= 0.4
    f = figures_at(labels, scores, t)
    assert f.missed_defects == 0 and f.false_rejects == 1


@settings(max_examples=300)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 1.0)), min_size=1, max_size=60))
@example([(False, 0.9999999999999999), (True, 1.0)])  # both logits clipped to one value
@example([(False, 1e-9), (True, 2e-9)])
def test_zero_misses_and_fewest_false_rejects(pairs):
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs])
    if not labels.any():
        return
    t = zero_miss_threshold(labels, scores)
    f = figures_at(labels, scores, t)
    assert f.missed_defects == 0
    # No threshold with zero misses can reject fewer OK parts than those scoring at or
    # above the lowest defective score.
    assert f.false_rejects == int(np.sum(~labels & (scores >= scores[labels].min())))


def test_roc_auc_counts_pairs_ranked_right_and_ties_as_half():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]) == 0.0
    # pairs (ok, defective): (0.1, 0.5) right, (0.5, 0.5) tie = half, (0.9, 0.5) wrong
    assert roc_auc([0, 1, 0], [0.1, 0.5, 0.9]) == 0.5
    assert roc_auc([0, 1, 0], [0.5, 0.5, 0.1]) == 0.75
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = rng.random(400).round(2)  # many ties
    pairs = [
        1.0 if d > o else 0.5 if d == o else 0.0
        for d in scores[labels == 1]
        for o in scores[labels == 0]
    ]
    assert abs(roc_auc(labels, scores) - np.mean(pairs)) < 1e-12


def test_a_moved_threshold_moves_the_network_side_and_keeps_the_pit_checks_rejects():
    """Out of fold each part has its fold's threshold; a move lowers or raises each by as
    many logits. Lowered: a defect just under its threshold is caught by a small margin, one
    far under only by a large one, and a good part is thrown away once the margin reaches
    it. Raised: a good part just past it is kept, then a defect is passed. A part the pit
    check rejects stays rejected at every move (its score is pinned to the threshold it is
    compared with)."""
    from station.scoring import moved_thresholds

    def logit(p):
        return np.log(p / (1 - p))

    def score(logits_past):
        return 1 / (1 + np.exp(-(logit(0.5) + logits_past)))

    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    past = [-0.3, -2.5, -6.0, 1.5, -0.8, -1.9, 0.4]
    network = np.array([score(v) for v in past])
    pit_rejects = np.array([False, False, True, False, False, False, False])
    part = np.where(pit_rejects, np.maximum(network, 0.5), network)  # as part_score makes it
    thresholds = np.full(len(labels), 0.5)
    moves = (-3.0, -2.0, -1.0, -0.5, 0.0, 1.0, 2.0)
    rows = moved_thresholds(labels, network, pit_rejects, thresholds, moves)
    assert [(r.logits, r.escapes, r.false_rejects) for r in rows] == [
        (-3.0, 0, 3),
        (-2.0, 1, 3),
        (-1.0, 1, 2),
        (-0.5, 1, 1),
        (0.0, 2, 1),
        (1.0, 2, 0),
        (2.0, 3, 0),
    ]
    assert rows[0].accuracy == round(4 / 7, 5)
    at_zero = figures_at(labels, part, 0.5)
    assert (rows[4].escapes, rows[4].false_rejects) == (
        at_zero.missed_defects,
        at_zero.false_rejects,
    ), "not moved: the figures at the threshold as chosen"
