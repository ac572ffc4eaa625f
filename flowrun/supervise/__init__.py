"""Supervision: the executor that applies actions, the followers that watch steps,
and the one loop that reads their events and keeps the flow as planned."""
