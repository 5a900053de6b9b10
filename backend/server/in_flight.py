"""Large messages on their way to a client (results, large echoes), so that one connection holds at most one copy of
each in the server's memory.

`fetch` sends a stored result again, any number of times, and `echo` sends back what it got. A client that asks
faster than it reads (or over a slow link) would otherwise make the server queue one copy per request: ZeroMQ keeps
a message that a peer has not taken yet, and a 256-frame result is hundreds of MB. ZeroMQ's message trackers say
when a sent message has left the server's memory.
"""

import zmq


class SendsInFlight:
    """The large messages being sent, by (connection identity, job id or "echo"), until ZeroMQ has let go of them."""

    def __init__(self) -> None:
        self._trackers: dict[tuple[bytes, str], zmq.MessageTracker] = {}

    def add(self, identity: bytes, what: str, tracker: zmq.MessageTracker) -> None:
        self._trackers[(identity, what)] = tracker

    def pending(self, identity: bytes, what: str) -> bool:
        """Whether `what` (a job id, or "echo") sent to `identity` is still in the server's send queue."""
        self.forget_sent()
        return (identity, what) in self._trackers

    def forget_sent(self) -> None:
        """Drop the results that have left (a peer that disconnected drops its queue, so those leave too)."""
        self._trackers = {key: tracker for key, tracker in self._trackers.items() if not tracker.done}

    def __len__(self) -> int:
        return len(self._trackers)
