'use strict';

// Passes a message on; throws when its body asks for it (`fail: true`): the
// platform's sailor then publishes an error and rejects the input message.
exports.process = async function process(msg) {
    if (msg.body && msg.body.fail) {
        throw new Error(`refused message ${JSON.stringify(msg.body)}`);
    }
    return { body: { ...msg.body, checked: true } };
};
