"""The division of GPUs over the allocation tracks (pure)."""

from __future__ import annotations

from gigafab.operator.tracks import Share, TrackUse, Waiting, admission_order, guarantees, track_use

DEFAULT = [Share("euro-hpc", 50, 100), Share("national", 25, 100), Share("regional", 25, 200)]


def test_the_default_policy_guarantees_half_a_quarter_and_a_quarter_adding_up_to_the_whole() -> None:
    assert guarantees(DEFAULT, 48) == {"euro-hpc": 24, "national": 12, "regional": 12}
    odd = guarantees(DEFAULT, 47)
    assert sum(odd.values()) == 47
    assert odd["regional"] == 12, "the GPU left by rounding goes to the track with priority"


def test_a_track_over_its_guarantee_borrows_what_idle_lending_tracks_leave() -> None:
    use = track_use(DEFAULT, guarantees(DEFAULT, 48), {"euro-hpc": 4, "national": 20, "regional": 12})
    assert use == [
        TrackUse("euro-hpc", 24, 4, 0, 8),
        TrackUse("national", 12, 20, 8, 0),
        TrackUse("regional", 12, 12, 0, 0),
    ]


def test_a_track_that_does_not_lend_lends_nothing() -> None:
    shares = [Share("euro-hpc", 50, 100, lending=False), Share("national", 25, 100), Share("regional", 25, 200)]
    use = track_use(shares, guarantees(shares, 48), {"national": 20})
    lent = {track.name: track.lent for track in use}
    assert lent == {"euro-hpc": 0, "national": 0, "regional": 8}


def test_no_healthy_gpus_guarantee_nothing_and_all_use_is_borrowed() -> None:
    use = track_use(DEFAULT, guarantees(DEFAULT, 0), {"regional": 2})
    assert [(t.name, t.guaranteed, t.borrowed) for t in use] == [("euro-hpc", 0, 0), ("national", 0, 0), ("regional", 0, 2)]


def waiting(name: str, track: str, criticality: str = "standard", created: str = "2026-11-23T10:00:00Z") -> Waiting:
    return Waiting(("ns", name), track, 2, criticality, created)


def test_work_within_its_guarantee_goes_before_work_that_would_borrow() -> None:
    used = {"euro-hpc": 24, "national": 10, "regional": 12}
    order = admission_order([waiting("reg", "regional"), waiting("nat", "national")], PRIORITIES, used, GUARANTEED)
    assert [w.key[1] for w in order] == ["nat", "reg"], "national has 2 GPUs of its guarantee left"


def test_among_borrowers_the_regional_track_goes_first_then_critical_then_the_oldest() -> None:
    used = {"euro-hpc": 24, "national": 12, "regional": 12}
    order = admission_order(
        [
            waiting("nat-old", "national", created="2026-11-23T09:00:00Z"),
            waiting("nat-new-critical", "national", "critical"),
            waiting("nat-new", "national"),
            waiting("reg", "regional", "preemptible"),
        ],
        PRIORITIES,
        used,
        GUARANTEED,
    )
    assert [w.key[1] for w in order] == ["reg", "nat-new-critical", "nat-old", "nat-new"]


PRIORITIES = {"euro-hpc": 100, "national": 100, "regional": 200}
GUARANTEED = {"euro-hpc": 24, "national": 12, "regional": 12}
