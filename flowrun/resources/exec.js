'use strict';
// `flowrun exec` of a Node.js step: the component's function called once, alone, by
// the platform's own sailor's executor (TaskExec of elasticio-sailor-nodejs), as the
// sailor calls it for one message. Input: {function, msg, cfg, snapshot, variables}
// as JSON on standard input. Each event it emits is one line
// `flowrun-exec: {"event": ..., "payload": ...}` on standard output; the rest is its log.
// No broker, no network (the container has none): the executor's services are stubs.
const fs = require('fs');
const path = require('path');

const MARKER = 'flowrun-exec: ';
const given = JSON.parse(fs.readFileSync(0, 'utf8') || '{}');
const dir = process.cwd();
const descriptor = JSON.parse(fs.readFileSync(path.join(dir, 'component.json'), 'utf8'));
const fn = (descriptor.triggers || {})[given.function] || (descriptor.actions || {})[given.function];
const out = (event, payload) => process.stdout.write(`${MARKER}${JSON.stringify({ event, payload })}\n`);
const asError = (e) => ({ name: (e && e.name) || 'Error', message: (e && e.message) || String(e), stack: (e && e.stack) || '' });

let failed = false;
let ended = false;
const finish = () => {
    if (ended) return;
    ended = true;
    process.exitCode = failed ? 1 : 0;
    setTimeout(() => process.exit(failed ? 1 : 0), 50);
};
try {
    const { TaskExec } = require(path.join(dir, 'node_modules/elasticio-sailor-nodejs/lib/executor'));
    const module = require(path.resolve(dir, fn.main));
    const exec = new TaskExec({
        loggerOptions: {}, variables: given.variables || {},
        services: { apiClient: {}, config: {}, amqp: {} },
    });
    for (const event of ['data', 'snapshot', 'updateSnapshot', 'rebound', 'httpReply', 'updateKeys']) {
        exec.on(event, (payload) => out(event, event === 'rebound' ? asError(payload) : payload));
    }
    exec.on('error', (e) => { failed = true; out('error', asError(e)); });
    exec.on('end', finish);
    const msg = { id: given.msg.id, body: given.msg.body, headers: given.msg.headers || {},
        attachments: given.msg.attachments || {}, passthrough: given.msg.passthrough || {} };
    exec.process(module, msg, given.cfg || {}, given.snapshot || {});
} catch (e) {
    failed = true;
    out('error', asError(e));
    finish();
}
