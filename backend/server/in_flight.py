"""Large messages on their way to a client (results, large echoes), so that one connection holds at most two copies of
each in the server's memory.

`fetch` sends a stored result again, any number of times, and `echo` sends back what it got. A client that asks
faster than it reads (or over a slow link) would otherwise make the server queue one copy per request: ZeroMQ keeps
a message that a peer has not taken yet, and a 256-frame result is hundreds of MB. ZeroMQ's message trackers say
when a sent message has left the server's memory.
"""

import zmq

# Two copies, not one: a tracker learns that its message has left a moment after ZeroMQ let go of it (pyzmq's
# garbage-collector thread tells it), so a client that has just read a result and asks again could otherwise be
# refused for a copy that is already gone.
MAX_COPIES = 2


class SendsInFlight:
    """The large messages being sent, by (connection identity, job id or "echo"), until ZeroMQ has let go of them."""

    def __init__(self) -> None:
        self._trackers: dict[tuple[bytes, str], list[zmq.MessageTracker]] = {}

    def add(self, identity: bytes, what: str, tracker: zmq.MessageTracker) -> None:
        self._trackers.setdefault((identity, what), []).append(tracker)

    def full(self, identity: bytes, what: str, also: int = 0) -> bool:
        """Whether MAX_COPIES of `what` (a job id, or "echo") sent to `identity` are still in the send queue, counting
        `also` more on their way to it (results still being read)."""
        self.forget_sent()
        return len(self._trackers.get((identity, what), [])) + also >= MAX_COPIES

    def forget_sent(self) -> None:
        """Drop the messages that have left (a peer that disconnected drops its queue, so those leave too)."""
        pending = {key: [sent for sent in trackers if not sent.done] for key, trackers in self._trackers.items()}
        self._trackers = {key: trackers for key, trackers in pending.items() if trackers}
