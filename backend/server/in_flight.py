"""Results on their way to a client, so that one connection holds at most one copy of a result in the server's memory.

`fetch` sends a stored result again, any number of times. A client that sends `fetch` faster than it reads the
results (or over a slow link) would otherwise make the server load and queue one copy per `fetch`: ZeroMQ keeps
a message that a peer has not taken yet, and a 256-frame result is hundreds of MB. ZeroMQ's message trackers say
when a sent message has left the server's memory.
"""

import zmq


class ResultsInFlight:
    """The results being sent, by (connection identity, job id), until ZeroMQ has let go of them."""

    def __init__(self) -> None:
        self._trackers: dict[tuple[bytes, str], zmq.MessageTracker] = {}

    def add(self, identity: bytes, job_id: str, tracker: zmq.MessageTracker) -> None:
        self._trackers[(identity, job_id)] = tracker

    def pending(self, identity: bytes, job_id: str) -> bool:
        """Whether a result of `job_id` sent to `identity` is still in the server's send queue."""
        self.forget_sent()
        return (identity, job_id) in self._trackers

    def forget_sent(self) -> None:
        """Drop the results that have left (a peer that disconnected drops its queue, so those leave too)."""
        self._trackers = {key: tracker for key, tracker in self._trackers.items() if not tracker.done}

    def __len__(self) -> int:
        return len(self._trackers)
