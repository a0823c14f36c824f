from __future__ import annotations

import pytest

from gateway.fanout.admission import PendingBudget


def test_pending_budget_limits_per_key_then_in_total_and_frees_on_close() -> None:
    budget = PendingBudget(total=3, per_key=2)
    assert budget.open("a") is None and budget.open("a") is None
    assert budget.open("a") == "pending_per_ip"
    assert budget.open("b") is None
    assert budget.open("c") == "pending_total"
    assert (budget.pending, budget.held("a"), budget.held("c")) == (3, 2, 0)
    budget.close("a")
    assert budget.open("c") is None
    for key in ("a", "b", "c"):
        budget.close(key)
    assert budget.pending == 0 and budget._per_key == {}  # forgotten keys: bounded memory


def test_pending_budget_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        PendingBudget(total=0, per_key=1)
