"""Task ownership helpers: the one way the pipeline stops tasks."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


# ASYNC109: the bound applies to waiting for *other* tasks after cancelling them; asyncio.timeout() around the
# call would cancel this wait too and leave them running unobserved.
async def cancel_and_wait(*tasks: asyncio.Task[object] | asyncio.Task[None], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Cancel ``tasks`` and wait for them to finish, at most ``timeout`` seconds.

    Exceptions from the tasks are logged, not raised: this is shutdown, and one failing task must not keep
    the others alive. A task still running after ``timeout`` is reported (it is ignoring cancellation).
    """
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        done, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            log.error("task %s did not stop within %.1f s of cancellation", task.get_name(), timeout)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
