import hashlib

contacts = {}


def process(msg, cfg):
    body = msg["body"]
    email = body.get("email")
    if not email:
        raise ValueError("contact has no email; cannot upsert")
    contact_id = "c-" + hashlib.sha1(email.encode()).hexdigest()[:8]
    contacts[contact_id] = body
    return {**body, "contactId": contact_id, "known": len(contacts)}
