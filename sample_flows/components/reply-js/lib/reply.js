'use strict';

// The answer is an ordinary data message whose headers name the request's reply key
// (`X-EIO-Routing-Key`: the platform's sailor publishes it with that routing key)
// and say the status and content type. Then the message goes on to the next step.
exports.process = async function reply(msg) {
    const body = msg.body || {};
    const replyTo = msg.headers && msg.headers.reply_to;
    if (!replyTo) {
        throw new Error('no request waits for this message (no reply_to): '
            + 'is the flow called over HTTP?');
    }
    const headers = {
        ...(body.headers || {}),
        'X-EIO-Routing-Key': replyTo,
        'Content-Type': body.contentType || 'application/json',
        'x-eio-status-code': body.statusCode || 200,
    };
    const answer = body.responseBody !== undefined ? body.responseBody : body;
    await this.emit('data', { body: answer, headers });
    await this.emit('data', { body });
    return undefined;
};
