"""Review volume: the judgement of one approval edge from how its requests were decided in a window.

An approval edge costs a human's attention on every request. Two findings are worth that human's time:

- **over-reviewed**: the edge nearly always approves, so the review may not be needed (or may be
  ``relaxable``);
- **weak upstream**: the edge keeps rejecting, so the contract before it lets problems through and is
  what needs fixing.

Only decided requests (approved or rejected) count as evidence; expired, stale and pending ones say
nothing about the work. Below ``min_requests`` decided requests the answer is "too few", never a rate.
The thresholds are the spec's ``fitness.review`` (:class:`~roster.kernel.spec.ReviewVolume`). Pure: no
store, no clock.
"""

from __future__ import annotations

from roster.kernel.spec import ReviewVolume

VERDICTS = ("over-reviewed", "weak-upstream", "ok", "too-few")
"""Every verdict :func:`review_verdict` gives."""


def review_verdict(approved: int, rejected: int, *, window_days: float,
                   settings: ReviewVolume) -> tuple[str, str]:
    """The verdict on one approval edge and a sentence saying why, from the requests decided in a window.

    ``approved`` and ``rejected`` are counts (whole numbers, at least 0) of requests made in the window;
    ``window_days`` is the window's length in days (``0.5`` is twelve hours), used only in the sentence.
    With ``decided = approved + rejected``, the verdict is the first that holds of:

    - ``"too-few"`` when ``decided < settings.min_requests``;
    - ``"over-reviewed"`` when ``approved / decided >= settings.over_reviewed_at``;
    - ``"weak-upstream"`` when ``rejected / decided >= settings.weak_upstream_at``;
    - ``"ok"`` otherwise.

    Returns ``(verdict, summary)``, e.g. ``("over-reviewed", "48 of 48 approved in 30 days: over-reviewed,
    is this edge needed?")``, ``("weak-upstream", "9 of 20 rejected in 30 days: the upstream contract lets
    problems through")``, ``("ok", "18 of 20 approved in 30 days: neither over-reviewed nor a weak
    upstream")`` or ``("too-few", "3 decided in 30 days: too few to judge (20 needed)")``. Raises
    :class:`ValueError` for a negative count or a window that is not positive."""
    if approved < 0 or rejected < 0:
        raise ValueError(f"counts are never negative: approved={approved}, rejected={rejected}")
    if window_days <= 0:
        raise ValueError(f"a window is positive, not {window_days} days")
    decided = approved + rejected
    span = _span(window_days)
    if decided < settings.min_requests:
        return "too-few", f"{decided} decided in {span}: too few to judge ({settings.min_requests} needed)"
    if approved / decided >= settings.over_reviewed_at:
        return "over-reviewed", f"{approved} of {decided} approved in {span}: over-reviewed, is this edge needed?"
    if rejected / decided >= settings.weak_upstream_at:
        return "weak-upstream", (f"{rejected} of {decided} rejected in {span}: the upstream contract lets "
                                 "problems through")
    return "ok", f"{approved} of {decided} approved in {span}: neither over-reviewed nor a weak upstream"


def _span(window_days: float) -> str:
    """``30 days``, ``1 day``, ``12 hours``, ``45 minutes``: the window in its largest whole unit."""
    seconds = round(window_days * 86400)
    unit, size = next((u, n) for u, n in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
                      if seconds % n == 0)
    count = seconds // size
    return f"{count} {unit}{'' if count == 1 else 's'}"
