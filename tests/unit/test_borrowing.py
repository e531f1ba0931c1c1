"""Who borrows on a site, and what a track within its quota may take back (pure)."""

from __future__ import annotations

from gigafab.operator.borrowing import Held, borrowed_workloads, borrowing, reclaimable

QUOTAS = {"euro-hpc": {"n": 8, "d": 8}, "national": {"n": 4, "d": 4}, "regional": {"n": 4, "d": 4}}


def pod(name: str, track: str, node: str = "n-0", site: str = "n", gpus: int = 2, started: float = 0) -> Held:
    return Held(("ns", name), node, site, track, gpus, started)


def national_borrowing_eight() -> list[Held]:
    return [pod(f"nat-{i}", "national", node=f"n-{i % 2}", started=i) for i in range(6)]  # 12 GPUs, quota 4


def test_use_beyond_the_quota_is_borrowed_newest_first() -> None:
    borrowers = borrowing(national_borrowing_eight(), QUOTAS, "n")
    assert [p.workload[1] for p in borrowers] == ["nat-5", "nat-4", "nat-3", "nat-2"]
    assert borrowed_workloads(national_borrowing_eight(), QUOTAS, "d") == set()


def test_a_track_within_its_quota_may_take_the_borrowed_gpus_back() -> None:
    freed = reclaimable(national_borrowing_eight(), QUOTAS, "euro-hpc", 2, ["n", "d"])
    assert freed == {"n-1": 4, "n-0": 4}


def test_a_track_beyond_its_quota_takes_nothing_back() -> None:
    held = [*national_borrowing_eight(), *(pod(f"eu-{i}", "euro-hpc", started=10 + i) for i in range(4))]
    assert reclaimable(held, QUOTAS, "euro-hpc", 2, ["n"]) == {}, "8 used of 8: a ninth GPU would be borrowed"


def test_a_borrower_never_reclaims_from_its_own_track() -> None:
    assert reclaimable(national_borrowing_eight(), QUOTAS, "national", 2, ["n"]) == {}
