'use strict';

// A real-time trigger as the platform runs it: process() is called once per tick
// message on the step's input queue, in the same long-lived process.
//
// The count lives in the snapshot, which the platform keeps for the step: after a
// crash, a redeploy or `flowrun down` (without --purge) the next start continues
// from it instead of counting from 1 again.
exports.process = async function process(msg, cfg, snapshot) {
    const count = Number((snapshot && snapshot.count) || 0);
    const limit = Number(cfg.limit || 0);
    if (limit && count >= limit) {
        return;
    }
    const n = count + 1;
    this.logger.info(`tick ${n}`);
    await this.emit('data', {
        body: { n, at: new Date().toISOString(), source: cfg.source || 'clock', signed: Boolean(cfg.token) }
    });
    await this.emit('snapshot', { count: n });
};

// The platform runs a flow's first step's start-up hook when the flow starts and
// keeps what it returns; at `flowrun down`, the shutdown hook gets it back (where a
// real trigger would remove the webhook or subscription it made at start-up).
exports.startup = async function startup(cfg) {
    return { subscription: `clock-${cfg.source || 'clock'}-${Date.now()}` };
};

exports.shutdown = async function shutdown(cfg, data) {
    console.log(`shutdown hook: ending subscription ${data && data.subscription}`);
};
