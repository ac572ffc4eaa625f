'use strict';

// One message in, `cfg.copies` messages out (default 3): each is a message of its
// own downstream (the platform's sailor gives them one id; the mapper step after
// this one gives each its own).
exports.process = async function process(msg, cfg) {
    const copies = Number(cfg.copies || 3);
    for (let part = 1; part <= copies; part += 1) {
        await this.emit('data', { body: { ...msg.body, part, of: copies } });
    }
};
