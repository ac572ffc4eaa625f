'use strict';

const { ObjectStorageWrapper } = require('@elastic.io/maester-client');

// One list per `group` in the object store: found by its query header, made on the
// group's first message (meta header `kind`, one hour to live), appended to by each
// message; the answer says what the store holds now, read back through the client.
exports.process = async function keep(msg) {
    const { group, item } = msg.body;
    const storage = new ObjectStorageWrapper(this);
    const query = [{ key: 'group', value: group }];
    const found = await storage.lookupObjectsByQueryParameters(query);
    let id;
    let list;
    if (found.length === 0) {
        const made = await storage.createObject({ items: [] }, query,
            [{ key: 'kind', value: 'list' }], 3600);
        id = typeof made === 'string' ? made : made.objectId;
        list = { items: [] };
    } else {
        id = found[0].objectId;
        list = await storage.lookupObjectById(id);
    }
    list.items.push(item);
    await storage.updateObjectById(id, list);
    const stored = await storage.lookupObjectById(id);
    const headers = await storage.getObjectHeaders(id);
    if (msg.body.drop) {
        await storage.deleteObjectById(id);
    }
    return { body: { group, id, items: stored.items, kind: headers['x-meta-kind'], found: found.length } };
};
