"""The request shapes a policy caches per model and tag set answer only for their own model."""

from __future__ import annotations

from prism_limiter import Policy
from prism_limiter.policy._rules import ProjectRules

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["*"]
[projects.p.prices."model-a"]
input_mtok = 1.0
output_mtok = 1.0
[projects.p.prices."model-b"]
input_mtok = 2.0
output_mtok = 2.0
[[projects.p.budgets]]
id = "only-a"
usd = 1.0
models = ["model-a"]
"""
)


def test_a_shape_never_answers_for_another_model() -> None:
    """Two threads that look a model up first at once each build an entry and one of them is
    dropped; an entry built later in its memory (the same ``id``) must not get its shape: the
    other model's budgets and attribution rows."""
    tags = {"team": "x"}
    for _ in range(50):
        rules = ProjectRules("p", POLICY.projects["p"], 1)
        lost = rules._entry("model-a", None, False)  # the racing thread's entry, then dropped
        rules.shape(lost, tags)
        del lost
        b = rules.model("model-b")
        shape = rules.shape(b, tags)
        assert shape.dims.split("\x1e")[1] == "model=model-b"
        assert [m.budget.id for m in shape.budgets] == []
