'use strict';

// Messages this process has sent back once (module state: the process is long-lived).
const reboundedOnce = new Set();

// Passes a message on, marked as checked. Throws when its body asks for it
// (`fail: true`): the platform's sailor then publishes an error and rejects the
// input (dead-lettered). With `reboundOnce: <key>` it rebounds the message the first
// time it sees that key: the message comes back after the rebound delay.
exports.process = async function process(msg) {
    const body = msg.body || {};
    if (body.fail) {
        throw new Error(`refused message ${JSON.stringify(body)}`);
    }
    if (body.reboundOnce && !reboundedOnce.has(body.reboundOnce)) {
        reboundedOnce.add(body.reboundOnce);
        await this.emit('rebound', new Error(`not yet: ${body.reboundOnce}`));
        return undefined;
    }
    return { body: { ...body, checked: true } };
};
