'use strict';

// Called once per HTTP request: the gateway's message carries the parsed body and,
// beside it, what else the caller sent. They go on inside the body, under the names
// the platform's webhook trigger uses (`_query`, `_headers`, `_method`, `_url`,
// `_additionalUrlPath`), so later steps and mappers read them as on the platform.
exports.process = async function receive(msg) {
    const given = msg.body;
    const body = given !== null && typeof given === 'object' && !Array.isArray(given)
        ? { ...given } : { value: given };
    body._query = msg.query || {};
    body._headers = msg.headers || {};
    body._method = msg.method;
    body._url = msg.url;
    body._additionalUrlPath = msg.additionalUrlPath || '';
    return { body };
};
