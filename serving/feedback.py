"""What /feedback accepts and how each event is attributed.

A feedback event names a decision. It is refused, with a message that says
what is wrong, when the decision is unknown (404), a model it names is not
in the catalog (400), it comes from another user or org than the decision's
(403; a decision made without an org takes no feedback under an org's key),
or it does not fit the event (an override to the model already
routed, 400). Ratings out of 1..5 are refused by the schema before this.

Attribution: the log row's ``chosen_model`` is the model whose answer the
event is about.

- ``override``: the model the user switched to;
- ``regenerate``: the model that wrote the new answer (``chosen_model`` in the
  body; without it, the model currently shown for the decision: the last one
  switched to, else the routed one), so a regeneration with another model
  becomes a comparison in training;
- ``rating``: the model whose answer was rated (``chosen_model`` in the body;
  without it, the model currently shown), so a rating after an override is
  credited to the model the user switched to, not to the routed one.
"""
from __future__ import annotations

from typing import Any

from serving.schemas import Feedback


class FeedbackRejected(Exception):
    def __init__(self, message: str, status: int, code: str):
        super().__init__(message)
        self.status, self.code = status, code


def current_model(store, decision_id: str, routed: str) -> str:
    """The model whose answer the user sees now: the last override or
    regeneration's model for the decision, else the routed model."""
    last = store.last_switch(decision_id)
    return last or routed


def feedback_row(feedback: Feedback, row: dict[str, Any] | None, catalog, store, ts: str) -> dict[str, Any]:
    """The log row for an event on the decision `row` (FeedbackRejected when it is bad)."""
    fid = feedback.decision_id
    if row is None:
        raise FeedbackRejected(f"unknown decision_id {fid!r}: no decision with this id in the log", 404,
                               "unknown_decision")
    owner = row.get("user_id")
    if feedback.user_id is not None and feedback.user_id != owner:
        whose = "without a user_id" if owner is None else "for another user"
        raise FeedbackRejected(f"user_id: decision {fid} was made {whose}; feedback must come from the user the "
                               "decision was made for", 403, "wrong_user")
    org = row.get("org_id")
    if feedback.org_id is not None and feedback.org_id != org:     # with API keys: the key's org
        whose = "without an org" if org is None else "for another org"
        raise FeedbackRejected(f"org_id: decision {fid} was made {whose}, not {feedback.org_id!r}; feedback goes "
                               "to the decision's own org", 403, "forbidden")
    routed = row["selected_model"]
    chosen = None
    if feedback.chosen_model is not None:
        chosen = catalog.try_resolve(feedback.chosen_model)
        if chosen is None:
            raise FeedbackRejected(f"chosen_model: unknown model {feedback.chosen_model!r}: not an id or alias in "
                                   "the catalog (GET /models lists them)", 400, "unknown_model")
    if feedback.event == "override" and chosen == routed:
        raise FeedbackRejected(f"chosen_model: {chosen} is the model the decision routed to; an override names "
                               "the model the user switched to", 400, "not_an_override")
    if chosen is None:
        chosen = current_model(store, fid, routed)
    return {"decision_id": fid, "prompt": row.get("prompt") or "", "routed_model": routed, "chosen_model": chosen,
            "event": feedback.event, "rating": float(feedback.rating) if feedback.rating is not None else None,
            "user_id": owner, "org_id": org, "ts": ts}
