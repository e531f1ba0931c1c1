"""Which work a lowered power cap sheds, and in what order (pure)."""

from __future__ import annotations

from gigafab.operator.power import PlacedWork, ShedClass, draw_kw, placed_kw, to_shed, why


def work(name: str, criticality: str = "standard", kw: float = 1.6, borrowed: bool = False) -> PlacedWork:
    return PlacedWork(("t", name), criticality, borrowed, kw)


def test_the_draw_is_gpus_times_watts() -> None:
    assert placed_kw(8, 700) == 5.6
    assert draw_kw([work("a", kw=5.6), work("b", kw=1.4)]) == 7.0


def test_nothing_is_shed_within_the_cap() -> None:
    assert to_shed([work("a"), work("b")], limit_kw=3.2) == []


def test_preemptible_then_borrowed_then_standard_then_critical() -> None:
    placed = [work("crit", "critical"), work("std"), work("lent", borrowed=True), work("pre", "preemptible")]
    assert [w.key[1] for w in to_shed(placed, limit_kw=0)] == ["pre", "lent", "std", "crit"]
    assert [w.shed_class for w in to_shed(placed, limit_kw=0)] == list(ShedClass)


def test_only_as_much_as_the_cap_needs_and_the_largest_of_a_class_first() -> None:
    placed = [work("crit", "critical", kw=5.6), work("small", kw=1.4), work("big", kw=2.8), work("pre", "preemptible", kw=1.4)]
    # 11.2 kW placed, cap 8: the preemptible 1.4 is not enough, the biggest standard one follows
    assert [w.key[1] for w in to_shed(placed, limit_kw=8.0)] == ["pre", "big"]


def test_borrowed_critical_work_is_still_critical() -> None:
    assert work("c", "critical", borrowed=True).shed_class is ShedClass.CRITICAL


def test_the_reason_names_the_site_the_draw_and_the_cap() -> None:
    text = why(work("pre", "preemptible"), "niemeyer", 9.6, 8.0)
    assert "niemeyer draws 9.6 kW, above its power cap of 8 kW" in text
    assert "preemptible" in text
