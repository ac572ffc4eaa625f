"""What a step's sailor says of itself, read from its state file through the engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowrun.core.observed import Observed
from flowrun.engine.protocol import Capabilities
from flowrun.supervise.followers import sailor_state


class Files:
    """An engine whose reads of the state file give, in turn, what `reads` holds."""

    capabilities = Capabilities(watches_events=True, reads_files=True, joins_networks=True,
                                broker_cluster=False, needs_registry=False,
                                starts_apart=True)

    def __init__(self, *reads: bytes | None) -> None:
        self.reads = list(reads)

    def read_file(self, name: str, path: str) -> bytes | None:
        return self.reads.pop(0)


def running() -> Observed:
    return Observed(id="id", name="flowrun.f.s", labels={"io.flowrun.runtime": "python"},
                    status="running", started_at=datetime.now(UTC), finished_at=None,
                    restart_count=0, exit_code=0, oom_killed=False, error="", env={},
                    ports={})


def test_a_torn_read_of_the_state_is_read_again() -> None:
    # Replaced by a longer one while Docker read it, the file comes as its first bytes.
    engine: Any = Files(b'{"live": tr', b'{"live": true, "processed": 3}')
    assert sailor_state(engine, running()) == {"live": True, "processed": 3}


def test_no_state_yet_is_read_once_and_torn_for_good_is_none() -> None:
    engine: Any = Files(None)
    assert sailor_state(engine, running()) == {}
    engine = Files(b"{", b"{", b"{")
    assert sailor_state(engine, running()) == {} and engine.reads == []
