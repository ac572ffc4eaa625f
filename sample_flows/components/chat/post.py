def process(msg, cfg, snapshot, ctx):
    text = msg["body"].get("text", "")
    ctx.logger.info("posted: %s", text)
    return {"posted": text, "contact": msg["body"].get("contact")}
