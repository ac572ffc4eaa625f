"""The platform services: what a hosted platform answers to its sailors, served per host.

One long-lived container (`flowrun-services`) beside the broker, running this
package, for as long as flows run (also after `flowrun up -d` has returned):

- `GET /v1/tasks/{flow}/steps/{step}`: the step-info call every sailor makes
  at start: `config` (the step's config with its credentials merged in, plus
  `_account`), its latest `snapshot`, the flow's `variables`, `is_passthrough`.
- `POST|GET|DELETE /sailor-support/hooks/task/{flow}/startup/data`: start-up
  hook data.
- `PUT /v1/accounts/{account}`: a component's `updateKeys`.
- Snapshots: every step's snapshot messages (one queue per flow) are drained
  into a per-step snapshot, `snapshot` replacing and `updateSnapshot` merging,
  kept on a volume: a trigger continues from its last state after a crash, a
  redeploy or `down` without `--purge`.
- Trace: a copy of every message, error and rebound of a flow (trace batches
  from flowrun's publishers, and the Node.js steps' publishes by a binding on
  their exchanges, into a bounded queue) is recorded in a bounded ring per flow:
  lineage headers, times, the body (cut), for `flowrun trace`. Dead letters
  are read without being taken when a trace is asked for.
- Ticks: a Node.js trigger's `process` runs once per message on its input
  queue, as on the platform, whose scheduler publishes one per interval; so
  does this one (skipping a tick while the last is still unread).
- `/admin/...`: the host's `flowrun up` and `down` hand a flow's steps over
  (admin token), on a port published on loopback only.

Every caller authenticates. A step's user is `<flow>.<step>` with a key derived
from the host's secret; it may read its own step only, its own flow's hook
data, and its own account. The container sits on each flow's networks, so a step
reaches it by the alias `platform`; nothing is published beyond loopback.
Served by uvicorn, with the limits below (see "serving"): any step and any local
user can reach this server, and none of them may starve it for the others.
"""
